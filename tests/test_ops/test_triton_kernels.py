"""The Triton kernels of mmdsnet/ops/triton_aggregate.py, checked on the CPU under Triton's
interpreter (``TRITON_INTERPRET=1``), against the operators' ATen implementation.

The interpreter must be switched on before triton is imported, and other tests import triton
without it, so the kernels run in ONE child process (this file run as a script, with the variable
set only in that child's environment); each case below is one test here that reports that
case's result from the child. Cases:

* ``kernels[...]``: every kernel, through the three operator functions (``norm_stats``,
  ``dense_aggregate``, ``dense_aggregate_backward``: statistics, output, ``dL/dx``, every
  ``dL/dy_i``, ``dL/dW``, with several combinations of the gradients asked for), for every
  supported norm (GN with 1, 2 and 32 channels per group, LN, BatchNorm batch and running
  statistics, none), with and without ``W``, NCHW and channels_last, H x W = 5 x 7 (a multiple of
  no block size), N = 1 (one tile) and N = 2 with tiles shrunk so that every kernel runs many
  tiles with masked edges and the combine loops run several steps. The maps lie between NaNs in
  their storage, so a load past a mask shows. Falling back to ATen is an error in these cases,
  so they cannot pass without the kernels.
* tolerances (max absolute difference over max magnitude of the ATen result): float64 1e-12;
  float32 1e-5; tensors stored in bf16 1e-2 and fp16 2e-3 (about one unit in the last place of
  the largest element: both sides compute in float32 and round once); the float32 statistics
  and ``dL/dW`` of bf16 / fp16 inputs 1e-5.
* the partial sums of the reduction kernels against torch; 35 sources (DSNet152's stage 3) in
  runs of K, one launch per run and pass;
* with the kernels registered as the operators' CPU kernels: ``torch.library.opcheck`` (schema,
  fake implementation, autograd) on NCHW and channels_last; float64 ``gradcheck`` of the
  operator (GN, BatchNorm batch and running statistics, none); a DS2Net training step against
  the reference form in float64 (1e-9) and a DSNet bf16-autocast step against the ATen
  operators; the switch ``use_implementation`` (ATen: no kernel runs, eager or dispatched);
* the launch budget of one DSNet50 / DS2Net50 training step (one launch per statistic and per
  aggregation forward, at most two per backward: 48 / 100 launches, 72 / 150 with the earlier
  pointer-table kernels)
  and no host work per call but launching and allocating the outputs (a TorchDispatchMode
  around each call: no copy, no pinned memory, no ``.item()``, no temporary);
* inputs the kernels do not take (a strided slice, sources of two dtypes) give ATen's result
  without launching a kernel.

Outside the interpreter (this process): every kernel compiles to an H100 binary with triton's
own compiler (no GPU needed), unused source slots as compile-time None, and aligned sources get
vector loads; the CUDA kernels are
registered and the CPU keeps ATen; with triton hidden, mmdsnet imports and trains on the CPU as
before. Without triton installed, everything here is skipped.
"""
import contextlib
import copy
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from importlib.util import find_spec

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.skipif(
    find_spec('triton') is None,
    reason='triton is not installed: no Triton kernel is registered, ATen is all there is')

# ------------------------------------------------------------------ the cases (run in the child)
#: norm -> (channels, groups, statistics): 'group' (GN / LN / IN, own), 'batch' (BatchNorm batch
#: statistics, own), 'running' (BatchNorm running statistics, fixed), 'none' (mean 0, rstd 1)
NORMS = {
    'GN-1ch': (12, 12, 'group'),
    'GN-2ch': (12, 6, 'group'),
    'GN-32ch': (64, 2, 'group'),
    'LN': (12, 1, 'group'),
    'BN-batch': (12, 12, 'batch'),
    'BN-running': (12, 12, 'running'),
    'none': (12, 1, 'none'),
}
DTYPES = {'f32': torch.float32, 'bf16': torch.bfloat16, 'f16': torch.float16,
          'f64': torch.float64}
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}
#: tile limits (MAX_TILE, MAX_BLOCK_HW, MAX_BLOCK_C, BLOCK_R): the module's (one tile covers a
#: 5 x 7 map and 12 channels, masked), and shrunk ones: 8 x 8 tiles (5 tiles per 35 positions,
#: the last with 3; 12 channels as 8 + 4) and 8 partials per combine step; GN-32ch's 64 channels
#: in tiles of 32 x 8
DEFAULT_TILES = None
SMALL_TILES = (64, 8, 8, 8)
SMALL_TILES_WIDE = (256, 8, 32, 8)


