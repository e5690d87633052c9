"""The dense aggregation ``Y_l = act(X_l + sum_i W_l^i * N(Y_i))`` without its memory overhead.

Same mathematics as :class:`~mmdsnet.models.layers.DenseShortcut` (the *reference*: normalize each
source once, then ``out = out + w_i * n_i`` one term at a time, ReLU after), computed differently:

* **Nothing per edge is kept for backward.** The reference's ``w_i * n_i`` saves every normalized
  source ``n_i = N(Y_i)`` until backward: one extra feature map per source, which is where its
  training-memory overhead over ResNet comes from. Here ``n_i`` is computed once per forward (by
  the stage's own norm module, so hooks and BatchNorm running statistics behave as before) without
  recording a graph, and is freed when the stage's forward ends. Backward needs only ``Y_i``
  (which the graph keeps anyway: it is the next block's convolution input or the saved ReLU output)
  and ``N``'s statistics, a few numbers per (sample, group): because ``N`` has no affine part,
  ``w_i * N(Y_i)`` *is* an affine GroupNorm / BatchNorm with ``gamma = w_i``, so ATen's fused
  ``native_group_norm_backward`` / ``native_batch_norm_backward`` return both ``dL/dY_i`` and
  ``dL/dw_i = sum_{N,H,W} g * n_i`` from ``Y_i`` and the statistics in one kernel.
* **One buffer per block.** The weighted sum is ``addcmul_`` into one tensor, and the ReLU is
  applied in place; the Function saves its output (``Y_l``, alive anyway) for the ReLU mask.

Only device-agnostic ATen operators are used, so the same code runs on the CPU and on CUDA.

Which implementation a stage uses (``impl``):

* ``'fused'`` (default): :class:`DenseAggregate` above.
* ``'reference'``: the straightforward form, kept as the ground truth the tests compare against.
* ``'checkpoint'``: the reference form with each block's aggregation (normalization included)
  under ``torch.utils.checkpoint``; a measured alternative, see docs/performance.md. It normalizes
  every source again in each later block and in backward, so BatchNorm sources (whose running
  statistics would be updated several times) are refused in training, and norm forward hooks fire
  more than once per forward in this mode.

The default can be set per process with the environment variable ``MMDSNET_SHORTCUT_IMPL`` or
:func:`set_default_impl`, per model with :func:`set_shortcut_impl`, and temporarily with the
:func:`shortcut_impl` context manager.
"""
import contextlib
import os
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._python_dispatch import TorchDispatchMode

IMPLS = ('fused', 'reference', 'checkpoint')
_ENV = 'MMDSNET_SHORTCUT_IMPL'


def _check_impl(impl: str, where: str = 'impl') -> str:
    if impl not in IMPLS:
        raise ValueError(f'{where} must be one of {IMPLS}, got {impl!r}')
    return impl


_default_impl = _check_impl(os.environ.get(_ENV, 'fused'), f'environment variable {_ENV}')


def get_default_impl() -> str:
    """The implementation used by stages and blocks whose ``impl`` is None."""
    return _default_impl


def set_default_impl(impl: str) -> None:
    """Set the process-wide default implementation (one of :data:`IMPLS`)."""
    global _default_impl
    _default_impl = _check_impl(impl)


@contextlib.contextmanager
def shortcut_impl(impl: str) -> Iterator[None]:
    """Use ``impl`` as the default inside a ``with`` block (the tests and the benchmark use it)."""
    global _default_impl
    saved, _default_impl = _default_impl, _check_impl(impl)
    try:
        yield
    finally:
        _default_impl = saved


def set_shortcut_impl(model: nn.Module, impl: Optional[str]) -> nn.Module:
    """Pin ``impl`` on every stage and block of ``model`` (None: follow the default again).

    Returns ``model`` so that calls chain. Modules without dense shortcuts are left alone.
    """
    if impl is not None:
        _check_impl(impl)
    for m in model.modules():
        if hasattr(m, 'shortcut_impl'):
            m.shortcut_impl = impl
    return model


def resolve_impl(impl: Optional[str]) -> str:
    return _default_impl if impl is None else impl


