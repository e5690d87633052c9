"""One stage of n blocks and its dense aggregation (paper Eq. 4, 11, 12, 13)."""
from typing import List, Optional, Union

import torch.utils.checkpoint as cp
from torch import Tensor, nn

from .layers import DenseAggregation
from .layers.dense_shortcut import DEFAULT_SHORTCUT_ACT, DEFAULT_SHORTCUT_INIT

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
    count). ``act`` is the ReLU ResNet applies after its addition; after a dense sum it is
    ``shortcut_act`` (the ReLU, or none as Eq. 12 prints it), while block 0 and the identity mode
    keep ResNet's ReLU whatever ``shortcut_act`` says. The dense modes go through one
    :class:`~mmdsnet.models.layers.DenseAggregation` (``aggregation``): each source is
    normalized once, by its own norm (a stateful BN never mixes statistics of different
    ``Y_i``), and shared by every later block (paper 4.5). Blocks are children ``'0'``, ``'1'``,
    ... so keys read ``layer1.0.conv1.weight`` as in ResNet; the aggregation's keys are its module
    names, ``layer1.aggregation.norms.{i}`` and ``layer1.aggregation.shortcuts.{l-1}.weight``.

    Args:
        blocks (list[nn.Module]): The residual branches; block 0 owns the projection.
        shortcut (str): One of :data:`SHORTCUT_MODES`. Defaults to ``'dense'``.
        shortcut_norm_cfg (str | dict | None): ``N``, see
            :func:`~mmdsnet.models.layers.build_shortcut_norm`.
        shortcut_weight (str): ``'channel'`` or ``'none'``, see
            :class:`~mmdsnet.models.layers.DenseShortcut`.
        shortcut_init (float | str): Initial value of ``W_l^i``.
        shortcut_act (str | None): The activation after a dense sum: ``'relu'`` or None.
        with_cp (bool): Checkpoint each residual branch (``use_reentrant=False``) while training.
    """

    def __init__(self, blocks: List[nn.Module], shortcut: str = 'dense',
                 shortcut_norm_cfg='GN', shortcut_weight: str = 'channel',
                 shortcut_init: Union[float, str] = DEFAULT_SHORTCUT_INIT,
                 with_cp: bool = False,
                 shortcut_act: Optional[str] = DEFAULT_SHORTCUT_ACT) -> None:
        super().__init__()
        if shortcut not in SHORTCUT_MODES:
            raise ValueError(f'shortcut must be one of {SHORTCUT_MODES}, got {shortcut!r}')
        for i, block in enumerate(blocks):
            self.add_module(str(i), block)
        self.num_blocks = len(blocks)
        self.shortcut = shortcut
        self.with_cp = with_cp
        self.act = nn.ReLU(inplace=True)
        if shortcut != 'identity':
            # Sources Y_0 .. Y_{n-2}; Y_{n-1} is the stage output and feeds nothing here.
            # ResNet-dense (Eq. 13) is the same sum without N and W.
            weighted = shortcut in ('dense', 'dense_x')
            self.aggregation = DenseAggregation(
                blocks[0].out_channels, self.num_blocks - 1,
                shortcut_norm_cfg if weighted else None,
                shortcut_weight if weighted else 'none', shortcut_init, shortcut_act)

    def block(self, l: int) -> nn.Module:
        return self._modules[str(l)]

    def _residual(self, block: nn.Module, x: Tensor) -> Tensor:
        """``X_l = F_l(x)``, checkpointed when asked and when a gradient is needed."""
        if self.with_cp and self.training and x.requires_grad:
            return cp.checkpoint(block, x, use_reentrant=False)
        return block(x)

    def forward(self, x: Tensor) -> Tensor:
        # The residual sums are in place, into X_l (its norm's fresh output, which backward does
        # not need), as mmdet's and mmpretrain's ResNet do: a new tensor per block costs time.
        first = self.block(0)
        x_0, shortcut = self._residual(first, x), first.project(x)
        sources = []
        if self.shortcut == 'identity' or self.num_blocks == 1:
            y = self.act(x_0.add_(shortcut))  # Y_0
        else:  # Y_0, prepared as source 0 (for dense_x too: X_0 := Y_0)
            sources.append(self.aggregation.first_source(x_0, shortcut))
            y = sources[0].y
            chain = self.aggregation.new_chain(y)
        src = y  # the newest source: Y_{l-1}, or X_{l-1} for dense_x
        for l in range(1, self.num_blocks):
            x_l = self._residual(self.block(l), y)
            if self.shortcut == 'identity':
                y = self.act(x_l.add_(y))
                continue
            if len(sources) < l:  # N(Y_{l-1}) (N(X_{l-1})), once
                sources.append(self.aggregation.normalize(l - 1, src))
            if self.shortcut != 'dense_x' and l < self.num_blocks - 1:
                # Y_l feeds the later blocks: N(Y_l)'s statistics from the pass that writes it
                sources.append(self.aggregation(x_l, sources, as_source=l, chain=chain))
                y = sources[-1].y
            else:
                y = self.aggregation(x_l, sources, chain=chain)
            src = x_l if self.shortcut == 'dense_x' else y
        return y

    def extra_repr(self) -> str:
        return f'num_blocks={self.num_blocks}, shortcut={self.shortcut!r}'