def _kernel_cases():
    """name -> (norm, dtype, layout, N, tiles, sources, full): N = 1 in the module's tiles with
    3 sources and every combination of W and gradients asked for; N = 2 in small tiles (slow
    under the interpreter: many programs) with 2 sources, W, and two combinations.

    A covering set rather than the full product: in the module's tiles every norm meets every
    dtype, and each of them both layouts; in small tiles every norm runs once in float32, the
    layout alternating, and bf16 on GN-2ch and BN-batch in the other layout."""
    cases, layouts = {}, ('nchw', 'channels_last')
    for k, norm in enumerate(NORMS):
        for d, dtype in enumerate(('f32', 'bf16', 'f64') + (
                ('f16', ) if norm in ('GN-2ch', 'BN-batch') else ())):
            layout = layouts[(k + d) % 2]  # a Latin square: both layouts per norm and dtype
            cases[f'{norm}-{dtype}-{layout}-N1'] = (norm, dtype, layout, 1, DEFAULT_TILES, 3,
                                                    True)
    for k, norm in enumerate(NORMS):
        tiles = SMALL_TILES_WIDE if norm == 'GN-32ch' else SMALL_TILES
        for dtype, layout in (('f32', layouts[k % 2]), ) + (
                (('bf16', layouts[(k + 1) % 2]), ) if norm in ('GN-2ch', 'BN-batch') else ()):
            cases[f'{norm}-{dtype}-{layout}-N2-small-tiles'] = (norm, dtype, layout, 2, tiles,
                                                                2, False)
    return cases


KERNEL_CASES = _kernel_cases()


def _ta():
    from mmdsnet.ops import triton_aggregate
    return triton_aggregate


def _aten(name):
    """The operator's ATen implementation (the reference these tests compare against):
    ``stats``, ``aggregate`` or ``backward``."""
    ta = _ta()
    return ta._ATEN[getattr(ta, f'_{name}_op')]


@contextlib.contextmanager
def _tiles(tiles):
    ta = _ta()
    names = ('MAX_TILE', 'MAX_BLOCK_HW', 'MAX_BLOCK_C', 'BLOCK_R')
    old = [getattr(ta, k) for k in names]
    for k, v in zip(names, tiles or old):
        setattr(ta, k, v)
    try:
        yield
    finally:
        for k, v in zip(names, old):
            setattr(ta, k, v)


@contextlib.contextmanager
def _no_fallback():
    """The kernels must run: any hand-over to ATen raises."""
    ta = _ta()
    original = ta._aten

    def refuse(op):
        raise AssertionError(f'fell back to ATen for {op}')
    ta._aten = refuse
    try:
        yield
    finally:
        ta._aten = original


def _close(what, got, ref, tol, scale=None):
    """``got`` within ``tol`` of ``ref``, relative to ``ref``'s largest value (or ``scale``: a
    gradient that is zero in exact arithmetic holds only rounding, so a relative test of it
    alone would measure noise)."""
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    assert got.dtype == ref.dtype, (what, got.dtype, ref.dtype)
    if ref.numel() == 0:
        return
    err = (got.double() - ref.double()).abs().max().item()
    scale = max(ref.double().abs().max().item() if scale is None else scale, 1e-30)
    assert err <= tol * scale, f'{what}: max error {err:.3g} > {tol:g} x {scale:.3g}'


def _stats(kind, groups, ys, acc, gen):
    """(means, rstds, own) of every source; GN / BN statistics from ATen's norm_stats."""
    c = ys[0].shape[1]
    if kind in ('group', 'batch'):
        stats = [_aten('stats')(y, groups, 1e-5, kind == 'batch') for y in ys]
        return [s[0] for s in stats], [s[1] for s in stats], [1] * len(ys)
    if kind == 'running':
        means = [0.3 * torch.randn(1, c, generator=gen, dtype=acc) for _ in ys]
        rstds = [0.5 + torch.rand(1, c, generator=gen, dtype=acc) for _ in ys]
    else:
        means = [torch.zeros(1, 1, dtype=acc) for _ in ys]
        rstds = [torch.ones(1, 1, dtype=acc) for _ in ys]
    return means, rstds, [0] * len(ys)


