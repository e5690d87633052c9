"""Every variant of docs/design.md's table builds from a config dict (in mmdet's or mmpretrain's
scope, by plain and scoped type names) and trains a step at its expected output shapes."""
import subprocess
import sys

import pytest
import torch
from mmengine.registry import DefaultScope

import mmdsnet  # noqa: F401  (what custom_imports=dict(imports=['mmdsnet']) does)

# (name, backbone cfg, input size, expected channels of the 4 (or 3) stage outputs)
Q = 16  # 0.25x width keeps the test fast; widths are covered by their own rows
VARIANTS = [
    ('ResNet (identity)', dict(type='DSNet', shortcut='identity', base_channels=Q), 32,
     (64, 128, 256, 512)),
    ('ResNet-dense (Eq. 13)', dict(type='DSNet', shortcut='dense_identity', base_channels=Q),
     32, (64, 128, 256, 512)),
    ('DSNet-a', dict(type='DSNet', shortcut='dense_x', base_channels=Q), 32, (64, 128, 256, 512)),
    ('DSNet', dict(type='DSNet', base_channels=Q), 32, (64, 128, 256, 512)),
    ('DS2Net', dict(type='DS2Net', base_channels=Q), 32, (64, 128, 256, 512)),
    ('norm LN', dict(type='DSNet', base_channels=Q, shortcut_norm_cfg='LN'), 32,
     (64, 128, 256, 512)),
    ('norm IN', dict(type='DSNet', base_channels=Q, shortcut_norm_cfg='IN'), 32,
     (64, 128, 256, 512)),
    ('norm BN', dict(type='DSNet', base_channels=Q, shortcut_norm_cfg='BN'), 32,
     (64, 128, 256, 512)),
    ('norm none', dict(type='DSNet', base_channels=Q, shortcut_norm_cfg=None), 32,
     (64, 128, 256, 512)),
    ('weight none', dict(type='DSNet', base_channels=Q, shortcut_weight='none'), 32,
     (64, 128, 256, 512)),
    ('DSNeXt50 32x4d 0.25x', dict(type='DSNet', base_channels=Q,
                                  block_cfg=dict(groups=32, width_per_group=4)), 32,
     (64, 128, 256, 512)),
    ('DS2NeXt50 32x4d 0.25x', dict(type='DS2Net', base_channels=Q,
                                   block_cfg=dict(groups=32, width_per_group=4)), 32,
     (64, 128, 256, 512)),
    ('DSNeXt-29 6x64d (CIFAR, narrowed)', dict(type='DSNet', depth=29, stem='cifar',
                                               base_channels=Q, block_cfg=dict(
                                                   groups=6, width_per_group=64)), 16,
     (64, 128, 256)),
    ('DS2Res2Net50 26w4s', dict(type='DS2Net', block='bottle2neck', base_channels=Q,
                                block_cfg=dict(base_width=26 * 4, scales=4)), 32,
     (64, 128, 256, 512)),
    ('DSWRN-28 (CIFAR basic, narrowed)', dict(type='DSNet', block='basic', depth=28,
                                              stem='cifar', stem_channels=16, base_channels=32),
     16, (32, 64, 128)),
    ('width 0.5x', dict(type='DS2Net', base_channels=32), 32, (128, 256, 512, 1024)),
    ('width 0.25x wide (WRN)', dict(type='DS2Net', base_channels=Q,
                                    block_cfg=dict(width_per_group=128)), 32,
     (64, 128, 256, 512)),
    ('CIFAR stem', dict(type='DS2Net', stem='cifar', base_channels=Q), 16, (64, 128, 256, 512)),
    ('depth 26', dict(type='DS2Net', depth=26, base_channels=Q), 32, (64, 128, 256, 512)),
]
SCOPES = ['mmdet', 'mmpretrain']


