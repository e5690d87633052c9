"""Residual branches ``F_l``: each block returns ``X_l`` only; the stage adds the shortcuts.

Key names (``conv1``, ``bn1``, ``downsample.0`` ...) follow mmpretrain's and torchvision's ResNet,
so
their checkpoints map onto ours key for key.
"""
from typing import Optional

import torch
from mmcv.cnn import build_conv_layer, build_norm_layer
from torch import Tensor, nn

from .layers import DenseAggregation
from .layers.dense_shortcut import DEFAULT_SHORTCUT_ACT, DEFAULT_SHORTCUT_INIT

#: The DS2 inner shortcut of a stride-2 3x3 conv (``block_cfg=dict(strided_inner=...)``).
STRIDED_INNER = ('skip', 'pool')


def bottleneck_width(planes: int, groups: int = 1, width_per_group: int = 64) -> int:
    """Width of a bottleneck's 3x3 conv (torchvision's rule).

    ``planes`` is the block's output channels divided by the expansion (4). Plain ResNet:
    ``groups=1, width_per_group=64`` gives ``planes``; ResNeXt 32x4d: ``groups=32,
    width_per_group=4``; the paper's "WRN" width doubles it with ``width_per_group=128``.
    """
    width = int(planes * width_per_group / 64) * groups
    if width < 1:
        raise ValueError(f'bottleneck width is 0 for planes={planes}, groups={groups}, '
                         f'width_per_group={width_per_group}')
    return width


class _Block(nn.Module):
    """Shared parts: the projection of block 0 and the DS2 inner shortcut (paper 3.3, [59])."""

    expansion = 1
    #: Whether the block is built differently as the first block of a stage (Res2Net).
    stage_aware = False

    def __init__(self, in_channels: int, out_channels: int, stride: int, conv_cfg: Optional[dict],
                 norm_cfg: dict) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.conv_cfg, self.norm_cfg = conv_cfg, norm_cfg
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                build_conv_layer(conv_cfg, in_channels, out_channels, 1, stride=stride,
                                 bias=False),
                build_norm_layer(norm_cfg, out_channels)[1])
        else:
            self.downsample = None

    def _add_norm(self, channels: int, postfix) -> str:
        """Build a residual-branch norm (``bn1`` / ``gn1`` ...) and return its name."""
        name, norm = build_norm_layer(self.norm_cfg, channels, postfix=postfix)
        self.add_module(name, norm)
        return name

    def _build_inner_shortcut(self, enabled: bool, channels: int, shortcut_norm_cfg,
                              shortcut_weight: str, shortcut_init, shortcut_act,
                              strided: str) -> None:
        # Where the 3x3 conv has stride 2 its input and output shapes differ: 'skip' (ours, the
        # paper's parameter count) builds no inner shortcut there, 'pool' averages the input
        # over 2x2 windows (ceil mode: the strided conv's output size) before N.
        if strided not in STRIDED_INNER:
            raise ValueError(f'strided_inner must be one of {STRIDED_INNER}, got {strided!r}')
        self.inner_pool = (nn.AvgPool2d(self.stride, self.stride, ceil_mode=True,
                                        count_include_pad=False)
                           if enabled and self.stride != 1 and strided == 'pool' else None)
        if enabled and (self.stride == 1 or self.inner_pool is not None):
            self.inner_aggregation = DenseAggregation(channels, 1, shortcut_norm_cfg,
                                                      shortcut_weight, shortcut_init,
                                                      shortcut_act)
        else:
            self.inner_aggregation = None

    def _inner_source(self, t: Tensor):
        """``u = ReLU(t)``, the input of the 3x3 conv(s) (``t``: the 1x1 conv's normalized
        output), and where the DS2 inner shortcut reads ``u`` itself (no pooling) ``u``
        prepared as its source, ``N``'s statistics from the pass that writes ``u``. Returns
        ``(u, source or None)``."""
        inner = self.inner_aggregation
        if inner is None or self.inner_pool is not None:
            return self.relu(t), None
        source = inner.first_source(t)
        return source.y, source

    def _inner_aggregate(self, out: Tensor, u: Tensor, source=None) -> Tensor:
        """DS2Net: ``act(out + w * N(u))``, ``u`` being the input of the 3x3 conv(s) (``source``:
        ``u`` prepared by :meth:`_inner_source`). Without ``act`` (``shortcut_act=None``) the
        caller has already applied the branch's own activation to ``out``, so the branch keeps
        its nonlinearity."""
        if source is None:
            if self.inner_pool is not None:
                u = self.inner_pool(u)
            source = self.inner_aggregation.normalize(0, u)
        return self.inner_aggregation(out, [source])

    def _build_expansion(self, mid: int, inner_shortcut: bool, shortcut_norm_cfg,
                         shortcut_weight: str, shortcut_init, shortcut_act,
                         strided: str) -> None:
        """A bottleneck's last 1x1 conv (``mid`` -> out channels) and norm, and the DS2 inner
        shortcut around its ``mid``-channel 3x3 part."""
        self.conv3 = build_conv_layer(self.conv_cfg, mid, self.out_channels, 1, bias=False)
        self.last_norm_name = self._add_norm(self.out_channels, 3)
        self._build_inner_shortcut(inner_shortcut, mid, shortcut_norm_cfg, shortcut_weight,
                                   shortcut_init, shortcut_act, strided)

    def project(self, x: Tensor) -> Tensor:
        """Block 0's shortcut: the projection, or the identity where shapes match."""
        return x if self.downsample is None else self.downsample(x)

    @property
    def last_norm(self) -> nn.Module:
        return getattr(self, self.last_norm_name)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.last_norm.weight)