def check_kernels(norm, dtype, layout, n, tiles, sources, full, size=(5, 7)):
    """Statistics, forward and backward of the kernels against ATen, on the same inputs (with
    ``full``: also without W, and with only dL/dW asked for)."""
    from mmdsnet.ops import stats_dtype
    ta = _ta()
    c, groups, kind = NORMS[norm]
    dtype = DTYPES[dtype]
    acc = stats_dtype(dtype)
    fmt = torch.channels_last if layout == 'channels_last' else torch.contiguous_format
    gen = torch.Generator().manual_seed(0)

    def t():
        """A map (offset, so that means are not ~0) inside a storage whose elements before and
        after it are NaN: a load that a mask should have stopped brings a NaN into a sum. With
        N = 2 the map starts one element in: not 16-byte aligned (the kernels' other path)."""
        v = (torch.randn(n, c, *size, generator=gen, dtype=torch.float64) + 0.5).to(
            dtype).contiguous(memory_format=fmt)
        pad = 64 + (n == 2)
        buf = torch.full((v.numel() + 2 * pad, ), float('nan'), dtype=dtype)
        return torch.as_strided(buf, v.shape, v.stride(), pad).copy_(v)
    x, ys, grad = t(), [t() for _ in range(sources)], t()
    with _tiles(tiles), _no_fallback():
        if kind in ('group', 'batch'):
            for y in ys:
                ref = _aten('stats')(y, groups, 1e-5, kind == 'batch')
                got = ta.norm_stats(y, groups, 1e-5, kind == 'batch')
                for name, a, b in zip(('mean', 'rstd'), got, ref):
                    _close(name, a, b, TOL[acc])
        means, rstds, own = _stats(kind, groups, ys, acc, gen)
        weights = [torch.randn(sources, c, 1, 1, generator=gen, dtype=acc)] + [None] * full
        relus = (True, False) if full else (layout == 'nchw', )
        for weight, relu in [(w, r) for w in weights for r in relus]:
            args = (ys, means, rstds, weight, own)
            ref = _aten('aggregate')(x, *args, relu)
            got = ta.dense_aggregate(x, *args, relu)
            _close('out', got, ref, TOL[dtype])
            assert got.stride() == ref.stride(), ('out layout', got.stride(), ref.stride())
            some = [i % 2 == 0 for i in range(sources)]
            for need_ys, need_w in ((([True] * sources, True), (some, False))
                                    + ((([False] * sources, True), ) if full else ())):
                refs = _aten('backward')(grad, ref, *args, need_ys, need_w, relu)
                gots = ta.dense_aggregate_backward(grad, ref, *args, need_ys, need_w, relu)
                _close('dL/dx', gots[0], refs[0], TOL[dtype])
                assert gots[0].stride() == refs[0].stride(), 'dL/dx layout'
                for i, (a, b) in enumerate(zip(gots[1], refs[1])):
                    _close(f'dL/dy_{i}', a, b, TOL[dtype])
                    assert b.numel() == 0 or a.stride() == b.stride(), f'dL/dy_{i} layout'
                _close('dL/dW', gots[2], refs[2], TOL[acc])


def check_many_sources():
    """35 sources (DSNet152's largest block): runs of K = 8 sources, one launch per run and
    pass, the later ones adding into the output (forward) or reading g back (backward)."""
    ta = _ta()
    with _launches() as launches:
        check_kernels('GN-2ch', 'f32', 'nchw', 1, DEFAULT_TILES, 35, False, size=(3, 5))
    runs = -(-35 // ta.K)
    # per weight: forward runs; backward: reduce runs + apply runs, for two gradient requests
    # (all: one apply run per reduce run; every other source: 35 runs of one source each)
    assert launches.count('_aggregate_kernel') == runs, launches
    assert launches.count('_backward_reduce_kernel') == 2 * runs, launches


def check_partial_sums():
    """The kernels' partials, tile by tile, against torch: per (n, c, tile) mean and M2 (the
    statistics kernel, left in its workspace), ``sum g`` and ``sum g * y_hat`` (the backward's
    reduce pass)."""
    import triton

    from mmdsnet.ops import norm_stats
    ta = _ta()
    n, c, h, w, block_c, block_hw = 2, 6, 5, 7, 4, 8
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64) + 1
    hw = h * w
    p = triton.cdiv(hw, block_hw)
    pad = torch.full((n, c, p * block_hw), float('nan'), dtype=torch.float64)
    pad[..., :hw] = y.reshape(n, c, hw)
    tiles = pad.reshape(n, c, p, block_hw)
    mean = tiles.nanmean(-1)
    m2 = ((tiles - mean[..., None]) ** 2).nansum(-1)
    with _tiles((block_c * block_hw, block_hw, block_c, 8)):
        ta.norm_stats(y, 3, 1e-5, False)
    part = ta._workspace(y.device, torch.float64, 0)[:2 * n * c * p].reshape(2, n, c, p)
    _close('tile means', part[0], mean, 1e-12)
    _close('tile M2', part[1], m2, 1e-12)

    grad = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    out = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    mu, rstd = norm_stats(y, 3, 1e-5, False)
    g = torch.where(out <= 0, 0, grad)
    y_hat = (y - mu.repeat_interleave(2, 1)[..., None, None]) * rstd.repeat_interleave(
        2, 1)[..., None, None]

    def tile_sums(t):
        z = torch.zeros(n, c, p * block_hw, dtype=torch.float64)
        z[..., :hw] = t.reshape(n, c, hw)
        return z.reshape(n, c, p, block_hw).sum(-1)
    part = torch.empty(2, n, c, p, dtype=torch.float64)
    dx = torch.empty_like(grad)
    strides = ta._flat(y)
    ta._backward_reduce_kernel[(p, triton.cdiv(c, block_c), n)](
        grad, out, dx, part, *[y] * ta.K, *[mu] * ta.K, *[rstd] * ta.K, n, c, hw, p, 1, 3, 2,
        *strides, *strides, *strides, *strides, NUM=1, SUM_G=True, G_FROM_DX=False, RELU=True,
        ACC=ta._TL[torch.float64], BLOCK_C=block_c, BLOCK_HW=block_hw)
    _close('dL/dx', dx, g, 0)
    _close('tile sums of g', part[0], tile_sums(g), 1e-12)
    _close('tile sums of g * y_hat', part[1], tile_sums(g * y_hat), 1e-12)


