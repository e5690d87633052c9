"""The operators and the models on the Triton kernels, run under Triton's interpreter in the child
process of tests/test_ops/test_triton_kernels.py (the kernels registered as the operators' CPU
kernels): opcheck, gradcheck, training steps against the reference form, fallbacks, the launch
budget, no host work per call, the switch. ``python tests/test_ops/interpreter_operators.py
RESULTS.json [NAME ...]`` with ``TRITON_INTERPRET=1`` runs every case (kernels included) and
writes the results. Not collected by pytest (no ``test_`` prefix)."""
import contextlib
import copy
import functools
import json
import os
import sys
import time
import traceback

import torch
from interpreter_kernels import (KERNEL_CASES, _aten, _close, _kernel_names,  # noqa: F401
                                 _launches, _no_fallback, _stats, _ta, _tiles, check_kernels,
                                 check_many_sources, check_no_source, check_partial_sums)

CALLS = []  # the operator names the CPU-registered kernels ran, in the child


def _register_on_cpu():
    """In the child only: the Triton functions become the operators' CPU kernels, so that the
    operators (and the models through them) run them; each call is recorded in CALLS."""
    for name, fn in _functions().items():
        def counted(*args, fn=fn, name=name):
            CALLS.append(name)
            return fn(*args)
        _ta().register_device_kernel(_op(name), 'cpu', counted)


def _functions():
    """The kernels' functions by the names CALLS records."""
    ta = _ta()
    return {'stats': ta.norm_stats, 'aggregate': ta.dense_aggregate,
            'backward': ta.dense_aggregate_backward, 'chain': ta.chain_backward}


def _op(name):
    """The operator (or the chain's eager backward) that a counted name stands for."""
    ta = _ta()
    return ta.CHAIN_BACKWARD if name == 'chain' else getattr(ta, f'_{name}_op')


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
            # with the output's statistics (GN's, then a BatchNorm's)
            for out_stats in ((True, 4, 1e-5, False), (False, 8, 1e-5, True)):
                torch.library.opcheck(torch.ops.mmdsnet.dense_aggregate.default,
                                      args + out_stats)
            torch.library.opcheck(torch.ops.mmdsnet.norm_stats.default,
                                  (ys[0].detach(), 4, 1e-5, False))
            out = dense_aggregate(*args)[0]
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
                                   [int(s.own) for s in src])[0]
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
    assert {'aggregate', 'backward', 'chain'} == set(calls)  # (every source from a pass)
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
    # (Y_0 and its statistics from one aggregation: no statistics launch in a DSNet)
    assert {'aggregate', 'backward', 'chain'} == set(calls)
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
        _close('strided source', ta.dense_aggregate(x, [y, y], *stats)[0],
               _aten('aggregate')(x, [y, y], *stats)[0], 0)
        mixed = [x.float(), x.bfloat16()]  # two dtypes: one set of slots cannot hold them
        stats = ([mean.float()] * 2, [rstd.float()] * 2, None, [1, 1])
        _close('mixed dtypes', ta.dense_aggregate(x.float(), mixed, *stats)[0],
               _aten('aggregate')(x.float(), mixed, *stats)[0], 0)
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
    """One training step of DSNet50 and of DS2Net50 on the kernels: one launch per aggregation
    forward, which also computes the statistics of the source it writes (every ``Y_l`` a later
    block reads, each stage's ``Y_0`` included); one per statistic that no aggregation writes
    (DS2's inner sources); at most two per aggregation backward (<= K sources per aggregation
    here), the stages' dense sums as a chain (each source's gradient summed in place,
    normalized once). Before: 40 / 92 with a statistics launch per ``Y_0``, 48 / 100 with one
    per source, 72 / 150 with per-call pointer tables."""
    from mmdsnet.models import DS2Net, DSNet
    totals = {}
    # aggregations: DSNet50 12 dense sums (stages of 3/4/6/3 blocks; 8 of them write a later
    # source) plus each stage's Y_0 with its statistics (4: one launch forward, one backward:
    # fixed statistics, no W); DS2Net50 also 13 one-source inner shortcuts at stride-1 3x3
    # convs, and their sources ReLU(t) with the statistics (13, no source: one launch each
    # way); no statistics launch
    for cls, aggs, stats, expected in ((DSNet, 16, 0, 44), (DS2Net, 42, 0, 109)):
        step = _dsnet50_step(cls)
        with _kernels_on_cpu() as calls, _launches() as launches:
            step()
        ops = {k: calls.count(k) for k in ('stats', 'aggregate', 'backward', 'chain')}
        got = {k: launches.count(k) for k in _kernel_names()}
        assert got['_stats_kernel'] == ops['stats'], (ops, got)
        assert got['_aggregate_kernel'] == ops['aggregate'], (ops, got)
        bwd = got['_backward_reduce_kernel'] + got['_backward_apply_kernel']
        backwards = ops['backward'] + ops['chain']
        assert backwards == ops['aggregate'] and bwd <= 2 * backwards, (ops, got)
        totals[cls.__name__] = dict(ops=ops, launches=got, total=len(launches))
        # the stages' 12 dense sums are chains; Y_0 and DS2's inner shortcuts have one edge
        assert ops == dict(stats=stats, aggregate=aggs, backward=aggs - 12, chain=12), ops
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
    fns = _functions()

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
        # kernel calls per step: statistics, aggregations, backwards (check_launch_budget)
        for cls, calls in ((DSNet, 0 + 16 + 16), (DS2Net, 0 + 42 + 42)):
            step = _dsnet50_step(cls)
            step()  # the workspaces and counters are allocated once, here
            for name, fn in fns.items():
                ta.register_device_kernel(_op(name), 'cpu', recorded(fn))
            seen.clear()
            try:
                step()
            finally:
                _register_on_cpu()
            assert len(seen) == calls, (cls.__name__, len(seen))
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
        assert {'aggregate', 'backward', 'chain'} == set(calls)  # (Y_0, the chains)
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
    # (the operator's autograd: one dL/dY_i per edge, summed by autograd; equal up to rounding)
    assert {'aggregate', 'backward'} == set(calls)
    for k in eager:
        _close(k, got[k], eager[k], 1e-12, largest)


OTHER_CASES = {
    'many-sources': check_many_sources,
    'no-source': check_no_source,
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


if __name__ == '__main__':  # RESULTS.json [NAME ...]
    # as pytest does, the tests' shared helpers (tests/helpers.py) on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    _run_all(sys.argv[1], sys.argv[2:])