class DSBasicBlock(_Block):
    """``X_l`` of a basic block: 3x3 -> 3x3 (ResNet18/34, DSWRN). It has no place for DS2."""

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 conv_cfg: Optional[dict] = None, norm_cfg: dict = dict(type='BN'),
                 inner_shortcut: bool = False, shortcut_norm_cfg=None,
                 shortcut_weight: str = 'channel', shortcut_init=DEFAULT_SHORTCUT_INIT,
                 shortcut_act=DEFAULT_SHORTCUT_ACT) -> None:
        super().__init__(in_channels, out_channels, stride, conv_cfg, norm_cfg)
        if inner_shortcut:
            raise ValueError('inner_shortcut (DS2) needs a bottleneck 3x3 conv; block="basic" has '
                             'none (the paper marks DS2WRN "not applicable"). Use '
                             'block="bottleneck" or inner_shortcut=False.')
        self.conv1 = build_conv_layer(conv_cfg, in_channels, out_channels, 3, stride=stride,
                                      padding=1, bias=False)
        self.norm1_name = self._add_norm(out_channels, 1)
        self.conv2 = build_conv_layer(conv_cfg, out_channels, out_channels, 3, padding=1,
                                      bias=False)
        self.last_norm_name = self._add_norm(out_channels, 2)
        self.inner_aggregation = self.inner_pool = None

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(getattr(self, self.norm1_name)(self.conv1(x)))
        return self.last_norm(self.conv2(out))


