"""The custom operators alone (mmdsnet.ops): gradcheck and opcheck, their two backward forms,
dtypes, argument checks, and how the models reach them (the eager call and the operator give the
same numbers; anything that records the call sees the operator; the one public switch).
The models against the reference form: test_aggregation.py."""
import pytest
import torch
from torch import nn

from mmdsnet.models.layers import DenseAggregation
from mmdsnet.ops import dense_aggregate, norm_stats
from mmdsnet.ops.operators import source_backward

from helpers import NORMS, bn_eval, gradcheck_inputs


# ----------------------------------------------------------------------- the operator alone
def _aggregation(norm, weight='channel', channels=8, sources=3):
    agg = DenseAggregation(channels, sources, norm, weight).double()
    if agg.shortcuts[0].weight is not None:
        for sc in agg.shortcuts:
            nn.init.normal_(sc.weight)
    return agg


@pytest.mark.parametrize('norm', list(NORMS) + ['BN-eval'])
@pytest.mark.parametrize('weight', ['channel', 'none'])
def test_gradcheck(norm, weight):
    """float64 gradcheck of normalize + aggregate: gradients through N's statistics included."""
    agg = _aggregation(NORMS.get(norm, 'BN'), weight)
    if norm == 'BN-eval':
        bn_eval(agg)
    x, ys = gradcheck_inputs()

    def f(x, *ys):
        return agg(x, [agg.normalize(i, y) for i, y in enumerate(ys)])
    assert torch.autograd.gradcheck(f, (x, *ys), fast_mode=True)


@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
def test_opcheck(memory_format):
    """torch.library.opcheck: schema, fake (meta) implementation, autograd registration and
    AOT dispatch, on a dense and a channels_last input."""
    g = torch.Generator().manual_seed(0)

    def t(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).contiguous(
            memory_format=memory_format)
    x, ys = t(2, 8, 5, 3).requires_grad_(), [t(2, 8, 5, 3).requires_grad_() for _ in range(3)]
    stats = [norm_stats(ys[0].detach(), 4, 1e-5, False), norm_stats(ys[1].detach(), 8, 1e-5, True),
             (torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64))]
    weight = torch.randn(3, 8, 1, 1, dtype=torch.float64, requires_grad=True)
    args = (x, ys, [s[0] for s in stats], [s[1] for s in stats], weight, [1, 1, 0])
    torch.library.opcheck(torch.ops.mmdsnet.dense_aggregate.default, args)
    torch.library.opcheck(torch.ops.mmdsnet.norm_stats.default, (ys[0].detach(), 4, 1e-5, False))
    # no source: ReLU(x) and its statistics (DS2's inner source)
    torch.library.opcheck(torch.ops.mmdsnet.dense_aggregate.default,
                          (x, [], [], [], None, [], True, 4, 1e-5, False))
    out, mean, rstd = dense_aggregate(*args)
    assert out.is_contiguous(memory_format=memory_format)
    assert mean.numel() == rstd.numel() == 0  # no out_groups: no statistics
    torch.autograd.grad(out.sum(), [x, *ys, weight])
    # with the output's statistics (GN's, BatchNorm's): those of the output, no gradient
    for out_stats in ((4, 1e-5, False), (8, 1e-5, True)):
        torch.library.opcheck(torch.ops.mmdsnet.dense_aggregate.default,
                              args + (True, *out_stats))
        out, mean, rstd = dense_aggregate(*args, True, *out_stats)
        want = norm_stats(out.detach(), *out_stats)
        torch.testing.assert_close(mean, want[0], rtol=0, atol=0)
        torch.testing.assert_close(rstd, want[1], rtol=0, atol=0)
        assert out.requires_grad and not mean.requires_grad and not rstd.requires_grad


def test_out_groups_that_do_not_fit_are_refused():
    x = torch.randn(2, 6, 3, 3)
    one = torch.ones(1, 1)
    with pytest.raises(ValueError, match='out_groups=4 .* cannot split 6 channels'):
        dense_aggregate(x, [x], [one], [one], None, [0], True, 4)
    with pytest.raises(ValueError, match='out_over_batch=True'):
        dense_aggregate(x, [x], [one], [one], None, [0], True, 3, 1e-5, True)


@pytest.mark.parametrize('norm', ['GN', 'BN'])
def test_native_and_written_out_backward_agree(norm):
    """The CPU uses ATen's fused norm backward; other devices (until their own kernel) the
    written-out formula. Both give the same gradients."""
    y = torch.randn(3, 8, 4, 5, dtype=torch.float64)
    g = torch.randn_like(y)
    w = torch.randn(8, dtype=torch.float64)
    mean, rstd = norm_stats(y, 4, 1e-5, False) if norm == 'GN' else norm_stats(y, 8, 1e-5, True)
    native = source_backward(g, y, mean, rstd, w, True, True, True, native=True)
    written = source_backward(g, y, mean, rstd, w, True, True, True, native=False)
    for a, b in zip(native, written):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_stats_are_float32_for_bf16_input():
    y = torch.randn(2, 8, 4, 4).bfloat16()
    mean, rstd = norm_stats(y, 4, 1e-5, False)
    assert mean.dtype == rstd.dtype == torch.float32 and mean.shape == (2, 4)
    ref_mean = y.float().reshape(2, 4, -1).mean(-1)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-6, atol=1e-6)


