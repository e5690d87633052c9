"""The models tools/analysis/benchmark.py measures: its zoo of names, config files, and the
``NAME[:key=value,...][@impl]`` model spec."""
import ast
import os
from typing import Optional, Tuple

import torch
from torch import nn


def _dsnet(**kw):
    from mmdsnet.models import DS2Net, DSNet
    return (DS2Net if kw.pop('ds2', False) else DSNet)(**kw)


def _mmpretrain(name, **kw):
    from mmpretrain.models import DenseNet, ResNet
    return {'ResNet': ResNet, 'DenseNet': DenseNet}[name](**kw)


def _mmdet_resnet50(out_indices=(3, ), norm_eval=False):
    from mmdet.models.backbones import ResNet  # imports mmcv.ops: needs mmcv's compiled ops

    # norm_eval=False: every model here trains its BatchNorms. mmdet's own default (True, for
    # detection fine-tuning) keeps them in eval mode, which alone makes a training step ~7% cheaper
    # on a CPU (ResNet50-mmdet-normeval; docs/performance.md).
    return ResNet(depth=50, out_indices=out_indices, norm_eval=norm_eval)


class _TorchvisionResNet50(nn.Module):
    """torchvision's ResNet50 up to layer4 (avgpool and fc are ours), returning the outputs of
    the stages in ``out_indices``."""

    def __init__(self, out_indices=(3, )):
        super().__init__()
        import torchvision
        net = torchvision.models.resnet50()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.out_indices = tuple(out_indices)

    def forward(self, x):
        x, outs = self.stem(x), []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


ZOO = {  # name -> constructor; keyword arguments (out_indices) go to the backbone
    'ResNet50': lambda **kw: _dsnet(depth=50, shortcut='identity', **kw),  # our identity mode
    'ResNet152': lambda **kw: _dsnet(depth=152, shortcut='identity', **kw),
    'DSNet50': lambda **kw: _dsnet(depth=50, **kw),
    'DS2Net50': lambda **kw: _dsnet(depth=50, ds2=True, **kw),
    'DSNet101': lambda **kw: _dsnet(depth=101, **kw),
    'DS2Net101': lambda **kw: _dsnet(depth=101, ds2=True, **kw),
    'ResNet50-mmdet': _mmdet_resnet50,
    'ResNet50-mmdet-normeval': lambda **kw: _mmdet_resnet50(norm_eval=True, **kw),  # its default
    'ResNet50-mmpretrain': lambda **kw: _mmpretrain('ResNet', depth=50, **kw),
    'ResNet50-torchvision': _TorchvisionResNet50,
    # DenseNet-264 (Huang et al.): growth 32, blocks 6-12-64-48; not in mmpretrain's arch table
    'DenseNet264': lambda **kw: _mmpretrain(
        'DenseNet', arch=dict(growth_rate=32, depths=[6, 12, 64, 48], init_channels=64), **kw),
}


class Classifier(nn.Module):
    """backbone -> last feature map -> global average pool -> linear head (1000 classes)."""

    def __init__(self, backbone: nn.Module, channels: int, num_classes: int = 1000):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x):
        feat = self.backbone(x)
        feat = feat[-1] if isinstance(feat, (tuple, list)) else feat
        return self.head(feat.mean((2, 3)))


def parse_spec(spec: str) -> Tuple[str, dict, str]:
    """``'NAME[:key=value,...][@impl]'`` -> ``(NAME, {key: value}, impl)``."""
    rest, _, impl = spec.partition('@')
    name, _, options = rest.partition(':')
    if impl not in ('', 'aten', 'dispatch', 'opaque', 'triton-launch'):
        raise SystemExit(f'unknown implementation {impl!r} in {spec!r}: only @aten, @dispatch, '
                         f'@opaque and @triton-launch')
    try:
        call = ast.parse(f'dict({options})', mode='eval').body
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        if call.args or None in kwargs:
            raise ValueError
    except (SyntaxError, ValueError):
        raise SystemExit(f'bad options {options!r} in {spec!r}: write key=value pairs of Python '
                         f"literals, e.g. DSNet50:shortcut_init=1.0,aggregation_impl='reference'"
                         ) from None
    return name, kwargs, impl


def build(name: str, out_indices=None, backbone_only: bool = False,
          options: Optional[dict] = None) -> nn.Module:
    kw = {} if out_indices is None else dict(out_indices=tuple(out_indices))
    kw.update(options or {})
    if name in ZOO:
        backbone = ZOO[name](**kw)
    elif name.endswith('.py') and os.path.exists(name):
        from mmengine.config import Config
        from mmengine.registry import MODELS, DefaultScope, init_default_scope

        import mmdsnet  # noqa: F401
        cfg = Config.fromfile(name)
        bcfg = cfg.model.backbone if 'backbone' in cfg.model else cfg.model
        bcfg.pop('init_cfg', None)  # no checkpoint downloads: timing does not need weights
        bcfg.update(kw)
        scope = cfg.get('default_scope', 'mmdsnet')
        init_default_scope(scope)
        with DefaultScope.overwrite_default_scope(scope):
            backbone = MODELS.build(bcfg)
    else:
        raise SystemExit(f'unknown model {name!r}: use one of {sorted(ZOO)} or a config file path')
    # No init_weights(): timing and memory do not depend on the values, and MMEngine's
    # per-parameter init report would flood the log.
    if backbone_only:
        return backbone
    with torch.no_grad():
        backbone.eval()  # (mmpretrain's ResNet.train() returns None: no chaining)
        feat = backbone(torch.zeros(1, 3, 64, 64))
    feat = feat[-1] if isinstance(feat, (tuple, list)) else feat
    return Classifier(backbone, feat.shape[1])

