"""The default model leaves plain eager training: torch.compile, torch.jit.trace, torch.export and
mmengine's FLOP counter (what mmdet's and mmpretrain's get_flops.py use) all go through the
dense aggregation operators, with no environment variable and no fallback; inductor compiles
their decompositions (or, on request, keeps them opaque)."""
import copy
import functools
import shutil

import pytest
import torch
from torch import nn

from mmdsnet.models import DS2Net, DSNet
from mmdsnet.models.layers import DenseAggregation
from mmdsnet.ops import use_implementation

from helpers import NORMS, randomize, reference_twin


def _model(cls=DS2Net, **kwargs):
    return randomize(cls(depth=26, base_channels=8, stem='cifar', **kwargs)).eval()


@pytest.mark.parametrize('cls', [DSNet, DS2Net])
def test_torch_compile_traces_whole_model_without_graph_breaks(cls):
    """One graph, no break: the operators are single nodes dynamo knows (explain counts graphs
    and breaks); then the compiled model (aot_eager: AOTAutograd with the registered backward,
    no C++ compiler needed) trains a step to the same gradients as eager."""
    model = _model(cls).train()
    x = torch.randn(2, 3, 16, 16)
    explain = torch._dynamo.explain(model)(x)
    assert explain.graph_count == 1 and explain.graph_break_count == 0, explain.break_reasons
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    for m in (eager, compiled):
        m(x)[-1].pow(2).mean().backward()
    for (n, p), q in zip(eager.named_parameters(), model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=n)


def _max_relative_difference(a, b):
    return max(((p.grad - q.grad).abs().max() / q.grad.abs().max().clamp_min(1e-3)).item()
               for p, q in zip(a.parameters(), b.parameters()))


def _inductor_graphs(graphs):
    """A backend that runs AOTAutograd with inductor's decomposition table (what inductor
    compiles, forward and backward) and records the operators of each graph."""
    from torch._functorch.aot_autograd import aot_module_simplified
    from torch._inductor.decomposition import select_decomp_table
    select_decomp_table()  # (as any earlier compile in the process: inductor caches its table)

    def record(gm, _inputs):
        graphs.append({str(n.target) for n in gm.graph.nodes if n.op == 'call_function'})
        return gm.forward

    def backend(gm, inputs):
        return aot_module_simplified(gm, inputs, fw_compiler=record, bw_compiler=record,
                                     decompositions=select_decomp_table())
    return backend


_slow = pytest.mark.slow  # (~11 s: AOTAutograd traces a whole model twice)


@pytest.mark.parametrize('cls,options,compiled', [
    (DS2Net, dict(shortcut_norm_cfg='BN', block_cfg=dict(strided_inner='pool'),
                  shortcut_act=None), 'decomposed'),
    pytest.param(DSNet, {}, 'operators', marks=_slow)],
    ids=['DS2Net-BN-pool-no-act', 'DSNet-decomposed-then-operators'])
def test_inductor_sees_the_decompositions(cls, options, compiled):
    """What inductor compiles for a training step, forward and backward graph: the operators'
    decompositions (plain ATen operators it fuses, no mmdsnet node left), or under
    ``use_implementation(compiled='operators')`` the operators as single nodes (the same
    compiled model, traced again when the mode changes); the gradients equal eager's either way
    (float64: to rounding, whatever the summation order)."""
    torch.manual_seed(0)
    model = _model(cls, **options).train().double()
    eager = copy.deepcopy(model)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    graphs = []
    compiled_model = torch.compile(model, backend=_inductor_graphs(graphs), fullgraph=True)
    modes = ['decomposed'] + ['operators'] * (compiled == 'operators')
    for mode in modes:
        model.zero_grad()
        with use_implementation(compiled=mode):
            compiled_model(x)[-1].pow(2).mean().backward()
    eager(x)[-1].pow(2).mean().backward()
    torch._dynamo.reset()
    # one forward and one backward graph per mode: no break
    assert len(graphs) == 2 * len(modes), len(graphs)
    ours = [{t for t in g if t.startswith('mmdsnet.')} for g in graphs]
    assert ours[:2] == [set(), set()], ours
    if compiled == 'operators':
        assert 'mmdsnet.dense_aggregate.default' in ours[2], ours
        assert ours[3] == {'mmdsnet.dense_aggregate_backward.default'}, ours
    assert _max_relative_difference(model, eager) < 1e-10


