"""Detection configs (Table 8 rows, minival and SyncBN variants, the demo) parse, build and train.

Skipped, with the reason, when mmdet or mmcv's compiled ops are missing (mmdsnet[det]).
"""
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmcv.ops', reason='detection needs mmcv built with its ops (mmdsnet[det])')
pytest.importorskip('mmdet', reason='detection needs mmdet (mmdsnet[det])')

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.utils import import_modules_from_strings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TABLE8 = {  # short config name -> (backbone type, shortcut, checkpoint)
    'faster_rcnn_r50_coco.py': ('mmdsnet.DSNet', 'identity', 'checkpoints/resnet50_in1k.pth'),
    'faster_rcnn_dsnet50_coco.py': ('mmdsnet.DSNet', 'dense', 'checkpoints/dsnet50_in1k.pth'),
    'faster_rcnn_ds2net50_coco.py': ('mmdsnet.DS2Net', 'dense', 'checkpoints/ds2net50_in1k.pth'),
}
DET_CONFIGS = sorted(
    [ROOT / 'configs' / n for n in TABLE8]
    + list((ROOT / 'configs' / 'mmdet' / 'faster_rcnn').glob('*.py'))
    + list((ROOT / 'configs' / 'demo').glob('*.py')))
NARROW = dict(base_channels=16)  # 0.25x: stage outputs 64..512 channels
NARROW_NECK = [64, 128, 256, 512]


def _load(path) -> Config:
    cfg = Config.fromfile(str(path))
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return cfg


def _build(cfg):
    from mmdet.registry import MODELS
    return MODELS.build(cfg.model)


def test_every_config_is_found():
    assert len(DET_CONFIGS) >= 3 + 7 + 1, [p.name for p in DET_CONFIGS]


@pytest.mark.parametrize('path', DET_CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_builds(path):
    cfg = _load(path)
    backbone = cfg.model.backbone
    assert 'style' not in backbone and 'num_stages' not in backbone  # _delete_ worked
    assert tuple(backbone.out_indices) == (0, 1, 2, 3)
    cfg.model.backbone.init_cfg = None  # no checkpoint needed to build
    model = _build(cfg)
    model.init_weights()
    assert f'mmdsnet.{type(model.backbone).__name__}' == backbone.type
    assert list(cfg.model.neck.in_channels) == list(model.backbone.out_channels)
    model.eval()
    with torch.no_grad():  # predict: backbone + FPN + RPN + RoI head + NMS, 64 px
        preds = model(**_batch(model, size=64, n=1, training=False), mode='predict')
    assert preds[0].pred_instances.bboxes.shape[-1] == 4


@pytest.mark.parametrize('name', sorted(TABLE8))
def test_table8_rows(name):
    """The three rows share the detector, data and schedule; only the backbone differs."""
    cfg = _load(ROOT / 'configs' / name)
    kind, shortcut, ckpt = TABLE8[name]
    bb = cfg.model.backbone
    assert bb.type == kind and bb.depth == 50 and bb.get('shortcut', 'dense') == shortcut
    assert bb.frozen_stages == 1 and bb.norm_eval is True
    assert bb.norm_cfg == dict(type='BN', requires_grad=True)
    assert bb.init_cfg == dict(type='Pretrained', prefix='backbone.', checkpoint=ckpt)
    assert cfg.model.type == 'FasterRCNN' and cfg.model.neck.type == 'FPN'
    assert cfg.model.roi_head.bbox_head.num_classes == 80
    # COCO 2014: train2014 / val2014 ("validation" of the paper), CocoMetric on the same json.
    train, val = cfg.train_dataloader.dataset, cfg.val_dataloader.dataset
    assert train.type == val.type == 'mmdsnet.Coco2014Dataset'
    assert train.ann_file.endswith('instances_train2014.json')
    assert train.data_prefix.img == 'train2014/'
    assert val.ann_file.endswith('instances_val2014.json') and val.data_prefix.img == 'val2014/'
    assert cfg.val_evaluator.type == 'CocoMetric' and cfg.val_evaluator.metric == 'bbox'
    assert cfg.val_evaluator.ann_file == val.data_root + val.ann_file
    # 5 epochs, SGD 0.02 for a total batch of 16, one drop after epoch 4.
    assert cfg.train_cfg.max_epochs == 5
    assert cfg.optim_wrapper.optimizer.type == 'SGD' and cfg.optim_wrapper.optimizer.lr == 0.02
    assert cfg.auto_scale_lr.base_batch_size == 16 and cfg.auto_scale_lr.enable is True
    step = [s for s in cfg.param_scheduler if s.type == 'MultiStepLR'][0]
    assert step.milestones == [4] and step.end == 5
    assert 'mmdsnet' in cfg.custom_imports.imports
    assert cfg.custom_imports.allow_failed_imports is False


@pytest.mark.parametrize('name', ['r50', 'dsnet50', 'ds2net50'])
def test_minival_variant(name):
    cfg = _load(ROOT / f'configs/mmdet/faster_rcnn/faster-rcnn_{name}_fpn_5e_coco2014-minival.py')
    val = cfg.val_dataloader.dataset
    assert val.ann_file == 'annotations/instances_minival2014.json'
    assert val.data_prefix.img == 'val2014/'  # minival images are val2014 files
    assert cfg.val_evaluator.ann_file == 'data/coco/annotations/instances_minival2014.json'
    assert cfg.test_evaluator.ann_file == cfg.val_evaluator.ann_file
    assert cfg.train_dataloader.dataset.ann_file.endswith('instances_train2014.json')
    assert cfg.model.backbone.init_cfg.checkpoint.endswith('_in1k.pth')


def test_syncbn_variant():
    cfg = _load(ROOT / 'configs/mmdet/faster_rcnn/faster-rcnn_ds2net50_fpn_syncbn_5e_coco2014.py')
    assert cfg.model.backbone.norm_cfg.type == 'SyncBN'
    assert cfg.model.backbone.norm_eval is False
    assert cfg.model.backbone.type == 'mmdsnet.DS2Net'


def _narrow_detector(name: str):
    cfg = _load(ROOT / 'configs' / name)
    cfg.model.backbone.update(init_cfg=None, **NARROW)
    cfg.model.neck.in_channels = NARROW_NECK
    model = _build(cfg)
    model.init_weights()
    return model


def _batch(model, size=96, n=2, training=True):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(n):
        inputs.append(torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8))
        s = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                        scale_factor=(1.0, 1.0), pad_shape=(size, size)))
        s.gt_instances = InstanceData(
            bboxes=torch.tensor([[10., 12., 50., 60.], [30., 20., 62., 58.]]),
            labels=torch.tensor([0, 2]))
        samples.append(s)
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training)