def test_operator_rejects_mismatched_inputs():
    x = torch.randn(1, 4, 2, 2)
    one = torch.ones(1, 1)
    with pytest.raises(ValueError, match='2 sources but 1 means'):
        dense_aggregate(x, [x, x], [one], [one, one], None, [0, 0])
    with pytest.raises(ValueError, match=r'a source has shape \(1, 4, 3, 3\)'):
        dense_aggregate(x, [torch.randn(1, 4, 3, 3)], [one], [one], None, [0])


def test_bf16_dtypes_of_outputs_and_gradients():
    agg = DenseAggregation(8, 2, 'GN')
    x = torch.randn(2, 8, 4, 4).bfloat16().requires_grad_()
    ys = [torch.randn(2, 8, 4, 4).bfloat16().requires_grad_() for _ in range(2)]
    out = agg(x, [agg.normalize(i, y) for i, y in enumerate(ys)])
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad.dtype == ys[0].grad.dtype == torch.bfloat16
    assert agg.shortcuts[1].weight.grad.dtype == torch.float32


# ---------------------------------------------------------------- eager calls vs the operator
def _aggregation_inputs(requires_grad=True):
    g = torch.Generator().manual_seed(3)
    t = lambda: torch.randn(2, 8, 5, 6, dtype=torch.float64, generator=g)  # noqa: E731
    x = t().requires_grad_(requires_grad)
    ys = [t().requires_grad_(requires_grad) for _ in range(3)]
    norms = [nn.GroupNorm(4, 8, affine=False), nn.GroupNorm(4, 8, affine=False), None]
    stats = [norm_stats(y.detach(), 4, 1e-5, False) if n is not None
             else (torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64))
             for y, n in zip(ys, norms)]
    weight = torch.randn(3, 8, 1, 1, dtype=torch.float64, generator=g).requires_grad_()
    return x, ys, [s[0] for s in stats], [s[1] for s in stats], weight, [1, 1, 0]


