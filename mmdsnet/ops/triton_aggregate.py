"""Triton kernels behind the dense-aggregation operators, for CUDA tensors.

The operators of :mod:`mmdsnet.ops.operators` keep their schemas, fake implementations and
ATen implementation; :func:`register_cuda_kernels` adds the functions below as their ``'cuda'``
kernels (``register_kernel``), so ``torch.compile``, ``torch.export`` and the FLOP counter see the
same single nodes as before. Each function runs the kernels where it can and hands anything else
to the ATen implementation (:func:`_aten`): an input dtype other than fp16 / bf16 / fp32 / fp64,
sources of different dtypes or strides, spatial dimensions that do not collapse to one stride (a
strided slice), statistics whose shape is not ``(N or 1, G)`` with ``G`` dividing ``C``, no
source, an empty tensor, or arguments that do not match (ATen then raises its error).

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

Launches (each a grid of ``(BLOCK_C, BLOCK_HW)`` tiles of one sample), for up to ``K`` sources:

* ``norm_stats``: ONE launch (:func:`_stats_kernel`): every program stores the mean and ``M2 =
  sum (y - mean)^2`` of its tile rows, then counts itself in (an atomic counter per sample, or
  per channel block for BatchNorm); the last program of a sample (channel block) merges that
  sample's (block's) partials with Chan's parallel formula (no ``E[y^2] - E[y]^2`` cancellation)
  and stores ``mean`` and ``rstd``, then resets the counter to zero for the next launch;
* ``dense_aggregate``: ONE launch (:func:`_aggregate_kernel`): reads ``x`` and every ``y_i`` once,
  normalizes each on the fly from its statistics, adds, applies the ReLU, writes ``out``, and
  with ``out_groups`` computes ``out``'s statistics as ``norm_stats`` does, from the tile it
  stores (:func:`_tile_stats`): a new ``Y_l`` costs no pass of its own;
* ``dense_aggregate_backward``: at most TWO launches, the minimum when the statistics are the
  sources' own (the group sums must be complete before any ``dL/dy_i``):
  :func:`_backward_reduce_kernel` reads ``grad``, ``out`` and the ``y_i``, writes ``dL/dx = g`` and
  per tile row ``sum g`` and ``sum g * y_hat_i``, and the last program of each sample (or of the
  batch) and span of channel blocks holding whole groups merges them into the group sums ``E[w_i
  g]`` and ``E[w_i g y_hat_i]`` (as ``norm_stats`` merges its partials);
  :func:`_backward_apply_kernel` reads ``g`` and the ``y_i`` again, two numbers per statistic, and
  writes every ``dL/dy_i``; its first tile row of each channel block also sums ``dL/dW``. With
  fixed statistics only and no ``dL/dW`` (BatchNorm in evaluation, no normalization) the reduce
  pass is skipped: one launch.

Nothing but launches per call on the host: the sources are kernel arguments (flat pointer arguments
``y0 .. y7``, ``m0 .. m7``, ``r0 .. r7``, ``z0 .. z7`` with a ``tl.constexpr`` count ``NUM``: one
compiled variant per count; unused slots are None, which Triton makes compile-time constants, so
they cost the launcher nothing), so there is no pointer table, no pinned memory and no
host-to-device copy, and the calls can be captured in a CUDA graph. After the first launch of a
variant, a launch goes straight to the compiled variant's launcher (:class:`_Direct`), past
``JITFunction.run``. More than ``K`` sources (DSNet101 / 152), or sources whose statistics differ
in layout (rows, groups) or kind (own / fixed), are split into runs of at most ``K`` alike sources,
one launch per run: the forward adds each run into ``out`` in turn (a bf16 / fp16 ``out`` then
rounds between runs), the backward's later runs read ``g`` back from ``dL/dx``. The partial sums
live in a workspace per device, stream and dtype (:func:`_workspace`) that grows to the largest
call and is then reused: no allocation per call but the outputs. Retired (outgrown) workspaces are
kept alive, since a captured CUDA graph may still point into them.

Arithmetic is in float32 whatever the input dtype (float64 for float64 input); every block load
and store is masked, so any ``H``, ``W``, ``C``, ``N >= 1`` and group size work; NCHW,
channels_last and any layout whose spatial dimensions collapse to one stride are read through
their strides, and the tile shape follows the contiguous dimension. The sums are in a fixed order
(the atomic counters only elect which program merges, never the order of a sum): results are
deterministic. Triton's launcher specializes the pointer arguments on 16-byte alignment, so
aligned sources get vector loads.

The kernels also run on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set before
triton is imported): that is how tests/test_ops/test_triton_kernels.py checks them without a GPU.
"""
import contextlib
import functools
import operator
from typing import List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

# the operator objects (the package's ``dense_aggregate`` name is the operator, not the module)
from .operators import _ATEN, _MODE, CHAIN_BACKWARD
from .operators import dense_aggregate as _aggregate_op
from .operators import dense_aggregate_backward as _backward_op
from .operators import norm_stats as _stats_op
from .operators import out_stats_like, register_device_kernel, stats_dtype

__all__ = ['norm_stats', 'dense_aggregate', 'dense_aggregate_backward', 'chain_backward',
           'register_cuda_kernels', 'K']

#: Sources per launch (flat pointer arguments per source kind); more are split into runs.
K = 8
#: Elements per tile (a power of two); the tile's long side follows the contiguous dimension.
MAX_TILE = 2048
#: Longest spatial side of a tile (NCHW) and widest channel side (channels_last).
MAX_BLOCK_HW = 512
MAX_BLOCK_C = 64
#: Partials reduced per step (per statistic) by the merging loops.
BLOCK_R = 256

_TL = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
       torch.float64: tl.float64}


# ---------------------------------------------------------------------------------- kernels
# Counts (samples, tiles, groups, first rows) are not specialized on: one compiled kernel for
# every value, where Triton would otherwise compile another one for the value 1 and for
# multiples of 16.
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


@triton.jit
def _pick(i: tl.constexpr, a0, a1, a2, a3, a4, a5, a6, a7):
    """Argument ``i`` of the flat slots ``a0 .. a7`` (``i`` is a compile-time constant: no
    branch is left in the compiled kernel)."""
    r = a0
    if i == 1:
        r = a1
    if i == 2:
        r = a2
    if i == 3:
        r = a3
    if i == 4:
        r = a4
    if i == 5:
        r = a5
    if i == 6:
        r = a6
    if i == 7:
        r = a7
    return r