@pytest.mark.parametrize('name', sorted(TABLE8))
def test_forward_backward_narrow(name):
    """Loss forward and backward through a 0.25x-wide backbone of each Table 8 row."""
    torch.manual_seed(0)
    model = _narrow_detector(name)
    model.train()
    losses = model(**_batch(model), mode='loss')
    assert {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'} <= set(losses)
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    bb = model.backbone
    # frozen_stages=1: the stem and stage 1 get no gradient, later stages do.
    assert all(p.grad is None for p in bb.conv1.parameters())
    assert all(p.grad is None for p in bb.layer1.parameters())
    # (zero_init_residual zeroes each bn3 gamma, so the gammas and projections get gradient
    # first; the convs before them only after one step.)
    assert bb.layer2.block(0).downsample[0].weight.grad.abs().sum() > 0
    assert bb.layer4.block(1).bn3.weight.grad.abs().sum() > 0
    if TABLE8[name][1] == 'dense':  # the dense shortcut weights W of stage 2 learn
        assert bb.layer2.aggregation.shortcuts[0].weight.grad.abs().sum() > 0
    if TABLE8[name][0] == 'mmdsnet.DS2Net':
        assert any('inner_aggregation' in n and p.grad is not None
                   for n, p in bb.layer3.named_parameters())
    # norm_eval: BatchNorm stays in eval mode while the detector trains.
    assert not bb.layer3.block(0).bn1.training


@pytest.mark.parametrize('det, cls', [
    ('faster_rcnn_r50_coco.py', 'resnet/resnet50_4xb32_in1k.py'),
    ('faster_rcnn_dsnet50_coco.py', 'dsnet/dsnet50_4xb32_in1k.py'),
    ('faster_rcnn_ds2net50_coco.py', 'dsnet/ds2net50_4xb32_in1k.py'),
])
def test_imagenet_checkpoint_fits_the_detector_backbone(det, cls):
    """Every backbone tensor of the ImageNet classifier config matches the detection row's
    backbone, key for key and shape for shape: its checkpoint will log 'loaded M/M'."""
    pytest.importorskip('mmpretrain')
    cls_path = ROOT / 'configs' / 'mmpretrain' / cls
    if not cls_path.exists():
        pytest.skip(f'{cls_path} not in this checkout')
    cls_cfg = Config.fromfile(str(cls_path))
    if cls_cfg.get('custom_imports'):
        import_modules_from_strings(**cls_cfg.custom_imports)
    from mmpretrain.registry import MODELS as CLS_MODELS

    import mmdsnet  # noqa: F401  (the classification configs may use type='mmdsnet.DSNet')
    init_default_scope('mmpretrain')
    cls_cfg.model.backbone.init_cfg = None
    classifier = CLS_MODELS.build(cls_cfg.model)
    source = {k[len('backbone.'):]: tuple(v.shape) for k, v in classifier.state_dict().items()
              if k.startswith('backbone.')}
    det_cfg = _load(ROOT / 'configs' / det)
    det_cfg.model.backbone.init_cfg = None
    from mmdet.registry import MODELS
    backbone = MODELS.build(det_cfg.model.backbone)
    target = {k: tuple(v.shape) for k, v in backbone.state_dict().items()}
    assert source == target


def _mmdet_base(rel: str) -> dict:
    """One of mmdet's own base configs, read from the installed package (no `mmdet::`)."""
    import mmdet
    return Config.fromfile(str(Path(mmdet.__file__).parent / '.mim' / 'configs' / '_base_' / rel)
                           ).to_dict()


def test_base_detector_mirrors_mmdet():
    """Our Faster R-CNN base is mmdet 3.3.0's with only the backbone replaced, and our runtime
    is mmdet's plus custom_imports (their headers say so): this fails when they drift apart."""
    import mmdet
    assert mmdet.__version__ == '3.3.0', 're-check the mirrored bases against the new mmdet'
    base = ROOT / 'configs' / 'mmdet' / '_base_'
    ours = Config.fromfile(str(base / 'models' / 'faster-rcnn_dsnet50_fpn.py')).to_dict()
    theirs = _mmdet_base('models/faster-rcnn_r50_fpn.py')
    assert ours['model'].pop('backbone')['type'] == 'mmdsnet.DSNet'
    theirs['model'].pop('backbone')
    assert ours == theirs
    ours = Config.fromfile(str(base / 'default_runtime.py')).to_dict()
    assert ours.pop('custom_imports') == dict(imports=['mmdsnet'], allow_failed_imports=False)
    assert ours == _mmdet_base('default_runtime.py')
