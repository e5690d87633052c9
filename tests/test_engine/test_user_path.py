"""A new user's path with the ImageNet config: what the pre-run dataset check finds before a run
starts (unreadable images in any split it reads, a folder layout with another class count)."""
import io
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config

from mmdsnet.datasets import DatasetCheckError, check_datasets, find_problems

from helpers import ROOT, load_tool

IN1K_CFG = osp.join(ROOT, 'configs/mmpretrain/dsnet/dsnet50_4xb32_in1k.py')


def _jpeg() -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), np.uint8)).save(
        buf, 'JPEG')
    return buf.getvalue()


def make_imagenet(root, classes: int = 1000, per_class: int = 1):
    """ImageNet's folder layout (train/ and val/ by class folders) of tiny real JPEGs."""
    data = _jpeg()
    for split in ('train', 'val'):
        for c in range(classes):
            folder = root / split / f'n{c:08d}'
            folder.mkdir(parents=True)
            for i in range(per_class):
                (folder / f'n{c:08d}_{i}.JPEG').write_bytes(data)
    return root


def in1k_cfg(root):
    cfg = Config.fromfile(IN1K_CFG)
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = str(root)
    return cfg


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
    return make_imagenet(tmp_path_factory.mktemp('in1k') / 'imagenet')


@pytest.fixture
def train_tool():
    return load_tool('train.py', '_tool_train_user_path')


def test_a_corrupt_validation_image_stops_the_run_before_training(imagenet, train_tool,
                                                                     monkeypatch, tmp_path):
    """The user's step: tools/train.py with the ImageNet config and one random-bytes JPEG in
    val/. Before, the check passed, an epoch trained, and validation died in mmcv's assertion."""
    bad = imagenet / 'val' / 'n00000003' / 'n00000003_0.JPEG'
    good = bad.read_bytes()
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, np.uint8).tobytes())
    try:
        from mmengine.runner import Runner

        def started(*args, **kwargs):
            raise AssertionError('the Runner was built: training would start')

        monkeypatch.setattr(Runner, 'from_cfg', classmethod(started))
        with pytest.raises(SystemExit) as info:
            train_tool.main([IN1K_CFG, '--data-root', str(imagenet), '--work-dir',
                             str(tmp_path / 'wd')])
        msg = str(info.value)
        assert msg.startswith('error: Dataset check failed')
        assert f'val_dataloader: ImageNet: 1 of 1000 images checked cannot be read: {bad}' in msg
        assert 'Replace each with a good copy' in msg and '--resume' in msg
        assert 'do not skip images' in msg  # what validation does, and why
        assert '--data-root DIR' not in msg  # the data is where it should be
        assert not (tmp_path / 'wd').exists()
    finally:
        bad.write_bytes(good)
    assert find_problems(in1k_cfg(imagenet), ['train', 'val']) == []


def test_unreadable_training_images_are_sampled_not_all_read(imagenet, monkeypatch):
    """The training pipeline skips unreadable images (LoadImageOrSkip): the check reads the
    first images of each class folder only, and says so; MMDSNET_IMAGE_CHECK=full reads all."""
    from mmdsnet.datasets import image_folder
    read = []
    real = image_folder.unreadable_reason
    monkeypatch.setattr(image_folder, 'unreadable_reason', lambda p: read.append(p) or real(p))
    monkeypatch.setattr(image_folder, 'PER_CLASS_SAMPLE', 1)
    cfg = in1k_cfg(imagenet)
    extra = imagenet / 'train' / 'n00000000' / 'n00000000_9.JPEG'  # sorts after the first
    extra.write_bytes(b'<html>404</html>')
    logged = []
    monkeypatch.setattr(image_folder, '_log', lambda msg, level=20: logged.append((level, msg)))
    try:
        assert find_problems(cfg, ['train']) == []  # not read: the pipeline skips it anyway
        assert len(read) == 1000 and str(extra) not in read
        assert 'the first 1 of each class folder: the pipeline skips' in logged[-1][1]
        # one unreadable image in the sample: named in a warning, training goes on
        first = imagenet / 'train' / 'n00000005' / 'n00000005_0.JPEG'
        good = first.read_bytes()
        first.write_bytes(b'')
        try:
            assert find_problems(cfg, ['train']) == []
        finally:
            first.write_bytes(good)
        level, msg = logged[-1]
        assert level == 30 and '1 of 1000 ImageNet images checked' in msg and str(first) in msg
        monkeypatch.setenv(image_folder.IMAGE_CHECK_ENV, 'full')
        problems = find_problems(cfg, ['train'])
        assert len(problems) == 1 and str(extra) in problems[0]
        assert 'This pipeline skips them with a warning' in problems[0]
        monkeypatch.setenv(image_folder.IMAGE_CHECK_ENV, 'off')
        assert find_problems(cfg, ['train']) == []
        monkeypatch.setenv(image_folder.IMAGE_CHECK_ENV, 'sometimes')
        with pytest.raises(ValueError, match='use auto'):
            find_problems(cfg, ['train'])
    finally:
        extra.unlink()