def _kernel_names():
    from helpers import KERNELS
    return KERNELS


@contextlib.contextmanager
def _launches():
    """Every kernel launch of the module, by kernel name, in order (the kernels still run)."""
    from helpers import count_launches
    with count_launches(_ta()) as launches:
        yield launches


CALLS = []  # the operator names the CPU-registered kernels ran, in the child


def _register_on_cpu():
    """In the child only: the Triton functions become the operators' CPU kernels, so that the
    operators (and the models through them) run them; each call is recorded in CALLS."""
    ta = _ta()
    for name, fn in (('stats', ta.norm_stats), ('aggregate', ta.dense_aggregate),
                     ('backward', ta.dense_aggregate_backward)):
        def counted(*args, fn=fn, name=name):
            CALLS.append(name)
            return fn(*args)
        ta.register_device_kernel(getattr(ta, f'_{name}_op'), 'cpu', counted)


@contextlib.contextmanager
def _kernels_on_cpu():
    """The operators on CPU tensors run the kernels (falling back to ATen raises); yields the
    names of the operators that ran."""
    CALLS.clear()
    with _no_fallback():
        yield CALLS


@contextlib.contextmanager
def _aten_on_cpu():
    """The operators on CPU tensors run their ATen implementation (the public switch); no
    kernel may run meanwhile."""
    from mmdsnet.ops import use_implementation
    CALLS.clear()
    with use_implementation(kernels='aten'), _launches() as launches:
        yield
    assert not CALLS and not launches, (CALLS, launches)


def check_opcheck():
    from mmdsnet.ops import dense_aggregate, norm_stats
    g = torch.Generator().manual_seed(0)
    for fmt in (torch.contiguous_format, torch.channels_last):
        def t(*shape):
            return torch.randn(*shape, generator=g, dtype=torch.float64).contiguous(
                memory_format=fmt)
        with _kernels_on_cpu() as calls:
            x = t(2, 8, 5, 3).requires_grad_()
            ys = [t(2, 8, 5, 3).requires_grad_() for _ in range(3)]
            stats = [norm_stats(ys[0].detach(), 4, 1e-5, False),
                     norm_stats(ys[1].detach(), 8, 1e-5, True),
                     (torch.zeros(1, 1, dtype=torch.float64),
                      torch.ones(1, 1, dtype=torch.float64))]
            weight = torch.randn(3, 8, 1, 1, dtype=torch.float64, requires_grad=True)
            args = (x, ys, [s[0] for s in stats], [s[1] for s in stats], weight, [1, 1, 0])
            torch.library.opcheck(torch.ops.mmdsnet.dense_aggregate.default, args)
            torch.library.opcheck(torch.ops.mmdsnet.norm_stats.default,
                                  (ys[0].detach(), 4, 1e-5, False))
            out = dense_aggregate(*args)
            assert out.is_contiguous(memory_format=fmt)
            torch.autograd.grad(out.sum(), [x, *ys, weight])
        assert {'stats', 'aggregate', 'backward'} <= set(calls), set(calls)


def check_gradcheck():
    """float64 gradcheck of the operator, statistics from ``DenseAggregation.normalize`` (so the
    gradient through them is checked too), with respect to X, every Y_i and W."""
    from mmdsnet.models.layers import DenseAggregation
    from mmdsnet.ops import dense_aggregate

    from helpers import bn_eval, gradcheck_inputs
    for norm, weight in (('GN', True), ('BN', True), ('BN-eval', False), (None, True)):
        torch.manual_seed(0)
        agg = DenseAggregation(8, 3, 'BN' if norm == 'BN-eval' else norm).double()
        if norm == 'BN-eval':
            bn_eval(agg)
        x, ys = gradcheck_inputs()
        w = torch.randn(3, 8, 1, 1, dtype=torch.float64, requires_grad=True)

        def f(x, w, *ys, agg=agg):
            src = [agg.normalize(i, y) for i, y in enumerate(ys)]
            return dense_aggregate(x, ys, [s.mean for s in src], [s.rstd for s in src], w,
                                   [int(s.own) for s in src])
        inputs = (x, w, *ys) if weight else (x, None, *ys)
        with _kernels_on_cpu() as calls:
            assert torch.autograd.gradcheck(f, inputs, fast_mode=True), (norm, weight)
        assert 'backward' in calls, (norm, weight, set(calls))


