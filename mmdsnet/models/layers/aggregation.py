"""The dense aggregation ``Y_l = act(X_l + sum_{i<l} W_l^i * N(Y_i))`` (Eq. 12) as one module.

``act`` is the model's ``shortcut_act``: the ReLU ResNet applies after its addition, or none
(Eq. 12 as printed).

:class:`DenseAggregation` owns the normalizations ``N`` (one per source) and the weights ``W``
(one ``(l, C, 1, 1)`` tensor per target block ``l``) of one stage, or of one DS2 inner shortcut
(one source, one target). All shortcut arithmetic of the models goes through it, in two steps
that read like the paper:

* :meth:`DenseAggregation.normalize` ``(i, Y_i)``: ``N``'s statistics of a source, computed once
  and shared by every later block (paper 4.5);
* :meth:`DenseAggregation.forward` ``(X_l, sources)``: ``act(X_l + sum_i W_l^i * N(Y_i))``;
  with ``as_source=l`` the new ``Y_l`` comes back prepared as the next blocks' source, its
  statistics computed by the same pass that writes it.

Both run PyTorch custom operators (:mod:`mmdsnet.ops`): ``mmdsnet::norm_stats`` and
``mmdsnet::dense_aggregate``, which keep no normalized source for backward and work under
autocast, ``torch.compile``, ``torch.jit.trace``, ``torch.export`` and mmengine's FLOP counter.
Which kernel runs behind them is the operator's business (its device). The operators know
parameter-free GroupNorm (GN, LN, IN), BatchNorm (batch or running statistics) and no
normalization. Any other shortcut norm (a norm type registered by the user, or a SyncBatchNorm
while training, whose statistics span processes) takes :func:`aggregate_reference`, the
straightforward form, with a warning once: never a silently wrong answer. The tests use
:func:`aggregate_reference` as their oracle.
"""
import warnings
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...ops import aggregate, new_chain, source_stats, stats_dtype
from .dense_shortcut import (DEFAULT_SHORTCUT_ACT, DEFAULT_SHORTCUT_INIT, DenseShortcut,
                             act_is_relu, build_shortcut_norm)

__all__ = ['AGGREGATION_IMPLS', 'DenseAggregation', 'Source', 'aggregate_reference']


def aggregate_reference(x: Tensor, normed: Sequence[Tensor], weight: Optional[Tensor] = None,
                        relu: bool = True) -> Tensor:
    """The straightforward form ``act(x + sum_i weight[i] * normed[i])``, one term at a time.

    Args:
        x (Tensor): ``X_l``, ``(N, C, H, W)``.
        normed (Sequence[Tensor]): ``N(Y_i)`` for every source, each computed once by the caller.
        weight (Tensor, optional): ``W_l``, ``(len(normed), C, 1, 1)``; None means all ones.
        relu (bool): ``act`` is the ReLU (True) or nothing.
    """
    out = x
    for i, n in enumerate(normed):
        out = out + (n if weight is None else weight[i] * n)
    return torch.relu(out) if relu else out


class Source(NamedTuple):
    """A source ``Y_i`` as :meth:`DenseAggregation.normalize` prepared it."""
    y: Tensor                      # Y_i itself, what the operator reads
    mean: Optional[Tensor] = None  # N's statistics of y, (N or 1, G) ...
    rstd: Optional[Tensor] = None
    own: bool = False              # ... computed from y (GN, training BN) or fixed
    normed: Optional[Tensor] = None  # N(y) itself, for the reference form only


#: How a :class:`DenseAggregation` computes (``DSNet(aggregation_impl=...)``).
AGGREGATION_IMPLS = ('op', 'reference')


def op_supports(norm: nn.Module) -> bool:
    """Whether the custom operators know ``norm``'s arithmetic (else the reference form)."""
    if isinstance(norm, nn.Identity):
        return True
    if isinstance(norm, nn.GroupNorm):
        return not norm.affine
    if isinstance(norm, _BatchNorm):
        # SyncBatchNorm's training statistics span processes; its evaluation mode is local.
        return not norm.affine and not (isinstance(norm, nn.SyncBatchNorm) and norm.training)
    return False