def test_an_annotation_list_names_the_line_of_an_unreadable_image(tmp_path):
    root = tmp_path / 'imagenet'
    (root / 'val').mkdir(parents=True)
    (root / 'meta').mkdir()
    (root / 'val' / 'a.JPEG').write_bytes(_jpeg())
    (root / 'val' / 'b.JPEG').write_bytes(b'')  # an interrupted copy
    (root / 'meta' / 'val.txt').write_text('a.JPEG 0\nb.JPEG 1\n')
    with pytest.raises(DatasetCheckError) as info:
        check_datasets(in1k_cfg(root), ['val'])
    msg = str(info.value)
    assert f'{root / "val" / "b.JPEG"} (listed at {root / "meta" / "val.txt"}:2)' in msg
    assert str(root / 'val' / 'a.JPEG') not in msg


def test_a_split_larger_than_the_limit_is_sampled_evenly(tmp_path, monkeypatch):
    from mmdsnet.datasets import image_folder
    root = tmp_path / 'imagenet'
    (root / 'val').mkdir(parents=True)
    (root / 'meta').mkdir()
    data = _jpeg()
    for i in range(10):
        (root / 'val' / f'{i}.JPEG').write_bytes(data if i != 7 else b'junk')
    (root / 'meta' / 'val.txt').write_text(''.join(f'{i}.JPEG 0\n' for i in range(10)))
    monkeypatch.setattr(image_folder, 'FULL_LIMIT', 5)  # reads 0, 2, 4, 6, 8
    assert find_problems(in1k_cfg(root), ['val']) == []
    monkeypatch.setenv(image_folder.IMAGE_CHECK_ENV, 'full')
    assert '7.JPEG' in find_problems(in1k_cfg(root), ['val'])[0]


def test_a_format_only_opencv_reads_is_not_refused(tmp_path):
    from mmdsnet.datasets import image_folder
    cv2 = pytest.importorskip('cv2')
    path = tmp_path / 'x.pgm'
    assert cv2.imwrite(str(path), np.zeros((4, 4), np.uint8))
    assert image_folder.unreadable_reason(str(path)) is None
    (tmp_path / 'y.png').write_bytes(b'\x89PNG\r\n\x1a\n garbage')
    assert image_folder.unreadable_reason(str(tmp_path / 'y.png')) is not None


def test_fewer_class_folders_than_imagenet_classes_names_the_mismatch_and_the_fix(tmp_path):
    """The user's step: ImageNet's folder layout with a 100-class subset. Before, the check
    passed and mmpretrain stopped in its assertion when building the dataset."""
    root = make_imagenet(tmp_path / 'imagenet', classes=100)
    problems = find_problems(in1k_cfg(root), ['train'])
    assert len(problems) == 1
    p = problems[0]
    assert p.startswith(f'train_dataloader: ImageNet: {root / "train"}/ holds 100 class '
                        f'folders, but ImageNet has 1000 classes')
    assert "The number of subfolders (100) doesn't match" in p  # what mmpretrain would say
    assert str(root / 'meta' / 'train.txt') in p
    assert "classes=['n00000000', 'n00000001', 'n00000002', ...]" in p
    assert 'model.head.num_classes=100' in p
    # the fix it names: classes= on the dataset
    cfg = in1k_cfg(root)
    names = sorted(d.name for d in (root / 'train').iterdir())
    for split in ('train', 'val'):
        cfg[f'{split}_dataloader'].dataset.classes = names
    assert find_problems(cfg, ['train', 'val']) == []
    # a classes file (mmpretrain reads one name a line) that disagrees is named too
    (tmp_path / 'classes.txt').write_text('\n'.join(names[:10]))
    cfg.train_dataloader.dataset.classes = str(tmp_path / 'classes.txt')
    assert "the dataset's classes list 10 classes" in find_problems(cfg, ['train'])[0]


