"""Every variant of DESIGN.md's table builds from a config dict, in mmdet's and mmpretrain's
scopes, by plain and scoped type names, and trains a step at its expected output shapes."""
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
] + [(f'depth {d}', dict(type='DS2Net', depth=d, base_channels=Q), 32, (64, 128, 256, 512))
     for d in (26, 38, 77, 101, 152)]


@pytest.mark.parametrize('scope', ['mmdet', 'mmpretrain'])
@pytest.mark.parametrize('name, cfg, size, channels', VARIANTS, ids=[v[0] for v in VARIANTS])
def test_variant_builds_and_trains_in_scope(scope, name, cfg, size, channels):
    registry = pytest.importorskip(f'{scope}.registry').MODELS
    n = len(channels)
    cfg = dict(cfg, out_indices=tuple(range(n)))
    for type_name in (cfg['type'], f"mmdsnet.{cfg['type']}"):
        with DefaultScope.overwrite_default_scope(scope):
            model = registry.build(dict(cfg, type=type_name))
        assert type(model).__name__ == cfg['type']
    model.init_weights()
    model.train()
    feats = model(torch.randn(2, 3, size, size))
    assert tuple(f.shape[1] for f in feats) == channels == model.out_channels
    first = size // (4 if model.maxpool.__class__.__name__ == 'MaxPool2d' else 1)
    assert [f.shape[-1] for f in feats] == [max(first // 2**i, 1) for i in range(n)]
    sum(f.mean() for f in feats).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_paper_size_variants_have_the_papers_parameter_counts():
    from mmdsnet.models import DS2Net, DSNet

    def millions(m, classes):
        fc = m.stage_channels[-1] * classes + classes
        return round((sum(p.numel() for p in m.parameters()) + fc) / 1e6, 1)

    # Table 6 (CIFAR-100): DSWRN-28-10 36.5M; Table 7 (ImageNet): DSNet50 / DS2Net50 25.6M
    assert millions(DSNet(depth=28, block='basic', stem='cifar', stem_channels=16,
                          base_channels=160), 100) == 36.5
    assert millions(DSNet(depth=50), 1000) == 25.6 == millions(DS2Net(depth=50), 1000)


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
