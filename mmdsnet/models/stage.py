"""One stage of n blocks and its dense aggregation (paper Eq. 4, 11, 12, 13)."""
from typing import List, Optional

import torch
import torch.utils.checkpoint as cp
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .layers import DenseShortcut, build_shortcut_norm
from .layers.fused import (_check_impl, dense_aggregate, fused_supported, normalize_once,
                           resolve_impl)

SHORTCUT_MODES = ('identity', 'dense_identity', 'dense_x', 'dense')


class DSLayer(nn.Module):
    """A stage: block 0 with its projection, then ``Y_l = act(X_l + shortcut_l)``.

    ``shortcut`` selects the aggregation (paper symbols, ``l = 1 .. n-1``):

    * ``'identity'`` (ResNet, Eq. 4): ``Y_l = act(X_l + Y_{l-1})``.
    * ``'dense_identity'`` (ResNet-dense, Eq. 13): ``Y_l = act(X_l + sum_{i<l} Y_i)``.
    * ``'dense_x'`` (DSNet-a, Eq. 11, Fig. 3a): ``Y_l = act(X_l + sum_{i<l} W_l^i N(X_i))``
      with ``X_0 := Y_0``.
    * ``'dense'`` (DSNet, Eq. 12, Fig. 3b): ``Y_l = act(X_l + sum_{i<l} W_l^i N(Y_i))``.

    ``Y_0 = act(X_0 + proj(x))`` is block 0 of an ordinary ResNet stage, so the projected stage
    input, not the raw one, is the first source (the reading that gives the paper's parameter
    count). ``act`` is the ReLU ResNet applies after its addition. Each source is normalized once,
    by its own ``norms[i]`` (a stateful BN never mixes statistics of different ``Y_i``), and
    shared by every later block (paper 4.5). Blocks are children ``'0'``, ``'1'``, ... so keys
    read ``layer1.0.conv1.weight`` as in ResNet.

    Args:
        blocks (list[nn.Module]): The residual branches; block 0 owns the projection.
        shortcut (str): One of :data:`SHORTCUT_MODES`. Defaults to ``'dense'``.
        shortcut_norm_cfg (str | dict | None): ``N``, see :func:`build_shortcut_norm`.
        shortcut_weight (str): ``'channel'`` or ``'none'``, see :class:`DenseShortcut`.
        shortcut_init (float): Initial value of ``W_l^i``.
        with_cp (bool): Checkpoint each residual branch (``use_reentrant=False``) while training.
        impl (str, optional): How the aggregation is computed, with the same mathematics:
            ``'fused'`` (no per-edge tensor kept for backward, one buffer per block),
            ``'reference'`` (the straightforward form above) or ``'checkpoint'`` (the reference
            form, each block's aggregation checkpointed); see :mod:`mmdsnet.models.layers.fused`.
            None (default) follows :func:`~mmdsnet.models.layers.fused.get_default_impl`, which is
            ``'fused'`` unless changed. Stored as the attribute ``shortcut_impl``.
    """

    def __init__(self, blocks: List[nn.Module], shortcut: str = 'dense',
                 shortcut_norm_cfg='GN', shortcut_weight: str = 'channel',
                 shortcut_init: float = 1.0, with_cp: bool = False,
                 impl: Optional[str] = None) -> None:
        super().__init__()
        self.shortcut_impl = None if impl is None else _check_impl(impl)
        if shortcut not in SHORTCUT_MODES:
            raise ValueError(f'shortcut must be one of {SHORTCUT_MODES}, got {shortcut!r}')
        for i, block in enumerate(blocks):
            self.add_module(str(i), block)
        self.num_blocks = n = len(blocks)
        self.shortcut = shortcut
        self.with_cp = with_cp
        self.act = nn.ReLU(inplace=True)
        channels = blocks[0].out_channels
        weighted = shortcut in ('dense', 'dense_x')
        # Sources Y_0 .. Y_{n-2}; Y_{n-1} is the stage output and feeds nothing here.
        self.norms = nn.ModuleList(
            build_shortcut_norm(shortcut_norm_cfg, channels) for _ in range(n - 1)
        ) if weighted else nn.ModuleList()
        self.shortcuts = nn.ModuleList(
            DenseShortcut(channels, l, shortcut_weight, shortcut_init) for l in range(1, n)
        ) if weighted else nn.ModuleList()

    def block(self, l: int) -> nn.Module:
        return self._modules[str(l)]

    def _residual(self, block: nn.Module, x: Tensor) -> Tensor:
        """``X_l = F_l(x)``, checkpointed when asked and when a gradient is needed."""
        if self.with_cp and self.training and x.requires_grad:
            return cp.checkpoint(block, x, use_reentrant=False)
        return block(x)

    def forward(self, x: Tensor) -> Tensor:
        impl = resolve_impl(self.shortcut_impl)
        if self.shortcut != 'identity' and impl != 'reference':
            if all(fused_supported(n) for n in self.norms):
                return self._forward_fused(x) if impl == 'fused' else self._forward_ckpt(x)
        return self._forward_reference(x)

    def _forward_reference(self, x: Tensor) -> Tensor:
        """The straightforward form: the ground truth of the other implementations."""
        first = self.block(0)
        y = self.act(self._residual(first, x) + first.project(x))  # Y_0
        mode = self.shortcut
        src = y  # the newest source: Y_{l-1}, or X_{l-1} for dense_x (X_0 := Y_0)
        sources = []  # Y_i (dense_identity) or N(src_i), each computed once per forward
        for l in range(1, self.num_blocks):
            x_l = self._residual(self.block(l), y)
            if mode == 'identity':
                y = self.act(x_l + y)
                continue
            sources.append(src if mode == 'dense_identity' else self.norms[l - 1](src))
            if mode == 'dense_identity':
                y = self.act(sum(sources, x_l))
            else:
                y = self.act(self.shortcuts[l - 1](x_l, sources))
            src = x_l if mode == 'dense_x' else y
        return y

    def _forward_fused(self, x: Tensor) -> Tensor:
        """:class:`~mmdsnet.models.layers.fused.DenseAggregate` per block: ``N(src_i)`` is computed
        once (by ``norms[i]``, without a graph) and used in forward only; backward recomputes
        what it needs from ``src_i`` and ``N``'s statistics."""
        first = self.block(0)
        y = self.act(self._residual(first, x) + first.project(x))  # Y_0
        mode = self.shortcut
        need_stats = torch.is_grad_enabled()
        src = y
        sources, normed, stats = [], [], []
        for l in range(1, self.num_blocks):
            x_l = self._residual(self.block(l), y)
            norm = None if mode == 'dense_identity' else self.norms[l - 1]
            n, st = normalize_once(norm, src, need_stats)
            sources.append(src)
            normed.append(n)
            stats.append(st)
            weight = None if mode == 'dense_identity' else self.shortcuts[l - 1].weight
            y = dense_aggregate(x_l, weight, sources, normed, stats, act=True)
            src = x_l if mode == 'dense_x' else y
        return y

    def _forward_ckpt(self, x: Tensor) -> Tensor:
        """The reference form with each block's aggregation (normalizations included) under
        ``torch.utils.checkpoint``: ``N(src_i)`` is recomputed in every later block and again in
        backward instead of being kept."""
        if self.training and any(isinstance(n, _BatchNorm) and n.training for n in self.norms):
            raise ValueError('impl="checkpoint" recomputes the shortcut norms, which would update '
                             'BatchNorm running statistics several times; use impl="fused" (same '
                             'memory saving) or a GN/LN/IN/None shortcut_norm_cfg')
        first = self.block(0)
        y = self.act(self._residual(first, x) + first.project(x))  # Y_0
        mode = self.shortcut
        src = y
        sources = []
        for l in range(1, self.num_blocks):
            x_l = self._residual(self.block(l), y)
            sources.append(src)

            def aggregate(x_l, *srcs, l=l):
                if mode == 'dense_identity':
                    return self.act(sum(srcs, x_l))
                return self.act(self.shortcuts[l - 1](
                    x_l, [self.norms[i](s) for i, s in enumerate(srcs)]))

            if torch.is_grad_enabled():
                y = cp.checkpoint(aggregate, x_l, *sources, use_reentrant=False)
            else:
                y = aggregate(x_l, *sources)
            src = x_l if mode == 'dense_x' else y
        return y

    def extra_repr(self) -> str:
        return f'num_blocks={self.num_blocks}, shortcut={self.shortcut!r}'