def test_header_check_of_50k_small_files_takes_seconds(tmp_path):
    """The cost the check adds to a start (ImageNet's val split is 50,000 files)."""
    pytest.importorskip('PIL')
    root = make_imagenet(tmp_path / 'imagenet', classes=1000, per_class=5)
    import time
    start = time.perf_counter()
    assert find_problems(in1k_cfg(root), ['val']) == []
    per_file = (time.perf_counter() - start) / 5000
    assert per_file < 1.2e-3, f'{per_file * 1e3:.2f} ms per file: 50k would take over a minute'


def test_an_image_broken_after_the_check_is_one_line_naming_it_and_resume(tmp_path):
    """mmcv's assertion from LoadImageFromFile (what validation hit after an epoch) ends the
    tools with one line: the file, the fix, --resume; other assertions pass through."""
    from mmcv.transforms import LoadImageFromFile

    from mmdsnet.engine.cli import explained_errors
    bad = tmp_path / 'n01484850_1.JPEG'
    bad.write_bytes(np.random.default_rng(2).integers(0, 256, 2048, np.uint8).tobytes())
    with pytest.raises(SystemExit) as info:
        with explained_errors():
            LoadImageFromFile()(dict(img_path=str(bad)))
    msg = str(info.value)
    assert msg.startswith(f'error: image {bad} cannot be read') and '\n' not in msg
    assert 'Replace it with a good copy' in msg and 'continues from its last checkpoint with ' \
        '--resume' in msg
    with pytest.raises(AssertionError, match='something else'):
        with explained_errors():
            raise AssertionError('something else')


def test_detection_docs_say_how_to_read_mmdets_test_tool_on_a_wrong_checkpoint():
    """mmdet's own test.py takes any checkpoint (strict=False) and reports mAP 0.0 with only
    mmengine's key warnings: docs/detection.md names our tool and those warnings, as printed."""
    import inspect

    import mmengine.runner.checkpoint
    import torch.nn.modules.module

    from mmdsnet.engine import hooks
    with open(osp.join(ROOT, 'docs', 'detection.md')) as f:
        doc = f.read()
    start = doc.index('**Test with `tools/test.py`, or read mmengine\'s warnings.**')
    section = doc[start:doc.index('\n## ', start)]
    assert 'python tools/test.py' in section and 'model tensors match' in section
    assert 'model tensors match' in inspect.getsource(hooks)
    sources = inspect.getsource(mmengine.runner.checkpoint) + \
        inspect.getsource(torch.nn.modules.module)
    for warning in ('The model and loaded state dict do not match exactly', 'size mismatch for',
                    'missing keys in source', 'unexpected key in source'):
        assert f'`{warning}' in section, warning  # named in the docs ...
        assert warning in sources, warning  # ... as mmengine / torch print it


def test_a_skipping_split_with_an_annotation_list_is_sampled(tmp_path, monkeypatch):
    """meta/train.txt of a training split that skips unreadable images: an even sample."""
    from mmdsnet.datasets import image_folder
    root = tmp_path / 'imagenet'
    (root / 'train').mkdir(parents=True)
    (root / 'meta').mkdir()
    data = _jpeg()
    for i in range(10):
        (root / 'train' / f'{i}.JPEG').write_bytes(data if i % 2 else b'')  # half are broken
    (root / 'meta' / 'train.txt').write_text(''.join(f'{i}.JPEG 0\n' for i in range(10)))
    monkeypatch.setattr(image_folder, 'SKIP_SAMPLE', 5)  # reads 0, 2, 4, 6, 8: all broken
    problems = find_problems(in1k_cfg(root), ['train'])
    assert len(problems) == 1
    assert '5 of 5 images checked cannot be read (an even sample of 5 of 10: the pipeline ' \
           'skips unreadable images; MMDSNET_IMAGE_CHECK=full reads all)' in problems[0]
    assert 'This pipeline skips them with a warning' in problems[0]
