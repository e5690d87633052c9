"""tools/train.py, tools/test.py, tools/extract_backbone.py, the dataset checks (no training)."""
import importlib.util
import os
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmdsnet.datasets import DatasetCheckError, check_datasets, find_problems

from helpers import ROOT

CIFAR100_CFG = osp.join(ROOT, 'configs/mmpretrain/dsnet/dsnet50-w0.25_1xb128_cifar100.py')
CIFAR10_CFG = osp.join(ROOT, 'configs/mmpretrain/dsnet/dsnet50-w0.25_1xb128_cifar10.py')
IN1K_CFG = osp.join(ROOT, 'configs/mmpretrain/dsnet/dsnet50_4xb32_in1k.py')


def _tool(name):
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', osp.join(ROOT, 'tools',
                                                                             f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def train_tool():
    return _tool('train')


@pytest.fixture(scope='module')
def test_tool():
    return _tool('test')


# ------------------------------------------------------------------------------ train.py CLI
@pytest.mark.parametrize('flag', ['--local_rank', '--local-rank'])
def test_local_rank_spellings_set_env(train_tool, monkeypatch, flag):
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    args = train_tool.parse_args([CIFAR100_CFG, flag, '3'])
    assert args.local_rank == 3 and os.environ['LOCAL_RANK'] == '3'


def test_resume_forms(train_tool):
    cfg = train_tool.setup_cfg(train_tool.parse_args([CIFAR100_CFG, '--resume']))
    assert cfg.resume is True and cfg.load_from is None  # latest in work_dir
    cfg = train_tool.setup_cfg(train_tool.parse_args([CIFAR100_CFG, '--resume', 'a/iter_8.pth']))
    assert cfg.resume is True and cfg.load_from == 'a/iter_8.pth'
    cfg = train_tool.setup_cfg(train_tool.parse_args([CIFAR100_CFG]))
    assert cfg.resume is False


def test_work_dir_amp_and_cfg_options(train_tool):
    cfg = train_tool.setup_cfg(train_tool.parse_args([CIFAR100_CFG]))
    assert cfg.work_dir == osp.join('./work_dirs', 'dsnet50-w0.25_1xb128_cifar100')
    cfg = train_tool.setup_cfg(train_tool.parse_args(
        [CIFAR100_CFG, '--work-dir', 'wd', '--amp', '--cfg-options', 'train_cfg.max_iters=10',
         'model.backbone.depth=26']))
    assert cfg.work_dir == 'wd'
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.train_cfg.max_iters == 10 and cfg.model.backbone.depth == 26


def test_auto_scale_lr_flag_and_log_line(train_tool):
    # on by default: a run on fewer GPUs scales the lr and says so
    cfg = train_tool.setup_cfg(train_tool.parse_args([CIFAR100_CFG]))
    assert cfg.auto_scale_lr.enable is True
    line = train_tool.describe_batch_and_lr(cfg, world_size=1)
    assert 'total batch size 128 (1 process(es) x 128)' in line
    assert 'effective lr 0.1' in line and 'WARNING' not in line
    cfg.train_dataloader.batch_size = 32
    line = train_tool.describe_batch_and_lr(cfg, world_size=2)
    assert 'total batch size 64' in line and 'effective lr 0.05' in line
    # switched off, a mismatch is a warning
    cfg.auto_scale_lr.enable = False
    line = train_tool.describe_batch_and_lr(cfg, world_size=2)
    assert 'total batch size 64' in line and 'NOT scaled' in line and '0.05' in line

    cfg = train_tool.setup_cfg(train_tool.parse_args([IN1K_CFG, '--auto-scale-lr']))
    assert cfg.auto_scale_lr.enable is True
    line = train_tool.describe_batch_and_lr(cfg, world_size=2)  # 2 x 32 of 128
    assert 'total batch size 64' in line and 'effective lr 0.025' in line


