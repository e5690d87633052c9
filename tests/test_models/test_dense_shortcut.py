import pytest
import torch
from torch import nn

from mmdsnet.models import DenseShortcut, build_shortcut_norm, gn_groups
from mmdsnet.models.layers import init_values


def test_dense_shortcut_holds_one_weight_per_source():
    sc = DenseShortcut(channels=8, num_sources=3)
    # the default initial W is 'uniform': 1/l for each of the l sources
    assert sc.weight.shape == (3, 8, 1, 1) and torch.allclose(sc.weight, torch.tensor(1 / 3))
    none = DenseShortcut(channels=4, num_sources=2, weight='none')
    assert none.weight is None and not list(none.parameters())
    with pytest.raises(ValueError, match='shortcut_weight must be one of'):
        DenseShortcut(4, 1, weight='scalar')


@pytest.mark.parametrize('init, expected', [
    (0.5, [0.5, 0.5, 0.5]), (2, [2.0, 2.0, 2.0]),
    ('uniform', [1 / 3, 1 / 3, 1 / 3]), ('last', [0.0, 0.0, 1.0])])
def test_shortcut_init_values(init, expected):
    sc = DenseShortcut(channels=4, num_sources=3, init=init)
    torch.testing.assert_close(sc.weight[:, :, 0, 0],
                               torch.tensor(expected).view(3, 1).expand(3, 4))
    assert init_values(init, 3).tolist() == pytest.approx(expected)


def test_unknown_shortcut_init_names_the_allowed_values():
    with pytest.raises(ValueError, match=r"one of \('uniform', 'last'\), got 'ones'"):
        DenseShortcut(4, 2, init='ones')
    with pytest.raises(TypeError, match='shortcut_init must be a number'):
        DenseShortcut(4, 2, init=None)


@pytest.mark.parametrize('cfg, cls, groups', [
    ('GN', nn.GroupNorm, 32), (dict(type='GN', num_groups=8), nn.GroupNorm, 8),
    ('LN', nn.GroupNorm, 1), ('IN', nn.GroupNorm, 64), ('BN', nn.BatchNorm2d, None),
    (None, nn.Identity, None), ('none', nn.Identity, None)])
def test_shortcut_norms_are_parameter_free(cfg, cls, groups):
    norm = build_shortcut_norm(cfg, 64)
    assert type(norm) is cls
    assert not list(norm.parameters())  # no affine: paper 3.3
    if groups is not None:
        assert norm.num_groups == groups
    y = torch.randn(4, 64, 3, 3) * 5 + 3
    out = norm.train()(y)
    if cls is not nn.Identity:  # normalized: zero mean, unit variance over its groups
        assert out.mean().abs() < 1e-4
        assert (out.var(unbiased=False) - 1).abs() < 1e-2


def test_gn_group_rule():
    assert gn_groups(256) == 32 and gn_groups(64) == 32
    # narrow DS2 inner shortcuts: never one channel per group (that would be IN, Table 1's worst)
    assert gn_groups(16) == 8 and gn_groups(32) == 16
    assert gn_groups(104) == 26 and gn_groups(208) == 26  # DS2Res2Net50: 26w x 4s
    assert gn_groups(48) == 24 and gn_groups(48, 16) == 16
    assert gn_groups(2) == 1 and gn_groups(1) == 1
    for c in range(2, 600):
        g = gn_groups(c)
        assert c % g == 0 and g <= 32 and c // g >= 2
    with pytest.raises(ValueError, match='num_groups=32 cannot split 48 channels'):
        gn_groups(48, 32)
    with pytest.raises(ValueError, match='unknown type'):
        build_shortcut_norm('WN', 8)
    with pytest.raises(TypeError, match='unexpected keys'):
        build_shortcut_norm(dict(type='LN', num_groups=4), 8)