@pytest.mark.parametrize('name, cfg, size, channels', VARIANTS, ids=[v[0] for v in VARIANTS])
def test_variant_builds_and_trains(name, cfg, size, channels):
    """Each variant once, built in one of the two scopes (alternately)."""
    scope = SCOPES[[v[0] for v in VARIANTS].index(name) % 2]
    registry = pytest.importorskip(f'{scope}.registry').MODELS
    n = len(channels)
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(dict(cfg, out_indices=tuple(range(n))))
    assert type(model).__name__ == cfg['type']
    model.init_weights()
    model.train()
    feats = model(torch.randn(2, 3, size, size))
    assert tuple(f.shape[1] for f in feats) == channels == model.out_channels
    first = size // (4 if model.maxpool.__class__.__name__ == 'MaxPool2d' else 1)
    assert [f.shape[-1] for f in feats] == [max(first // 2**i, 1) for i in range(n)]
    sum(f.mean() for f in feats).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize('scope', SCOPES)
def test_plain_and_scoped_type_names_build_in_scope(scope):
    registry = pytest.importorskip(f'{scope}.registry').MODELS
    for cls in ('DSNet', 'DS2Net'):
        for type_name in (cls, f'mmdsnet.{cls}'):
            with DefaultScope.overwrite_default_scope(scope):
                model = registry.build(dict(type=type_name, depth=26, base_channels=8))
            assert type(model).__name__ == cls


@pytest.mark.parametrize('block, depths', [('bottleneck', (26, 29, 38, 50, 77, 101, 152)),
                                           ('basic', (18, 28, 34)),
                                           ('bottle2neck', (50, 101, 152))])
def test_depth_is_the_number_of_weighted_layers(block, depths):
    """The name's depth counts the stem conv, the convs of every block (not the projections)
    and the classifier, except WRN-28's 6n + 4; built on the meta device (no memory, no init)."""
    from mmdsnet.models import DSNet
    per_block = {'basic': 2, 'bottleneck': 3, 'bottle2neck': 3}[block]
    for depth in depths:
        with torch.device('meta'):
            model = DSNet(depth=depth, block=block, out_indices=(-1, ))
        blocks = [m for n, m in model.named_modules()
                  if n.startswith('layer') and n.count('.') == 1 and hasattr(m, 'conv1')]
        extra = 4 if (block, depth) == ('basic', 28) else 2
        assert per_block * len(blocks) + extra == depth, (block, depth)


def test_import_mmdsnet_does_not_import_mmdet_or_mmpretrain():
    code = ('import sys, mmdsnet, mmdsnet.models; '
            'bad = [m for m in ("mmdet", "mmpretrain") if m in sys.modules]; '
            'assert not bad, bad; print("clean")')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0 and 'clean' in out.stdout, out.stderr


@pytest.mark.parametrize('block', ['bottleneck', 'bottle2neck'])
def test_strided_inner_shortcut_choice(block):
    """DS2 on a stride-2 3x3 conv: 'skip' (the default, the paper's parameter count) or 'pool'
    (N of the 2x2-averaged input), a config choice (docs/design.md)."""
    from mmdsnet.models import DS2Net
    kw = dict(depth=50, block=block, base_channels=8, stem='cifar', out_indices=(3, ))
    skip, pool = DS2Net(**kw), DS2Net(**kw, block_cfg=dict(strided_inner='pool'))
    strided = [f'layer{i}.0' for i in (2, 3, 4)]
    for name in strided:
        blk = dict(skip.named_modules())[name]
        assert blk.stride == 2 and blk.inner_aggregation is None
        assert dict(pool.named_modules())[name].inner_aggregation is not None
    extra = sum(p.numel() for p in pool.parameters()) - sum(p.numel() for p in skip.parameters())
    widths = [dict(pool.named_modules())[n].inner_aggregation.channels for n in strided]
    assert extra == sum(widths)  # one W vector per strided block, nothing else
    x = torch.randn(2, 3, 15, 13)  # odd sizes: the pooled source matches the strided conv
    out = pool(x)[0]
    out.mean().backward()
    w = dict(pool.named_parameters())['layer3.0.inner_aggregation.shortcuts.0.weight']
    assert w.grad is not None and w.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"strided_inner must be one of \('skip', 'pool'\)"):
        DS2Net(**kw, block_cfg=dict(strided_inner='avg'))