# --------------------------------------------------------------------------------- statistics
# Per source, what backward needs of N: a tag and a few (N, G) or (C,) tensors, never a feature map.
Stats = Tuple


def fused_supported(norm: Optional[nn.Module]) -> bool:
    """Whether :func:`normalize_once` knows ``norm``'s backward (else use ``impl='reference'``).

    SyncBatchNorm in training is excluded: its statistics span processes.
    """
    if norm is None or isinstance(norm, nn.Identity):
        return True
    if isinstance(norm, nn.GroupNorm):
        return not norm.affine
    if isinstance(norm, _BatchNorm):
        return not norm.affine and not (isinstance(norm, nn.SyncBatchNorm) and norm.training)
    return False


class _CaptureStats(TorchDispatchMode):
    """Records the statistics the norm kernel itself computes (``mean`` and ``1/std`` are its
    2nd and 3rd outputs in every op below, on the CPU and on CUDA), so that no second pass over
    ``Y`` is needed: ``torch.var_mean`` costs several times a whole GroupNorm on the CPU."""

    OPS = ('native_group_norm', 'native_batch_norm', '_native_batch_norm_legit',
           '_batch_norm_with_update', 'cudnn_batch_norm', 'miopen_batch_norm')

    def __init__(self):
        super().__init__()
        self.stats = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.stats is None and func.overloadpacket.__name__ in self.OPS:
            self.stats = (out[1], out[2])
        return out


def normalize_once(norm: Optional[nn.Module], y: Tensor,
                   need_stats: bool) -> Tuple[Tensor, Optional[Stats]]:
    """``n = N(y)`` through the norm module itself, with no graph, plus ``N``'s statistics.

    Calling the module keeps its behaviour exactly (forward hooks fire once, a training BatchNorm
    updates its running statistics once). When a gradient is needed, the statistics the module's
    kernel computed are captured on the way (a ``TorchDispatchMode`` around the call); should the
    kernel be one this does not know, they are computed again from ``y``.
    """
    with torch.no_grad():
        if norm is None or isinstance(norm, nn.Identity):
            n = y if norm is None else norm(y)
            return n, (('none', ) if need_stats else None)
        if not need_stats:
            return norm(y), None
        batch_stats = isinstance(norm, _BatchNorm) and (norm.training
                                                        or not norm.track_running_stats)
        if isinstance(norm, nn.GroupNorm) or batch_stats:
            with _CaptureStats() as capture:
                n = norm(y)
            captured = capture.stats
        else:
            n, captured = norm(y), None
        if isinstance(norm, nn.GroupNorm):
            N = y.shape[0]
            if captured is not None and captured[0].numel() == N * norm.num_groups:
                mean, rstd = captured
            else:
                var, mean = torch.var_mean(y.reshape(N, norm.num_groups, -1), dim=2,
                                           correction=0)
                rstd = torch.rsqrt(var + norm.eps)
            return n, ('gn', mean.reshape(N, norm.num_groups), rstd.reshape(N, norm.num_groups),
                       norm.num_groups)
        if isinstance(norm, _BatchNorm):
            C = y.shape[1]
            if batch_stats:
                if captured is not None and captured[0].numel() == C:
                    mean, invstd = captured
                else:
                    var, mean = torch.var_mean(y, dim=(0, 2, 3), correction=0)
                    invstd = torch.rsqrt(var + norm.eps)
                return n, ('bn_batch', mean, invstd, norm.eps)
            # eval: the running statistics as they are now (copied: a later update must not
            # change what this forward used)
            return n, ('bn_running', norm.running_mean.clone(), norm.running_var.clone(),
                       norm.eps)
    raise TypeError(f'impl="fused" does not know the backward of {type(norm).__name__}; '
                    f'use impl="reference" for this shortcut norm')


