"""The dense aggregation as PyTorch custom operators (``torch.library``).

Two operators carry the arithmetic of every dense shortcut (paper Eq. 12, and DS2's inner one):

* ``mmdsnet::norm_stats(y, groups, eps, over_batch) -> (mean, rstd)``: the statistics of a
  parameter-free normalization ``N``. Per (sample, group) for GN / LN / IN (shape ``(N, G)``), per
  channel over the batch for a training BatchNorm (``over_batch``, shape ``(1, C)``). Always in
  float32 (float64 for float64 input), whatever the input's dtype: bf16 / fp16 statistics lose
  too much. Computed once per source ``Y_i`` and shared by every later block (paper 4.5). It
  carries no gradient of its own: the aggregation's backward below differentiates through it.
* ``mmdsnet::dense_aggregate(x, ys, means, rstds, weight, own_stats, relu=True, out_groups=0,
  out_eps=1e-5, out_over_batch=False) -> (out, out_mean, out_rstd)``::

      out = act(x + sum_i weight[i] * (ys[i] - means[i]) * rstds[i])

  ``act`` is the ReLU (``relu=True``, ResNet's activation after its addition) or nothing
  (``relu=False``, Eq. 12 as the paper prints it): the model's ``shortcut_act``. With
  ``out_groups > 0`` it also returns ``norm_stats(out, out_groups, out_eps, out_over_batch)``:
  ``out`` is the new ``Y_l``, the next blocks' source, and its statistics come from the pass that
  writes it (one launch instead of two on a GPU); otherwise ``out_mean`` and ``out_rstd`` are
  empty. They carry no gradient, as ``norm_stats``'s.

  ``means[i]`` / ``rstds[i]`` are ``(N or 1, G)`` and broadcast over the ``C / G`` channels of each
  group; ``weight`` is ``(S, C)`` or None (all ones). ``own_stats[i]`` (1 or 0: an int list, which
  ``torch.jit.trace`` can record and a bool list it cannot) says whether they are
  ``ys[i]``'s own statistics (GN, training BN: the gradient flows through them, exactly as
  through ``N``) or fixed numbers (BN running statistics, or ``mean=0, rstd=1`` for no
  normalization). The output has ``x``'s dtype and memory format, is computed in float32 (float64)
  and is the only tensor the operator allocates that outlives it: no normalized source is kept
  for backward, which saves exactly the ``ys`` (alive anyway: they are the next convolutions'
  inputs), the statistics, ``weight`` and ``out`` (for the ReLU mask; alive anyway as well).
* ``mmdsnet::dense_aggregate_backward``: its gradient, an operator of its own so that
  ``torch.compile`` and ``torch.export`` see the backward as one node too.

Each operator has one implementation made of stock ATen operators, for every device, plus a fake
(meta) implementation for tracing. A device-specific kernel (Triton on CUDA) is registered with
``register_kernel`` beside it without touching the models (:mod:`mmdsnet.ops`).
The modules that use them are :class:`mmdsnet.models.layers.DenseAggregation` (all shortcut
arithmetic of the models goes through it) and the tests' oracle
:func:`mmdsnet.models.layers.aggregate_reference`.
"""
import contextlib
import functools
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ['norm_stats', 'dense_aggregate', 'dense_aggregate_backward', 'source_backward',
           'chain_backward_aten', 'CHAIN_BACKWARD', 'SourceGrad', 'new_chain', 'aggregate',
           'source_stats', 'kernel_for', 'register_device_kernel', 'stats_dtype',
           'use_implementation', 'export_decompositions', 'norm_stats_aten',
           'dense_aggregate_aten', 'dense_aggregate_backward_aten']


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics and accumulation dtype: float64 for float64 input, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _hw(y: Tensor) -> int:
    return y.numel() // max(y.shape[0] * y.shape[1], 1)