def test_auto_scale_lr_without_base_batch_size(train_tool, tmp_path):
    cfg_file = tmp_path / 'no_scale.py'
    cfg_file.write_text(f"_base_ = ['{CIFAR100_CFG}']\nauto_scale_lr = dict(_delete_=True)\n")
    with pytest.raises(SystemExit, match='base_batch_size'):
        train_tool.setup_cfg(train_tool.parse_args([str(cfg_file), '--auto-scale-lr']))


def test_amp_on_cpu_is_refused_early(train_tool, tmp_path, monkeypatch):
    monkeypatch.setattr(train_tool, 'get_device', lambda: 'cpu')
    with pytest.raises(SystemExit, match='--amp needs a GPU'):
        train_tool.main([CIFAR100_CFG, '--amp', '--work-dir', str(tmp_path / 'wd')])


def test_train_stops_on_missing_dataset(train_tool, tmp_path, capsys):
    missing = tmp_path / 'nowhere'
    with pytest.raises(SystemExit) as info:
        train_tool.main([CIFAR100_CFG, '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
                         f'train_dataloader.dataset.data_root={missing}',
                         f'val_dataloader.dataset.data_root={missing}'])
    msg = str(info.value)
    assert 'Dataset check failed' in msg and str(missing) in msg
    assert 'cifar-100-python' in msg
    assert not (tmp_path / 'wd').exists()  # stopped before the Runner made its work_dir


# ------------------------------------------------------------------------------- test.py CLI
def test_test_tool_out_and_table(test_tool, tmp_path):
    args = test_tool.parse_args([CIFAR100_CFG, 'ckpt.pth', '--out', 'preds.pkl'])
    cfg = test_tool.setup_cfg(args)
    assert cfg.load_from == 'ckpt.pth'
    assert cfg.test_evaluator[0]['type'] == 'Accuracy'
    assert cfg.test_evaluator[1] == dict(type='DumpResults', out_file_path='preds.pkl')
    with pytest.raises(SystemExit, match='.pkl'):  # .json is accepted too (issue 12)
        test_tool.setup_cfg(test_tool.parse_args([CIFAR100_CFG, 'c.pth', '--out', 'p.txt']))
    table = test_tool.format_metrics({'accuracy/top1': 26.5625, 'coco/bbox_mAP': 0.337,
                                      'note': 'x'})
    lines = table.splitlines()
    assert lines[1].split('|')[1].strip() == 'metric'
    assert any('accuracy/top1' in ln and '26.5625' in ln for ln in lines)
    assert any('coco/bbox_mAP' in ln and '0.3370' in ln for ln in lines)
    assert 'no metrics' in test_tool.format_metrics({})


def test_test_tool_missing_checkpoint(test_tool, tmp_path):
    with pytest.raises(SystemExit, match='does not exist'):
        test_tool.main([CIFAR100_CFG, str(tmp_path / 'nope.pth')])


# -------------------------------------------------------------------------- extract_backbone
def test_extract_backbone(tmp_path, capsys):
    from mmengine.logging import MessageHub
    tool = _tool('extract_backbone')
    hub = MessageHub('extract-test')
    hub.update_scalar('train/loss', 1.0)
    sd = {'backbone.conv1.weight': torch.randn(4, 3, 3, 3), 'backbone.bn1.weight': torch.ones(4),
          'backbone.layer1.shortcuts.0.weight': torch.ones(1, 4, 1, 1),
          'neck.dummy': torch.zeros(1), 'head.fc.weight': torch.randn(10, 4),
          'head.fc.bias': torch.zeros(10)}
    src = tmp_path / 'epoch_1.pth'
    torch.save(dict(meta=dict(epoch=1, seed=np.int64(0)), state_dict=sd,
                    message_hub=hub.state_dict()), src)
    dst = tmp_path / 'out' / 'backbone.pth'
    assert tool.main([str(src), str(dst)]) == 3
    out = capsys.readouterr().out
    assert 'kept 3 tensors' in out and 'dropped 3 (head: 2, neck: 1)' in out
    loaded = torch.load(dst, weights_only=True)  # plain tensors only
    assert sorted(loaded) == ['bn1.weight', 'conv1.weight', 'layer1.shortcuts.0.weight']
    assert torch.equal(loaded['conv1.weight'], sd['backbone.conv1.weight'])
    with pytest.raises(SystemExit, match='exists'):
        tool.main([str(src), str(dst)])
    with pytest.raises(SystemExit, match='no key'):
        tool.main([str(src), str(dst), '--force', '--prefix', 'encoder.'])