def _train_step(model, x, autocast=False):
    model.zero_grad(set_to_none=True)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        outs = model(x)
        sum((o.float() * torch.linspace(-1, 2, o.numel()).view_as(o)).sum()
            for o in outs).backward()
    return {'output': torch.cat([o.detach().float().flatten() for o in outs]),
            **{k: p.grad for k, p in model.named_parameters() if p.grad is not None}}


def check_model_float64():
    """A DS2Net training step (GN: dense and inner shortcuts) on the kernels = the reference
    form, in float64 (1e-9): outputs and every gradient."""
    from mmdsnet.models import DS2Net

    from helpers import randomize, reference_twin
    build = functools.partial(DS2Net, depth=29, base_channels=8, stem='cifar',
                              out_indices=(0, 1, 2))
    model = randomize(build()).double().train()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = _train_step(reference_twin(model, build), x)
    with _kernels_on_cpu() as calls:
        got = _train_step(model, x)
    assert {'stats', 'aggregate', 'backward'} <= set(calls)
    for k in ref:
        _close(k, got[k], ref[k], 1e-9)


def check_model_bf16_autocast():
    """A bf16-autocast training step (DSNet, default initialization) on the kernels is as close
    to the float32 truth as on the ATen operators: relative L2 error of the output, and of all
    gradients together, at most 1.5x ATen's + 0.01 (tests/test_aggregation.py's criterion: bf16
    convolutions alone put ATen's own gradient error at ~50% on this tiny net); parameter
    gradients in float32."""
    from mmdsnet.models import DSNet
    torch.manual_seed(0)
    model = DSNet(depth=29, base_channels=8, stem='cifar', out_indices=(2, )).train()
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with _aten_on_cpu():
        truth = _train_step(copy.deepcopy(model), x)
        ref = _train_step(copy.deepcopy(model), x, autocast=True)
    with _kernels_on_cpu() as calls:
        got = _train_step(model, x, autocast=True)
    assert {'stats', 'aggregate', 'backward'} <= set(calls)
    assert all(got[k].dtype == torch.float32 for k in got)
    grads = [k for k in truth if k != 'output']

    def errors(res):
        return [((a - b).norm() / b.norm()).item() for a, b in (
            (res['output'].double(), truth['output'].double()),
            (torch.cat([res[k].flatten() for k in grads]).double(),
             torch.cat([truth[k].flatten() for k in grads]).double()))]
    for what, ours, aten in zip(('output', 'gradients'), errors(got), errors(ref)):
        assert ours <= 1.5 * aten + 0.01, (what, ours, aten)


def check_fallbacks():
    """Inputs the kernels do not take give ATen's result, and no kernel runs."""
    ta = _ta()
    saved = {k: getattr(ta, k) for k in _kernel_names()}

    class Refuse:
        def __getitem__(self, grid):
            raise AssertionError('a kernel was launched')
    for k in _kernel_names():
        setattr(ta, k, Refuse())
    try:
        y = torch.randn(2, 4, 10, 7, dtype=torch.float64)[:, :, ::2]  # H stride 14, W stride 1
        assert ta._flat(y) is None
        mean, rstd = ta.norm_stats(y, 2, 1e-5, False)
        _close('mean', mean, _aten('stats')(y, 2, 1e-5, False)[0], 0)
        x = torch.randn(2, 4, 5, 7, dtype=torch.float64)
        stats = ([mean, mean], [rstd, rstd], None, [1, 1])
        _close('strided source', ta.dense_aggregate(x, [y, y], *stats),
               _aten('aggregate')(x, [y, y], *stats), 0)
        mixed = [x.float(), x.bfloat16()]  # two dtypes: one set of slots cannot hold them
        stats = ([mean.float()] * 2, [rstd.float()] * 2, None, [1, 1])
        _close('mixed dtypes', ta.dense_aggregate(x.float(), mixed, *stats),
               _aten('aggregate')(x.float(), mixed, *stats), 0)
    finally:
        for k, v in saved.items():
            setattr(ta, k, v)


def _dsnet50_step(cls):
    """One training step of a narrow DSNet50 / DS2Net50 (base 8 channels, 64 x 64, batch 1:
    the interpreter is slow; the launches do not depend on the sizes), GN shortcuts."""
    torch.manual_seed(0)
    model = cls(depth=50, base_channels=8).train()
    x = torch.randn(1, 3, 64, 64)
    return lambda: _train_step(model, x)