class DSBottleneck(_Block):
    """``X_l`` of a bottleneck 1x1 -> 3x3 -> 1x1 (ResNet, ResNeXt, wide, DS2Net).

    Args:
        groups (int): Groups of the 3x3 conv (ResNeXt cardinality). Defaults to 1.
        width_per_group (int): See :func:`bottleneck_width`. Defaults to 64.
        inner_shortcut (bool): DS2Net's ``act(bn2(conv2(u)) + w * N(u))`` around the 3x3 conv
            (``relu(bn2(conv2(u))) + w * N(u)`` with ``shortcut_act=None``). Defaults to False.
        strided_inner (str): The inner shortcut of a stride-2 3x3 conv: ``'skip'`` (none, the
            default) or ``'pool'`` (``N(avgpool_2x2(u))``). See docs/design.md.
    """

    expansion = 4

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 conv_cfg: Optional[dict] = None, norm_cfg: dict = dict(type='BN'),
                 groups: int = 1, width_per_group: int = 64,
                 inner_shortcut: bool = False, strided_inner: str = 'skip',
                 shortcut_norm_cfg=None, shortcut_weight: str = 'channel',
                 shortcut_init=DEFAULT_SHORTCUT_INIT, shortcut_act=DEFAULT_SHORTCUT_ACT) -> None:
        super().__init__(in_channels, out_channels, stride, conv_cfg, norm_cfg)
        mid = bottleneck_width(out_channels // self.expansion, groups, width_per_group)
        self.conv1 = build_conv_layer(conv_cfg, in_channels, mid, 1, bias=False)
        self.norm1_name = self._add_norm(mid, 1)
        # "pytorch" style: the stride sits on the 3x3 conv, as in mmpretrain and torchvision.
        self.conv2 = build_conv_layer(conv_cfg, mid, mid, 3, stride=stride, padding=1,
                                      groups=groups, bias=False)
        self.norm2_name = self._add_norm(mid, 2)
        self._build_expansion(mid, inner_shortcut, shortcut_norm_cfg, shortcut_weight,
                              shortcut_init, shortcut_act, strided_inner)

    def forward(self, x: Tensor) -> Tensor:
        u, source = self._inner_source(getattr(self, self.norm1_name)(self.conv1(x)))
        out = getattr(self, self.norm2_name)(self.conv2(u))
        inner = self.inner_aggregation
        if inner is None or not inner.relu:  # the branch's ReLU, before a sum without one
            out = self.relu(out)
        if inner is not None:
            out = self._inner_aggregate(out, u, source)
        return self.last_norm(self.conv3(out))


class DSBottle2neck(_Block):
    """``X_l`` of Res2Net's bottle2neck: 1x1 -> hierarchical 3x3 over ``scales`` splits -> 1x1.

    Args:
        base_width (int): Width of one split at 64 planes (Res2Net-50 26w x 4s: 26).
        scales (int): Number of splits. Defaults to 4.
        inner_shortcut (bool): DS2 around the whole multi-scale 3x3 group:
            ``act(concat + w * N(u))`` with ``u`` the group's input (the splits carry their
            own ReLUs, so ``shortcut_act=None`` drops only the one after the sum).
        strided_inner (str): As :class:`DSBottleneck`'s, for a strided block.
    """

    expansion = 4
    stage_aware = True

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 conv_cfg: Optional[dict] = None, norm_cfg: dict = dict(type='BN'),
                 first_block: bool = False, base_width: int = 26, scales: int = 4,
                 inner_shortcut: bool = False, strided_inner: str = 'skip',
                 shortcut_norm_cfg=None, shortcut_weight: str = 'channel',
                 shortcut_init=DEFAULT_SHORTCUT_INIT, shortcut_act=DEFAULT_SHORTCUT_ACT) -> None:
        super().__init__(in_channels, out_channels, stride, conv_cfg, norm_cfg)
        if scales < 2:
            raise ValueError(f'scales must be >= 2 for block="bottle2neck", got {scales}')
        width = out_channels // self.expansion * base_width // 64
        if width < 1:
            raise ValueError(f'bottle2neck split width is 0 (out_channels={out_channels}, '
                             f'base_width={base_width}); increase base_width or base_channels')
        self.width, self.scales = width, scales
        mid = width * scales
        # Res2Net's first block of a stage ("stage" type) does not chain the splits and pools
        # its last split, at stride 1 too (mmpretrain's and the official Res2Net).
        self.chained = not first_block
        self.conv1 = build_conv_layer(conv_cfg, in_channels, mid, 1, bias=False)
        self.norm1_name = self._add_norm(mid, 1)
        self.convs = nn.ModuleList(
            build_conv_layer(conv_cfg, width, width, 3, stride=stride, padding=1, bias=False)
            for _ in range(scales - 1))
        self.bns = nn.ModuleList(build_norm_layer(norm_cfg, width)[1] for _ in range(scales - 1))
        self.pool = nn.AvgPool2d(3, stride, 1) if first_block else None
        self._build_expansion(mid, inner_shortcut, shortcut_norm_cfg, shortcut_weight,
                              shortcut_init, shortcut_act, strided_inner)

    def forward(self, x: Tensor) -> Tensor:
        u, source = self._inner_source(getattr(self, self.norm1_name)(self.conv1(x)))
        splits = torch.split(u, self.width, 1)
        outs, sp = [], None
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            sp = splits[i] if (i == 0 or not self.chained) else sp + splits[i]
            sp = self.relu(bn(conv(sp)))
            outs.append(sp)
        outs.append(splits[-1] if self.pool is None else self.pool(splits[-1]))
        out = torch.cat(outs, 1)
        if self.inner_aggregation is not None:
            out = self._inner_aggregate(out, u, source)
        return self.last_norm(self.conv3(out))
