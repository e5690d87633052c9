"""Bad arguments fail at construction, naming the argument and the allowed values."""
import logging

import pytest

from mmdsnet.models import DS2Net, DSNet

CASES = [
    (dict(depth=42), ValueError,
     r'depth=42 is not available for block=.bottleneck.; choose one of '
     r'\[26, 29, 38, 50, 77, 101, 152\]'),
    (dict(depth=50, block='basic'), ValueError, r'depth=50 is not available for block=.basic.'),
    (dict(block='dense'), ValueError, r"block must be one of \['basic', 'bottle2neck', "),
    (dict(shortcut='concat'), ValueError, r"shortcut must be one of \('identity', "),
    (dict(shortcut_norm_cfg='WN'), ValueError, r"shortcut_norm_cfg: unknown type 'WN'"),
    (dict(shortcut_weight='scalar'), ValueError, r"shortcut_weight must be one of"),
    (dict(stem='deep'), ValueError, r"stem must be one of \('imagenet', 'cifar'\)"),
    (dict(out_indices=(0, 4)), ValueError, r'out_indices \(0, 4\): 4 is out of range for 4 '
     r'stages; use values in \[0, 3\]'),
    (dict(depth=29, out_indices=(3, )), ValueError, r'3 is out of range for 3 stages'),
    (dict(out_indices=(1, 1)), ValueError, r'repeats a stage'),
    (dict(frozen_stages=5), ValueError, r'frozen_stages must be in \[-1, 4\]'),
    # 24 groups do not divide the 128-channel stage-1 output at 0.5x
    (dict(base_channels=32, shortcut_norm_cfg=dict(type='GN', num_groups=24)), ValueError,
     r'GroupNorm with num_groups=24 cannot split 128 channels'),
    # DS2 at base 48: the 48-channel 3x3 input cannot take 32 groups
    (dict(base_channels=48, block_cfg=dict(inner_shortcut=True),
          shortcut_norm_cfg=dict(type='GN', num_groups=32)), ValueError,
     r'num_groups=32 cannot split 48 channels'),
    (dict(block='basic', depth=18, block_cfg=dict(inner_shortcut=True)), ValueError,
     r'inner_shortcut \(DS2\) needs a bottleneck 3x3 conv; block="basic" has none'),
    (dict(block_cfg=dict(cardinality=32)), TypeError,
     r"block_cfg \{'cardinality': 32\} does not fit block='bottleneck' \(DSBottleneck\)"),
    (dict(block='bottle2neck', block_cfg=dict(scales=1)), ValueError, r'scales must be >= 2'),
    (dict(base_channels=0), ValueError, r'base_channels must be positive'),
    # every argument is validated in every mode, also where the mode does not use it
    (dict(block='basic', depth=18, block_cfg=dict(widht_per_group=4)), TypeError,
     r"block_cfg \{'widht_per_group': 4\} does not fit block='basic'"),
    (dict(shortcut='identity', shortcut_norm_cfg='WN'), ValueError,
     r"shortcut_norm_cfg: unknown type 'WN'"),
    (dict(shortcut='identity', shortcut_weight='scalar'), ValueError,
     r'shortcut_weight must be one of'),
    (dict(shortcut='dense_identity', shortcut_init='ones'), ValueError,
     r"shortcut_init must be a number or one of \('uniform', 'last'\), got 'ones'"),
    (dict(shortcut_norm_cfg=dict(type='LN', num_groups=4)), TypeError,
     r"unexpected keys \['num_groups'\] for 'LN'"),
]


@pytest.mark.parametrize('kwargs, exc, match', CASES, ids=[str(c[0]) for c in CASES])
def test_bad_arguments_raise_clear_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        DSNet(**kwargs)


def test_unknown_keyword_names_itself():
    with pytest.raises(TypeError, match='dcn'):
        DSNet(dcn=dict(type='DCNv2'))


@pytest.mark.parametrize('mode', ['identity', 'dense_identity'])
def test_arguments_a_mode_ignores_are_warned_about(mode, monkeypatch):
    from mmdsnet.models.backbones import dsnet as dsnet_mod
    lines = []
    monkeypatch.setattr(dsnet_mod, 'print_log',
                        lambda msg, *a, **k: lines.append((msg, k.get('level'))))
    DSNet(depth=26, shortcut=mode, shortcut_norm_cfg='BN', shortcut_init=0.5)
    warned = [m for m, level in lines if level == logging.WARNING]
    assert len(warned) == 1 and 'has no effect' in warned[0] and 'shortcut_init' in warned[0]
    lines.clear()
    DSNet(depth=26, shortcut=mode)  # the defaults: nothing to say
    DS2Net(depth=26, shortcut=mode, shortcut_norm_cfg='BN')  # DS2's inner shortcuts use them
    assert not [m for m, level in lines if level == logging.WARNING]