def _per_channel(t: Tensor, channels: int) -> Tensor:
    """``(M, G)`` group statistics -> ``(M, C)``, each group's value repeated over its channels."""
    return t if t.shape[1] == channels else t.repeat_interleave(channels // t.shape[1], dim=1)


def _to_groups(t: Tensor, shape: torch.Size) -> Tensor:
    """Inverse of :func:`_per_channel` for gradients: sum ``(N, C)`` back to ``shape``."""
    m, g = shape
    t = t.reshape(t.shape[0], g, -1).sum(2)
    return t.sum(0, keepdim=True) if m == 1 and t.shape[0] != 1 else t


def _spatial(t: Tensor, like: Tensor) -> Tensor:
    """``(M, C)`` -> broadcastable against ``like`` (``(M, C, 1, 1)`` for a 4-d map)."""
    return t.reshape(*t.shape, *([1] * (like.dim() - 2)))


def _like(t: Tensor, ref: Tensor) -> Tensor:
    """``t`` with ``ref``'s dtype and memory layout (what the fake implementations promise)."""
    out = torch.empty_like(ref)
    if t.dtype == out.dtype and t.stride() == out.stride():
        return t
    return out.copy_(t)


# ------------------------------------------------------------------------------- norm_stats
def norm_stats_aten(y: Tensor, groups: int, eps: float,
                    over_batch: bool) -> Tuple[Tensor, Tensor]:
    """``mmdsnet::norm_stats``'s implementation of stock ATen operators (every device)."""
    n, c = y.shape[:2]
    acc = stats_dtype(y.dtype)
    y = y.to(acc)  # a copy only for half / bf16 input
    if over_batch:  # BatchNorm's training statistics: per channel over (N, H, W)
        if groups != c:
            raise ValueError(f'norm_stats: over_batch needs groups == channels, got {groups}/{c}')
        _, mean, rstd = torch.ops.aten._native_batch_norm_legit.no_stats(
            y, None, None, True, 0.0, eps)
        return mean.reshape(1, c), rstd.reshape(1, c)
    # ATen's fused GroupNorm is the fastest way to the statistics on the CPU (a generic
    # var_mean over (N, G, -1) is ~6x slower); its normalized output is dropped at once.
    _, mean, rstd = torch.ops.aten.native_group_norm(y, None, None, n, c, _hw(y), groups, eps)
    return mean.reshape(n, groups), rstd.reshape(n, groups)


norm_stats = torch.library.custom_op('mmdsnet::norm_stats', norm_stats_aten, mutates_args=())


@norm_stats.register_fake
def _(y, groups, eps, over_batch):
    _sync_inductor_table()
    rows = 1 if over_batch else y.shape[0]
    acc = stats_dtype(y.dtype)
    return y.new_empty((rows, groups), dtype=acc), y.new_empty((rows, groups), dtype=acc)


# -------------------------------------------------------------------------- dense_aggregate
def _scale_shift(mean: Tensor, rstd: Tensor, w: Optional[Tensor],
                 channels: int) -> Tuple[Tensor, Tensor]:
    """``w * (y - mean) * rstd = y * a + b``: the per-(sample, channel) ``a`` and ``b``."""
    a = _per_channel(rstd, channels)
    if w is not None:
        a = a * w.to(a.dtype)
    return a, -a * _per_channel(mean, channels).to(a.dtype)


def _check(x: Tensor, ys: Sequence[Tensor], means: Sequence[Tensor], rstds: Sequence[Tensor],
           weight: Optional[Tensor], own_stats: Sequence[int], out_groups: int = 0,
           out_over_batch: bool = False) -> None:
    s = len(ys)
    c = x.shape[1] if x.dim() >= 2 else 0
    if out_groups < 0 or (out_groups and c % out_groups) or (out_over_batch
                                                             and out_groups != c):
        raise ValueError(f'dense_aggregate: out_groups={out_groups} (out_over_batch='
                         f'{out_over_batch}) cannot split {c} channels: a divisor of C, or C '
                         f'itself over the batch')
    if not (len(means) == len(rstds) == len(own_stats) == s):
        raise ValueError(f'dense_aggregate: {s} sources but {len(means)} means, {len(rstds)} '
                         f'rstds and {len(own_stats)} own_stats')
    if weight is not None and weight.numel() != s * x.shape[1]:
        raise ValueError(f'dense_aggregate: weight of shape {tuple(weight.shape)} does not hold '
                         f'{s} x {x.shape[1]} values')
    for y in ys:
        if y.shape != x.shape:
            raise ValueError(f'dense_aggregate: a source has shape {tuple(y.shape)}, the '
                             f'residual {tuple(x.shape)}')


def out_stats_like(out: Tensor, groups: int, over_batch: bool) -> Tuple[Tensor, Tensor]:
    """Empty ``(out_mean, out_rstd)`` of ``dense_aggregate``: ``(N or 1, groups)``, or no
    element for ``groups == 0``."""
    shape = ((1 if over_batch else out.shape[0]), groups) if groups else (0, )
    acc = stats_dtype(out.dtype)
    return out.new_empty(shape, dtype=acc), out.new_empty(shape, dtype=acc)


def dense_aggregate_aten(x: Tensor, ys: List[Tensor], means: List[Tensor], rstds: List[Tensor],
                         weight: Optional[Tensor], own_stats: List[int], relu: bool = True,
                         out_groups: int = 0, out_eps: float = 1e-5,
                         out_over_batch: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    """``mmdsnet::dense_aggregate``'s implementation of stock ATen operators (every device)."""
    _check(x, ys, means, rstds, weight, own_stats, out_groups, out_over_batch)
    if not ys:  # ReLU(x) (DS2's inner source), or a copy: an output never aliases an input
        out = torch.relu(x) if relu else x.clone()
    else:
        c = x.shape[1]
        w = None if weight is None else weight.reshape(len(ys), c)
        terms = [_scale_shift(m, r, None if w is None else w[i], c)
                 for i, (m, r) in enumerate(zip(means, rstds))]
        # one buffer: x plus every shift, then one multiply-add per source, then the ReLU in
        # place
        out = torch.add(x.to(stats_dtype(x.dtype)), _spatial(sum(b for _, b in terms), x))
        for y, (a, _) in zip(ys, terms):
            out.addcmul_(y, _spatial(a, x))
        out = (out.relu_() if relu else out).to(x.dtype)
    if not out_groups:
        return (out, *out_stats_like(out, 0, False))
    return (out, *norm_stats_aten(out, out_groups, out_eps, out_over_batch))


dense_aggregate = torch.library.custom_op('mmdsnet::dense_aggregate', dense_aggregate_aten,
                                          mutates_args=())


@dense_aggregate.register_fake
def _(x, ys, means, rstds, weight, own_stats, relu=True, out_groups=0, out_eps=1e-5,
      out_over_batch=False):
    _sync_inductor_table()
    _check(x, ys, means, rstds, weight, own_stats, out_groups, out_over_batch)
    return (torch.empty_like(x), *out_stats_like(x, out_groups, out_over_batch))


def source_backward(g: Tensor, y: Tensor, mean: Tensor, rstd: Tensor, w: Optional[Tensor],
                    own: bool, need_y: bool, need_w: bool,
                    native: Optional[bool] = None) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """``dL/dy`` and ``dL/dw`` of ``w * (y - mean) * rstd`` given ``g``; through the
    statistics too when they are ``y``'s own (``own``). ``native`` (default: on the CPU) uses
    ATen's fused norm backward kernels, otherwise the formula written out below."""
    n, c = y.shape[:2]
    acc = stats_dtype(y.dtype)
    if native is None:
        native = y.device.type == 'cpu'
    if own and native:
        # w * N(y) is an affine norm with gamma = w: ATen's fused norm backward returns dL/dy
        # (statistics included) and dL/dw in one kernel, and accepts bf16 / fp16 y and g with
        # float32 statistics and gamma on the CPU.
        gamma = (torch.ones(c, dtype=acc, device=y.device) if w is None else w.to(acc))
        g = g.to(y.dtype)
        if mean.shape[0] == n:
            dy, dw, _ = torch.ops.aten.native_group_norm_backward(
                g, y, mean.to(acc), rstd.to(acc), gamma, n, c, _hw(y), mean.shape[1],
                [need_y, need_w, False])
        else:  # training BatchNorm statistics
            dy, dw, _ = torch.ops.aten.native_batch_norm_backward(
                g, y, gamma, None, None, mean.reshape(c).to(acc), rstd.reshape(c).to(acc), True,
                0.0, [need_y, need_w, False])
        return dy, dw
    # The same mathematics, written out: with y_hat = (y - mean) * rstd and h = g * w,
    # dL/dw = sum_{n,hw} g * y_hat and dL/dy = rstd * (h - E[h] - y_hat * E[h * y_hat]), the
    # expectations over each group's elements (dropped for fixed statistics).
    a = _spatial(_per_channel(rstd, c).to(acc), y)
    y_hat = (y.to(acc) - _spatial(_per_channel(mean, c).to(acc), y)) * a
    gf = g.to(acc)
    dims = [0] + list(range(2, y.dim()))
    dw = (gf * y_hat).sum(dims) if need_w else None
    if not need_y:
        return None, dw
    h = gf if w is None else gf * _spatial(w.to(acc).reshape(1, c), y)
    if own:
        rows, groups = mean.shape
        red = dims[1:] if rows == n else dims

        def group_mean(t: Tensor) -> Tensor:
            s = t.sum(red, keepdim=True)  # (n or 1, C, 1, 1)
            s = s.reshape(s.shape[0], groups, -1).mean(2, keepdim=True)
            return s.repeat_interleave(c // groups, dim=1).reshape(
                s.shape[0], c, *([1] * (y.dim() - 2))) / (t.numel() / (s.shape[0] * c))

        h = h - group_mean(h) - y_hat * group_mean(h * y_hat)
    return (h * a).to(y.dtype), dw


def dense_aggregate_backward_aten(grad: Tensor, out: Tensor, ys: List[Tensor],
                                  means: List[Tensor], rstds: List[Tensor],
                                  weight: Optional[Tensor], own_stats: List[int],
                                  need_ys: List[bool],
                                  need_weight: bool,
                                  relu: bool = True) -> Tuple[Tensor, List[Tensor], Tensor]:
    """Gradients of :func:`dense_aggregate` (ATen implementation): ``(dx, [dy_i], dweight)``;
    a ``dy_i`` that is not needed (``need_ys[i]`` false) and ``dweight`` when not needed are
    empty tensors."""
    return _backward_aten(grad, out, ys, means, rstds, weight, own_stats, need_ys, need_weight,
                          relu, None)


def chain_backward_aten(grad: Tensor, out: Tensor, ys: List[Tensor], means: List[Tensor],
                        rstds: List[Tensor], weight: Optional[Tensor], own_stats: List[int],
                        need_ys: List[bool], need_weight: bool, relu: bool,
                        hs: List[Optional[Tensor]]) -> Tuple[Tensor, List[Tensor], Tensor]:
    """The backward of one aggregation of a chain (:func:`aggregate` with ``chain``), ATen
    implementation. As :func:`dense_aggregate_backward_aten`, except for the sources' gradients:
    each source but the last gets ``h_i = hs[i] + w_i * g`` (in place into ``hs[i]``; a new tensor
    where ``hs[i]`` is None), its shortcut gradient so far, with no norm backward; the last
    gets ``dL/dy = N'(hs[-1] + w g)``, the norm backward of its whole shortcut gradient (one norm
    backward per source, not one per edge). Returns ``(dx, [h_0 .. h_{S-2}, dy_{S-1}],
    dweight)``, empty where not needed."""
    return _backward_aten(grad, out, ys, means, rstds, weight, own_stats, need_ys, need_weight,
                          relu, hs)


def _backward_aten(grad, out, ys, means, rstds, weight, own_stats, need_ys, need_weight, relu,
                   hs, decomposed=False):
    """Both backward functions above: ``hs`` None (every source finalized on its own edge) or
    a chain's sums. ``decomposed``: functional and in the written-out formula on every device,
    with no layout promised (inductor's decomposition, where the operator's node is gone)."""
    native = False if decomposed else None
    # the ReLU, from its output; without it dL/dx is the incoming gradient (a copy: the
    # operator's outputs may not alias its inputs)
    g = torch.ops.aten.threshold_backward(grad, out, 0) if relu else grad.clone()
    c, last = out.shape[1], len(ys) - 1
    w = None if weight is None else weight.reshape(len(ys), c)
    need_w = need_weight and w is not None
    dw_rows, dys = [], []
    for i, (y, m, r, own, need_y) in enumerate(zip(ys, means, rstds, own_stats, need_ys)):
        wi = None if w is None else w[i]
        final = hs is None or i == last  # (its norm backward here, else a sum so far)
        h = hs[i] if hs is not None and need_y else None
        dy = None
        if final and h is None:  # this edge alone: dL/dy and dL/dw in one call
            if need_y or need_w:
                dy, dw = source_backward(g, y, m, r, wi, bool(own), need_y, need_w, native)
        else:
            dw = (source_backward(g, y, m, r, wi, bool(own), False, True, native)[1] if need_w
                  else None)
            if need_y and h is None:  # the first edge of an older source
                dy = g.to(y.dtype, copy=True) if wi is None else (g * _spatial(wi.reshape(1, c),
                                                                               g)).to(y.dtype)
            elif need_y:
                dy = h.add_(g) if wi is None else h.addcmul_(g, _spatial(wi.reshape(1, c), g))
                if final:
                    dy = source_backward(dy, y, m, r, None, bool(own), True, False, native)[0]
        if need_y:
            dys.append(dy.to(y.dtype) if decomposed else _like(dy, y))
        else:
            dys.append(y.new_empty(0))
        if need_w:
            dw_rows.append(dw.reshape(c))
    dweight = (torch.stack(dw_rows).to(weight.dtype).reshape(weight.shape) if need_w
               else out.new_empty(0))
    return g, dys, dweight


dense_aggregate_backward = torch.library.custom_op(
    'mmdsnet::dense_aggregate_backward', dense_aggregate_backward_aten, mutates_args=())


@dense_aggregate_backward.register_fake
def _(grad, out, ys, means, rstds, weight, own_stats, need_ys, need_weight, relu=True):
    dys = [torch.empty_like(y) if need else y.new_empty(0) for y, need in zip(ys, need_ys)]
    dweight = (torch.empty_like(weight) if need_weight and weight is not None
               else out.new_empty(0))
    return torch.empty_like(grad), dys, dweight


def _setup_context(ctx, inputs, output) -> None:
    x, ys, means, rstds, weight, own_stats, relu = inputs[:7]
    ctx.num_sources, ctx.relu = len(ys), relu
    ctx.own_stats = list(own_stats)
    ctx.has_weight = weight is not None
    ctx.ys_need_grad = [y.requires_grad for y in ys]
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.save_for_backward(output[0], weight, *ys, *means, *rstds)


def _backward(ctx, grad: Tensor, _grad_mean=None, _grad_rstd=None):
    out, weight, *rest = ctx.saved_tensors
    s = ctx.num_sources
    ys, means, rstds = rest[:s], rest[s:2 * s], rest[2 * s:]
    need_weight = ctx.has_weight and ctx.needs_input_grad[4]
    dx, dys, dweight = dense_aggregate_backward(grad, out, list(ys), list(means), list(rstds),
                                                weight, ctx.own_stats, ctx.ys_need_grad,
                                                need_weight, ctx.relu)
    dys = [dy if need else None for dy, need in zip(dys, ctx.ys_need_grad)]
    none = [None] * s
    own = None if s else []  # (an empty list input takes an empty list, not None)
    return dx, dys, none, none, (dweight if need_weight else None), own, None, None, None, None


dense_aggregate.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------ eager calls
# A call of a ``torch.library.custom_op`` runs Python layers around its kernel: argument
# flattening, alias checks and a Python autograd wrapper, about 0.3 ms of CPU per aggregation
# forward + backward. On a GPU at ImageNet batch sizes that CPU time, not the kernels, set the
# step time (docs/performance.md, "GPU"). In plain eager mode the models therefore call the very
# kernel the dispatcher would pick (the device's registered kernel, else the ATen
# implementation) through one small autograd.Function; whenever anything records or transforms
# the call (torch.jit.trace, torch.compile / export, a dispatch or function mode such as the FLOP
# counter or fake tensors, a tensor subclass), the operator itself runs.
#: The key of a chain's backward (:func:`chain_backward_aten`) in the kernel tables: an eager
#: function only, never an operator (see "chains" below).
CHAIN_BACKWARD = 'chain_backward'
_ATEN = {norm_stats: norm_stats_aten, dense_aggregate: dense_aggregate_aten,
         dense_aggregate_backward: dense_aggregate_backward_aten,
         CHAIN_BACKWARD: chain_backward_aten}
_KERNELS = ('device', 'aten')
_CALLS = ('eager', 'dispatcher')
_COMPILED = ('decomposed', 'operators')
_LAUNCHES = ('direct', 'triton')
# set by use_implementation only
_MODE = {'kernels': 'device', 'calls': 'eager', 'compiled': 'decomposed', 'launches': 'direct'}


@contextlib.contextmanager
def use_implementation(kernels: str = 'device', calls: str = 'eager',
                       compiled: str = 'decomposed', launches: str = 'direct'):
    """The one switch of the operators' implementation (A/B measurements, tests), as a context
    manager; the defaults are what runs without it.

    Args:
        kernels (str): ``'device'``: each device's registered kernel (the Triton kernels on
            CUDA, where triton imports; the ATen implementation where none is registered);
            ``'aten'``: the operators' ATen implementation on every device.
        calls (str): ``'eager'``: in plain eager mode the models call the kernel directly
            (see above); ``'dispatcher'``: always through the operators, as anything that records
            the call does.
        compiled (str): what inductor does with the operators under ``torch.compile``, read
            when a graph is compiled: ``'decomposed'``: compiles their decompositions (plain ATen
            operators, backward included), fused with the neighbouring operations;
            ``'operators'``: keeps each one node that calls the device kernel.
        launches (str): how the Triton kernels are launched: ``'direct'``: a compiled variant
            straight through its launcher (``mmdsnet.ops.triton_aggregate._Direct``);
            ``'triton'``: always through Triton's ``JITFunction.run``.

    Not thread-local: it holds for every thread while it is active.
    """
    if (kernels not in _KERNELS or calls not in _CALLS or compiled not in _COMPILED
            or launches not in _LAUNCHES):
        raise ValueError(f'use_implementation: kernels must be one of {_KERNELS}, calls one of '
                         f'{_CALLS}, compiled one of {_COMPILED} and launches one of '
                         f'{_LAUNCHES}, got {kernels!r}, {calls!r}, {compiled!r}, '
                         f'{launches!r}')
    old = dict(_MODE)
    _MODE.update(kernels=kernels, calls=calls, compiled=compiled, launches=launches)
    try:
        yield
    finally:
        _MODE.update(old)


def _plain_eager(t: Tensor) -> bool:
    if torch.compiler.is_compiling():
        # (read so that dynamo guards a compiled graph on it: a graph traced in the other mode
        # is traced again, see _sync_inductor_table)
        return _MODE['compiled'] is None
    return (_MODE['calls'] == 'eager' and type(t) in (Tensor, torch.nn.Parameter)
            and not torch.jit.is_tracing()
            and not torch._C._len_torch_dispatch_stack()
            and not torch._C._is_torch_function_mode_enabled()
            and not torch._C._functorch.is_functorch_wrapped_tensor(t))


_DEVICE_KERNELS = {}  # (operator, device type) -> kernel (register_device_kernel)


def register_device_kernel(op, device_type: str, fn) -> None:
    """Register ``fn`` as ``op``'s kernel for ``device_type`` (``op.register_kernel``), and
    remember it for the eager calls. The dispatcher's kernel follows
    :func:`use_implementation` (``kernels='aten'``: the ATen implementation)."""
    aten = _ATEN[op]

    @functools.wraps(fn)
    def kernel(*args, **kwargs):
        return (aten if _MODE['kernels'] == 'aten' else fn)(*args, **kwargs)
    if op is not CHAIN_BACKWARD:  # (not an operator: the eager calls alone use it)
        op.register_kernel(device_type)(kernel)
    _DEVICE_KERNELS[op, device_type] = fn


def kernel_for(op, t: Tensor):
    """The implementation that ``op`` dispatches to for ``t``'s device: its registered kernel
    for that device (e.g. Triton on CUDA), or its ATen implementation where none is registered
    or under ``use_implementation(kernels='aten')``."""
    fn = _DEVICE_KERNELS.get((op, t.device.type))
    if fn is None or _MODE['kernels'] == 'aten':
        return _ATEN[op]
    return fn


# Chains. In a stage, source Y_i is read by every later aggregation l > i, and autograd would
# add their dL/dY_i maps, one per edge (a written map, then a read-add-write each). The calls
# of a chain (a stage: targets l = 1, 2, ... in order, each X_l computed from Y_{l-1}) instead
# add ``w_l^i g_l`` into one buffer per source (:class:`SourceGrad`) and return no gradient for
# it, except the call whose last source it is: that call finalizes it with one norm backward of
# the whole sum, returned to autograd. Exact because that call runs backward after every other
# reader of Y_i (they all depend on its output); a contribution that arrived after the
# finalization would be lost, so it raises instead.
class SourceGrad:
    """The shortcut gradient of one source of a chain, summed so far within one backward pass
    (autograd's graph task): ``h``; ``done``: the task that finalized it."""
    __slots__ = ('task', 'h', 'done')

    def __init__(self):
        self.task, self.h, self.done = None, None, None

    def get(self, task: int) -> Optional[Tensor]:
        """The sum so far in this backward pass (None: nothing yet; a sum left by an earlier pass
        that never finalized it, e.g. ``autograd.grad`` of part of the graph, is dropped)."""
        if self.done == task:
            raise RuntimeError(
                'dense_aggregate: a shortcut gradient reached a source after the aggregation '
                'that finalizes it: the calls of a chain must follow the stage order (target l '
                'after l - 1, X_l computed from Y_{l-1}); build the model with '
                'aggregation_impl=\'reference\' for other graphs')
        return self.h if self.task == task else None

    def put(self, task: int, h: Optional[Tensor], final: bool) -> None:
        self.task, self.h = task, (None if final else h)
        if final:
            self.done = task


def new_chain(num_sources: int) -> List[SourceGrad]:
    """The gradient buffers of one chain (one stage's forward pass): ``chain[:l]`` goes with
    the call for target ``l`` (:func:`aggregate`)."""
    return [SourceGrad() for _ in range(num_sources)]


def _no_double_backward() -> None:
    if torch.is_grad_enabled():
        raise RuntimeError('dense_aggregate: double backward (create_graph=True) is not '
                           'supported by the aggregation operators; build the model with '
                           'aggregation_impl=\'reference\' for higher-order gradients')


class _Aggregate(torch.autograd.Function):
    """``mmdsnet::dense_aggregate`` with its registered autograd formula, without the operator's
    Python layers (eager mode only, see above). Inputs: ``own_stats, relu, out_stats, chain, x,
    weight, *ys, *means, *rstds``; with ``chain`` (one :class:`SourceGrad` per source) the
    sources' gradients are summed as described above."""

    @staticmethod
    def forward(ctx, own_stats, relu, out_stats, chain, x, weight, *flat):
        s = len(own_stats)
        ys, means, rstds = list(flat[:s]), list(flat[s:2 * s]), list(flat[2 * s:])
        out, mean, rstd = kernel_for(dense_aggregate, x)(x, ys, means, rstds, weight, own_stats,
                                                         relu, *out_stats)
        ctx.own_stats, ctx.relu, ctx.has_weight = own_stats, relu, weight is not None
        ctx.accs = chain
        ctx.mark_non_differentiable(mean, rstd)
        # a source with fixed statistics is not needed for its gradient unless W's is asked
        # for (e.g. a stage's projected input, source of Y_0): not kept, as ResNet keeps none
        w_grad = weight is not None and weight.requires_grad
        kept = [y if own or w_grad else None for y, own in zip(ys, own_stats)]
        ctx.save_for_backward(out, weight, *kept, *flat[s:])
        return out, mean, rstd

    @staticmethod
    def backward(ctx, grad, _grad_mean, _grad_rstd):
        _no_double_backward()
        out, weight, *flat = ctx.saved_tensors
        s = len(ctx.own_stats)
        ys, means, rstds = list(flat[:s]), list(flat[s:2 * s]), list(flat[2 * s:])
        if any(y is None for y in ys):  # (not read for their gradient: out stands in)
            ys = [out if y is None else y for y in ys]
        need_ys = list(ctx.needs_input_grad[6:6 + s])
        need_weight = ctx.has_weight and ctx.needs_input_grad[5]
        args = (grad, out, ys, means, rstds, weight, ctx.own_stats, need_ys, need_weight,
                ctx.relu)
        if ctx.accs is None:
            dx, dys, dweight = kernel_for(dense_aggregate_backward, grad)(*args)
        else:
            task = torch._C._current_graph_task_id()
            hs = [acc.get(task) if need else None for acc, need in zip(ctx.accs, need_ys)]
            dx, dys, dweight = kernel_for(CHAIN_BACKWARD, grad)(*args, hs)
            for i, (acc, need) in enumerate(zip(ctx.accs, need_ys)):
                if need:
                    acc.put(task, dys[i], i == s - 1)
            dys = [None] * (s - 1) + dys[-1:]
        return (None, None, None, None, dx, dweight if need_weight else None,
                *[dy if need else None for dy, need in zip(dys, need_ys)], *[None] * (2 * s))


def aggregate(x: Tensor, ys: List[Tensor], means: List[Tensor], rstds: List[Tensor],
              weight: Optional[Tensor], own_stats: List[int], relu: bool = True,
              out_stats: Optional[Tuple[int, float, bool]] = None,
              chain: Optional[Sequence[SourceGrad]] = None):
    """``mmdsnet::dense_aggregate(x, ys, means, rstds, weight, own_stats, relu, *out_stats)``:
    the operator, or in plain eager mode its kernel directly (same arithmetic, less CPU time per
    call). Returns ``out``, or with ``out_stats = (groups, eps, over_batch)`` ``(out, mean,
    rstd)``: ``out`` and its statistics (``norm_stats(out, *out_stats)``) from one pass.

    ``chain``: ``new_chain(S)[:len(ys)]`` when this call is target ``len(ys)`` of a stage's
    chain (see "chains" above); in plain eager mode the sources' gradients are then summed in
    one buffer per source and normalized once, instead of one map per edge that autograd adds.
    Double backward is refused in plain eager mode (the kernels' backward is not
    differentiable)."""
    stats = (0, 1e-5, False) if out_stats is None else tuple(out_stats)
    if _plain_eager(x):
        if chain is not None and len(chain) != len(ys):
            raise ValueError(f'aggregate: {len(ys)} sources but {len(chain)} chain buffers')
        result = _Aggregate.apply(list(own_stats), relu, stats, chain, x, weight, *ys, *means,
                                  *rstds)
    else:
        result = dense_aggregate(x, ys, means, rstds, weight, own_stats, relu, *stats)
    return result[0] if out_stats is None else tuple(result)


def source_stats(y: Tensor, groups: int, eps: float, over_batch: bool) -> Tuple[Tensor, Tensor]:
    """``mmdsnet::norm_stats(y, groups, eps, over_batch)``: the operator, or in plain eager mode
    its kernel directly (``y`` carries no gradient here: the aggregation differentiates through
    the statistics)."""
    if _plain_eager(y) and not y.requires_grad:
        return kernel_for(norm_stats, y)(y, groups, eps, over_batch)
    return norm_stats(y, groups, eps, over_batch)


# ------------------------------------------------ decompositions (exporters, inductor)
# The operators' mathematics in plain functional ATen operators: what an exporter that must see
# only standard operators (ONNX) writes, and what inductor compiles under torch.compile, where
# it fuses them with their neighbours (the statistics reductions, the normalize-add-ReLU
# pointwise chain) instead of calling an opaque kernel per node.
def _dense_aggregate_decomposed(x, ys, means, rstds, weight, own_stats, relu=True, out_groups=0,
                                out_eps=1e-5, out_over_batch=False):
    c = x.shape[1]
    acc = stats_dtype(x.dtype)  # (summed in float32 as the kernels do: no bf16 rounding per term)
    w = None if weight is None else weight.reshape(len(ys), c)
    out = x.to(acc)
    for i, (y, m, r) in enumerate(zip(ys, means, rstds)):
        a, b = _scale_shift(m, r, None if w is None else w[i], c)
        out = out + y.to(acc) * _spatial(a.to(acc), x) + _spatial(b.to(acc), x)
    out = (torch.relu(out) if relu else out).to(x.dtype)
    if not out_groups:
        return (out, *out_stats_like(out, 0, False))
    return (out, *_norm_stats_decomposed(out, out_groups, out_eps, out_over_batch))


def _norm_stats_decomposed(y, groups, eps, over_batch):
    n, c = y.shape[:2]
    y = y.to(stats_dtype(y.dtype))
    if over_batch:
        var, mean = torch.var_mean(y.transpose(0, 1).reshape(c, -1), dim=1, correction=0)
        return mean.reshape(1, c), torch.rsqrt(var + eps).reshape(1, c)
    var, mean = torch.var_mean(y.reshape(n, groups, -1), dim=2, correction=0)
    return mean, torch.rsqrt(var + eps)


def _dense_aggregate_backward_decomposed(grad, out, ys, means, rstds, weight, own_stats, need_ys,
                                         need_weight, relu=True):
    return _backward_aten(grad, out, ys, means, rstds, weight, own_stats, need_ys, need_weight,
                          relu, None, decomposed=True)


def export_decompositions() -> dict:
    """The operators' forward written with plain ATen operators, for exporters that must see only
    standard operators (ONNX): ``exported_program.run_decompositions(export_decompositions())``.
    Inference only; the same mathematics, checked against the operators by the tests."""
    return {torch.ops.mmdsnet.dense_aggregate.default: _dense_aggregate_decomposed,
            torch.ops.mmdsnet.norm_stats.default: _norm_stats_decomposed}


def _sync_inductor_table() -> None:
    """Inductor's decomposition table holds the decompositions above (the exporters' forward
    ones and the backward) under ``use_implementation(compiled='decomposed')`` and not under
    ``'operators'`` (inductor then calls the operators, i.e. their device kernels, as opaque
    nodes). Called from the operators' fake implementations, which dynamo runs while it traces,
    before any backend compiles: the table follows the mode at tracing time, and a process that
    never compiles does not import inductor's table (~0.8 s)."""
    try:
        from torch._inductor.decomposition import decompositions, select_decomp_table
    except ImportError:  # (no inductor in this torch build: nothing to tell it)
        return
    ours = dict(export_decompositions())
    ours[torch.ops.mmdsnet.dense_aggregate_backward.default] = (
        _dense_aggregate_backward_decomposed)
    # inductor reads select_decomp_table(): once anything was compiled in this process, a
    # cached copy of the module's table (it misses entries added later)
    for table in (decompositions, select_decomp_table()):
        for op, fn in ours.items():
            if _MODE['compiled'] == 'decomposed':
                table[op] = fn
            else:
                table.pop(op, None)
