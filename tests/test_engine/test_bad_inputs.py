"""The bad inputs of docs/robustness.md: each gets a message that names the problem and the fix."""
import pytest
from mmengine.config import Config

import mmdsnet  # noqa: F401
from mmdsnet.engine import ConfigError, check_cfg


def test_unknown_backbone_argument_in_a_config_names_class_and_argument():
    registry = pytest.importorskip('mmpretrain.registry').MODELS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        with pytest.raises(TypeError, match=r"DSNet.*unexpected keyword argument 'dcn'"):
            registry.build(dict(type='DSNet', depth=50, dcn=dict(type='DCNv2')))


@pytest.mark.parametrize('type_name', ['mmdet.DSNet', 'mmpretrain.DS2Net'])
def test_wrongly_scoped_type_is_refused_with_the_fix(type_name):
    cfg = Config(dict(default_scope='mmdet', custom_imports=dict(imports=['mmdsnet']),
                      model=dict(type='FasterRCNN', backbone=dict(type=type_name))))
    name = type_name.split('.')[1]
    with pytest.raises(ConfigError, match=rf"model.backbone.type='{type_name}': {name} is "
                       rf"registered by mmdsnet.*Write type='mmdsnet.{name}' "
                       rf"\(or type='{name}'\)"):
        check_cfg(cfg)


def test_missing_default_scope_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"default_scope is None.*default_scope='mmpretrain'"):
        check_cfg(Config(dict(model=dict(type='ImageClassifier'))))


def test_missing_custom_imports_warns_about_upstream_tools():
    cfg = Config(dict(default_scope='mmpretrain',
                      model=dict(type='ImageClassifier', backbone=dict(type='DSNet'))))
    (warning, ) = check_cfg(cfg)
    assert "no custom_imports=dict(imports=['mmdsnet']" in warning
    cfg.custom_imports = dict(imports=['mmdsnet'], allow_failed_imports=False)
    assert check_cfg(cfg) == []


@pytest.mark.slow  # a tool run end to end
def test_train_tool_stops_on_a_wrongly_scoped_config(tmp_path):
    cfg = tmp_path / 'bad.py'
    cfg.write_text("default_scope = 'mmpretrain'\n"
                   "model = dict(type='ImageClassifier', backbone=dict(type='mmdet.DSNet'))\n")
    out = _train([str(cfg), '--work-dir', str(tmp_path / 'wd')], tmp_path)
    assert out.returncode == 1
    assert "error: " in out.stderr and "registered by mmdsnet, not by mmdet" in out.stderr
    assert 'Traceback' not in out.stderr


def _train(args, tmp_path):
    """``python tools/train.py ARGS`` from the repository, run in this process (exit status,
    stdout, stderr)."""
    from tiny_runs import call_tool
    return call_tool('train.py', *args)