# The statistics of a source, as functions of tensors and numbers only: torch.fx (torchvision's
# create_feature_extractor, timm's feature wrappers) records each of them, and ``aggregate``, as
# one call instead of tracing into Python that branches on a dtype.
_UNIT_STATS = {}  # (device, dtype) -> (zeros, ones): made once, never written


def _no_stats(y: Tensor) -> Tuple[Tensor, Tensor]:
    """``mean = 0, rstd = 1``: no normalization (two constant tensors per device and dtype, so
    that a call allocates and launches nothing: each stage's ``Y_0`` takes this path)."""
    key = (y.device, stats_dtype(y.dtype))
    stats = _UNIT_STATS.get(key)
    if stats is None:
        # (never inference tensors, which a later training step could not save for backward)
        with torch.inference_mode(False):
            one = torch.ones((1, 1), dtype=key[1], device=y.device)
            stats = _UNIT_STATS[key] = (torch.zeros_like(one), one)
    return stats


def _group_stats(y: Tensor, groups: int, eps: float) -> Tuple[Tensor, Tensor]:
    """GroupNorm's statistics per (sample, group)."""
    return source_stats(y.detach(), groups, eps, False)


def _batch_stats(y: Tensor, eps: float, momentum: Optional[float],
                 running_mean: Optional[Tensor], running_var: Optional[Tensor],
                 num_batches_tracked: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """BatchNorm's batch statistics per channel; the running ones (if given) are updated as
    ``nn.BatchNorm2d`` updates them (unbiased variance, ``momentum`` None: cumulative mean)."""
    mean, rstd = source_stats(y.detach(), y.shape[1], eps, True)
    return _update_running(y, mean, rstd, eps, momentum, running_mean, running_var,
                           num_batches_tracked)


def _update_running(y: Tensor, mean: Tensor, rstd: Tensor, eps: float, momentum: Optional[float],
                    running_mean: Optional[Tensor], running_var: Optional[Tensor],
                    num_batches_tracked: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """:func:`_batch_stats` for statistics ``(mean, rstd)`` of ``y`` already computed (by the
    aggregation that wrote ``y``); returns them."""
    if running_mean is not None:
        with torch.no_grad():
            num_batches_tracked.add_(1)
            m = momentum if momentum is not None else 1.0 / float(num_batches_tracked)
            count = y.numel() // y.shape[1]
            var = (rstd.reshape(-1).pow(-2) - eps) * (count / max(count - 1, 1))
            running_mean.mul_(1 - m).add_(mean.reshape(-1).to(running_mean.dtype), alpha=m)
            running_var.mul_(1 - m).add_(var.to(running_var.dtype), alpha=m)
    return mean, rstd


def _running_stats(y: Tensor, running_mean: Tensor, running_var: Tensor,
                   eps: float) -> Tuple[Tensor, Tensor]:
    """BatchNorm's running statistics, fixed numbers."""
    acc = stats_dtype(y.dtype)
    return (running_mean.to(acc).reshape(1, -1),
            torch.rsqrt(running_var.to(acc) + eps).reshape(1, -1))


def _new_chain(y: Tensor, num_sources: int):
    """The gradient buffers of one stage's chain (``y``: only so that torch.fx records the call
    and a traced graph makes new buffers per call)."""
    return new_chain(num_sources)


for _name in ('_no_stats', '_group_stats', '_batch_stats', '_update_running', '_running_stats',
              '_new_chain', 'aggregate'):
    torch.fx.wrap(_name)


class DenseAggregation(nn.Module):
    """``Y_l = act(X_l + sum_{i<l} W_l^i * N(Y_i))`` for the targets ``l = 1 .. num_sources``.

    Args:
        channels (int): Channels of ``X_l`` and of every source.
        num_sources (int): Sources ``Y_0 .. Y_{num_sources-1}``; the targets are
            ``l = 1 .. num_sources`` and target ``l`` adds the first ``l`` sources.
        norm_cfg (str | dict | None): ``N``, see :func:`build_shortcut_norm`. Defaults to ``'GN'``.
        weight (str): ``'channel'`` (learnable ``W_l^i``) or ``'none'`` (all ones, no parameter).
        init (float | str): Initial value of ``W``, see :class:`DenseShortcut`.
        act (str | None): ``act``: ``'relu'`` (default) or ``None`` / ``'none'`` (no activation
            after the sum, Eq. 12 as printed).

    Attribute ``impl``, one of :data:`AGGREGATION_IMPLS`, set once by ``DSNet(aggregation_impl=
    ...)``: ``'op'`` (default): the custom operators (Triton kernels on CUDA), which keep no
    normalized source for backward; ``'reference'``: the norm modules and a weighted sum
    (:func:`aggregate_reference`), same result, more memory (every ``N(Y_i)`` is kept for
    backward) but less CPU time per call, which wins where the CPU bounds the step (small per-GPU
    batches on a fast GPU: docs/performance.md, "GPU").

    Keys: ``norms.{i}`` (BatchNorm's running statistics), ``shortcuts.{l-1}.weight`` (``W_l``).
    """

    def __init__(self, channels: int, num_sources: int, norm_cfg: Union[str, dict, None] = 'GN',
                 weight: str = 'channel',
                 init: Union[float, str] = DEFAULT_SHORTCUT_INIT,
                 act: Optional[str] = DEFAULT_SHORTCUT_ACT) -> None:
        super().__init__()
        self.channels, self.num_sources, self.impl = channels, num_sources, 'op'
        self.relu = act_is_relu(act)
        self.norms = nn.ModuleList(
            build_shortcut_norm(norm_cfg, channels) for _ in range(num_sources))
        self.shortcuts = nn.ModuleList(
            DenseShortcut(channels, l, weight, init) for l in range(1, num_sources + 1))
        self._warned = False

    def uses_op(self) -> bool:
        """The custom operators, or the reference form (asked for, or with a warning once where
        the operators do not know a norm)."""
        if self.impl == 'reference':
            return False
        if all(op_supports(n) for n in self.norms):
            return True
        if not self._warned:
            self._warned = True
            names = sorted({type(n).__name__ for n in self.norms if not op_supports(n)})
            warnings.warn(f'dense shortcuts: the aggregation operator does not know the '
                          f'shortcut norm {names} (affine, a SyncBatchNorm while training, or '
                          f'a custom type); using the reference form (same result, more '
                          f'memory: every N(Y_i) is kept for backward)', stacklevel=2)
        return False

    def stats_of(self, i: int) -> Optional[Tuple[int, float, bool]]:
        """``(groups, eps, over_batch)`` of the statistics that ``N_i`` computes from its input
        (GN, a training BatchNorm), or None: fixed numbers (no norm, BatchNorm's running
        statistics) or the reference form."""
        norm = self.norms[i]
        if not self.uses_op():
            return None
        if isinstance(norm, nn.GroupNorm):
            return norm.num_groups, norm.eps, False
        if isinstance(norm, _BatchNorm) and (norm.training or not norm.track_running_stats):
            return self.channels, norm.eps, True
        return None

    def normalize(self, i: int, y: Tensor, stats: Optional[Tuple[Tensor, Tensor]] = None
                  ) -> Source:
        """Prepare source ``Y_i``: ``N_i``'s statistics of ``y`` (once per forward), or the
        given ``stats = (mean, rstd)`` of ``y`` (computed by the aggregation that wrote it, as
        :meth:`stats_of` asks)."""
        norm = self.norms[i]
        if not self.uses_op():
            return Source(y, normed=norm(y))
        # (statistics indexed, not unpacked: under torch.fx they are one traced value)
        if isinstance(norm, nn.Identity):
            stats, own = _no_stats(y), False
        elif isinstance(norm, nn.GroupNorm):
            stats, own = stats or _group_stats(y, norm.num_groups, norm.eps), True
        elif norm.training or not norm.track_running_stats:
            # BatchNorm's batch statistics, updating the running ones in training as
            # nn.BatchNorm2d does
            update = norm.training and norm.track_running_stats
            running = (norm.running_mean if update else None,
                       norm.running_var if update else None,
                       norm.num_batches_tracked if update else None)
            if stats is None:
                stats = _batch_stats(y, norm.eps, norm.momentum, *running)
            else:
                stats = _update_running(y, stats[0], stats[1], norm.eps, norm.momentum, *running)
            own = True
        else:  # BatchNorm's running statistics
            stats, own = _running_stats(y, norm.running_mean, norm.running_var, norm.eps), False
        return Source(y, stats[0], stats[1], own)

    def first_source(self, x: Tensor, shortcut: Optional[Tensor] = None) -> Source:
        """``Y_0 = ReLU(X_0 + shortcut)`` (block 0 of a ResNet stage, its ReLU whatever ``act``
        is), or ``ReLU(x)`` (DS2's inner source, the 3x3 conv's input), prepared as source 0.
        Where ``N_0`` computes statistics on the operators, the map and its statistics come
        from one pass: the aggregation operator, with the projected input as a source that has
        no normalization and no weight (mean 0, rstd 1; not kept for backward), or with no
        source."""
        out_stats = self.stats_of(0)
        if out_stats is None:
            return self.normalize(0, torch.relu_(x if shortcut is None else x.add_(shortcut)))
        if shortcut is None:
            result = aggregate(x, [], [], [], None, [], True, out_stats)
        else:
            mean, rstd = _no_stats(x)
            result = aggregate(x, [shortcut], [mean], [rstd], None, [0], True, out_stats)
        return self.normalize(0, result[0], (result[1], result[2]))

    def new_chain(self, y: Tensor):
        """What a stage passes to every :meth:`forward` of one pass (``chain``), or None in the
        reference form: the operators then sum each source's shortcut gradient over its later
        blocks and normalize it once (``mmdsnet.ops.aggregate``). ``y``: any tensor of the
        pass (``Y_0``)."""
        return _new_chain(y, self.num_sources) if self.uses_op() else None

    def forward(self, x: Tensor, sources: Sequence[Source], as_source: Optional[int] = None,
                chain=None) -> Union[Tensor, Source]:
        """``Y_l = act(X_l + sum_i W_l^i * N(Y_i))`` with ``l = len(sources)``; with
        ``as_source=l``, ``normalize(l, Y_l)`` (the next blocks' source), where the operators
        compute ``N_l``'s statistics of ``Y_l`` in the pass that writes it. ``chain``
        (:meth:`new_chain`): the calls of one pass are the stage's chain, targets ``l = 1, 2,
        ...`` in order, each ``X_l`` computed from ``Y_{l-1}``."""
        if not 1 <= len(sources) <= self.num_sources:
            raise ValueError(f'expected 1 to {self.num_sources} sources, got {len(sources)}')
        weight = self.shortcuts[len(sources) - 1].weight
        # (None in the reference form: stats_of asks the operators only)
        out_stats = None if as_source is None else self.stats_of(as_source)
        if sources[0].normed is not None:
            y = aggregate_reference(x, [s.normed for s in sources], weight, self.relu)
        else:
            args = (x, [s.y for s in sources], [s.mean for s in sources],
                    [s.rstd for s in sources], weight, [int(s.own) for s in sources], self.relu)
            part = None if chain is None else chain[:len(sources)]
            if out_stats is not None:
                result = aggregate(*args, out_stats, part)  # (indexed: under torch.fx one value)
                return self.normalize(as_source, result[0], (result[1], result[2]))
            y = aggregate(*args, None, part)
        return y if as_source is None else self.normalize(as_source, y)

    def extra_repr(self) -> str:
        act = 'relu' if self.relu else 'none'
        return f'channels={self.channels}, num_sources={self.num_sources}, act={act}'

