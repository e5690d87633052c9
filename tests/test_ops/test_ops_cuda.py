"""The dense-aggregation operators on a CUDA GPU: the Triton kernels against the operators' ATen
implementation, training steps against a float64 truth, and the CUDA path's promises (no host
synchronization, CUDA-graph capture, the launch budget). Marked ``cuda``: skipped without a GPU
(tests/test_ops/test_triton_kernels.py checks the same kernels on the CPU, under Triton's
interpreter).
tools/analysis/gpu_bench.sh runs this file first::

    python -m pytest tests/test_ops/test_ops_cuda.py -m cuda -q
"""
import copy
import itertools

import pytest
import torch

from helpers import count_launches

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA GPU'),
]

TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}
NORMS = {'GN': 'group', 'LN': 'group', 'IN': 'group', 'BN-batch': 'batch',
         'BN-running': 'running', 'none': 'none'}
#: (N, C, H, W, dtypes): odd sizes (no block multiple), and a detection-sized map
SHAPES = [((3, 96, 13, 17), (torch.float32, torch.bfloat16, torch.float16, torch.float64)),
          ((2, 256, 200, 304), (torch.float32, torch.bfloat16))]
FORMATS = {'nchw': torch.contiguous_format, 'channels_last': torch.channels_last}
DEVICE = 'cuda'


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _ta():
    from mmdsnet.ops import triton_aggregate
    return triton_aggregate


def _aten(name):
    ta = _ta()
    return ta._ATEN[getattr(ta, f'_{name}_op')]