@triton.jit
def _merge_partials(part_ptr, mean_ptr, rstd_ptr, grp, valid, dst, n0, rows, cpg, N, C, HW, P,
                    eps, ACC: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_R: tl.constexpr):
    """For each slot (statistic) ``grp`` of ``valid``: merge the tile partials (``part[0 | 1, n, c,
    p]``: mean and ``M2`` over a tile row) of samples ``n0 .. n0 + rows - 1`` and channels ``grp *
    cpg .. + cpg - 1`` with Chan's formula (count ``k``, mean ``u``: ``u = (k_a u_a + k_b u_b) /
    k``, ``M2 = M2_a + M2_b + (u_b - u_a)^2 k_a k_b / k``); store ``mean = u`` and ``rstd = 1 /
    sqrt(M2 / k + eps)`` at ``dst``."""
    count = tl.zeros(grp.shape, dtype=ACC)
    mean = tl.zeros(grp.shape, dtype=ACC)
    m2 = tl.zeros(grp.shape, dtype=ACC)
    R = rows * cpg * P
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        m = valid[:, None] & (r < R)[None, :]
        rest = r % (cpg * P)
        p = rest % P
        idx = (((n0 + r // (cpg * P))[None, :] * C + grp[:, None] * cpg + (rest // P)[None, :])
               * P + p[None, :])
        u = tl.load(part_ptr + idx, mask=m, other=0., cache_modifier='.cg')
        v = tl.load(part_ptr + N * C * P + idx, mask=m, other=0., cache_modifier='.cg')
        k = tl.where(m, tl.minimum(HW - p * BLOCK_HW, BLOCK_HW)[None, :], 0).to(ACC)
        k_b = tl.sum(k, 1)
        u_b = tl.sum(k * u, 1) / tl.maximum(k_b, 1.)
        d = tl.where(m, u - u_b[:, None], 0.)
        m2_b = tl.sum(v + k * d * d, 1)
        total = count + k_b
        frac = k_b / tl.maximum(total, 1.)
        delta = u_b - mean
        mean += delta * frac
        m2 += m2_b + delta * delta * count * frac
        count = total
    tl.store(mean_ptr + dst, mean, mask=valid)
    tl.store(rstd_ptr + dst, 1. / tl.sqrt(m2 / tl.maximum(count, 1.) + eps), mask=valid)


@triton.jit
def _tile_stats(y, mask, cm, p, n, c, part_ptr, count_ptr, mean_ptr, rstd_ptr, N, C, HW, P, G,
                eps, OVER_BATCH: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                BLOCK_HW: tl.constexpr, BLOCK_R: tl.constexpr):
    """``norm_stats`` of a map from its tiles (``y``: this program's tile, zero outside
    ``mask``). Per channel ``c``, over the tile's valid positions, ``mean = sum y / count`` and
    ``M2 = sum (y - mean)^2``, stored at ``part[0 | 1, n, c, p]``. Then the program counts
    itself in: per sample ``n`` (GN / LN / IN: statistics ``(N, G)``) or per channel block
    (``OVER_BATCH``, BatchNorm: ``(1, C)``). The program that completes a count (the others'
    partials are visible to it: release / acquire atomics) merges them
    (:func:`_merge_partials`) and sets the counter back to zero."""
    count = tl.minimum(HW - p * BLOCK_HW, BLOCK_HW).to(ACC)
    mean = tl.sum(y, 1) / count
    d = tl.where(mask, y - mean[:, None], 0.)
    out = (n * C + c) * P + p
    tl.store(part_ptr + out, mean, mask=cm)
    tl.store(part_ptr + N * C * P + out, tl.sum(d * d, 1), mask=cm)
    tl.debug_barrier()  # every thread's partials are stored before the count (release)
    if OVER_BATCH:
        idx = tl.program_id(1)
        expected = tl.num_programs(0) * N
    else:
        idx = n
        expected = tl.num_programs(0) * tl.num_programs(1)
    done = tl.atomic_add(count_ptr + idx, 1, sem='acq_rel')
    if done == expected - 1:  # the last program of this count
        tl.atomic_xchg(count_ptr + idx, 0, sem='relaxed')
        if OVER_BATCH:  # this block's channels over the whole batch
            _merge_partials(part_ptr, mean_ptr, rstd_ptr, c, cm, c, 0, N, 1, N, C, HW, P, eps,
                            ACC, BLOCK_HW, BLOCK_R)
        else:  # every group of sample n, BLOCK_C groups at a time
            cpg = C // G
            for g0 in range(0, G, BLOCK_C):
                grp = g0 + tl.arange(0, BLOCK_C)
                _merge_partials(part_ptr, mean_ptr, rstd_ptr, grp, grp < G, n * G + grp, n, 1,
                                cpg, N, C, HW, P, eps, ACC, BLOCK_HW, BLOCK_R)


@triton.jit(do_not_specialize=['N', 'P', 'G'])
def _stats_kernel(y_ptr, part_ptr, count_ptr, mean_ptr, rstd_ptr, N, C, HW, P, G, eps, syn, syc,
                  syh, OVER_BATCH: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                  BLOCK_HW: tl.constexpr, BLOCK_R: tl.constexpr):
    """``norm_stats`` in one launch: one pass over ``y`` (:func:`_tile_stats`)."""
    p, n, c, hw, cm, mask = _tile(C, HW, BLOCK_C, BLOCK_HW)
    y = tl.load(y_ptr + n * syn + c[:, None] * syc + hw[None, :] * syh, mask=mask,
                other=0.).to(ACC)
    _tile_stats(y, mask, cm, p, n, c, part_ptr, count_ptr, mean_ptr, rstd_ptr, N, C, HW, P, G,
                eps, OVER_BATCH, ACC, BLOCK_C, BLOCK_HW, BLOCK_R)


@triton.jit
def _source(i: tl.constexpr, YS0, YS1, YS2, YS3, YS4, YS5, YS6, YS7,
            MS0, MS1, MS2, MS3, MS4, MS5, MS6, MS7, RS0, RS1, RS2, RS3, RS4, RS5, RS6, RS7,
            y_off, mask, s, cm, ACC: tl.constexpr):
    """Source ``i`` of the flat slots: ``y`` on the tile (in ``ACC``) and its statistics per
    channel (``s``: their index)."""
    y = tl.load(_pick(i, YS0, YS1, YS2, YS3, YS4, YS5, YS6, YS7) + y_off, mask=mask,
                other=0.).to(ACC)
    mean = tl.load(_pick(i, MS0, MS1, MS2, MS3, MS4, MS5, MS6, MS7) + s, mask=cm, other=0.)
    rstd = tl.load(_pick(i, RS0, RS1, RS2, RS3, RS4, RS5, RS6, RS7) + s, mask=cm, other=0.)
    return y, mean, rstd


@triton.jit(do_not_specialize=['W0', 'RS', 'N', 'P', 'G'])
def _aggregate_kernel(x_ptr, out_ptr, w_ptr, y0, y1, y2, y3, y4, y5, y6, y7,
                      m0, m1, m2, m3, m4, m5, m6, m7,
                      r0, r1, r2, r3, r4, r5, r6, r7,
                      part_ptr, count_ptr, mean_ptr, rstd_ptr,
                      C, HW, W0, RS, CPG, N, P, G, eps,
                      sxn, sxc, sxh, syn, syc, syh, son, soc, soh,
                      NUM: tl.constexpr, HAS_W: tl.constexpr, RELU: tl.constexpr,
                      STATS: tl.constexpr, OVER_BATCH: tl.constexpr, ACC: tl.constexpr,
                      BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_R: tl.constexpr):
    """``out = act(x + sum_i w_i * (y_i - mean_i) * rstd_i)`` on one tile, in one pass, for the
    ``NUM`` sources ``y0 ..`` (``act``: the ReLU if ``RELU``, else none). Their statistics
    ``m0 ..``, ``r0 ..`` share one layout: the statistic of ``(n, c)`` is at ``n * RS + c //
    CPG`` (``RS``: ``G``, or 0 when one row serves the batch). ``w`` is ``(S, C)``; these
    sources are its rows ``W0 ..``. With ``STATS``, ``out``'s own statistics (``G`` groups, or
    per channel over the batch) as ``_stats_kernel`` computes them, from ``out`` as stored
    (:func:`_tile_stats`): the next blocks' source needs no pass of its own."""
    p, n, c, hw, cm, mask = _tile(C, HW, BLOCK_C, BLOCK_HW)
    acc = tl.load(x_ptr + n * sxn + c[:, None] * sxc + hw[None, :] * sxh, mask=mask,
                  other=0.).to(ACC)
    y_off = n * syn + c[:, None] * syc + hw[None, :] * syh
    s = n * RS + c // CPG
    for i in tl.static_range(NUM):
        y, mean, a = _source(i, y0, y1, y2, y3, y4, y5, y6, y7,
                             m0, m1, m2, m3, m4, m5, m6, m7,
                             r0, r1, r2, r3, r4, r5, r6, r7,
                             y_off, mask, s, cm, ACC)
        if HAS_W:
            a *= tl.load(w_ptr + (W0 + i) * C + c, mask=cm, other=0.).to(ACC)
        acc += (y - mean[:, None]) * a[:, None]
    if RELU:
        acc = tl.where(acc < 0., 0., acc)  # NaN stays NaN, as in ATen
    out = acc.to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + n * son + c[:, None] * soc + hw[None, :] * soh, out, mask=mask)
    if STATS:  # (masked positions hold -mean * rstd * w, not zero)
        _tile_stats(tl.where(mask, out.to(ACC), 0.), mask, cm, p, n, c, part_ptr, count_ptr,
                    mean_ptr, rstd_ptr, N, C, HW, P, G, eps, OVER_BATCH, ACC, BLOCK_C,
                    BLOCK_HW, BLOCK_R)


@triton.jit
def _load_g(grad_ptr, out_ptr, dx_ptr, n, c, hw, mask, sgn, sgc, sgh, son, soc, soh, sdn, sdc,
            sdh, G_FROM_DX: tl.constexpr, RELU: tl.constexpr):
    """``g``: read back from ``dL/dx`` (``G_FROM_DX``), or ``grad * [out > 0]`` (``grad``
    without the ReLU: ATen's threshold backward, from the output) stored as ``dL/dx``."""
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
    return g


@triton.jit(do_not_specialize=['N', 'P', 'PART0', 'RS', 'W0', 'FIN', 'GS'])
def _backward_reduce_kernel(grad_ptr, out_ptr, dx_ptr, part_ptr, w_ptr, h_ptr, count_ptr,
                            y0, y1, y2, y3, y4, y5, y6, y7,
                            m0, m1, m2, m3, m4, m5, m6, m7,
                            r0, r1, r2, r3, r4, r5, r6, r7,
                            N, C, HW, P, PART0, RS, CPG, W0, FIN, GS, SPAN,
                            sgn, sgc, sgh, son, soc, soh, sdn, sdc, sdh, syn, syc, syh,
                            NUM: tl.constexpr, SUM_G: tl.constexpr, G_FROM_DX: tl.constexpr,
                            FINAL_H: tl.constexpr, HAS_W: tl.constexpr, MERGE: tl.constexpr,
                            PER_SAMPLE: tl.constexpr,
                            RELU: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                            BLOCK_HW: tl.constexpr, BLOCK_R: tl.constexpr):
    """First backward pass, tile ``p`` of sample ``n``: ``g`` (:func:`_load_g`); per channel
    ``sum_hw g`` (``part[0]``, if ``SUM_G``) and, for source ``i`` of the ``NUM`` (slots and
    statistics as in :func:`_aggregate_kernel`), ``sum_hw g * (y_i - mean_i) * rstd_i`` at
    ``part[PART0 + i]``; ``part`` is ``(rows, N, C, P)``. ``FINAL_H`` (a chain's last source,
    the last slot): its whole shortcut gradient is ``h = h_sum + w g`` (``h_sum`` at ``h_ptr``,
    in the sources' layout): ``sum_hw h`` and ``sum_hw h * y_hat`` at ``part[FIN]`` and
    ``part[FIN + 1]``.

    ``MERGE`` (a bit per slot: the sources with their own statistics): the partials of those
    sources are then merged into their group sums once, by the last program of each unit (one
    sample if ``PER_SAMPLE``, else the whole batch; ``SPAN`` channel blocks, the fewest whose
    channels hold whole groups, or every block for ``SPAN == 0``, where no such span divides
    them): ``sum w_i * sum_hw g`` and ``sum w_i * sum_hw g *
    y_hat_i`` per statistic, in the statistics' layout (``s = n * RS + c // CPG``), at ``part +
    GS`` rows ``2 j`` and ``2 j + 1`` (``j``: the source's index, ``FIN - 1`` for ``FINAL_H``'s
    unweighted sums). The apply pass reads two numbers per statistic instead of reducing the
    partials in every program. Election as in :func:`_tile_stats` (the order of every sum is
    fixed)."""
    p, n, c, hw, cm, mask = _tile(C, HW, BLOCK_C, BLOCK_HW)
    g = _load_g(grad_ptr, out_ptr, dx_ptr, n, c, hw, mask, sgn, sgc, sgh, son, soc, soh, sdn,
                sdc, sdh, G_FROM_DX, RELU).to(ACC)
    dst = (n * C + c) * P + p
    if SUM_G:
        tl.store(part_ptr + dst, tl.sum(g, 1), mask=cm)
    y_off = n * syn + c[:, None] * syc + hw[None, :] * syh
    s = n * RS + c // CPG
    for i in tl.static_range(NUM):
        y, mean, rstd = _source(i, y0, y1, y2, y3, y4, y5, y6, y7,
                                m0, m1, m2, m3, m4, m5, m6, m7,
                                r0, r1, r2, r3, r4, r5, r6, r7,
                                y_off, mask, s, cm, ACC)
        y_hat = (y - mean[:, None]) * rstd[:, None]
        tl.store(part_ptr + (PART0 + i) * N * C * P + dst, tl.sum(g * y_hat, 1), mask=cm)
        if FINAL_H and i == NUM - 1:
            h = tl.load(h_ptr + y_off, mask=mask, other=0.).to(ACC)
            if HAS_W:
                h += tl.load(w_ptr + (W0 + i) * C + c, mask=cm, other=0.).to(ACC)[:, None] * g
            else:
                h += g
            tl.store(part_ptr + FIN * N * C * P + dst, tl.sum(h, 1), mask=cm)
            tl.store(part_ptr + (FIN + 1) * N * C * P + dst, tl.sum(h * y_hat, 1), mask=cm)
    if MERGE:
        tl.debug_barrier()  # every thread's partials are stored before the count (release)
        blocks = tl.num_programs(1)
        span = tl.where(SPAN > 0, SPAN, blocks)
        unit = tl.program_id(1) // span
        idx = (n if PER_SAMPLE else 0) * (blocks // span) + unit
        expected = tl.num_programs(0) * span * (1 if PER_SAMPLE else N)
        done = tl.atomic_add(count_ptr + idx, 1, sem='acq_rel')
        if done == expected - 1:  # the last program of this unit: its groups
            tl.atomic_xchg(count_ptr + idx, 0, sem='relaxed')
            n0 = n if PER_SAMPLE else 0
            rows = 1 if PER_SAMPLE else N
            c0 = unit * span * BLOCK_C
            g_hi = tl.minimum(c0 + span * BLOCK_C, C) // CPG
            for g0 in range(c0 // CPG, g_hi, BLOCK_C):
                grp = g0 + tl.arange(0, BLOCK_C)
                _merge_group_sums(part_ptr, w_ptr, grp, grp < g_hi, n0, rows, N, C, P, PART0,
                                  CPG, W0, FIN, GS, NUM, FINAL_H, HAS_W, MERGE, ACC, BLOCK_R)


@triton.jit
def _merge_group_sums(part_ptr, w_ptr, grp, valid, n0, rows, N, C, P, PART0, CPG, W0, FIN, GS,
                      NUM: tl.constexpr, FINAL_H: tl.constexpr, HAS_W: tl.constexpr,
                      MERGE: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr):
    """The group sums of the sources in ``MERGE``, for statistics ``grp`` (``valid``) of
    samples ``n0 .. n0 + rows - 1``, stored at ``part + GS`` (see the reduce kernel)."""
    dst = part_ptr + GS + n0 * (C // CPG) + grp
    for i in tl.static_range(NUM):
        if (MERGE >> i) & 1:
            if FINAL_H and i == NUM - 1:  # (the whole sum's, already weighted)
                a, b = _group_sums(part_ptr, w_ptr, FIN, FIN + 1, W0 + i, grp, valid, n0, rows,
                                   CPG, N, C, P, False, ACC, BLOCK_R)
                j = FIN - 1
            else:
                a, b = _group_sums(part_ptr, w_ptr, 0, PART0 + i, W0 + i, grp, valid, n0, rows,
                                   CPG, N, C, P, HAS_W, ACC, BLOCK_R)
                j = W0 + i
            tl.store(dst + 2 * j * N * C, a, mask=valid)
            tl.store(dst + (2 * j + 1) * N * C, b, mask=valid)


@triton.jit
def _group_sums(part_ptr, w_ptr, row_a, row, w_row, grp, valid, n0, rows, cpg, N, C, P,
                HAS_W: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr):
    """Per slot (statistic) ``grp``: ``sum w * part[row_a]`` and ``sum w * part[row]`` over
    samples ``n0 .. n0 + rows - 1``, channels ``grp * cpg .. + cpg - 1`` and every tile."""
    sum_h = tl.zeros(grp.shape, dtype=ACC)
    sum_hy = tl.zeros(grp.shape, dtype=ACC)
    R = rows * cpg * P
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        m = valid[:, None] & (r < R)[None, :]
        rest = r % (cpg * P)
        cc = grp[:, None] * cpg + (rest // P)[None, :]
        idx = ((n0 + r // (cpg * P))[None, :] * C + cc) * P + (rest % P)[None, :]
        a = tl.load(part_ptr + row_a * N * C * P + idx, mask=m, other=0.)
        b = tl.load(part_ptr + row * N * C * P + idx, mask=m, other=0.)
        if HAS_W:
            w = tl.load(w_ptr + w_row * C + cc, mask=m, other=0.).to(ACC)
            a *= w
            b *= w
        sum_h += tl.sum(a, 1)
        sum_hy += tl.sum(b, 1)
    return sum_h, sum_hy


@triton.jit(do_not_specialize=['N', 'P', 'W0', 'PART0', 'RS', 'FIN', 'GS'])
def _backward_apply_kernel(grad_ptr, out_ptr, dx_ptr, part_ptr, w_ptr, dw_ptr,
                           y0, y1, y2, y3, y4, y5, y6, y7,
                           m0, m1, m2, m3, m4, m5, m6, m7,
                           r0, r1, r2, r3, r4, r5, r6, r7,
                           z0, z1, z2, z3, z4, z5, z6, z7,
                           N, C, HW, P, W0, PART0, RS, CPG, FIN, GS,
                           sgn, sgc, sgh, son, soc, soh, sdn, sdc, sdh, syn, syc, syh,
                           szn, szc, szh, NUM: tl.constexpr, OWN: tl.constexpr,
                           NEED_Y: tl.constexpr, NEED_W: tl.constexpr, HAS_W: tl.constexpr,
                           ACCUM: tl.constexpr, ADD: tl.constexpr, LAST: tl.constexpr,
                           FINAL_H: tl.constexpr,
                           G_FROM_DX: tl.constexpr, RELU: tl.constexpr, ACC: tl.constexpr,
                           BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
                           BLOCK_R: tl.constexpr):
    """Last backward pass, one tile: ``g`` (:func:`_load_g`) and for source ``i`` of the ``NUM``
    (slots and statistics as in :func:`_aggregate_kernel`; ``w`` row and ``part`` row ``W0 + i``
    and ``PART0 + i``):

    * ``NEED_Y``: ``dL/dy_i = rstd_i * (w_i g - E[w_i g] - y_hat_i E[w_i g y_hat_i])`` into slot
      ``z_i``. With ``OWN`` statistics the two expectations are the group sums the reduce
      pass merged (``part + GS``, two numbers per statistic: the group's ``C / G`` channels
      and every tile, of this sample, or of the batch when ``RS == 0``); fixed statistics have
      none.
    * ``NEED_W``: the first tile row of each channel block (``p == 0``, ``n == 0``) sums
      ``dL/dw_i[c] = sum_{n, p} part[PART0 + i, n, c, p]`` into ``dw[W0 + i]``.

    A chain (``ACCUM``): the first ``NUM - LAST`` slots add ``w_i g`` into their shortcut
    gradient ``z_i`` (``ADD``; else store it), no norm backward; the last slot, if ``LAST``, is
    the chain's finalized source: as ``NEED_Y`` above, of ``h = z + w g`` with ``FINAL_H`` (the
    sum so far in ``z``, written over in place; its expectations from ``part[FIN]`` and
    ``part[FIN + 1]``, see the reduce kernel)."""
    p, n, c, hw, cm, mask = _tile(C, HW, BLOCK_C, BLOCK_HW)
    g = _load_g(grad_ptr, out_ptr, dx_ptr, n, c, hw, mask, sgn, sgc, sgh, son, soc, soh, sdn,
                sdc, sdh, G_FROM_DX, RELU).to(ACC)
    y_off = n * syn + c[:, None] * syc + hw[None, :] * syh
    z_off = n * szn + c[:, None] * szc + hw[None, :] * szh
    s = n * RS + c // CPG
    rows = tl.where(RS == 0, N, 1)
    count = (rows * CPG * HW).to(ACC)
    first_row = (p == 0) & (n == 0)
    for i in tl.static_range(NUM):
        if ACCUM and i < NUM - LAST:
            if HAS_W:
                h = tl.load(w_ptr + (W0 + i) * C + c, mask=cm, other=0.).to(ACC)[:, None] * g
            else:
                h = g
            z = _pick(i, z0, z1, z2, z3, z4, z5, z6, z7)
            if ADD:
                h += tl.load(z + z_off, mask=mask, other=0.).to(ACC)
            tl.store(z + z_off, h.to(z.dtype.element_ty), mask=mask)
        elif NEED_Y:
            y, mean, rstd = _source(i, y0, y1, y2, y3, y4, y5, y6, y7,
                                    m0, m1, m2, m3, m4, m5, m6, m7,
                                    r0, r1, r2, r3, r4, r5, r6, r7,
                                    y_off, mask, s, cm, ACC)
            if HAS_W:
                w = tl.load(w_ptr + (W0 + i) * C + c, mask=cm, other=0.).to(ACC)
            else:
                w = tl.full([BLOCK_C], 1., ACC)
            h = w[:, None] * g
            if FINAL_H:
                h += tl.load(_pick(i, z0, z1, z2, z3, z4, z5, z6, z7) + z_off, mask=mask,
                             other=0.).to(ACC)
            if OWN:  # (the whole sum's with FINAL_H)
                j = FIN - 1 if FINAL_H else W0 + i
                e_h = tl.load(part_ptr + GS + 2 * j * N * C + s, mask=cm, other=0.) / count
                e_hy = tl.load(part_ptr + GS + (2 * j + 1) * N * C + s, mask=cm,
                               other=0.) / count
                y_hat = (y - mean[:, None]) * rstd[:, None]
                h = h - e_h[:, None] - y_hat * e_hy[:, None]
            dy = rstd[:, None] * h
            z = _pick(i, z0, z1, z2, z3, z4, z5, z6, z7)
            tl.store(z + z_off, dy.to(z.dtype.element_ty), mask=mask)
        if NEED_W:
            if first_row:
                dw = tl.zeros([BLOCK_C], dtype=ACC)
                R = N * P
                for k0 in range(0, R, BLOCK_R):  # (r0 is a slot)
                    k = k0 + tl.arange(0, BLOCK_R)
                    m = cm[:, None] & (k < R)[None, :]
                    idx = ((k // P)[None, :] * C + c[:, None]) * P + (k % P)[None, :]
                    dw += tl.sum(tl.load(part_ptr + (PART0 + i) * N * C * P + idx, mask=m,
                                         other=0.), 1)
                tl.store(dw_ptr + (W0 + i) * C + c, dw, mask=cm)


# ------------------------------------------------------------------------- direct launches
class _Direct:
    """Launches of one ``@triton.jit`` kernel past ``JITFunction.run`` (its binder, cache-key
    string, option parsing: most of a launch's host time), once Triton has compiled the variant.

    The cache maps what Triton specializes a variant on to the ``CompiledKernel`` that
    ``JITFunction.run`` returned for it: the device, the constexpr arguments, and per positional
    argument the tensor's dtype and 16-byte alignment, or the value itself (ints: Triton
    specializes on ``== 1``, divisibility by 16 and the integer type; None: a constexpr; floats
    and bools are not specialized, so their values only refine the key). A finer key never picks
    a wrong variant (tests/test_ops/test_direct_launch.py checks it against Triton's own
    specialization). A miss, a launch or pre-run hook (profilers), Triton's debug mode or
    ``use_implementation(launches='triton')`` take ``JITFunction.run``. A hit calls the compiled
    kernel's launcher with the arguments in the kernel's order, as ``JITFunction.run`` does:
    no allocation, no copy, nothing but the launch."""
    __slots__ = ('fn', 'order', 'cache', 'splits')

    def __init__(self, fn):
        self.fn, self.cache, self.splits = fn, {}, {}
        self.order = tuple(fn.arg_names)

    def __getitem__(self, grid):
        return functools.partial(self.launch, grid)

    def key(self, device, args, constexprs) -> tuple:
        # The classes of the arguments (1, True and 1.0 are equal keys but not equal to Triton)
        # pick where the tensors are; then C-level maps, no Python per argument: the tensors'
        # dtypes and addresses mod 16, the other arguments themselves.
        kinds = tuple(map(type, args))
        split = self.splits.get(kinds)
        if split is None:
            split = self.splits[kinds] = _split(kinds)
        tensors = split[0](args)
        return (device, *constexprs.items(), kinds, split[1](args), *map(_DTYPE, tensors),
                *map(_MOD16, map(Tensor.data_ptr, tensors)))

    def launch(self, grid, *args, **constexprs):
        runtime = triton.knobs.runtime
        if (_hooked(runtime.launch_enter_hook) or _hooked(runtime.launch_exit_hook)
                or runtime.debug or getattr(self.fn, 'pre_run_hooks', None)
                or _MODE['launches'] != 'direct'):
            return self.fn[grid](*args, **constexprs)
        driver = triton.runtime.driver.active
        device = driver.get_current_device()
        key = self.key(device, args, constexprs)
        kernel = self.cache.get(key)
        if kernel is None:  # Triton compiles (or finds) the variant and launches it
            kernel = self.fn[grid](*args, **constexprs)
            if self.order == self.order[:len(args)] + tuple(constexprs):  # (the launch order)
                self.cache[key] = kernel
            return kernel
        kernel.run(grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1,
                   driver.get_current_stream(device), kernel.function, kernel.packed_metadata,
                   None, None, None, *args, *constexprs.values())
        return kernel


_DTYPE = operator.attrgetter('dtype')
_MOD16 = (15).__and__


def _split(kinds: tuple):
    """Two getters for an argument tuple of these classes: its tensors and everything else."""
    tensors = [i for i, k in enumerate(kinds) if issubclass(k, Tensor)]
    others = [i for i, k in enumerate(kinds) if not issubclass(k, Tensor)]
    return _getter(tensors), _getter(others)


def _getter(positions: list):
    """``args -> tuple(args[i] for i in positions)``, at C speed where it can be."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)
    if positions:
        return lambda args, i=positions[0]: (args[i], )
    return lambda args: ()


def _hooked(hook) -> bool:
    """Whether a launch hook is set: a callable, or Triton 3.x's ``HookChain`` with calls."""
    return hook is not None and getattr(hook, 'calls', True) != []


def _launch_convention_known() -> bool:
    """Whether this Triton launches a compiled kernel as :meth:`_Direct.launch` does: every
    bound argument, constexprs included (Triton >= 3.3; earlier versions pass the others only),
    with the runtime knobs it reads. Elsewhere every launch takes ``JITFunction.run``."""
    import inspect
    try:
        source = inspect.getsource(triton.runtime.jit.JITFunction.run)
    except (OSError, TypeError, AttributeError):
        return False
    return '*bound_args.values())' in source and hasattr(getattr(triton, 'knobs', None),
                                                          'runtime')


_DIRECT = ({id(k): _Direct(k) for k in (_stats_kernel, _aggregate_kernel,
                                        _backward_reduce_kernel, _backward_apply_kernel)
            if isinstance(k, triton.runtime.JITFunction)}  # (not under the interpreter)
           if _launch_convention_known() else {})


def _launcher(kernel):
    """``kernel``'s direct launcher where it is a compiled Triton kernel (not under the
    interpreter), else ``kernel`` itself (also whatever a test put in its place)."""
    direct = _DIRECT.get(id(kernel))
    return direct if direct is not None and direct.fn is kernel else kernel


# ---------------------------------------------------------------------------------- launchers
def _aten(op):
    """The operator's own ATen implementation (what the kernels stand beside). Every hand-over
    goes through here (tests refuse it)."""
    return _ATEN[op]


def _flat(t: Tensor) -> Optional[Tuple[int, int, int]]:
    """``t``'s strides as ``(N, C, HW)``, or None if its spatial dimensions do not collapse to
    one stride (e.g. a strided slice of a map)."""
    if t.dim() == 4:  # (the models' maps: the general rule below, written out)
        sn, sc, sh, sw = t.stride()
        h, w = t.shape[2:]
        if w == 1:
            return sn, sc, sh if h != 1 else 1
        return (sn, sc, sw) if h == 1 or sh == w * sw else None
    dims = [(size, stride) for size, stride in zip(t.shape[2:], t.stride()[2:]) if size != 1]
    for (_, outer), (size, inner) in zip(dims, dims[1:]):
        if outer != size * inner:
            return None
    return t.stride(0), t.stride(1), dims[-1][1] if dims else 1


def _hw(t: Tensor) -> int:
    return t.numel() // (t.shape[0] * t.shape[1])


def _cdiv(a: int, b: int) -> int:  # (triton.cdiv is a jit function: slow to call from Python)
    return -(-a // b)


def _pow2(n: int) -> int:
    """The smallest power of two >= ``n`` (``triton.next_power_of_2`` in plain Python)."""
    return 1 << max(n - 1, 0).bit_length()


def _blocks(c: int, hw: int, strides: Tuple[int, int, int]) -> Tuple[int, int]:
    """``(BLOCK_C, BLOCK_HW)``: long along the contiguous dimension (channels for channels_last,
    positions otherwise), ``MAX_TILE`` elements at most, no longer than the map."""
    if strides[1] == 1 and strides[2] != 1 and hw > 1:  # channels_last
        block_c = min(_pow2(c), MAX_BLOCK_C, MAX_TILE)
        return block_c, min(_pow2(hw), max(1, MAX_TILE // block_c))
    block_hw = min(_pow2(hw), MAX_BLOCK_HW, MAX_TILE)
    return min(_pow2(c), max(1, MAX_TILE // block_hw)), block_hw


def _span(block_c: int, cpg: int) -> int:
    """Channel blocks of ``block_c`` whose channels hold whole groups of ``cpg``: 1 where a
    block holds whole groups, ``cpg / block_c`` where a group holds whole blocks, else 0 (every
    block: neither divides the other)."""
    if block_c % cpg == 0:
        return 1
    return cpg // block_c if cpg % block_c == 0 else 0


def _block_r(block_c: int) -> int:
    """Partials per slot and step of the merging loops: ``(BLOCK_C, BLOCK_R)`` blocks of at most
    ``MAX_TILE`` elements."""
    return max(1, min(BLOCK_R, MAX_TILE // block_c))


_WORKSPACES = {}  # (device, stream, dtype) -> flat buffer, grown to the largest call
_COUNTERS = {}  # (device, stream) -> int32 counters, zero between launches
_RETIRED = []  # outgrown buffers: a captured CUDA graph may still point into them


def _stream_key(device: torch.device):
    if device.type == 'cuda':
        return device, torch.cuda.current_stream(device).cuda_stream
    return device, None


def _workspace(device: torch.device, dtype: torch.dtype, numel: int) -> Tensor:
    """At least ``numel`` elements of scratch for the partial sums of one call, private to the
    current stream (calls on one stream run one after the other); allocated once, grown when a
    larger call comes, never per call."""
    key = (*_stream_key(device), dtype)
    buf = _WORKSPACES.get(key)
    if buf is None or buf.numel() < numel:
        if buf is not None:
            _RETIRED.append(buf)
        buf = _WORKSPACES[key] = torch.empty(max(numel, 2 * (0 if buf is None else buf.numel())),
                                             dtype=dtype, device=device)
    return buf


def _counters(device: torch.device, numel: int) -> Tensor:
    """``numel`` int32 counters at zero (each launch that uses one sets it back to zero)."""
    key = _stream_key(device)
    buf = _COUNTERS.get(key)
    if buf is None or buf.numel() < numel:
        if buf is not None:
            _RETIRED.append(buf)
        buf = _COUNTERS[key] = torch.zeros(max(numel, 1024), dtype=torch.int32, device=device)
    return buf


def _runs(keys: Sequence, limit: int = None) -> List[Tuple[int, int]]:
    """``[(start, stop)]``: runs of equal consecutive keys, at most ``limit`` (``K``) long."""
    limit = limit or K
    runs, start = [], 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start] or i - start == limit:
            runs.append((start, i))
            start = i
    return runs


def _slots(ts: Sequence, start: int, stop: int) -> List:
    """``ts[start:stop]`` padded to ``K`` flat slots with None: an unused slot is a compile-time
    None, neither a kernel parameter nor work for the launcher."""
    chunk = list(ts[start:stop])
    return chunk + [None] * (K - len(chunk))


class _Sources:
    """What the kernels need to know about ``ys`` and their statistics, or ``ok = False``."""

    def __init__(self, ref: Tensor, ys: Sequence[Tensor], means: Sequence[Tensor],
                 rstds: Sequence[Tensor], weight: Optional[Tensor]):
        # (every attribute read once: this runs on the host for every call)
        self.ok = False
        shape, device = ref.shape, ref.device
        n, c = shape[:2] if len(shape) >= 2 else (0, 0)
        s = len(ys)
        if (len(shape) < 2 or ref.numel() == 0 or ref.dtype not in _TL
                or not (len(means) == len(rstds) == s)
                or (weight is not None and (weight.numel() != s * c
                                            or weight.device != device))):
            return
        # (no source: ReLU(x) and its statistics, DS2's inner source; read as ref's layout)
        y0 = ys[0] if s else ref
        dtype, strides = y0.dtype, y0.stride()
        self.acc = acc = stats_dtype(ref.dtype)
        if dtype not in _TL or stats_dtype(dtype) != acc:
            return
        for y in ys:
            if (y.shape != shape or y.dtype != dtype or y.stride() != strides
                    or y.device != device):
                return
        self.y_strides = _flat(y0)
        if self.y_strides is None:
            return
        self.means, self.rstds, self.layout = [], [], []
        for mean, rstd in zip(means, rstds):
            rows_groups = mean.shape
            if len(rows_groups) != 2 or rstd.shape != rows_groups or mean.device != device:
                return
            rows, groups = rows_groups
            if rows not in (1, n) or groups == 0 or c % groups:
                return
            # (no copy, no call for the models' statistics: contiguous, in the right dtype)
            self.means.append(_as_acc(mean, acc))
            self.rstds.append(_as_acc(rstd, acc))
            # (n, c) reads its statistic at n * row_stride + c // cpg
            self.layout.append((groups if rows == n and n > 1 else 0, c // groups))
        self.ys = ys
        self.layout = self.layout or [(0, 1)]  # (the launch of no source reads no statistic)
        self.n, self.c, self.hw = n, c, _hw(ref)
        # (read as S x C values: the models' (S, C, 1, 1) parameter as it is)
        self.weight = (weight if weight is None or weight.is_contiguous()
                       else weight.reshape(s, c).contiguous())
        self.ok = True

    def slots(self, start: int, stop: int) -> List:
        """The flat kernel arguments ``y0 .. y7, m0 .. m7, r0 .. r7`` of sources ``start ..
        stop - 1``."""
        return [*_slots(self.ys, start, stop), *_slots(self.means, start, stop),
                *_slots(self.rstds, start, stop)]


def _as_acc(t: Tensor, acc: torch.dtype) -> Tensor:
    """``t`` in ``acc``, contiguous: ``t`` itself when it already is (no dispatcher call)."""
    return t if t.dtype == acc and t.is_contiguous() else t.to(acc).contiguous()


_SAME_DEVICE = contextlib.nullcontext()


def _device(t: Tensor):
    """Launch on ``t``'s GPU whichever is current (nothing to select for CPU tensors, or when
    ``t``'s GPU is the current one)."""
    if t.device.type != 'cuda' or t.device.index == torch.cuda.current_device():
        return _SAME_DEVICE
    return torch.cuda.device(t.device)


def _stats_ok(y: Tensor, groups: int, over_batch: bool) -> bool:
    """Whether the kernels compute ``norm_stats(y, groups, ...)`` (else ATen, which raises for
    groups that do not fit)."""
    return (y.dim() >= 2 and y.dtype in _TL and y.numel() > 0 and groups > 0
            and y.shape[1] % groups == 0 and (not over_batch or groups == y.shape[1]))


def _stats_args(y: Tensor, groups: int, over_batch: bool, block_c: int, block_hw: int) -> list:
    """The kernel arguments ``part, counters, mean, rstd`` of ``y``'s statistics computed in
    tiles of ``(block_c, block_hw)``; ``mean`` and ``rstd`` are the outputs."""
    n, c = y.shape[:2]
    acc = stats_dtype(y.dtype)
    p, cblocks = _cdiv(_hw(y), block_hw), _cdiv(c, block_c)
    mean = torch.empty((1 if over_batch else n, groups), dtype=acc, device=y.device)
    return [_workspace(y.device, acc, 2 * n * c * p),
            _counters(y.device, cblocks if over_batch else n), mean, torch.empty_like(mean)]


def norm_stats(y: Tensor, groups: int, eps: float, over_batch: bool) -> Tuple[Tensor, Tensor]:
    """``mmdsnet::norm_stats``: ``(mean, rstd)`` of ``y`` per (sample, group), ``(N, G)``, or per
    channel over the batch, ``(1, C)`` (``over_batch``); one launch, one pass over ``y``."""
    strides = _flat(y) if _stats_ok(y, groups, over_batch) else None
    if strides is None:
        return _aten(_stats_op)(y, groups, eps, over_batch)
    n, c = y.shape[:2]
    hw = _hw(y)
    block_c, block_hw = _blocks(c, hw, strides)
    p = _cdiv(hw, block_hw)
    args = _stats_args(y, groups, over_batch, block_c, block_hw)
    with _device(y):
        _launcher(_stats_kernel)[(p, _cdiv(c, block_c), n)](
            y, *args, n, c, hw, p, groups, eps, *strides, OVER_BATCH=bool(over_batch),
            ACC=_TL[stats_dtype(y.dtype)], BLOCK_C=block_c, BLOCK_HW=block_hw,
            BLOCK_R=_block_r(block_c))
    return args[2], args[3]


def dense_aggregate(x: Tensor, ys: List[Tensor], means: List[Tensor], rstds: List[Tensor],
                    weight: Optional[Tensor], own_stats: List[int], relu: bool = True,
                    out_groups: int = 0, out_eps: float = 1e-5,
                    out_over_batch: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    """``mmdsnet::dense_aggregate``: ``act(x + sum_i w_i * (y_i - mean_i) * rstd_i)`` in one
    pass (``act``: the ReLU if ``relu``), and with ``out_groups`` its statistics from the same
    pass; one launch per run of up to ``K`` alike sources."""
    src = _Sources(x, ys, means, rstds, weight)
    x_strides = _flat(x) if src.ok else None
    if (x_strides is None or len(own_stats) != len(ys)
            or (out_groups and not _stats_ok(x, out_groups, out_over_batch))):
        return _aten(_aggregate_op)(x, ys, means, rstds, weight, own_stats, relu, out_groups,
                                    out_eps, out_over_batch)
    out = torch.empty_like(x)
    out_strides = _flat(out)
    block_c, block_hw = _blocks(src.c, src.hw, src.y_strides)
    p = _cdiv(src.hw, block_hw)
    grid = (p, _cdiv(src.c, block_c), src.n)
    if out_groups:
        stats = _stats_args(out, out_groups, out_over_batch, block_c, block_hw)
        mean, rstd = stats[2:]
    else:
        mean, rstd = out_stats_like(out, 0, False)
        stats = [None] * 4  # (compile-time None: no statistics arguments)
    runs = _runs(src.layout) if ys else [(0, 0)]
    prev, prev_strides = x, x_strides
    with _device(x):
        for k, (a, b) in enumerate(runs):  # each later run adds into out
            last = k == len(runs) - 1
            _launcher(_aggregate_kernel)[grid](
                prev, out, x if src.weight is None else src.weight, *src.slots(a, b),
                *(stats if last else [None] * 4), src.c, src.hw, a, *src.layout[a], src.n, p,
                out_groups, out_eps, *prev_strides, *src.y_strides, *out_strides, NUM=b - a,
                HAS_W=src.weight is not None, RELU=bool(relu) and last,
                STATS=bool(out_groups) and last, OVER_BATCH=bool(out_over_batch),
                ACC=_TL[src.acc], BLOCK_C=block_c, BLOCK_HW=block_hw,
                BLOCK_R=_block_r(block_c))
            prev, prev_strides = out, out_strides
    return out, mean, rstd


def dense_aggregate_backward(grad: Tensor, out: Tensor, ys: List[Tensor], means: List[Tensor],
                             rstds: List[Tensor], weight: Optional[Tensor],
                             own_stats: List[int], need_ys: List[bool], need_weight: bool,
                             relu: bool = True) -> Tuple[Tensor, List[Tensor], Tensor]:
    """``mmdsnet::dense_aggregate_backward``: ``(dL/dx, [dL/dy_i], dL/dW)`` in two launches (one
    when no statistics are the sources' own and no ``dL/dW`` is needed), per run of up to ``K``
    alike sources; a gradient not asked for is an empty tensor, as in the ATen
    implementation."""
    return _backward(grad, out, ys, means, rstds, weight, own_stats, need_ys, need_weight, relu,
                     None)


def chain_backward(grad: Tensor, out: Tensor, ys: List[Tensor], means: List[Tensor],
                   rstds: List[Tensor], weight: Optional[Tensor], own_stats: List[int],
                   need_ys: List[bool], need_weight: bool, relu: bool,
                   hs: List[Optional[Tensor]]) -> Tuple[Tensor, List[Tensor], Tensor]:
    """The backward of one call of a chain (``mmdsnet.ops.operators.chain_backward_aten``):
    every source but the last adds ``w_i g`` into its shortcut gradient (``hs[i]`` in place, or
    a new map), the last one's ``dL/dy`` is the norm backward of ``hs[-1] + w g``; launches as
    :func:`dense_aggregate_backward`'s."""
    return _backward(grad, out, ys, means, rstds, weight, own_stats, need_ys, need_weight, relu,
                     hs)


def _backward(grad, out, ys, means, rstds, weight, own_stats, need_ys, need_weight, relu, hs):
    s = len(ys)
    chain = hs is not None
    src = _Sources(out, ys, means, rstds, weight)
    g_strides = _flat(grad) if src.ok and grad.shape == out.shape and grad.dtype in _TL else None
    o_strides = _flat(out) if g_strides is not None else None
    if (o_strides is None or stats_dtype(grad.dtype) != src.acc
            or not (len(own_stats) == len(need_ys) == s)
            or (chain and any(h is not None and (h.stride() != ys[0].stride()
                                                 or h.dtype != ys[0].dtype) for h in hs))):
        return _aten(CHAIN_BACKWARD if chain else _backward_op)(
            grad, out, ys, means, rstds, weight, own_stats, need_ys, need_weight, relu,
            *([hs] if chain else []))
    n, c, hw = src.n, src.c, src.hw
    acc, last = src.acc, s - 1
    need_w = need_weight and weight is not None
    own = [bool(own_stats[i]) and bool(need_ys[i]) and (not chain or i == last)
           for i in range(s)]
    # a chain's last source with an earlier sum: its expectations come from the whole sum
    final_h = chain and bool(need_ys[last]) and hs[last] is not None
    reduce = need_w or any(own)
    dx = torch.empty_like(grad)
    dx_strides = _flat(dx)
    # dL/dy_i; in a chain the older sources' sums (in place where one exists) and the last
    # one's dL/dy (in place into its sum)
    dys = z = [(hs[i] if chain and hs[i] is not None else torch.empty_like(y)) if need_ys[i]
               else y.new_empty(0) for i, y in enumerate(ys)]
    # (in the weight's shape, S x C values: returned as it is for a float32 / float64 weight)
    dw = torch.empty(weight.shape, dtype=acc, device=out.device) if need_w else None
    block_c, block_hw = _blocks(c, hw, src.y_strides)
    p = _cdiv(hw, block_hw)
    grid = (p, _cdiv(c, block_c), n)
    w = out if src.weight is None else src.weight
    fin = 1 + s
    gs = (fin + 2 * final_h) * n * c * p  # (the merged group sums: 2 rows per source + 2)
    part = (_workspace(out.device, acc, gs + 2 * fin * n * c) if reduce
            else out)  # (a placeholder: not read)
    counters = _counters(out.device, n * grid[1]) if any(own) else None
    maps = (*g_strides, *o_strides, *dx_strides, *src.y_strides)
    common = dict(RELU=bool(relu), ACC=_TL[acc], BLOCK_C=block_c, BLOCK_HW=block_hw)
    g_ready = False  # whether dL/dx = g is stored (later passes read it back)
    with _device(out):
        if reduce:  # every source (a chain without dL/dW: its last one alone)
            for a, b in (_runs(src.layout) if need_w or not chain else [(last, s)]):
                rs, cpg = src.layout[a]
                merge = sum(1 << (i - a) for i in range(a, b) if own[i])
                _launcher(_backward_reduce_kernel)[grid](
                    grad, out, dx, part, w, hs[last] if final_h else None,
                    counters if merge else None, *src.slots(a, b), n, c, hw, p, 1 + a, rs, cpg,
                    a, fin, gs, _span(block_c, cpg), *maps, NUM=b - a,
                    SUM_G=any(own) and not final_h and not g_ready, G_FROM_DX=g_ready,
                    FINAL_H=final_h and b == s, HAS_W=src.weight is not None, MERGE=merge,
                    PER_SAMPLE=rs != 0, BLOCK_R=_block_r(block_c), **common)
                g_ready = True
        if chain:  # older sources by (layout, whether a sum exists); the last one at the end
            keys = [(*src.layout[i], bool(need_ys[i]), hs[i] is not None) for i in range(last)]
            runs = _runs(keys)
            mergeable = (runs and src.layout[runs[-1][0]] == src.layout[last]
                         and runs[-1][1] - runs[-1][0] < K
                         and (need_ys[runs[-1][0]] or not need_ys[last]))
            runs = runs[:-1] + [(runs[-1][0], s)] if mergeable else runs + [(last, s)]
        else:
            keys = [(*src.layout[i], own[i], bool(need_ys[i])) for i in range(s)]
            runs = _runs(keys)
        runs = [(a, b) for a, b in runs if need_w or any(need_ys[a:b])] or [(0, 0)]
        z_args = [t if need else dx for t, need in zip(z, need_ys)]
        for a, b in runs:  # (0, 0): nothing but dL/dx is needed
            tail = chain and b == s  # this run ends with the chain's finalized source
            z_strides = _flat(z_args[a]) if z_args else dx_strides
            _launcher(_backward_apply_kernel)[grid](
                grad, out, dx, part, w, dw if need_w else part, *src.slots(max(a, 0), max(b, 1)),
                *_slots(z_args, a, max(b, a + 1)), n, c, hw, p, a, 1 + a, *src.layout[a], fin,
                gs, *maps, *z_strides, NUM=b - a, OWN=own[b - 1] if b > a else False,
                NEED_Y=b > a and bool(need_ys[b - 1]), NEED_W=need_w,
                HAS_W=src.weight is not None, ACCUM=chain and a < last and bool(need_ys[a]),
                ADD=chain and a < last and hs[a] is not None, LAST=int(tail),
                FINAL_H=final_h and tail, G_FROM_DX=g_ready, BLOCK_R=_block_r(block_c),
                **common)
            g_ready = True
    if not need_w:
        return dx, dys, out.new_empty(0)
    return dx, dys, dw if dw.dtype == weight.dtype else dw.to(weight.dtype)


def register_cuda_kernels() -> None:
    """Make the functions above the operators' ``'cuda'`` kernels (schemas, fake implementations
    and the ATen implementation of other devices unchanged)."""
    for op, fn in ((_stats_op, norm_stats), (_aggregate_op, dense_aggregate),
                   (_backward_op, dense_aggregate_backward), (CHAIN_BACKWARD, chain_backward)):
        register_device_kernel(op, 'cuda', fn)