def check_launch_budget():
    """One training step of DSNet50 and of DS2Net50 on the kernels: one launch per statistic
    (norm_stats), one per aggregation forward, at most two per aggregation backward (<= K
    sources per aggregation here). With the earlier pointer-table kernels the DSNet50 step made
    72 (two per statistic, three per backward)."""
    from mmdsnet.models import DS2Net, DSNet
    totals = {}
    # (aggregations = statistics: DSNet50 12 (stages of 3/4/6/3 blocks), DS2Net50 25 (plus 13
    # one-source inner shortcuts at stride-1 3x3 convs); launches 4 per aggregation)
    for cls, count, expected in ((DSNet, 12, 48), (DS2Net, 25, 100)):
        step = _dsnet50_step(cls)
        with _kernels_on_cpu() as calls, _launches() as launches:
            step()
        ops = {k: calls.count(k) for k in ('stats', 'aggregate', 'backward')}
        got = {k: launches.count(k) for k in _kernel_names()}
        assert got['_stats_kernel'] == ops['stats'], (ops, got)
        assert got['_aggregate_kernel'] == ops['aggregate'], (ops, got)
        bwd = got['_backward_reduce_kernel'] + got['_backward_apply_kernel']
        assert ops['backward'] == ops['aggregate'] and bwd <= 2 * ops['backward'], (ops, got)
        totals[cls.__name__] = dict(ops=ops, launches=got, total=len(launches))
        assert ops == dict(stats=count, aggregate=count, backward=count), ops
        assert len(launches) == expected, (len(launches), got)
    return totals


def check_no_host_work():
    """Per call, the kernels' functions do nothing on the host but launch: no ATen operator
    other than allocating their outputs (and views), so no pointer table, no pinned memory, no
    copy, no synchronization (``.item()``), no temporary (partials live in a workspace allocated
    once). Recorded with a TorchDispatchMode around each call of a registered kernel function
    (the launches themselves, run by the interpreter, are left out), on the second training
    step of DSNet50 and DS2Net50 (the first one allocates the workspaces)."""
    from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

    from mmdsnet.models import DS2Net, DSNet
    ta = _ta()
    allowed = {'aten.empty_like.default', 'aten.empty.memory_format', 'aten.new_empty.default',
               'aten.view.default', 'aten._unsafe_view.default', 'aten.alias.default'}
    allocating = {'aten.empty_like.default', 'aten.empty.memory_format',
                  'aten.new_empty.default'}

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))
    seen = []
    saved = {k: getattr(ta, k) for k in _kernel_names()}
    fns = {name: getattr(ta, name) for name in ('norm_stats', 'dense_aggregate',
                                                'dense_aggregate_backward')}

    class Unrecorded:  # the launch itself runs outside the mode (the interpreter copies)
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                with _disable_current_modes():
                    return self.kernel[grid](*args, **kwargs)
            return launch

    def recorded(fn):
        def call(*args):
            with Record() as rec:
                result = fn(*args)
            outputs = [t for t in (result if isinstance(result, tuple) else (result, ))]
            outputs = [u for t in outputs for u in (t if isinstance(t, list) else [t])]
            seen.append((fn.__name__, rec.ops, len(outputs)))
            return result
        return call
    for k in _kernel_names():
        setattr(ta, k, Unrecorded(saved[k]))
    try:
        for cls in (DSNet, DS2Net):
            step = _dsnet50_step(cls)
            step()  # the workspaces and counters are allocated once, here
            for name, fn in fns.items():
                ta.register_device_kernel(getattr(ta, {'norm_stats': '_stats_op',
                                                       'dense_aggregate': '_aggregate_op',
                                                       'dense_aggregate_backward':
                                                       '_backward_op'}[name]), 'cpu',
                                          recorded(fn))
            seen.clear()
            try:
                step()
            finally:
                _register_on_cpu()
            assert len(seen) > 30, len(seen)
            for name, ops, outputs in seen:
                assert set(ops) <= allowed, (name, sorted(set(ops) - allowed))
                assert sum(op in allocating for op in ops) <= outputs, (name, ops, outputs)
    finally:
        for k, v in saved.items():
            setattr(ta, k, v)


def check_switch():
    """``use_implementation``: kernels='aten' runs no kernel, whether the models call the
    kernels directly (eager) or through the dispatcher; calls='dispatcher' runs the operators
    (their registered kernel, here the Triton functions) and gives the eager result."""
    from mmdsnet.models import DSNet
    from mmdsnet.ops import use_implementation
    torch.manual_seed(0)
    model = DSNet(depth=26, base_channels=8, stem='cifar', out_indices=(2, )).double().train()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with _kernels_on_cpu() as calls:
        eager = _train_step(copy.deepcopy(model), x)
        assert {'stats', 'aggregate', 'backward'} <= set(calls)
    for mode in ('eager', 'dispatcher'):
        with _aten_on_cpu(), use_implementation(kernels='aten', calls=mode):
            aten = _train_step(copy.deepcopy(model), x)  # (_aten_on_cpu: no kernel ran)
        # without the activation after the sum, a BN bias before a stage's output has a zero
        # gradient (the next stage's BNs remove per-channel constants): compare to the largest
        largest = max(v.abs().max().item() for v in eager.values())
        for k in eager:
            _close(k, aten[k], eager[k], 1e-9, largest)
    from mmdsnet.ops import operators as ops
    y = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    stats = ops.norm_stats(y.detach(), 2, 1e-5, False)

    def node():
        return type(ops.aggregate(y, [y], [stats[0]], [stats[1]], None, [1]).grad_fn).__name__
    assert node() == '_AggregateBackward', node()  # the eager call
    with use_implementation(calls='dispatcher'):
        assert node() != '_AggregateBackward', node()  # the operator's autograd
    with _kernels_on_cpu() as calls, use_implementation(calls='dispatcher'):
        got = _train_step(copy.deepcopy(model), x)
    assert {'stats', 'aggregate', 'backward'} <= set(calls)
    for k in eager:
        _close(k, got[k], eager[k], 0)


