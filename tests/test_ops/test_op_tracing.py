"""The default model leaves plain eager training: torch.compile, torch.jit.trace, torch.export and
mmengine's FLOP counter (what mmdet's and mmpretrain's get_flops.py use) all go through the
dense aggregation operators, with no environment variable and no fallback."""
import copy
import functools

import pytest
import torch

from mmdsnet.models import DS2Net, DSNet

from helpers import randomize, reference_twin


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
