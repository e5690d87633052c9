"""The dense weighted normalized shortcut ``DS(Y_i) = W^i * N(Y_i)`` (paper Eq. 10-12)."""
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

NORM_TYPES = ('GN', 'LN', 'IN', 'BN')
WEIGHT_TYPES = ('channel', 'none')
DEFAULT_GN_GROUPS = 32

NormCfg = Optional[Union[str, dict]]


def gn_groups(channels: int, num_groups: Optional[int] = None) -> int:
    """Group count of the shortcut GroupNorm on ``channels`` channels.

    Rule: without an explicit ``num_groups``, the largest divisor of ``channels`` that is at most
    32 (32 at every power-of-two width from 32 channels up; 16 for the 16-channel DS2 shortcut of a
    0.25x net; 26 for DS2Res2Net50's 104-channel 26w x 4s group). An explicit ``num_groups`` is
    used as given and must divide ``channels`` at every shortcut of the network.
    """
    if num_groups is None:
        return max(g for g in range(1, min(DEFAULT_GN_GROUPS, channels) + 1)
                   if channels % g == 0)
    if num_groups < 1 or channels % num_groups:
        divisors = [g for g in range(1, channels + 1) if channels % g == 0]
        raise ValueError(
            f'shortcut_norm_cfg: GroupNorm with num_groups={num_groups} cannot split '
            f'{channels} channels, a shortcut of this network at the chosen width. Use a '
            f'num_groups dividing every shortcut width (here one of {divisors}), or leave '
            f'num_groups out to pick the largest divisor <= {DEFAULT_GN_GROUPS} per layer.')
    return num_groups


def build_shortcut_norm(cfg: NormCfg, channels: int) -> nn.Module:
    """Build ``N``: a parameter-free normalization (no affine, paper 3.3).

    Args:
        cfg (str | dict | None): ``'GN'`` (default; groups by :func:`gn_groups`),
            ``'LN'`` (GN with 1 group), ``'IN'`` (GN with C groups), ``'BN'`` (BatchNorm without
            affine; keeps running statistics), or ``None`` / ``'none'`` (no normalization).
            A dict is ``dict(type=..., **kwargs)``; GN takes ``num_groups`` and all take ``eps``.
        channels (int): Channels of the normalized feature.
    """
    if cfg is None:
        return nn.Identity()
    cfg = dict(type=cfg) if isinstance(cfg, str) else dict(cfg)
    norm_type = cfg.pop('type', None)
    if norm_type in (None, 'none'):
        return nn.Identity()
    eps = cfg.pop('eps', 1e-5)
    num_groups = cfg.pop('num_groups', None) if norm_type == 'GN' else None
    if cfg:
        raise TypeError(f'shortcut_norm_cfg: unexpected keys {sorted(cfg)} for {norm_type!r}')
    if norm_type == 'GN':
        return nn.GroupNorm(gn_groups(channels, num_groups), channels, eps=eps, affine=False)
    if norm_type == 'LN':
        return nn.GroupNorm(1, channels, eps=eps, affine=False)
    if norm_type == 'IN':
        return nn.GroupNorm(channels, channels, eps=eps, affine=False)
    if norm_type == 'BN':
        return nn.BatchNorm2d(channels, eps=eps, affine=False)
    raise ValueError(f'shortcut_norm_cfg: unknown type {norm_type!r}; '
                     f'expected one of {NORM_TYPES} or None')


class DenseShortcut(nn.Module):
    """``W_l^i``: adds ``sum_i W_l^i * N(Y_i)`` to a residual output ``X_l`` (Eq. 12).

    The normalized sources are computed by the caller, once per source, and shared by every later
    block (paper 4.5); this module owns only the weights.

    Args:
        channels (int): Channels of ``X_l`` and of every source.
        num_sources (int): Number of sources ``Y_0 .. Y_{l-1}``.
        weight (str): ``'channel'`` (a learnable vector per source, default) or ``'none'``
            (every weight fixed at 1, no parameter; Table 1 "no weight").
        init_value (float): Initial value of every weight. Defaults to 1.0, so that at
            initialization each normalized source enters with unit scale, as in Eq. 13 but
            normalized (see docs/design.md for the experiment behind the choice).
    """

    def __init__(self, channels: int, num_sources: int, weight: str = 'channel',
                 init_value: float = 1.0) -> None:
        super().__init__()
        if weight not in WEIGHT_TYPES:
            raise ValueError(f'shortcut_weight must be one of {WEIGHT_TYPES}, got {weight!r}')
        self.channels = channels
        self.num_sources = num_sources
        self.init_value = init_value
        if weight == 'channel':
            # One (num_sources, C, 1, 1) tensor: one checkpoint key per block.
            self.weight = nn.Parameter(
                torch.full((num_sources, channels, 1, 1), float(init_value)))
        else:
            self.register_parameter('weight', None)

    def forward(self, residual: Tensor, normed: Sequence[Tensor]) -> Tensor:
        if len(normed) != self.num_sources:
            raise ValueError(f'expected {self.num_sources} sources, got {len(normed)}')
        out = residual
        for i, n in enumerate(normed):
            out = out + (n if self.weight is None else self.weight[i] * n)
        return out

    def extra_repr(self) -> str:
        weight = 'none' if self.weight is None else 'channel'
        return f'channels={self.channels}, num_sources={self.num_sources}, weight={weight}'
