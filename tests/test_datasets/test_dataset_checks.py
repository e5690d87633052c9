"""The pre-run dataset checks: CIFAR and ImageNet layouts, any other dataset type, evaluator files,
and --data-root fixing what the check reported (COCO 2014: test_det_data.py)."""
import os.path as osp
import pickle

import numpy as np
import pytest
from mmengine.config import Config

from mmdsnet.datasets import DatasetCheckError, check_datasets, find_problems

from helpers import ROOT

CIFAR100_CFG = osp.join(ROOT, 'configs/mmpretrain/dsnet/dsnet50-w0.25_1xb128_cifar100.py')
CIFAR10_CFG = osp.join(ROOT, 'configs/mmpretrain/dsnet/dsnet50-w0.25_1xb128_cifar10.py')
IN1K_CFG = osp.join(ROOT, 'configs/mmpretrain/dsnet/dsnet50_4xb32_in1k.py')
DET_CFG = osp.join(ROOT, 'configs/faster_rcnn_ds2net50_coco.py')


def _cifar_cfg(path, root):
    cfg = Config.fromfile(path)
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = str(root)
    return cfg


def _write_batch(path, n=4):
    with open(path, 'wb') as f:
        pickle.dump({'data': np.zeros((n, 3072), np.uint8), 'fine_labels': [0] * n}, f,
                    protocol=2)


@pytest.fixture
def no_md5(monkeypatch):
    """Accept generated CIFAR files (mmpretrain checks the official files' md5)."""
    from mmpretrain.datasets import CIFAR10, CIFAR100
    monkeypatch.setattr(CIFAR100, 'train_list', [['train', None]])
    monkeypatch.setattr(CIFAR100, 'test_list', [['test', None]])
    monkeypatch.setattr(CIFAR10, 'train_list', [[f'data_batch_{i}', None] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, 'test_list', [['test_batch', None]])


def test_cifar_missing_root(tmp_path):
    root = tmp_path / 'cifar100'
    with pytest.raises(DatasetCheckError) as info:
        check_datasets(_cifar_cfg(CIFAR100_CFG, root), ['train', 'val'])
    msg = str(info.value)
    assert f'data_root {root} does not exist' in msg
    assert str(root / 'cifar-100-python') in msg
    assert msg.count('does not exist') == 1  # train and val share the root: said once


def test_cifar_archive_not_extracted(tmp_path):
    (tmp_path / 'cifar-100-python.tar.gz').write_bytes(b'\x1f\x8b')
    problems = find_problems(_cifar_cfg(CIFAR100_CFG, tmp_path), ['train'])
    assert len(problems) == 1 and 'not extracted' in problems[0] and 'tar -xzf' in problems[0]


def test_cifar_files_without_subfolder(tmp_path, no_md5):
    for name in ('train', 'test'):
        _write_batch(tmp_path / name)
    problems = find_problems(_cifar_cfg(CIFAR100_CFG, tmp_path), ['train'])
    assert 'directly in' in problems[0] and 'cifar-100-python/' in problems[0]


def test_cifar_wrong_kind(tmp_path):
    (tmp_path / 'cifar-10-batches-py').mkdir()
    problems = find_problems(_cifar_cfg(CIFAR100_CFG, tmp_path), ['train'])
    assert 'cifar-10-batches-py/ (CIFAR10)' in problems[0] and 'CIFAR100' in problems[0]


def test_cifar_missing_and_malformed_files(tmp_path, no_md5):
    base = tmp_path / 'cifar-10-batches-py'
    base.mkdir()
    for i in range(1, 5):
        _write_batch(base / f'data_batch_{i}')
    (base / 'test_batch').write_text('not a pickle')
    problems = find_problems(_cifar_cfg(CIFAR10_CFG, tmp_path), ['train'])
    assert any(f'{base / "data_batch_5"} is missing' in p for p in problems)
    assert any('test_batch is not a pickled CIFAR batch' in p for p in problems)


def test_cifar_md5_mismatch(tmp_path):
    base = tmp_path / 'cifar-100-python'
    base.mkdir()
    for name in ('train', 'test'):
        _write_batch(base / name)
    problems = find_problems(_cifar_cfg(CIFAR100_CFG, tmp_path), ['train'])
    assert len(problems) == 2 and all('md5' in p for p in problems)


def test_cifar_ok(tmp_path, no_md5):
    base = tmp_path / 'cifar-100-python'
    base.mkdir()
    for name in ('train', 'test'):
        _write_batch(base / name)
    check_datasets(_cifar_cfg(CIFAR100_CFG, tmp_path), ['train', 'val', 'test'])


def _in1k_cfg(root):
    cfg = Config.fromfile(IN1K_CFG)
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = str(root)
    # one class folder here (ImageNet's 1000 and unreadable images: test_user_path.py)
    cfg.train_dataloader.dataset.classes = ['n01440764']
    return cfg


def _touch_image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_TINY_PNG)