def _norm_backward(stats: Stats, g: Tensor, y: Tensor, w: Optional[Tensor], need_y: bool,
                   need_w: bool) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """``dL/dY`` and ``dL/dw`` of ``w * N(Y)`` given ``g = dL/d(w * N(Y))``."""
    kind = stats[0]
    mask = [need_y, need_w, False]
    if kind == 'gn':
        _, mean, rstd, groups = stats
        N, C = y.shape[:2]
        dy, dw, _ = torch.ops.aten.native_group_norm_backward(
            g, y, mean, rstd, w, N, C, y.numel() // max(N * C, 1), groups, mask)
        return dy, dw
    if kind == 'bn_batch':
        _, mean, invstd, eps = stats
        dy, dw, _ = torch.ops.aten.native_batch_norm_backward(
            g, y, w, None, None, mean, invstd, True, eps, mask)
        return dy, dw
    if kind == 'bn_running':
        _, rmean, rvar, eps = stats
        dy, dw, _ = torch.ops.aten.native_batch_norm_backward(
            g, y, w, rmean, rvar, None, None, False, eps, mask)
        return dy, dw
    # 'none': w * Y
    dy = (g if w is None else g * w.view(1, -1, *([1] * (g.dim() - 2)))) if need_y else None
    dw = (g * y).sum([d for d in range(g.dim()) if d != 1]) if need_w else None
    return dy, dw


def aggregate_forward(residual: Tensor, weight: Optional[Tensor], normed: Sequence[Tensor],
                      act: bool = True) -> Tensor:
    """``act(residual + sum_i weight[i] * normed[i])`` into one new buffer (no graph needed)."""
    out = residual.clone() if not normed else None
    for i, n in enumerate(normed):
        if out is None:
            out = residual + n if weight is None else torch.addcmul(residual, n, weight[i])
        elif weight is None:
            out.add_(n)
        else:
            out.addcmul_(n, weight[i])
    return out.relu_() if act else out


class DenseAggregate(torch.autograd.Function):
    """``Y_l = act(X_l + sum_i W^i * N(Y_i))`` that saves only ``Y_l``, ``W`` and the ``Y_i``.

    ``forward(residual, weight, normed, stats, act, *sources)``: ``normed[i]`` is ``N(sources[i])``
    computed without a graph (used in forward only), ``stats[i]`` what :func:`normalize_once`
    returned for it. ``weight`` is the ``(num_sources, C, 1, 1)`` parameter or None (all ones).
    Gradients flow to ``residual``, ``weight`` and every source, through ``N`` included.
    """

    @staticmethod
    def forward(ctx, residual: Tensor, weight: Optional[Tensor], normed: List[Tensor],
                stats: List[Stats], act: bool, *sources: Tensor) -> Tensor:
        out = aggregate_forward(residual, weight, normed, act)
        ctx.stats, ctx.act, ctx.has_weight = stats, act, weight is not None
        ctx.save_for_backward(out, weight, *sources)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        out, weight, *sources = ctx.saved_tensors
        needs = ctx.needs_input_grad
        # ReLU's backward from its output, as ResNet's in-place ReLU does
        g = torch.ops.aten.threshold_backward(grad, out, 0) if ctx.act else grad
        need_w = ctx.has_weight and needs[1]
        d_weight = torch.empty_like(weight) if need_w else None
        d_sources = []
        for i, (y, st) in enumerate(zip(sources, ctx.stats)):
            w_i = None if weight is None else weight[i].reshape(-1)
            dy, dw = _norm_backward(st, g, y, w_i, needs[5 + i], need_w)
            if need_w:
                d_weight[i] = dw.view(d_weight.shape[1:])
            d_sources.append(dy)
        return (g if needs[0] else None, d_weight, None, None, None, *d_sources)


def dense_aggregate(residual: Tensor, weight: Optional[Tensor], sources: Sequence[Tensor],
                    normed: Sequence[Tensor], stats: Sequence[Optional[Stats]],
                    act: bool = True) -> Tensor:
    """Fused ``act(residual + sum_i weight[i] * normed[i])``; the autograd Function when a gradient
    is needed (then every ``stats[i]`` must be given), a plain kernel otherwise."""
    if torch.is_grad_enabled() and (residual.requires_grad or any(s.requires_grad for s in sources)
                                    or (weight is not None and weight.requires_grad)):
        return DenseAggregate.apply(residual, weight, list(normed), list(stats), act, *sources)
    return aggregate_forward(residual, weight, normed, act)


def needs_grad(*tensors: Optional[Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