class _Stage(nn.Module):
    """One DSNet stage in miniature: Y_0 from a projected input, two targets, a last sum."""

    def __init__(self, norm):
        super().__init__()
        self.agg = DenseAggregation(8, 3, NORMS[norm])
        self.convs = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(4))

    def forward(self, x):
        sources = [self.agg.first_source(self.convs[0](x), x)]
        chain = self.agg.new_chain(sources[0].y)
        for l in (1, 2):
            sources.append(self.agg(self.convs[l](sources[-1].y), sources, l, chain))
        return self.agg(self.convs[3](sources[-1].y), sources, chain=chain)


@pytest.mark.slow  # (inductor's C++ code generation and compiler: ~15 s)
@pytest.mark.skipif(not (shutil.which('g++') or shutil.which('c++')),
                    reason="inductor's CPU code needs a C++ compiler")
def test_inductor_compiles_a_stage():
    """The real inductor (C++ on the CPU) compiles a stage's forward and backward from the
    decompositions (GN: group statistics; BatchNorm's are in the test above): no call of an
    mmdsnet operator in its generated code, and the gradients of eager mode."""
    from torch._inductor.utils import run_and_get_code
    torch.manual_seed(0)
    stage = randomize(_Stage('GN')).train()
    eager = copy.deepcopy(stage)
    x = torch.randn(2, 8, 6, 6)
    compiled = torch.compile(stage, fullgraph=True)
    (out, ), code = run_and_get_code(lambda: [compiled(x).pow(2).mean().backward()] and [0])
    eager(x).pow(2).mean().backward()
    torch._dynamo.reset()
    assert len(code) == 2 and not any('torch.ops.mmdsnet' in c for c in code)
    assert _max_relative_difference(stage, eager) < 1e-3


def test_jit_trace_with_grad_enabled():
    # (pooled inner sources at the strided 3x3 convs: the one source kind with norm_stats)
    model = _model(block_cfg=dict(strided_inner='pool'))
    x = torch.randn(2, 3, 16, 16)
    traced = torch.jit.trace(model, x)  # grad mode on, as get_flops and users do
    kinds = {n.kind() for n in traced.inlined_graph.nodes()}
    assert {'mmdsnet::dense_aggregate', 'mmdsnet::norm_stats'} <= kinds
    torch.testing.assert_close(traced(x)[-1], model(x)[-1])


def test_torch_export():
    model = _model()
    x = torch.randn(2, 3, 16, 16)
    ep = torch.export.export(model, (x, ))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == 'call_function'}
    assert 'mmdsnet.dense_aggregate.default' in targets, targets
    torch.testing.assert_close(ep.module()(x)[-1], model(x)[-1])


@pytest.mark.parametrize('norm', ['GN', 'LN', 'IN', 'BN', None])
@pytest.mark.parametrize('train', [True, False], ids=['train', 'eval'])
def test_flops_equal_the_reference_form(norm, train):
    """mmengine's get_model_complexity_info counts the operator model as the reference form."""
    from mmengine.analysis import get_model_complexity_info
    model = _model(shortcut_norm_cfg=norm).train(train)
    twin = reference_twin(model, functools.partial(_model, shortcut_norm_cfg=norm))
    x = torch.randn(1, 3, 16, 16)

    def count(m):
        info = get_model_complexity_info(copy.deepcopy(m), inputs=(x, ), show_table=False,
                                         show_arch=False)
        return info['flops'], info['activations']
    ours, ref = count(model), count(twin)
    assert ours == ref and ours[0] > 0