OTHER_CASES = {
    'many-sources': check_many_sources,
    'partial-sums': check_partial_sums,
    'opcheck': check_opcheck,
    'gradcheck': check_gradcheck,
    'model-float64': check_model_float64,
    'model-bf16-autocast': check_model_bf16_autocast,
    'fallbacks': check_fallbacks,
    'launch-budget': check_launch_budget,
    'no-host-work': check_no_host_work,
    'switch': check_switch,
}


def _run_all(path, only=()):
    """The child: every case (or those whose name contains one of ``only``), its error if any,
    into ``path`` (JSON)."""
    assert os.environ.get('TRITON_INTERPRET') == '1', 'the child needs TRITON_INTERPRET=1'
    torch.set_num_threads(1)
    _register_on_cpu()
    cases = {**{f'kernels[{k}]': functools.partial(check_kernels, *v)
                for k, v in KERNEL_CASES.items()}, **OTHER_CASES}
    results = {}
    for name, fn in cases.items():
        if only and not any(o in name for o in only):
            continue
        t0 = time.time()
        try:
            info = fn()
            results[name] = dict(ok=True, info=info)
        except Exception:  # noqa: BLE001  (reported by the test of that case)
            results[name] = dict(ok=False, error=traceback.format_exc()[-4000:])
        results[name]['seconds'] = round(time.time() - t0, 2)
        with open(path, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':  # python tests/test_ops/test_triton_kernels.py RESULTS.json [NAME ...]
    # as pytest does, the tests' shared helpers (tests/helpers.py) on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    _run_all(sys.argv[1], sys.argv[2:])


# ---------------------------------------------------------------------- the tests (the parent)
@pytest.fixture(scope='module')
def interpreted():
    """Run every case once in a child process with TRITON_INTERPRET=1."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'results.json')
        env = dict(os.environ, TRITON_INTERPRET='1', CUDA_VISIBLE_DEVICES='',
                   PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), path], env=env,
                              capture_output=True, text=True, timeout=1200)
        results = {}
        if os.path.exists(path):
            with open(path) as f:
                results = json.load(f)
        results['__child__'] = dict(returncode=proc.returncode, stderr=proc.stderr[-3000:])
        return results


def _result(interpreted, name):
    r = interpreted.get(name)
    assert r is not None, f'the interpreter child did not report {name}: ' \
        f'{interpreted["__child__"]}'
    assert r['ok'], r['error']


@pytest.mark.slow  # together about 2 minutes on 2 CPU cores (the interpreter is slow)
@pytest.mark.parametrize('name', sorted(KERNEL_CASES))
def test_kernels_against_aten(interpreted, name):
    _result(interpreted, f'kernels[{name}]')


@pytest.mark.slow
@pytest.mark.parametrize('name', list(OTHER_CASES))
def test_operator_on_interpreter(interpreted, name):
    _result(interpreted, name)


def test_cuda_kernels_are_registered_and_cpu_keeps_aten():
    import mmdsnet.ops  # noqa: F401
    for op in ('norm_stats', 'dense_aggregate', 'dense_aggregate_backward'):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f'mmdsnet::{op}', 'CUDA'), op
        assert not torch._C._dispatch_has_kernel_for_dispatch_key(f'mmdsnet::{op}', 'CPU'), op


@pytest.mark.slow  # a fresh interpreter
def test_cpu_install_without_triton_is_untouched():
    """With triton hidden, mmdsnet imports, registers no CUDA kernel and computes on the CPU."""
    code = '\n'.join([
        'import sys',
        'sys.modules["triton"] = None  # import triton: ImportError; find_spec: None',
        'import torch',
        'from mmdsnet.models import DSNet',
        'assert sys.modules["triton"] is None',
        'assert not torch._C._dispatch_has_kernel_for_dispatch_key(',
        '    "mmdsnet::dense_aggregate", "CUDA")',
        'DSNet(depth=26, base_channels=8)(torch.randn(2, 3, 32, 32))[-1].sum().backward()',
        'print("ok")',
    ])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith('ok'), proc.stderr[-3000:]


def _compile_cases():
    """Every kernel with every constexpr combination (source counts 1 and K), for float32, bf16
    and float64 maps."""
    import triton.language as tl

    from mmdsnet.ops import triton_aggregate as ta
    ptr = {tl.float32: '*fp32', tl.float64: '*fp64', tl.bfloat16: '*bf16'}
    for yt, acc in ((tl.float32, tl.float32), (tl.bfloat16, tl.float32), (tl.float64, tl.float64)):
        y, a = ptr[yt], ptr[acc]
        slots = {f'{k}{i}': t for k, t in (('y', y), ('m', a), ('r', a), ('z', y))
                 for i in range(ta.K)}
        maps = dict(slots, grad_ptr=y, out_ptr=y, dx_ptr=y, x_ptr=y, part_ptr=a, w_ptr=a,
                    dw_ptr=a, mean_ptr=a, rstd_ptr=a, count_ptr='*i32', eps='fp32')
        for over_batch in (True, False):
            yield ta._stats_kernel, dict(maps, y_ptr=y), dict(
                OVER_BATCH=over_batch, ACC=acc, BLOCK_C=4, BLOCK_HW=512, BLOCK_R=256)
        for num in (1, ta.K):
            # the launcher passes unused slots as None, i.e. compile-time constants
            unused = {f'{k}{i}': None for k in 'ymr' for i in range(num, ta.K)}
            for flag in (True, False):
                yield ta._aggregate_kernel, maps, dict(
                    unused, NUM=num, HAS_W=flag, RELU=not flag, ACC=acc, BLOCK_C=64,
                    BLOCK_HW=32)
                yield ta._backward_reduce_kernel, maps, dict(
                    unused, NUM=num, SUM_G=flag, G_FROM_DX=not flag, RELU=flag, ACC=acc,
                    BLOCK_C=4, BLOCK_HW=512)
                for own in (True, False):
                    yield ta._backward_apply_kernel, maps, dict(
                        unused, **{f'z{i}': None for i in range(num, ta.K)}, NUM=num, OWN=own,
                        NEED_Y=flag or own, NEED_W=not flag, HAS_W=own, G_FROM_DX=flag,
                        RELU=own, ACC=acc, BLOCK_C=4, BLOCK_HW=512, BLOCK_R=512)


def test_kernels_compile_for_a_gpu():
    """The interpreter runs Python semantics; the real compiler is stricter (types of
    loop-carried values, pointer casts, masks, atomics). Every kernel compiles, here on the CPU,
    to an H100 (sm_90) binary with the compiler and ptxas that come with triton."""
    import triton
    from triton.backends.compiler import GPUTarget
    target = GPUTarget('cuda', 90, 32)
    count = 0
    for kernel, types, constexprs in _compile_cases():
        signature = {name: 'constexpr' if name in constexprs else types.get(name, 'i32')
                     for name in kernel.arg_names}
        src = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
        compiled = triton.compile(src, target=target)
        assert compiled.asm.get('cubin'), kernel.__name__
        count += 1
    assert count == 3 * (2 + 2 * 2 * (1 + 1 + 2))


def test_aligned_sources_get_vector_loads():
    """The sources are pointer arguments, so Triton's launcher specializes them on 16-byte
    alignment like any tensor argument: with the alignment (what the JIT sees for tensors from
    the caching allocator), the forward kernel's loads of the sources become 16-byte vector
    loads (NCHW float32, strides and sizes multiples of 16)."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget

    from mmdsnet.ops import triton_aggregate as ta
    kernel = ta._aggregate_kernel
    names = kernel.arg_names
    vector_loads = {}
    for aligned in (False, True):
        constexprs = dict({f'{k}{i}': None for k in 'ymr' for i in range(3, ta.K)}, sxh=1,
                          syh=1, soh=1, NUM=3, HAS_W=True, RELU=True, ACC=tl.float32,
                          BLOCK_C=4, BLOCK_HW=512)
        types = {n: '*fp32' for n in names if n.endswith('_ptr') or n[0] in 'ymr'}
        signature = {n: 'constexpr' if n in constexprs else types.get(n, 'i32') for n in names}
        divisible = ['x_ptr', 'out_ptr', 'w_ptr', 'm0', 'r0', 'C', 'HW', 'sxn', 'sxc', 'syn',
                     'syc', 'son', 'soc'] + [f'y{i}' for i in range(3) if aligned]
        attrs = {(names.index(n), ): [['tt.divisibility', 16]] for n in divisible}
        src = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs,
                                        attrs=attrs)
        ptx = triton.compile(src, target=GPUTarget('cuda', 90, 32)).asm['ptx']
        vector_loads[aligned] = ptx.count('ld.global.v4')
    assert vector_loads[True] > vector_loads[False], vector_loads
