"""Triton kernels behind the dense-aggregation operators, for CUDA tensors.

The operators of :mod:`mmdsnet.ops.dense_aggregate` keep their schemas, fake implementations and
ATen implementation; :func:`register_cuda_kernels` adds the functions below as their ``'cuda'``
kernels (``register_kernel``), so ``torch.compile``, ``torch.export`` and the FLOP counter see the
same single nodes as before. Each function runs the kernels where it can and hands anything else
to the ATen implementation (:func:`_aten`): an input dtype other than fp16 / bf16 / fp32 / fp64,
sources of different dtypes or strides, spatial dimensions that do not collapse to one stride (a
strided slice), statistics whose shape is not ``(N or 1, G)`` with ``G`` dividing ``C``, no
source, an empty tensor, a CUDA graph being captured (the pointer table is made per call), or
arguments that do not match (ATen then raises its error).

Notation (paper Eq. 12 with ``N`` written out): ``y_hat_i = (y_i - mean_i) * rstd_i``, the
statistics broadcast over the ``C / G`` channels of each group and, with one row, over the batch;
``w_i`` is ``W_l^i`` (one per channel, all ones without weight)::

    out = act(x + sum_i w_i * y_hat_i)                                     (forward)
    g   = grad * [out > 0] = dL/dx      (grad itself without the ReLU: act = identity)
    dL/dw_i[c] = sum_{n, hw} g * y_hat_i
    dL/dy_i = rstd_i * (w_i * g - E[w_i * g] - y_hat_i * E[w_i * g * y_hat_i])   (own stats)
    dL/dy_i = rstd_i * w_i * g                                           (fixed stats)

the expectations ``E`` over the elements each statistic was computed from (one group of one
sample for GN / LN / IN, one channel over the batch for BatchNorm's batch statistics).

Passes over the feature maps (each a grid of ``(BLOCK_C, BLOCK_HW)`` tiles of one sample):

* ``norm_stats``: one reduction pass over ``y`` (:func:`_stats_partial_kernel`: mean and
  ``M2 = sum (y - mean)^2`` of every tile row) and a small combine over those partials
  (:func:`_stats_combine_kernel`, Chan's parallel formula, so no ``E[y^2] - E[y]^2``
  cancellation);
* ``dense_aggregate``: one pass (:func:`_aggregate_kernel`): reads ``x`` and every ``y_i`` once,
  normalizes each on the fly from its statistics, adds, applies the ReLU, writes ``out``;
* ``dense_aggregate_backward``: two passes over ``g`` and the ``y_i``, the minimum when the
  statistics are the sources' own (the group sums must be complete before any ``dL/dy_i``):
  :func:`_backward_reduce_kernel` reads ``grad``, ``out`` and the ``y_i``, writes ``dL/dx = g``
  and per tile row ``sum g`` and ``sum g * y_hat_i``; :func:`_backward_terms_kernel` turns those
  partials into ``E[w_i g]`` and ``E[w_i g y_hat_i]`` per statistic (small); and
  :func:`_backward_apply_kernel` reads ``g`` and the ``y_i`` again and writes every ``dL/dy_i``.
  ``dL/dW`` is the sum of the ``sum g * y_hat_i`` partials (one ATen ``sum``). With fixed
  statistics only and no ``dL/dW`` (BatchNorm in evaluation, no normalization) the reduce pass
  is skipped: one pass. No normalized source and no per-edge temporary other than the ``dL/dy_i``
  that autograd itself accumulates.

Any number of sources (up to 35 in a DSNet152 block) is handled in one launch per pass through
a pointer table: an int64 tensor with one row per source (its data pointer, its statistics'
pointers, their layout), which the kernels read at run time in a loop over the sources. One
compiled kernel serves every source count, and every pass reads ``x`` / ``g`` once whatever the
count, where fixed-size chunks of sources would read and write the running sum once per chunk
(or compile one kernel per count). The price: all sources of one call share one dtype and one
set of strides (true in the models; otherwise ATen runs), and the table is copied to the device
per call (a few hundred bytes, from pinned memory, without synchronizing).

Arithmetic is in float32 whatever the input dtype (float64 for float64 input); every block load
and store (feature maps, statistics, weights, partials) is masked, and the scalar ones (table
rows, one statistic per combine program) are in range by construction, so any ``H``, ``W``,
``C``, ``N >= 1`` and group size work; NCHW, channels_last and any layout whose spatial
dimensions collapse to one stride are read through their strides, and the tile shape follows
the contiguous dimension. The sums are in a fixed order (no atomics): results are
deterministic.

The kernels also run on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set before
triton is imported): that is how tests/test_triton_kernels.py checks them without a GPU.
"""
import contextlib
from typing import List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