def test_extracted_backbone_loads_into_dsnet(tmp_path):
    from mmdsnet.models import DSNet
    tool = _tool('extract_backbone')
    net = DSNet(depth=26, stem='cifar', base_channels=8)
    sd = {f'backbone.{k}': v for k, v in net.state_dict().items()}
    sd['head.fc.weight'] = torch.zeros(3, 256)
    torch.save({'state_dict': sd}, tmp_path / 'cls.pth')
    tool.main([str(tmp_path / 'cls.pth'), str(tmp_path / 'bb.pth')])
    fresh = DSNet(depth=26, stem='cifar', base_channels=8)
    fresh.load_state_dict(torch.load(tmp_path / 'bb.pth', weights_only=True), strict=True)
    for k, v in net.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)


# ---------------------------------------------------------------------------- dataset checks
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
    return cfg


def _touch_image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'\xff\xd8\xff')


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


COCO_METRICS = {'coco/bbox_mAP': 0.337, 'coco/bbox_mAP_50': 0.543, 'coco/bbox_mAP_75': 0.362,
                'coco/bbox_mAP_s': 0.1}


@pytest.mark.parametrize('ann_file', ['data/coco/annotations/instances_val2014.json',
                                      '/d/coco/annotations/instances_minival2014.json'])
def test_test_tool_prints_the_table8_view_for_coco_metrics(test_tool, ann_file):
    evaluator = dict(type='CocoMetric', ann_file=ann_file, metric='bbox')
    table = test_tool.format_table8(COCO_METRICS, 'work_dirs/x/epoch_5.pth', evaluator)
    lines = table.splitlines()
    assert 'mAP@.5' in lines[0] and 'mAP@.75' in lines[0] and 'mAP@[.5:.95]' in lines[0]
    assert any('DS2Net50 (paper, Table 8)' in ln and '54.3' in ln for ln in lines)
    assert any('epoch_5.pth' in ln and '54.3 ' in ln and '36.2' in ln and '33.7' in ln
               for ln in lines)
    assert test_tool.format_table8({'accuracy/top1': 91.0}, 'x.pth', evaluator) == ''


def test_test_tool_shows_the_paper_rows_only_beside_coco_2014(test_tool):
    """The demo's shapes (or any other set) get the run's own row, not the paper's beside it."""
    demo = [dict(type='CocoMetric', ann_file='work_dirs/demo/data/annotations/val.json')]
    table = test_tool.format_table8(COCO_METRICS, 'work_dirs/demo/epoch_12.pth', demo)
    assert 'paper' not in table.split('(')[0] and 'DS2Net50' not in table
    assert any('epoch_12.pth' in ln and '54.3' in ln for ln in table.splitlines())
    assert 'shown only beside COCO 2014 results' in table and 'annotations/val.json' in table


# ------------------------------------------------------------------ the data hint, --data-root
DET_CFG = osp.join(ROOT, 'configs/faster_rcnn_ds2net50_coco.py')


def test_data_hint_names_the_failed_loader_and_every_key(test_tool, tmp_path):
    """test.py with no test set: the hint is about test_dataloader (and its evaluator), with
    every key --data-root sets, not about train_dataloader."""
    missing = tmp_path / 'nowhere'
    with pytest.raises(SystemExit) as info:
        test_tool.main([DET_CFG, __file__, '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
                        f'test_dataloader.dataset.data_root={missing}/'])
    msg = str(info.value)
    assert msg.startswith('error: Dataset check failed') and 'test_dataloader: ' in msg
    assert 'train_dataloader' not in msg
    assert msg.rstrip().endswith(
        '--data-root DIR, which sets test_dataloader.dataset.data_root, test_evaluator.ann_file '
        '(or set those keys in the config).')