def _rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _inputs(shape, dtype, fmt, norm, sources=3, seed=0):
    from mmdsnet.ops import stats_dtype
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    n, c = shape[:2]
    acc = stats_dtype(dtype)

    def t():
        return (torch.randn(*shape, device=DEVICE, generator=g) + 0.5).to(dtype).contiguous(
            memory_format=fmt)
    x, ys, grad = t(), [t() for _ in range(sources)], t()
    kind = NORMS[norm]
    groups = {'GN': min(32, c // 2), 'LN': 1, 'IN': c}.get(norm, c)
    if kind in ('group', 'batch'):
        stats = [_aten('stats')(y, groups, 1e-5, kind == 'batch') for y in ys]
        own = [1] * sources
    elif kind == 'running':
        stats = [(0.3 * torch.randn(1, c, device=DEVICE, dtype=acc, generator=g),
                  0.5 + torch.rand(1, c, device=DEVICE, dtype=acc, generator=g))] * sources
        own = [0] * sources
    else:
        stats = [(torch.zeros(1, 1, device=DEVICE, dtype=acc),
                  torch.ones(1, 1, device=DEVICE, dtype=acc))] * sources
        own = [0] * sources
    weight = torch.randn(sources, c, 1, 1, device=DEVICE, dtype=acc, generator=g)
    return x, ys, grad, groups, kind, stats, weight, own


def _dsnet50(cls_name='DSNet', batch=2, size=64):
    from mmdsnet import models
    torch.manual_seed(0)
    model = getattr(models, cls_name)(depth=50).to(DEVICE).train()
    return model, torch.randn(batch, 3, size, size, device=DEVICE)


@pytest.mark.parametrize('cls_name', ['DSNet', 'DS2Net'])
def test_a_training_step_never_synchronizes(cls_name):
    """No host synchronization anywhere in a step of the operators (torch's sync debug mode
    raises on one), after a warm-up step (compilation)."""
    model, x = _dsnet50(cls_name)
    model(x)[-1].sum().backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        model(x)[-1].sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode('default')
    torch.cuda.synchronize()


def test_aggregation_is_captured_in_a_cuda_graph():
    """The operators' CUDA path can be captured (nothing per call but launches): a captured
    statistics + aggregation + backward replays on new inputs to the eager result."""
    ta = _ta()
    x, ys, grad, groups, _, _, weight, own = _inputs((4, 64, 28, 28), torch.float32,
                                                     torch.contiguous_format, 'GN')

    def run():
        stats = [ta.norm_stats(y, groups, 1e-5, False) for y in ys]
        args = (ys, [s[0] for s in stats], [s[1] for s in stats], weight, own)
        out = ta.dense_aggregate(x, *args)[0]
        return out, ta.dense_aggregate_backward(grad, out, *args, [True] * 3, True)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        run()  # warm-up on the capture stream: compilation, workspaces
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=s):  # (the warm-up's stream: its workspaces)
        captured = run()
    for t in [x, grad, *ys]:
        t.copy_(torch.randn_like(t) + 0.5)
    graph.replay()
    torch.cuda.synchronize()
    eager = run()
    assert _rel(captured[0], eager[0]) <= 1e-6
    for a, b in zip(itertools.chain([captured[1][0]], captured[1][1], [captured[1][2]]),
                    itertools.chain([eager[1][0]], eager[1][1], [eager[1][2]])):
        assert _rel(a, b) <= 1e-5


def test_launch_budget_of_a_training_step():
    """DSNet50's training step launches 44 Triton kernels: 16 aggregations (each stage's Y_0
    and every later source with its statistics from the same pass), no statistics launch, at
    most 2 per backward (the 12 dense sums as a chain, the 4 Y_0 one each). Before: 40 with a
    statistics launch per Y_0, 48 with one per source, 72 with the pointer-table kernels."""
    ta = _ta()
    model, x = _dsnet50()
    model(x)[-1].sum().backward()
    with count_launches(ta) as launches:
        model(x)[-1].sum().backward()
    assert launches.count('_stats_kernel') == 0 and launches.count('_aggregate_kernel') == 16
    assert len(launches) <= 44, launches


@pytest.mark.parametrize('cls_name', ['DSNet', 'DS2Net'])
def test_direct_launches_equal_triton_run(cls_name, monkeypatch):
    """Direct launches (the compiled variants cached by ``_Direct``) give the gradients of
    launches through Triton's ``JITFunction.run``, bit for bit (the same variants; cuDNN set
    deterministic), and a second step launches every kernel from the cache (no new entry)."""
    from mmdsnet.ops import use_implementation
    ta = _ta()
    assert ta._DIRECT, 'no direct launcher: this Triton launches another way'
    monkeypatch.setattr(torch.backends.cudnn, 'deterministic', True)
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', False)
    grads, sizes = [], []
    for launches in ('triton', 'direct', 'direct'):
        model, x = _dsnet50(cls_name)
        with use_implementation(launches=launches):
            model(x)[-1].sum().backward()
        grads.append([p.grad for p in model.parameters()])
        sizes.append({name: len(d.cache) for name, d in ta._DIRECT.items()})
    for a, b in zip(grads[0], grads[2]):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    assert sizes[1] == sizes[2] and sum(sizes[2].values()) > 0, sizes


def test_many_sources_in_runs():
    """35 sources (DSNet152), in runs of K, forward and backward."""
    ta = _ta()
    x, ys, grad, groups, kind, stats, weight, own = _inputs((2, 64, 9, 11), torch.float32,
                                                            torch.contiguous_format, 'GN', 35)
    args = (ys, [s[0] for s in stats], [s[1] for s in stats], weight, own)
    ref = _aten('aggregate')(x, *args)[0]
    assert _rel(ta.dense_aggregate(x, *args)[0], ref) <= 1e-5
    refs = _aten('backward')(grad, ref, *args, [True] * 35, True)
    gots = ta.dense_aggregate_backward(grad, ref, *args, [True] * 35, True)
    assert max(_rel(a, b) for a, b in zip(gots[1], refs[1])) <= 1e-5
    assert _rel(gots[2], refs[2]) <= 1e-5


def _step(model, x, autocast=False):
    model = copy.deepcopy(model)
    xi = x.clone().requires_grad_()
    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=autocast):
        out = model(xi)[-1]
        out.float().square().mean().backward()
    grads = [xi.grad] + [p.grad for p in model.parameters() if p.grad is not None]
    return out.detach().double(), torch.cat([t.double().flatten() for t in grads])