# the operator objects (the package's ``dense_aggregate`` name is the operator, not the module)
from .dense_aggregate import _ATEN
from .dense_aggregate import dense_aggregate as _aggregate_op
from .dense_aggregate import dense_aggregate_backward as _backward_op
from .dense_aggregate import norm_stats as _stats_op
from .dense_aggregate import register_device_kernel, stats_dtype

__all__ = ['norm_stats', 'dense_aggregate', 'dense_aggregate_backward', 'register_cuda_kernels']

#: Elements per tile (a power of two); the tile's long side follows the contiguous dimension.
MAX_TILE = 2048
#: Longest spatial side of a tile (NCHW) and widest channel side (channels_last).
MAX_BLOCK_HW = 512
MAX_BLOCK_C = 64
#: Partials reduced per step by the combine kernels.
BLOCK_R = 256

_TL = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
       torch.float64: tl.float64}


# ---------------------------------------------------------------------------------- kernels
# Counts (sources, samples, tiles, groups) are not specialized on: one compiled kernel for every
# value, where Triton would otherwise compile another one for the value 1 (one source: DS2's
# inner shortcut, the first dense block) and for multiples of 16.
@triton.jit
def _tile(C, HW, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """This program's tile of the feature maps (grid ``(tiles of HW, tiles of C, N)``): tile index
    ``p``, sample ``n``, channels ``c``, positions ``hw``, the channel mask and the tile's mask."""
    p = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    n = tl.program_id(2).to(tl.int64)
    hw = p * BLOCK_HW + tl.arange(0, BLOCK_HW)
    cm = c < C
    return p, n, c, hw, cm, cm[:, None] & (hw < HW)[None, :]


@triton.jit(do_not_specialize=['N', 'P'])
def _stats_partial_kernel(y_ptr, part_ptr, N, C, HW, P, syn, syc, syh,
                          ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """Tile ``p`` of sample ``n``: per channel ``c``, over the tile's valid positions ``hw``,
    ``mean = sum y / count`` and ``M2 = sum (y - mean)^2``, stored at ``part[0 | 1, n, c, p]``."""
    p, n, c, hw, cm, mask = _tile(C, HW, BLOCK_C, BLOCK_HW)
    y = tl.load(y_ptr + n * syn + c[:, None] * syc + hw[None, :] * syh, mask=mask,
                other=0.).to(ACC)
    count = tl.minimum(HW - p * BLOCK_HW, BLOCK_HW).to(ACC)
    mean = tl.sum(y, 1) / count
    d = tl.where(mask, y - mean[:, None], 0.)
    out = (n * C + c) * P + p
    tl.store(part_ptr + out, mean, mask=cm)
    tl.store(part_ptr + N * C * P + out, tl.sum(d * d, 1), mask=cm)


@triton.jit(do_not_specialize=['N', 'P', 'G', 'ROWS'])
def _stats_combine_kernel(part_ptr, mean_ptr, rstd_ptr, N, C, HW, P, G, ROWS, eps,
                          ACC: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_R: tl.constexpr):
    """Statistic ``(m, g)``: merge the tile partials of its ``ROWS`` samples (``m`` itself when
    ``ROWS == 1``, the whole batch for BatchNorm) and its ``C / G`` channels with Chan's formula
    (count ``k``, mean ``u``, ``M2``: ``u = (k_a u_a + k_b u_b) / k``, ``M2 = M2_a + M2_b +
    (u_b - u_a)^2 k_a k_b / k``); store ``mean = u`` and ``rstd = 1 / sqrt(M2 / k + eps)``."""
    g = tl.program_id(0)
    m = tl.program_id(1).to(tl.int64)
    cpg = C // G
    R = ROWS * cpg * P
    count = tl.zeros([], dtype=ACC)
    mean = tl.zeros([], dtype=ACC)
    m2 = tl.zeros([], dtype=ACC)
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        valid = r < R
        n = m + r // (cpg * P)
        rest = r % (cpg * P)
        p = rest % P
        idx = (n * C + g * cpg + rest // P) * P + p
        u = tl.load(part_ptr + idx, mask=valid, other=0.)
        v = tl.load(part_ptr + N * C * P + idx, mask=valid, other=0.)
        k = tl.where(valid, tl.minimum(HW - p * BLOCK_HW, BLOCK_HW), 0).to(ACC)
        k_b = tl.sum(k, 0)
        u_b = tl.sum(k * u, 0) / k_b
        m2_b = tl.sum(v + k * (u - u_b) * (u - u_b), 0)
        total = count + k_b
        delta = u_b - mean
        mean += delta * k_b / total
        m2 += m2_b + delta * delta * count * k_b / total
        count = total
    out = m * G + g
    tl.store(mean_ptr + out, mean)
    tl.store(rstd_ptr + out, 1. / tl.sqrt(m2 / count + eps))


@triton.jit
def _load_source(row, n, c, cm, y_off, mask, ALIGNED: tl.constexpr, Y_T: tl.constexpr,
                 ACC: tl.constexpr):
    """One source of a pointer table, for the tile of sample ``n`` and channels ``c``: its row
    starts ``y, mean, rstd, row_stride, cpg`` (see :func:`_aggregate_kernel`). Returns ``y`` (in
    ``ACC``), its statistics per channel and ``s``, the statistics' index (``n * row_stride +
    c // cpg``)."""
    y_ptr = tl.load(row).to(tl.pointer_type(Y_T))
    if ALIGNED:
        y_ptr = tl.multiple_of(y_ptr, 16)
    s = n * tl.load(row + 3) + c // tl.load(row + 4)
    mean = tl.load(tl.load(row + 1).to(tl.pointer_type(ACC)) + s, mask=cm, other=0.)
    rstd = tl.load(tl.load(row + 2).to(tl.pointer_type(ACC)) + s, mask=cm, other=0.)
    y = tl.load(y_ptr + y_off, mask=mask, other=0.).to(ACC)
    return y, mean, rstd, s


@triton.jit(do_not_specialize=['S'])
def _aggregate_kernel(x_ptr, out_ptr, table_ptr, w_ptr, S, C, HW,
                      sxn, sxc, sxh, syn, syc, syh, son, soc, soh,
                      HAS_W: tl.constexpr, RELU: tl.constexpr, ALIGNED: tl.constexpr,
                      Y_T: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                      BLOCK_HW: tl.constexpr):
    """``out = act(x + sum_i w_i * (y_i - mean_i) * rstd_i)`` on one tile, in one pass
    (``act``: the ReLU if ``RELU``, else none).

    ``table`` row ``i`` (int64): ``y_i``, ``mean_i``, ``rstd_i`` (pointers), the statistics'
    row stride (``G``, or 0 when one row serves the batch) and channels per group: the statistic
    of ``(n, c)`` is at ``n * row_stride + c // cpg``. ``w`` is ``(S, C)``. ``ALIGNED``: every
    ``y_i`` starts on 16 bytes (a pointer read from memory carries no alignment the compiler
    can see; without the hint, loads through it are not vectorized)."""
    _p, n, c, hw, cm, mask = _tile(C, HW, BLOCK_C, BLOCK_HW)
    acc = tl.load(x_ptr + n * sxn + c[:, None] * sxc + hw[None, :] * sxh, mask=mask,
                  other=0.).to(ACC)
    y_off = n * syn + c[:, None] * syc + hw[None, :] * syh
    for i in range(S):
        y, mean, a, _ = _load_source(table_ptr + i * 5, n, c, cm, y_off, mask, ALIGNED, Y_T,
                                     ACC)
        if HAS_W:
            a *= tl.load(w_ptr + i * C + c, mask=cm, other=0.).to(ACC)
        acc += (y - mean[:, None]) * a[:, None]
    if RELU:
        acc = tl.where(acc < 0., 0., acc)  # NaN stays NaN, as in ATen
    tl.store(out_ptr + n * son + c[:, None] * soc + hw[None, :] * soh,
             acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=['S', 'N', 'P'])
def _backward_reduce_kernel(grad_ptr, out_ptr, dx_ptr, table_ptr, part_ptr, S, N, C, HW, P,
                            sgn, sgc, sgh, son, soc, soh, sdn, sdc, sdh, syn, syc, syh,
                            SUM_G: tl.constexpr, RELU: tl.constexpr, ALIGNED: tl.constexpr,
                            Y_T: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                            BLOCK_HW: tl.constexpr):
    """First backward pass, tile ``p`` of sample ``n``: ``g = grad * [out > 0]`` (``grad``
    without the ReLU), stored as
    ``dL/dx``; per channel ``sum_hw g`` (``part[0]``, if ``SUM_G``) and, for every source of the
    table (rows as in :func:`_aggregate_kernel`), ``sum_hw g * (y_i - mean_i) * rstd_i``
    (``part[1 + i]``); ``part`` is ``(1 + S, N, C, P)``."""
    p, n, c, hw, cm, mask = _tile(C, HW, BLOCK_C, BLOCK_HW)
    grad = tl.load(grad_ptr + n * sgn + c[:, None] * sgc + hw[None, :] * sgh, mask=mask,
                   other=0.)
    if RELU:  # ReLU backward from its output (ATen's threshold)
        out = tl.load(out_ptr + n * son + c[:, None] * soc + hw[None, :] * soh, mask=mask,
                      other=0.)
        g = tl.where(out <= 0., 0., grad)
    else:
        g = grad
    tl.store(dx_ptr + n * sdn + c[:, None] * sdc + hw[None, :] * sdh, g, mask=mask)
    g = g.to(ACC)
    dst = (n * C + c) * P + p
    if SUM_G:
        tl.store(part_ptr + dst, tl.sum(g, 1), mask=cm)
    y_off = n * syn + c[:, None] * syc + hw[None, :] * syh
    for i in range(S):
        y, mean, rstd, _ = _load_source(table_ptr + i * 5, n, c, cm, y_off, mask, ALIGNED, Y_T,
                                        ACC)
        y_hat = (y - mean[:, None]) * rstd[:, None]
        tl.store(part_ptr + (i + 1) * N * C * P + dst, tl.sum(g * y_hat, 1), mask=cm)


@triton.jit(do_not_specialize=['N', 'P', 'MG'])
def _backward_terms_kernel(part_ptr, w_ptr, table_ptr, terms_ptr, N, C, HW, P, MG,
                           HAS_W: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr):
    """Source ``j`` of the table, statistic ``(m, g)``: ``E[w g]`` and ``E[w g y_hat]`` over
    the statistic's elements (``rows x C/G x HW``), from the reduce pass's partials; stored at
    ``terms[j, 0 | 1, m * G + g]``. Table row ``j`` (int64): the source's row in ``part``, its
    row in ``w``, ``G``, the number of statistic rows ``M`` (``N``, or 1 for the batch)."""
    g = tl.program_id(0)
    m = tl.program_id(1).to(tl.int64)
    j = tl.program_id(2)
    row = table_ptr + j * 4
    part_row = tl.load(row)
    w_row = tl.load(row + 1)
    G = tl.load(row + 2)
    M = tl.load(row + 3)
    cpg = C // G
    rows = tl.where(M == 1, N, 1)
    # programs beyond this source's (M, G) reduce nothing and store nothing
    R = tl.where((g < G) & (m < M), rows * cpg * P, 0)
    sum_h = tl.zeros([BLOCK_R], dtype=ACC)
    sum_hy = tl.zeros([BLOCK_R], dtype=ACC)
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        valid = r < R
        rest = r % (cpg * P)
        c = g * cpg + rest // P
        idx = ((m + r // (cpg * P)) * C + c) * P + rest % P
        a = tl.load(part_ptr + idx, mask=valid, other=0.)
        b = tl.load(part_ptr + part_row * N * C * P + idx, mask=valid, other=0.)
        if HAS_W:
            w = tl.load(w_ptr + w_row * C + c, mask=valid, other=0.).to(ACC)
            a *= w
            b *= w
        sum_h += a
        sum_hy += b
    count = (rows * cpg * HW).to(ACC)
    dst = terms_ptr + j * 2 * MG + m * G + g
    ok = (g < G) & (m < M)
    tl.store(dst, tl.sum(sum_h, 0) / count, mask=ok)
    tl.store(dst + MG, tl.sum(sum_hy, 0) / count, mask=ok)


@triton.jit(do_not_specialize=['S', 'MG'])
def _backward_apply_kernel(grad_ptr, out_ptr, dx_ptr, table_ptr, terms_ptr, w_ptr, S, C, HW, MG,
                           sgn, sgc, sgh, son, soc, soh, sdn, sdc, sdh, syn, syc, syh,
                           szn, szc, szh, HAS_W: tl.constexpr, G_FROM_DX: tl.constexpr,
                           RELU: tl.constexpr, ALIGNED: tl.constexpr, Y_T: tl.constexpr,
                           ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """Last backward pass, one tile: ``g`` (read back from ``dL/dx`` if the reduce pass wrote it,
    ``G_FROM_DX``, else ``grad * [out > 0]``, then stored as ``dL/dx``), and for every source of
    the table ``dL/dy_i = rstd_i * (w_i g - E[w_i g] - y_hat_i E[w_i g y_hat_i])``, the two
    expectations taken from ``terms`` for own statistics and zero for fixed ones. Table row
    ``i`` (int64): ``y_i``, ``mean_i``, ``rstd_i``, row stride, ``cpg`` (as in
    :func:`_aggregate_kernel`), own statistics (0 / 1), ``dL/dy_i`` (pointer, strides ``sz*``),
    the source's row in ``w`` and its row in ``terms``."""
    _p, n, c, hw, cm, mask = _tile(C, HW, BLOCK_C, BLOCK_HW)
    dx_off = n * sdn + c[:, None] * sdc + hw[None, :] * sdh
    if G_FROM_DX:
        g = tl.load(dx_ptr + dx_off, mask=mask, other=0.)
    else:
        g = tl.load(grad_ptr + n * sgn + c[:, None] * sgc + hw[None, :] * sgh, mask=mask,
                    other=0.)
        if RELU:
            out = tl.load(out_ptr + n * son + c[:, None] * soc + hw[None, :] * soh, mask=mask,
                          other=0.)
            g = tl.where(out <= 0., 0., g)
        tl.store(dx_ptr + dx_off, g, mask=mask)
    g = g.to(ACC)
    y_off = n * syn + c[:, None] * syc + hw[None, :] * syh
    z_off = n * szn + c[:, None] * szc + hw[None, :] * szh
    for i in range(S):
        row = table_ptr + i * 9
        y, mean, rstd, s = _load_source(row, n, c, cm, y_off, mask, ALIGNED, Y_T, ACC)
        own = cm & (tl.load(row + 5) != 0)
        dy_ptr = tl.load(row + 6).to(tl.pointer_type(Y_T))
        if ALIGNED:  # dL/dy_i, as y_i
            dy_ptr = tl.multiple_of(dy_ptr, 16)
        if HAS_W:
            w = tl.load(w_ptr + tl.load(row + 7) * C + c, mask=cm, other=0.).to(ACC)
        else:
            w = tl.full([BLOCK_C], 1., ACC)
        t = terms_ptr + tl.load(row + 8) * 2 * MG + s
        e_h = tl.load(t, mask=own, other=0.)
        e_hy = tl.load(t + MG, mask=own, other=0.)
        y_hat = (y - mean[:, None]) * rstd[:, None]
        dy = rstd[:, None] * (w[:, None] * g - e_h[:, None] - y_hat * e_hy[:, None])
        tl.store(dy_ptr + z_off, dy.to(Y_T), mask=mask)


# ---------------------------------------------------------------------------------- launchers
def _aten(op):
    """The operator's own ATen implementation (what the kernels stand beside). Every hand-over
    goes through here (tests refuse it)."""
    return _ATEN[op]


def _flat(t: Tensor) -> Optional[Tuple[int, int, int]]:
    """``t``'s strides as ``(N, C, HW)``, or None if its spatial dimensions do not collapse to
    one stride (e.g. a strided slice of a map)."""
    dims = [(size, stride) for size, stride in zip(t.shape[2:], t.stride()[2:]) if size != 1]
    for (_, outer), (size, inner) in zip(dims, dims[1:]):
        if outer != size * inner:
            return None
    return t.stride(0), t.stride(1), dims[-1][1] if dims else 1


def _capturing(t: Tensor) -> bool:
    """Whether a CUDA graph is being captured on ``t``'s device: the per-call pointer table
    would be baked into the graph and be stale on replay, so ATen runs instead."""
    return t.device.type == 'cuda' and torch.cuda.is_current_stream_capturing()


def _aligned(ts: Sequence[Tensor]) -> bool:
    """Whether every tensor starts on 16 bytes (the caching allocator's blocks do; views with an
    offset may not)."""
    return all(t.data_ptr() % 16 == 0 for t in ts)


def _hw(t: Tensor) -> int:
    return t.numel() // (t.shape[0] * t.shape[1])


def _blocks(c: int, hw: int, strides: Tuple[int, int, int]) -> Tuple[int, int]:
    """``(BLOCK_C, BLOCK_HW)``: long along the contiguous dimension (channels for channels_last,
    positions otherwise), ``MAX_TILE`` elements at most, no longer than the map."""
    if strides[1] == 1 and strides[2] != 1 and hw > 1:  # channels_last
        block_c = min(triton.next_power_of_2(c), MAX_BLOCK_C, MAX_TILE)
        return block_c, min(triton.next_power_of_2(hw), max(1, MAX_TILE // block_c))
    block_hw = min(triton.next_power_of_2(hw), MAX_BLOCK_HW, MAX_TILE)
    return min(triton.next_power_of_2(c), max(1, MAX_TILE // block_hw)), block_hw


def _table(rows: List[List[int]], device: torch.device) -> Tensor:
    """The per-source table as an int64 tensor on ``device`` (at least one row, so that an
    empty loop still gets a valid pointer), copied from pinned memory without a sync."""
    t = torch.tensor(rows or [[0]], dtype=torch.int64)
    if device.type == 'cuda':
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class _Sources:
    """What the kernels need to know about ``ys`` and their statistics, or ``ok = False``."""

    def __init__(self, ref: Tensor, ys: Sequence[Tensor], means: Sequence[Tensor],
                 rstds: Sequence[Tensor], weight: Optional[Tensor]):
        self.ok = False
        n, c = ref.shape[:2] if ref.dim() >= 2 else (0, 0)
        s = len(ys)
        if (s == 0 or ref.dim() < 2 or ref.numel() == 0 or ref.dtype not in _TL or _capturing(ref)
                or not (len(means) == len(rstds) == s)
                or (weight is not None and (weight.numel() != s * c
                                            or weight.device != ref.device))):
            return
        y0 = ys[0]
        self.acc = stats_dtype(ref.dtype)
        if (y0.dtype not in _TL or stats_dtype(y0.dtype) != self.acc
                or any(y.shape != ref.shape or y.dtype != y0.dtype or y.stride() != y0.stride()
                       or y.device != ref.device for y in ys)):
            return
        self.y_strides = _flat(y0)
        if self.y_strides is None:
            return
        self.means, self.rstds, self.layout = [], [], []
        for mean, rstd in zip(means, rstds):
            if mean.dim() != 2 or mean.shape != rstd.shape or mean.device != ref.device:
                return
            rows, groups = mean.shape
            if rows not in (1, n) or groups == 0 or c % groups:
                return
            self.means.append(mean.to(self.acc).contiguous())
            self.rstds.append(rstd.to(self.acc).contiguous())
            # (n, c) reads its statistic at n * row_stride + c // cpg
            self.layout.append((groups if rows == n and n > 1 else 0, c // groups, groups, rows))
        self.ys = ys
        self.n, self.c, self.hw = n, c, _hw(ref)
        self.weight = None if weight is None else weight.reshape(s, c).contiguous()
        self.ok = True

    def rows(self, which: Sequence[int]) -> List[List[int]]:
        """Table rows ``y, mean, rstd, row_stride, cpg`` of the sources ``which``."""
        return [[self.ys[i].data_ptr(), self.means[i].data_ptr(), self.rstds[i].data_ptr(),
                 *self.layout[i][:2]] for i in which]


def _device(t: Tensor):
    """Launch on ``t``'s GPU whichever is current (nothing to select for CPU tensors)."""
    return torch.cuda.device(t.device) if t.device.type == 'cuda' else contextlib.nullcontext()


def norm_stats(y: Tensor, groups: int, eps: float, over_batch: bool) -> Tuple[Tensor, Tensor]:
    """``mmdsnet::norm_stats``: ``(mean, rstd)`` of ``y`` per (sample, group), ``(N, G)``, or per
    channel over the batch, ``(1, C)`` (``over_batch``); one pass over ``y``."""
    strides = _flat(y) if y.dim() >= 2 else None
    if (strides is None or y.dtype not in _TL or y.numel() == 0 or groups <= 0
            or y.shape[1] % groups or (over_batch and groups != y.shape[1]) or _capturing(y)):
        return _aten(_stats_op)(y, groups, eps, over_batch)
    n, c = y.shape[:2]
    hw = _hw(y)
    acc = stats_dtype(y.dtype)
    block_c, block_hw = _blocks(c, hw, strides)
    p = triton.cdiv(hw, block_hw)
    part = torch.empty((2, n, c, p), dtype=acc, device=y.device)
    rows = 1 if over_batch else n
    mean = torch.empty((rows, groups), dtype=acc, device=y.device)
    rstd = torch.empty_like(mean)
    with _device(y):
        _stats_partial_kernel[(p, triton.cdiv(c, block_c), n)](
            y, part, n, c, hw, p, *strides, ACC=_TL[acc], BLOCK_C=block_c, BLOCK_HW=block_hw)
        _stats_combine_kernel[(groups, rows)](
            part, mean, rstd, n, c, hw, p, groups, n if over_batch else 1, eps, ACC=_TL[acc],
            BLOCK_HW=block_hw, BLOCK_R=BLOCK_R)
    return mean, rstd


def dense_aggregate(x: Tensor, ys: List[Tensor], means: List[Tensor], rstds: List[Tensor],
                    weight: Optional[Tensor], own_stats: List[int], relu: bool = True) -> Tensor:
    """``mmdsnet::dense_aggregate``: ``act(x + sum_i w_i * (y_i - mean_i) * rstd_i)`` in one
    pass (``act``: the ReLU if ``relu``)."""
    src = _Sources(x, ys, means, rstds, weight)
    x_strides = _flat(x) if src.ok else None
    if x_strides is None or len(own_stats) != len(ys):
        return _aten(_aggregate_op)(x, ys, means, rstds, weight, own_stats, relu)
    out = torch.empty_like(x)
    out_strides = _flat(out)
    block_c, block_hw = _blocks(src.c, src.hw, src.y_strides)
    table = _table(src.rows(range(len(ys))), x.device)
    with _device(x):
        _aggregate_kernel[(triton.cdiv(src.hw, block_hw), triton.cdiv(src.c, block_c), src.n)](
            x, out, table, x if src.weight is None else src.weight, len(ys), src.c, src.hw,
            *x_strides, *src.y_strides, *out_strides, HAS_W=src.weight is not None,
            RELU=bool(relu), ALIGNED=_aligned(ys), Y_T=_TL[ys[0].dtype], ACC=_TL[src.acc],
            BLOCK_C=block_c, BLOCK_HW=block_hw)
    return out


def dense_aggregate_backward(grad: Tensor, out: Tensor, ys: List[Tensor], means: List[Tensor],
                             rstds: List[Tensor], weight: Optional[Tensor],
                             own_stats: List[int], need_ys: List[bool], need_weight: bool,
                             relu: bool = True) -> Tuple[Tensor, List[Tensor], Tensor]:
    """``mmdsnet::dense_aggregate_backward``: ``(dL/dx, [dL/dy_i], dL/dW)``, two passes over
    ``g`` and the ``y_i`` (one when no statistics are the sources' own and no ``dL/dW`` is
    needed); a gradient not asked for is an empty tensor, as in the ATen implementation."""
    s = len(ys)
    src = _Sources(out, ys, means, rstds, weight)
    g_strides = _flat(grad) if src.ok and grad.shape == out.shape and grad.dtype in _TL else None
    o_strides = _flat(out) if g_strides is not None else None
    if (o_strides is None or stats_dtype(grad.dtype) != src.acc
            or not (len(own_stats) == len(need_ys) == s)):
        return _aten(_backward_op)(grad, out, ys, means, rstds, weight, own_stats, need_ys,
                                 need_weight, relu)
    n, c, hw = src.n, src.c, src.hw
    acc, y_t = src.acc, _TL[ys[0].dtype]
    need_w = need_weight and weight is not None
    own = [i for i in range(s) if need_ys[i] and own_stats[i]]
    reduce = list(range(s)) if need_w else own  # sources whose sum g * y_hat is needed
    dx = torch.empty_like(grad)
    dx_strides = _flat(dx)
    block_c, block_hw = _blocks(c, hw, src.y_strides)
    p = triton.cdiv(hw, block_hw)
    grid = (p, triton.cdiv(c, block_c), n)
    w = out if src.weight is None else src.weight
    part = terms = src.means[0]  # placeholders (never read) where a pass does not run
    mg = 1
    with _device(out):
        if reduce:
            part = torch.empty((1 + len(reduce), n, c, p), dtype=acc, device=out.device)
            _backward_reduce_kernel[grid](
                grad, out, dx, _table(src.rows(reduce), out.device), part, len(reduce), n, c,
                hw, p, *g_strides, *o_strides, *dx_strides, *src.y_strides, SUM_G=bool(own),
                RELU=bool(relu), ALIGNED=_aligned(ys), Y_T=y_t, ACC=_TL[acc], BLOCK_C=block_c,
                BLOCK_HW=block_hw)
        if own:
            shapes = [src.layout[i][2:] for i in own]  # (G, M)
            mg = max(groups * rows for groups, rows in shapes)
            terms = torch.empty((len(own), 2, mg), dtype=acc, device=out.device)
            table = _table([[1 + reduce.index(i), i, groups, rows]
                            for i, (groups, rows) in zip(own, shapes)], out.device)
            _backward_terms_kernel[(max(g for g, _ in shapes), max(m for _, m in shapes),
                                    len(own))](
                part, w, table, terms, n, c, hw, p, mg, HAS_W=src.weight is not None,
                ACC=_TL[acc], BLOCK_R=BLOCK_R)
        needed = [i for i in range(s) if need_ys[i]]
        dys = [torch.empty_like(ys[i]) if need_ys[i] else ys[i].new_empty(0) for i in range(s)]
        if needed or not reduce:
            z_strides = _flat(dys[needed[0]]) if needed else (0, 0, 0)
            rows = [r + [int(bool(own_stats[i])), dys[i].data_ptr(), i,
                         own.index(i) if i in own else 0]
                    for i, r in zip(needed, src.rows(needed))]
            _backward_apply_kernel[grid](
                grad, out, dx, _table(rows, out.device), terms, w, len(needed), c, hw, mg,
                *g_strides, *o_strides, *dx_strides, *src.y_strides, *z_strides,
                HAS_W=src.weight is not None, G_FROM_DX=bool(reduce), RELU=bool(relu),
                ALIGNED=_aligned(list(ys) + [dys[i] for i in needed]), Y_T=y_t, ACC=_TL[acc],
                BLOCK_C=block_c, BLOCK_HW=block_hw)
    if need_w:
        dweight = part[1:].sum((1, 3)).to(weight.dtype).reshape(weight.shape)
    else:
        dweight = out.new_empty(0)
    return dx, dys, dweight


def register_cuda_kernels() -> None:
    """Make the functions above the operators' ``'cuda'`` kernels (schemas, fake implementations
    and the ATen implementation of other devices unchanged)."""
    for op, fn in ((_stats_op, norm_stats), (_aggregate_op, dense_aggregate),
                   (_backward_op, dense_aggregate_backward)):
        register_device_kernel(op, 'cuda', fn)