def test_eager_call_equals_the_operator():
    """``ops.aggregate`` in eager mode (the kernel called directly) gives the operator's output
    and gradients, bit for bit."""
    from mmdsnet.ops import aggregate
    grads = []
    for fn in (aggregate, lambda *args: dense_aggregate(*args)[0]):
        x, ys, means, rstds, weight, own = _aggregation_inputs()
        out = fn(x, ys, means, rstds, weight, own)
        (out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append([out.detach(), x.grad, *[y.grad for y in ys], weight.grad])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # with the output's statistics: the same three outputs both ways
    x, ys, means, rstds, weight, own = _aggregation_inputs()
    eager = aggregate(x, ys, means, rstds, weight, own, False, (4, 1e-5, False))
    op = dense_aggregate(x, ys, means, rstds, weight, own, False, 4, 1e-5, False)
    for a, b in zip(eager, op):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not eager[1].requires_grad and eager[0].requires_grad
    # and a source that needs no gradient gets none, as through the operator
    x, ys, means, rstds, weight, own = _aggregation_inputs()
    ys[1] = ys[1].detach()
    aggregate(x, ys, means, rstds, weight, own).sum().backward()
    assert ys[1].grad is None and ys[0].grad is not None


def test_anything_that_records_the_call_sees_the_operator():
    """Under a dispatch mode (the FLOP counter, fake tensors) and under tracing the models call
    the operator itself, so that it stays one node."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from mmdsnet.ops import aggregate, source_stats

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(str(func))
            return func(*args, **(kwargs or {}))
    x, ys, means, rstds, weight, own = _aggregation_inputs()
    with Record() as rec:
        source_stats(ys[0].detach(), 4, 1e-5, False)
        aggregate(x, ys, means, rstds, weight, own).sum().backward()
    assert {'mmdsnet.norm_stats.default', 'mmdsnet.dense_aggregate.default',
            'mmdsnet.dense_aggregate_backward.default'} <= rec.names, rec.names
    ys, weight = [y.detach() for y in ys], weight.detach()
    traced = torch.jit.trace(lambda a: aggregate(a, ys, means, rstds, weight, own),
                             (x.detach(), ), check_trace=False)
    assert 'mmdsnet::dense_aggregate' in str(traced.graph)


@pytest.mark.parametrize('relu', [True, False])
def test_decompositions_equal_the_aten_implementation(relu):
    """What inductor compiles under torch.compile (and ONNX export reads, forward only): the
    decompositions of the forward (with the output's statistics, GN and over the batch), of
    norm_stats and of the backward give the ATen implementation's numbers (float64), for
    sources with their own, batch and fixed statistics; the bf16 forward sums in float32 as the
    kernels do, and the bf16 backward gives ATen's dtypes and numbers."""
    from mmdsnet.ops import operators as ops
    x, ys, means, rstds, weight, own = _aggregation_inputs(requires_grad=False)
    means[1], rstds[1] = norm_stats(ys[1], 8, 1e-5, True)  # BatchNorm's batch statistics
    exact = dict(rtol=1e-12, atol=1e-12)
    for out_stats in ((0, 1e-5, False), (4, 1e-5, False), (8, 1e-3, True)):
        aten = ops.dense_aggregate_aten(x, ys, means, rstds, weight, own, relu, *out_stats)
        dec = ops._dense_aggregate_decomposed(x, ys, means, rstds, weight, own, relu, *out_stats)
        for a, b in zip(aten, dec):
            torch.testing.assert_close(b, a, **exact)
        if out_stats[0]:
            torch.testing.assert_close(ops._norm_stats_decomposed(x, *out_stats),
                                       ops.norm_stats_aten(x, *out_stats), **exact)
    out = aten[0]
    grad = torch.randn_like(x)
    for need_ys, need_weight in (([True] * 3, True), ([False, True, False], False)):
        args = (grad, out, ys, means, rstds, weight, own, need_ys, need_weight, relu)
        aten = ops.dense_aggregate_backward_aten(*args)
        dec = ops._dense_aggregate_backward_decomposed(*args)
        for a, b in zip([aten[0], *aten[1], aten[2]], [dec[0], *dec[1], dec[2]]):
            torch.testing.assert_close(b, a, **exact)
    bf16 = [t.to(torch.bfloat16) for t in (x, *ys)]
    aten = ops.dense_aggregate_aten(bf16[0], bf16[1:], means, rstds, weight, own, relu)[0]
    dec = ops._dense_aggregate_decomposed(bf16[0], bf16[1:], means, rstds, weight, own, relu)[0]
    assert dec.dtype == torch.bfloat16
    torch.testing.assert_close(dec.float(), aten.float(), rtol=0.008, atol=1e-2)
    # and the backward in bf16 (autocast under torch.compile): same dtypes, same numbers to
    # bf16 rounding
    f32 = [[t.float() for t in ts] for ts in (means, rstds)]  # (autocast's statistics)
    args = (grad.to(torch.bfloat16), aten, bf16[1:], *f32, weight.float(), own, [True] * 3,
            True, relu)
    aten = ops.dense_aggregate_backward_aten(*args)
    dec = ops._dense_aggregate_backward_decomposed(*args)
    for a, b in zip([aten[0], *aten[1], aten[2]], [dec[0], *dec[1], dec[2]]):
        assert b.dtype == a.dtype
        torch.testing.assert_close(b.float(), a.float(), rtol=0.016, atol=2e-2)


def test_kernel_for_follows_the_dispatcher():
    """The kernel an eager call runs is the one the operator would dispatch to: the device's
    registered kernel (Triton for CUDA, where triton imports), else ATen; under
    ``use_implementation(kernels='aten')`` ATen everywhere."""
    from types import SimpleNamespace

    from mmdsnet.ops import kernel_for, use_implementation
    from mmdsnet.ops.operators import dense_aggregate_aten
    cpu = SimpleNamespace(device=torch.device('cpu'))
    cuda = SimpleNamespace(device=torch.device('cuda'))
    assert kernel_for(dense_aggregate, cpu) is dense_aggregate_aten
    try:
        from mmdsnet.ops import triton_aggregate
    except ImportError:
        pytest.skip('triton does not import here: no CUDA kernel is registered')
    assert kernel_for(dense_aggregate, cuda) is triton_aggregate.dense_aggregate
    with use_implementation(kernels='aten'):
        assert kernel_for(dense_aggregate, cuda) is dense_aggregate_aten
    assert kernel_for(dense_aggregate, cuda) is triton_aggregate.dense_aggregate


def test_use_implementation_dispatcher_calls_the_operator():
    """``use_implementation(calls='dispatcher')``: the models' calls go through the operators (a
    torch.library autograd node instead of the eager calls' ``_Aggregate``), same numbers; the
    switch is restored on exit, even after an error, and refuses unknown names."""
    from mmdsnet.ops import aggregate, use_implementation
    from mmdsnet.ops.operators import _MODE
    x, ys, means, rstds, weight, own = _aggregation_inputs()
    eager = aggregate(x, ys, means, rstds, weight, own)
    assert type(eager.grad_fn).__name__ == '_AggregateBackward'
    with use_implementation(calls='dispatcher'):
        dispatched = aggregate(x, ys, means, rstds, weight, own)
    assert type(dispatched.grad_fn).__name__ != '_AggregateBackward'
    torch.testing.assert_close(dispatched, eager, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match='inside'):
        with use_implementation(kernels='aten', calls='dispatcher'):
            assert _MODE == dict(kernels='aten', calls='dispatcher', compiled='decomposed',
                                 launches='direct')
            raise RuntimeError('inside')
    assert _MODE == dict(kernels='device', calls='eager', compiled='decomposed',
                         launches='direct')
    for bad in (dict(kernels='triton'), dict(compiled='triton_op'), dict(launches='cuda')):
        with pytest.raises(ValueError, match='kernels must be one of'):
            with use_implementation(**bad):
                pass