def test_missing_evaluator_ann_file_is_a_dataset_problem(tmp_path):
    """The run's own evaluator file (COCO's CocoMetric reads one) is checked before the Runner
    is built, not met as a bare [Errno 2] after the first epoch."""
    cfg = Config.fromfile(DET_CFG)
    problems = find_problems(cfg, ['val'])
    assert f'val_evaluator: CocoMetric: ann_file {osp.abspath("data/coco")}' in ' '.join(problems)


def test_data_root_option_moves_datasets_and_evaluators(train_tool, test_tool, tmp_path):
    for tool, extra in ((train_tool, []), (test_tool, ['ckpt.pth'])):
        cfg = tool.setup_cfg(tool.parse_args([DET_CFG, *extra, '--data-root', '/d/coco']))
        for split in ('train', 'val', 'test'):
            assert cfg[f'{split}_dataloader'].dataset.data_root == '/d/coco'
        assert cfg.train_dataloader.dataset.ann_file == 'annotations/instances_train2014.json'
        for ev in ('val_evaluator', 'test_evaluator'):
            assert cfg[ev].ann_file == '/d/coco/annotations/instances_val2014.json'
    # a --cfg-options key still wins over --data-root for the one path it names
    cfg = train_tool.setup_cfg(train_tool.parse_args(
        [CIFAR100_CFG, '--data-root', '/d/c100', '--cfg-options',
         'val_dataloader.dataset.data_root=/elsewhere']))
    assert cfg.train_dataloader.dataset.data_root == '/d/c100'
    assert cfg.val_dataloader.dataset.data_root == '/elsewhere'


def test_data_root_fixes_the_run_the_hint_was_about(train_tool, tmp_path):
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


# --------------------------------------------------------------------------------- tracebacks
def _run(args):
    import subprocess
    import sys
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)


def test_extract_backbone_missing_file_is_one_line(tmp_path):
    out = _run(['tools/extract_backbone.py', str(tmp_path / 'nope.pth'), str(tmp_path / 'o.pth')])
    assert out.returncode == 1 and 'Traceback' not in out.stderr
    assert out.stderr.strip() == f'error: checkpoint {tmp_path / "nope.pth"} can not be found'


def test_env_module_runs_without_runpy_warning():
    out = _run(['-W', 'error::RuntimeWarning', '-m', 'mmdsnet.utils.env'])
    assert 'RuntimeWarning' not in out.stderr and 'Traceback' not in out.stderr, out.stderr
    assert out.returncode == 0 and 'OK: the stack fits together' in out.stdout
    assert 'MMEngine' in out.stdout and 'mmcv ops' in out.stdout  # MMEngine's keys, and ours


# ------------------------------------------------------------------------------- docs links
def _slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    import re
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def test_every_docs_link_the_code_prints_resolves():
    import glob
    import re
    links = set()
    for path in glob.glob(osp.join(ROOT, 'mmdsnet', '**', '*.py'), recursive=True) + \
            glob.glob(osp.join(ROOT, 'tools', '**', '*.py'), recursive=True):
        links |= set(re.findall(r'docs/[\w./-]+\.md(?:#[\w-]+)?', open(path).read()))
    assert 'docs/classification.md#1-data-preparation-nothing-is-downloaded' in links
    for link in sorted(links):
        file, _, anchor = link.partition('#')
        assert osp.isfile(osp.join(ROOT, file)), link
        if anchor:
            headings = [ln.lstrip('#') for ln in open(osp.join(ROOT, file))
                        if ln.startswith('#')]
            assert anchor in {_slug(h) for h in headings}, link