@pytest.mark.slow
def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    from tiny_runs import write_cfg
    cfg = write_cfg(tmp_path, frozen=-1, with_cp=False, iters=2, interval=2)
    out = _train([cfg, '--work-dir', str(tmp_path / 'a')], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    ckpt = str(tmp_path / 'a' / 'iter_2.pth')
    # the same checkpoint fits its own architecture (one log line) ...
    out = _train([cfg, '--work-dir', str(tmp_path / 'b'), '--cfg-options', f'load_from={ckpt}',
                  'train_cfg.max_iters=1'], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'model tensors match' in out.stdout + out.stderr
    # ... and is refused by another (DSNet-38 at twice the width), before any training
    out = _train([cfg, '--work-dir', str(tmp_path / 'c'), '--cfg-options', f'load_from={ckpt}',
                  'model.backbone.depth=38', 'model.backbone.base_channels=16',
                  'model.head.in_channels=512'], tmp_path)
    assert out.returncode == 1
    assert 'fewer than 90%: it was saved from another architecture' in out.stderr
    assert 'with another shape' in out.stderr and 'Traceback' not in out.stderr


@pytest.mark.slow  # a tool run end to end
def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    from tiny_runs import write_cfg
    cfg = write_cfg(tmp_path, frozen=-1, with_cp=False, iters=1, interval=1)
    bogus = tmp_path / 'notes.pth'
    bogus.write_text('these are my notes, not weights')
    out = _train([cfg, '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
                  f'load_from={bogus}'], tmp_path)
    assert out.returncode == 1 and 'Traceback' not in out.stderr
    assert f'{bogus}' in out.stderr and 'is not a PyTorch checkpoint' in out.stderr


# --------------------------------------------------------------------------- COCO content
@pytest.fixture
def mmlog():
    """What MMEngine's current logger writes during the test (its console handler may point
    at a stream another test's capture owned)."""
    import io
    import logging

    from mmengine.logging import MMLogger
    logger, stream = MMLogger.get_current_instance(), io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


def _coco(tmp_path, anns, images=None, categories=None):
    import json
    images = images or [dict(id=1, file_name='a.png', width=100, height=80)]
    categories = categories or [dict(id=1, name='square'), dict(id=2, name='disc')]
    (tmp_path / 'img').mkdir(exist_ok=True)
    import cv2
    import numpy as np
    for im in images:
        cv2.imwrite(str(tmp_path / 'img' / im['file_name']),
                    np.full((im['height'], im['width'], 3), 128, np.uint8))
    ann_file = tmp_path / 'ann.json'
    ann_file.write_text(json.dumps(dict(images=images, annotations=anns,
                                        categories=categories)))
    return str(ann_file)


def _dataset(ann_file, tmp_path, pipeline=()):
    pytest.importorskip('mmdet')
    from mmdsnet.datasets.coco import Coco2014Dataset
    return Coco2014Dataset(ann_file=ann_file, data_prefix=dict(img=str(tmp_path / 'img') + '/'),
                           metainfo=dict(classes=('square', 'disc')), pipeline=list(pipeline),
                           filter_cfg=None)


def _box(i, bbox, cat=1, image_id=1):
    return dict(id=i, image_id=image_id, category_id=cat, bbox=bbox, area=bbox[2] * bbox[3],
                iscrowd=0)


def test_doubtful_coco_annotations_are_counted_in_a_warning(tmp_path, mmlog):
    anns = [_box(1, [10, 10, 20, 20]),                  # fine
            _box(2, [200, 10, 20, 20]),                 # outside the 100x80 image
            _box(3, [90, 70, 20, 20]),                  # partly outside
            _box(4, [10, 10, 20, 20], cat=91),          # unknown category
            _box(5, [10, 10, 0.5, 20]),                 # degenerate
            _box(6, [10, 10, 20, 20], image_id=7)]      # unknown image
    ds = _dataset(_coco(tmp_path, anns), tmp_path)
    text = mmlog.getvalue()
    assert '5 of 6 annotations are doubtful' in text
    for kind in ('1 with box outside its image (e.g. annotation ids [2]): skipped',
                 '1 with box partly outside its image (e.g. annotation ids [3]): kept unclipped',
                 '1 with unknown category id (e.g. annotation ids [4])',
                 '1 with degenerate box', '1 with unknown image id (e.g. annotation ids [6])'):
        assert kind in text
    # what mmdet kept: the fine box and the partly outside one
    assert len(ds.get_data_info(0)['instances']) == 2


def test_truncated_coco_json_is_named_with_its_position(tmp_path):
    from mmdsnet.datasets.coco_layout import CocoAnnotationError
    ann_file = _coco(tmp_path, [_box(1, [10, 10, 20, 20])])
    text = open(ann_file).read()
    open(ann_file, 'w').write(text[:len(text) // 2])
    with pytest.raises(CocoAnnotationError, match=r'ann.json is not valid JSON .*line 1, column '
                       r'\d+; byte \d+ of \d+\): a truncated download or copy'):
        _dataset(ann_file, tmp_path)


def test_corrupt_image_is_skipped_in_training_with_a_warning(tmp_path, mmlog):
    images = [dict(id=i, file_name=f'{i}.png', width=64, height=48) for i in (1, 2)]
    ds = _dataset(_coco(tmp_path, [_box(1, [5, 5, 20, 20], image_id=1),
                                   _box(2, [5, 5, 20, 20], image_id=2)], images=images),
                  tmp_path, pipeline=[dict(type='LoadImageOrSkip'),
                                      dict(type='LoadAnnotations', with_bbox=True)])
    (tmp_path / 'img' / '1.png').write_bytes(b'\x89PNG\r\n\x1a\n garbage')
    sample = ds[0]  # image 1 is corrupt: the dataset draws another one
    text = mmlog.getvalue()
    assert sample['img_path'].endswith('2.png') and sample['img'].shape == (48, 64, 3)
    assert 'skipping unreadable image' in text and '1.png' in text


# --------------------------------------------------------------------------- channels
def _classifier_cfg(**head):
    return Config(dict(
        default_scope='mmpretrain', custom_imports=dict(imports=['mmdsnet']),
        model=dict(type='ImageClassifier',
                   backbone=dict(type='mmdsnet.DS2Net', depth=26, base_channels=16),
                   neck=dict(type='GlobalAveragePooling'),
                   head=dict(type='LinearClsHead', num_classes=10, **head))))


def test_head_in_channels_that_differ_from_the_backbone_are_refused():
    assert check_cfg(_classifier_cfg(in_channels=512)) == []
    with pytest.raises(ConfigError, match=r"^model.head.in_channels=2048 but the backbone "
                       r"\(mmdsnet.DS2Net\) returns \[512\] channels \(its out_channels\): set "
                       r"model.head.in_channels=512$"):
        check_cfg(_classifier_cfg(in_channels=2048))


def test_fpn_in_channels_that_differ_from_the_backbone_are_refused():
    cfg = Config(dict(default_scope='mmdet', custom_imports=dict(imports=['mmdsnet']),
                      model=dict(type='FasterRCNN',
                                 backbone=dict(type='mmdsnet.DSNet', base_channels=16,
                                               out_indices=(0, 1, 2, 3)),
                                 neck=dict(type='FPN', in_channels=[256, 512, 1024, 2048]))))
    with pytest.raises(ConfigError, match=r"model.neck.in_channels=\[256, 512, 1024, 2048\] but "
                       r"the backbone \(mmdsnet.DSNet\) returns \[64, 128, 256, 512\] channels"):
        check_cfg(cfg)
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    assert check_cfg(cfg) == []


@pytest.mark.slow  # a tool run end to end
def test_bad_backbone_argument_in_a_config_is_one_line_from_the_tool(tmp_path):
    """tools/train.py: a head that does not fit, or a bad backbone argument, ends the run with
    one line before the Runner (or the dataset check) starts."""
    base = __file__.rsplit('/tests/', 1)[0] + '/configs/mmpretrain/dsnet/ds2net26-w0.25_1xb128' \
        '_cifar100.py'
    cfg = tmp_path / 'c.py'
    cfg.write_text(f"_base_ = [{base!r}]\nmodel = dict(head=dict(in_channels=2048))\n")
    out = _train([str(cfg), '--work-dir', str(tmp_path / 'wd')], tmp_path)
    assert out.returncode == 1 and 'Traceback' not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        'error: model.head.in_channels=2048 but the backbone (mmdsnet.DS2Net) returns [512] '
        'channels (its out_channels): set model.head.in_channels=512')
    out = _train([str(cfg), '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
                  'model.backbone.depth=42'], tmp_path)
    assert out.returncode == 1 and 'Traceback' not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(
        'error: model.backbone: depth=42 is not available for block=')