# an 1x1 PNG: the checks read image headers
_TINY_PNG = bytes.fromhex('89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de'
                          '0000000c49444154789c63606060000000040001f61738550000000049454e44ae'
                          '426082')


def test_imagenet_layouts(tmp_path):
    root = tmp_path / 'imagenet'
    problems = find_problems(_in1k_cfg(root), ['train'])
    assert problems == [f'train_dataloader: ImageNet: data_root {root} does not exist '
                        f'(looked for {root / "train"}/)']
    # class folders for train, flat val without meta/val.txt
    _touch_image(root / 'train' / 'n01440764' / 'a.JPEG')
    _touch_image(root / 'val' / 'ILSVRC2012_val_00000001.JPEG')
    problems = find_problems(_in1k_cfg(root), ['train', 'val'])
    assert len(problems) == 1 and problems[0].startswith('val_dataloader')
    assert 'holds images directly' in problems[0] and str(root / 'meta' / 'val.txt') in problems[0]
    # meta/val.txt listing a missing file
    (root / 'meta').mkdir()
    (root / 'meta' / 'val.txt').write_text('ILSVRC2012_val_00000002.JPEG 65\n')
    problems = find_problems(_in1k_cfg(root), ['val'])
    assert 'lists ILSVRC2012_val_00000002.JPEG' in problems[0] and 'missing' in problems[0]
    (root / 'meta' / 'val.txt').write_text('ILSVRC2012_val_00000001.JPEG 65\n')
    assert find_problems(_in1k_cfg(root), ['train', 'val', 'test']) == []
    # unlabelled flat folders are fine (mmpretrain's ImageNet 'test' split, with_label=False)
    _touch_image(root / 'test' / 'x.JPEG')
    cfg = _in1k_cfg(root)
    cfg.test_dataloader.dataset.split = 'test'
    assert find_problems(cfg, ['test']) == []
    cfg = Config(dict(test_dataloader=dict(dataset=dict(
        type='CustomDataset', data_root=str(root / 'test'), with_label=False))))
    assert find_problems(cfg, ['test']) == []
    # an empty class folder
    (root / 'train' / 'a_empty').mkdir()
    problems = find_problems(_in1k_cfg(root), ['train'])
    assert 'a_empty/ holds no images' in problems[0]


def test_unknown_dataset_type_gets_the_generic_check(tmp_path):
    cfg = Config(dict(train_dataloader=dict(dataset=dict(
        type='ConcatDataset', datasets=[dict(type='MyDataset', data_root=str(tmp_path / 'x'))]))))
    problems = find_problems(cfg, ['train'])
    assert problems == [f'train_dataloader: MyDataset: data_root {tmp_path / "x"} does not exist']


def test_missing_evaluator_ann_file_is_a_dataset_problem(tmp_path):
    """The run's own evaluator file (COCO's CocoMetric reads one) is checked before the Runner
    is built, not met as a bare [Errno 2] after the first epoch."""
    cfg = Config.fromfile(DET_CFG)
    problems = find_problems(cfg, ['val'])
    assert f'val_evaluator: CocoMetric: ann_file {osp.abspath("data/coco")}' in ' '.join(problems)


def test_data_root_fixes_the_run_the_hint_was_about(tmp_path):
    """What the hint suggests works: a COCO-style folder elsewhere passes the pre-run check."""
    from mmdsnet.datasets.checks import SPLITS, set_data_root
    cfg = Config.fromfile(DET_CFG)
    root = tmp_path / 'coco'
    for split in ('train2014', 'val2014'):
        (root / split).mkdir(parents=True)
        (root / split / 'a.jpg').write_bytes(b'')
    (root / 'annotations').mkdir()
    for split in ('train2014', 'val2014'):
        (root / 'annotations' / f'instances_{split}.json').write_text(
            '{"images": [{"id": 1, "file_name": "a.jpg", "width": 9, "height": 9}], '
            '"annotations": [], "categories": [{"id": 1, "name": "person"}]}')
    assert find_problems(cfg, SPLITS)  # data/coco is not there
    set_data_root(cfg, str(root))
    assert find_problems(cfg, SPLITS) == []
