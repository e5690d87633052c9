import pytest
import torch
from torch import nn

from mmdsnet.models import DenseShortcut, build_shortcut_norm, gn_groups


def test_dense_shortcut_matches_equation():
    sc = DenseShortcut(channels=8, num_sources=3)
    nn.init.normal_(sc.weight)
    res, ys = torch.randn(2, 8, 5, 5), [torch.randn(2, 8, 5, 5) for _ in range(3)]
    expected = res + sum(sc.weight[i].view(1, 8, 1, 1) * ys[i] for i in range(3))
    torch.testing.assert_close(sc(res, ys), expected)


def test_dense_shortcut_without_weights_is_a_plain_sum():
    sc = DenseShortcut(channels=4, num_sources=2, weight='none')
    assert sc.weight is None and not list(sc.parameters())
    res, ys = torch.randn(1, 4, 3, 3), [torch.randn(1, 4, 3, 3) for _ in range(2)]
    torch.testing.assert_close(sc(res, ys), res + ys[0] + ys[1])


def test_dense_shortcut_init_value_and_source_count():
    sc = DenseShortcut(channels=4, num_sources=2, init_value=0.5)
    assert torch.all(sc.weight == 0.5) and sc.weight.shape == (2, 4, 1, 1)
    with pytest.raises(ValueError, match='expected 2 sources, got 1'):
        sc(torch.zeros(1, 4, 2, 2), [torch.zeros(1, 4, 2, 2)])
    with pytest.raises(ValueError, match='shortcut_weight must be one of'):
        DenseShortcut(4, 1, weight='scalar')


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
    assert gn_groups(256) == 32
    assert gn_groups(16) == 16  # 0.25x DS2 inner shortcut: one channel per group
    assert gn_groups(104) == 26  # DS2Res2Net50: 26w x 4s
    assert gn_groups(48) == 24 and gn_groups(48, 16) == 16
    with pytest.raises(ValueError, match='num_groups=32 cannot split 48 channels'):
        gn_groups(48, 32)
    with pytest.raises(ValueError, match='unknown type'):
        build_shortcut_norm('WN', 8)
    with pytest.raises(TypeError, match='unexpected keys'):
        build_shortcut_norm(dict(type='LN', num_groups=4), 8)