def _l2(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize('norm', ['GN', 'BN', 'LN', None])
def test_training_step_against_float64_truth(norm):
    """DS2Net50 (16 base channels, 64 x 64): float32 (TF32 off) on the kernels against the
    float64 reference form (1e-4 output, 1e-3 gradients); float64 on the kernels = the reference
    form (1e-10); bf16 autocast no worse than the ATen operators' (1.5x + 0.01)."""
    from mmdsnet.models import DS2Net
    from mmdsnet.models.layers import DenseAggregation
    from mmdsnet.ops import use_implementation
    torch.manual_seed(0)
    model = DS2Net(depth=50, base_channels=16, shortcut_norm_cfg=norm).to(DEVICE).train()
    x = torch.randn(4, 3, 64, 64, device=DEVICE)
    ref_model = copy.deepcopy(model).double()
    for m in ref_model.modules():
        if isinstance(m, DenseAggregation):
            m.impl = 'reference'
    truth = _step(ref_model, x.double())
    ours = _step(model, x)
    assert _l2(ours[0], truth[0]) <= 1e-4 and _l2(ours[1], truth[1]) <= 1e-3
    ours64 = _step(copy.deepcopy(model).double(), x.double())
    assert _l2(ours64[0], truth[0]) <= 1e-10 and _l2(ours64[1], truth[1]) <= 1e-10
    bf = _step(model, x, autocast=True)
    with use_implementation(kernels='aten'):
        at = _step(model, x, autocast=True)
    for i in range(2):
        assert _l2(bf[i], truth[i]) <= 1.5 * _l2(at[i], truth[i]) + 0.01, i


# (last in the file: the promises above run first when time is short; the detection-sized map
# with the norms of the models and the running statistics only, to bound compile time)
CASES = [(shape, dtype, fmt, norm) for shape, dtypes in SHAPES for dtype in dtypes
         for fmt in FORMATS for norm in NORMS
         if shape[-1] < 100 or norm in ('GN', 'BN-batch', 'BN-running')]


@pytest.mark.parametrize('shape,dtype,fmt,norm', CASES,
                         ids=[f'{"x".join(map(str, s))}-{str(d)[6:]}-{f}-{n}'
                              for s, d, f, n in CASES])
def test_kernels_against_aten(shape, dtype, fmt, norm):
    """Statistics, output, dL/dx, every dL/dy_i and dL/dW of the kernels against the ATen
    implementation on the same CUDA inputs, both activations; no hand-over to ATen."""
    from mmdsnet.ops import stats_dtype
    ta = _ta()
    acc = stats_dtype(dtype)
    x, ys, grad, groups, kind, stats, weight, own = _inputs(shape, dtype, FORMATS[fmt], norm)
    original = ta._aten
    ta._aten = lambda op: (_ for _ in ()).throw(AssertionError(f'fell back to ATen for {op}'))
    try:
        if kind in ('group', 'batch'):
            got = ta.norm_stats(ys[0], groups, 1e-5, kind == 'batch')
            for a, b in zip(got, stats[0]):
                assert _rel(a, b) <= TOL[acc], ('statistics', _rel(a, b))
        args = (ys, [s[0] for s in stats], [s[1] for s in stats], weight, own)
        for relu in (True, False):
            ref = _aten('aggregate')(x, *args, relu)[0]
            out, mean, rstd = ta.dense_aggregate(x, *args, relu, groups, 1e-5, kind == 'batch')
            assert _rel(out, ref) <= TOL[dtype] and out.stride() == ref.stride(), relu
            if kind in ('group', 'batch'):  # out's statistics, from the same pass
                want = _aten('stats')(out, groups, 1e-5, kind == 'batch')
                assert _rel(mean, want[0]) <= TOL[acc] and _rel(rstd, want[1]) <= TOL[acc]
            for need_ys, need_w in (([True] * 3, True), ([True, False, True], False)):
                refs = _aten('backward')(grad, ref, *args, need_ys, need_w, relu)
                gots = ta.dense_aggregate_backward(grad, ref, *args, need_ys, need_w, relu)
                assert _rel(gots[0], refs[0]) <= TOL[dtype], ('dL/dx', relu)
                for i, (a, b) in enumerate(zip(gots[1], refs[1])):
                    assert a.shape == b.shape
                    if b.numel():
                        assert _rel(a, b) <= TOL[dtype], (f'dL/dy_{i}', relu, _rel(a, b))
                if need_w:
                    assert _rel(gots[2], refs[2]) <= TOL[acc], ('dL/dW', relu)
            # a call of a chain: sums added into, the last source finalized
            hs = [(torch.randn_like(y) + 0.5).to(y.dtype) for y in ys]
            refs = ta._ATEN[ta.CHAIN_BACKWARD](grad, ref, *args, [True] * 3, True, relu,
                                              [h.clone() for h in hs])
            gots = ta.chain_backward(grad, ref, *args, [True] * 3, True, relu,
                                     [h.clone() for h in hs])
            for i, (a, b) in enumerate(zip((gots[0], *gots[1]), (refs[0], *refs[1]))):
                assert _rel(a, b) <= TOL[dtype], ('chain', i, relu, _rel(a, b))
            assert _rel(gots[2], refs[2]) <= TOL[acc], ('chain dL/dW', relu)
    finally:
        ta._aten = original
