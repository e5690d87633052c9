"""The Triton kernels' cases against ATen, run under Triton's interpreter in the child process of
tests/test_ops/test_triton_kernels.py (its docstring lists the cases and tolerances): every kernel
through the operator functions, for every norm, dtype and layout of a covering set, and the
partial sums of the reduction kernels. Not collected by pytest (no ``test_`` prefix)."""
import contextlib

import torch

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
#: in tiles of 32 x 8, its 160 partials per group 32 per step (still several steps)
DEFAULT_TILES = None
SMALL_TILES = (64, 8, 8, 8)
SMALL_TILES_WIDE = (256, 8, 32, 32)


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
    ``stats``, ``aggregate``, ``backward`` or ``chain`` (a chain's backward)."""
    ta = _ta()
    return ta._ATEN[ta.CHAIN_BACKWARD if name == 'chain' else getattr(ta, f'_{name}_op')]


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
        combos = [(w, r) for w in weights for r in relus]
        for k, (weight, relu) in enumerate(combos):
            args = (ys, means, rstds, weight, own)
            ref = _aten('aggregate')(x, *args, relu)[0]
            # out's own statistics from the same pass, where a norm computes them
            out_stats = (groups, 1e-5, kind == 'batch') if kind in ('group', 'batch') else ()
            got, out_mean, out_rstd = ta.dense_aggregate(x, *args, relu, *out_stats)
            _close('out', got, ref, TOL[dtype])
            assert got.stride() == ref.stride(), ('out layout', got.stride(), ref.stride())
            if out_stats:  # those of the map it stored (out itself is compared above)
                want = _aten('stats')(got, *out_stats)
                _close('mean of out', out_mean, want[0], TOL[acc])
                _close('rstd of out', out_rstd, want[1], TOL[acc])
            else:
                assert out_mean.numel() == out_rstd.numel() == 0
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
            # one call of a chain: the older sources' sums added into (or started: no sum yet),
            # the last one finalized (the norm backward of its whole sum), W's gradient. With
            # ``full``, on the first combination (W, ReLU) also: sums started, every other
            # source, no dL/dW; on the last (no W, no ReLU) sums added into. In small tiles
            # (one combination) sums added into, the tiled reductions of the whole sum.
            sums, started, all_w = [t() for _ in range(sources)], [None] * sources, (
                [True] * sources, True)
            plan = ([(sums, all_w), (started, (some, False))] if k == 0 and full
                    else [(sums, all_w)] if k == len(combos) - 1 else [])
            for hs, (need_ys, need_w) in plan:
                refs = _aten('chain')(grad, ref, *args, need_ys, need_w, relu,
                                      [h if h is None else h.clone() for h in hs])
                gots = ta.chain_backward(grad, ref, *args, need_ys, need_w, relu,
                                         [h if h is None else h.clone() for h in hs])
                _close('chain dL/dx', gots[0], refs[0], TOL[dtype])
                for i, (a, b) in enumerate(zip(gots[1], refs[1])):
                    _close(f'chain h_{i}' if i < sources - 1 else 'chain dL/dy', a, b,
                           TOL[dtype])
                _close('chain dL/dW', gots[2], refs[2], TOL[acc])


def check_no_source():
    """No source (DS2's inner source ``ReLU(t)`` with its statistics): one launch forward with
    the output's statistics, one backward (the ReLU's), against ATen; float32 NCHW and bf16
    channels_last (what autocast gives the 3x3 conv's input)."""
    ta = _ta()
    gen = torch.Generator().manual_seed(0)
    for fmt, dtype in ((torch.contiguous_format, torch.float32),
                       (torch.channels_last, torch.bfloat16)):
        x, grad = (torch.randn(2, 12, 5, 7, generator=gen).to(dtype).contiguous(
            memory_format=fmt) for _ in range(2))
        for out_stats in ((6, 1e-5, False), (12, 1e-5, True)):
            with _launches() as launches, _no_fallback():
                got = ta.dense_aggregate(x, [], [], [], None, [], True, *out_stats)
                gots = ta.dense_aggregate_backward(grad, got[0], [], [], [], None, [], [], False,
                                                   True)
            assert launches == ['_aggregate_kernel', '_backward_apply_kernel'], launches
            ref = _aten('aggregate')(x, [], [], [], None, [], True, *out_stats)
            refs = _aten('backward')(grad, ref[0], [], [], [], None, [], [], False, True)
            for name, a, b, tol in zip(('out', 'mean', 'rstd', 'dL/dx'), (*got, gots[0]),
                                       (*ref, refs[0]), (TOL[dtype], 1e-5, 1e-5, TOL[dtype])):
                _close(name, a, b, tol)  # (the statistics in float32)
            assert got[0].stride() == x.stride() and gots[0].stride() == grad.stride()


def check_many_sources():
    """35 sources (DSNet152's largest block): runs of K = 8 sources, one launch per run and
    pass, the later ones adding into the output (forward) or reading g back (backward)."""
    ta = _ta()
    with _launches() as launches:
        check_kernels('GN-2ch', 'f32', 'nchw', 1, DEFAULT_TILES, 35, False, size=(3, 5))
    runs = -(-35 // ta.K)
    # per weight: forward runs; backward: reduce runs + apply runs, for two gradient requests
    # (all: one apply run per reduce run; every other source: one per asked source, 18), and
    # one call of a chain (all asked: one reduce and one apply launch per run, the finalized
    # source in the last run)
    assert launches.count('_aggregate_kernel') == runs, launches
    assert launches.count('_backward_reduce_kernel') == 3 * runs, launches
    assert launches.count('_backward_apply_kernel') == runs + 18 + runs, launches


def check_partial_sums():
    """The kernels' partials, tile by tile, against torch: per (n, c, tile) mean and M2 (the
    statistics kernel, left in its workspace), ``sum g`` and ``sum g * y_hat`` (the backward's
    reduce pass), and the reduce pass's merge of a chain's finalized sums per (sample, group),
    by channel block and over every block."""
    import triton
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

    # the backward's reduce pass, and its merge of a chain's finalized sums per (sample,
    # group): 3 groups of 2 channels (in blocks of 4: span 1), 2 groups of 8 (each over 2
    # blocks: span 2), and over every block (span 0)
    for c, groups, spans in ((6, 3, (1, 0)), (16, 2, (2, 0))):
        _check_reduce_pass(ta, gen, n, c, h, w, groups, block_c, block_hw, spans)


def _check_reduce_pass(ta, gen, n, c, h, w, groups, block_c, block_hw, spans):
    import triton

    from mmdsnet.ops import norm_stats
    y = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64) + 1
    hw, p, cpg = h * w, triton.cdiv(h * w, block_hw), c // groups
    grad = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    out = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    mu, rstd = norm_stats(y, groups, 1e-5, False)
    g = torch.where(out <= 0, 0, grad)
    y_hat = (y - mu.repeat_interleave(cpg, 1)[..., None, None]) * rstd.repeat_interleave(
        cpg, 1)[..., None, None]

    def tile_sums(t):
        z = torch.zeros(n, c, p * block_hw, dtype=torch.float64)
        z[..., :hw] = t.reshape(n, c, hw)
        return z.reshape(n, c, p, block_hw).sum(-1)
    # a chain's finalized source: its whole sum h = h_sum + w g, summed at part[FIN = 2, 3]
    w_row = torch.randn(1, c, generator=gen, dtype=torch.float64)
    h_sum = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    gs = 4 * n * c * p  # (then the merged group sums: pairs j = 0, the source, and 1, FIN - 1)
    h_all = h_sum + w_row[..., None, None] * g
    cblocks = triton.cdiv(c, block_c)
    assert ta._span(block_c, cpg) == spans[0]
    for span in spans:
        buf = torch.full((gs + 4 * n * c, ), float('nan'), dtype=torch.float64)
        part = buf[:gs].view(4, n, c, p)
        dx = torch.empty_like(grad)
        counters = torch.zeros(n * cblocks, dtype=torch.int32)
        strides = ta._flat(y)
        ta._backward_reduce_kernel[(p, cblocks, n)](
            grad, out, dx, buf, w_row, h_sum, counters, *[y] * ta.K, *[mu] * ta.K,
            *[rstd] * ta.K, n, c, hw, p, 1, groups, cpg, 0, 2, gs, span, *strides, *strides,
            *strides, *strides, NUM=1, SUM_G=True, G_FROM_DX=False, FINAL_H=True, HAS_W=True,
            MERGE=1, PER_SAMPLE=True, RELU=True, ACC=ta._TL[torch.float64],
            BLOCK_C=block_c, BLOCK_HW=block_hw, BLOCK_R=8)
        _close('dL/dx', dx, g, 0)
        _close('tile sums of g', part[0], tile_sums(g), 1e-12)
        _close('tile sums of g * y_hat', part[1], tile_sums(g * y_hat), 1e-12)
        _close('tile sums of h', part[2], tile_sums(h_all), 1e-12)
        _close('tile sums of h * y_hat', part[3], tile_sums(h_all * y_hat), 1e-12)
        # (rows 2 j and 2 j + 1 for j = FIN - 1 = 1, per (sample, group))
        merged = buf[gs:].view(4, n * c)[2:, :n * groups].reshape(2, n, groups)
        for k, t in enumerate((h_all, h_all * y_hat)):
            _close(f'merged group sums {k} ({groups} groups, span {span})', merged[k],
                   t.reshape(n, groups, -1).sum(-1), 1e-12)
        assert not counters.any(), counters  # (set back to zero for the next launch)


def _kernel_names():
    from helpers import KERNELS
    return KERNELS


@contextlib.contextmanager
def _launches():
    """Every kernel launch of the module, by kernel name, in order (the kernels still run)."""
    from helpers import count_launches
    with count_launches(_ta()) as launches:
        yield launches
