"""The dense aggregation operators (mmdsnet.ops) against the reference form.

The oracle is :func:`mmdsnet.models.layers.aggregate_reference` over the norm modules' own
outputs (``helpers.reference_twin``: the model built with ``aggregation_impl='reference'``).
Compared: outputs, the gradient of every parameter and of the input, BatchNorm running
statistics; in float64 to 1e-9, in float32 against a float64 truth, in bf16 under autocast
within a stated tolerance. No timing here: see tools/analysis/benchmark.py.
"""
import copy
import functools
import warnings

import pytest
import torch
from torch import nn

from mmdsnet.models import DS2Net, DSNet
from mmdsnet.models.layers import DenseAggregation, aggregate_reference, build_shortcut_norm

from helpers import NORMS, randomize, reference_twin


def _loss(outs):
    # weighs every channel and position differently
    return sum((o.float() * torch.linspace(-1, 2, o.numel()).view_as(o)).sum() for o in outs)


def _run(model, x, train):
    """Forward + backward; returns outputs, grads by name, buffers by name."""
    model.train(train)
    model.zero_grad(set_to_none=True)
    xi = x.clone().requires_grad_()
    outs = model(xi)
    _loss(outs).backward()  # with_cp recomputes the forward here
    grads = {'input': xi.grad, **{n: p.grad for n, p in model.named_parameters()}}
    return [o.detach() for o in outs], grads, {n: b.clone() for n, b in model.named_buffers()}


def _tiny(cls, **kwargs):
    # depth 29: three stages of three blocks, so every stage has two sources and three edges
    return cls(**dict(dict(depth=29, base_channels=8, out_indices=(0, 1, 2), stem='cifar'),
                      **kwargs))


def _compare(build, train, size=16, tol=1e-9, x=None, channels_last=False):
    """``build()`` with random weights in float64 against its reference twin."""
    ours = randomize(build()).double()
    if channels_last:
        ours = ours.to(memory_format=torch.channels_last)
    ref = reference_twin(ours, build)
    if x is None:
        x = torch.randn(2, 3, size, size, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(1))
    r_out, r_grad, r_buf = _run(ref, x, train)
    o_out, o_grad, o_buf = _run(ours, x, train)
    for a, b in zip(r_out, o_out):
        torch.testing.assert_close(b, a, rtol=tol, atol=tol)
    assert r_grad.keys() == o_grad.keys()
    for k in r_grad:
        assert (r_grad[k] is None) == (o_grad[k] is None), k
        if r_grad[k] is not None:
            torch.testing.assert_close(o_grad[k], r_grad[k], rtol=tol, atol=tol, msg=k)
    for k in r_buf:  # BN running statistics (shortcut BNs included) and batch counters
        torch.testing.assert_close(o_buf[k], r_buf[k], rtol=tol, atol=tol, msg=k)
    return r_grad


# ------------------------------------------------------------------- model level, float64
@pytest.mark.parametrize('cls', [DSNet, DS2Net])
@pytest.mark.parametrize('norm', list(NORMS))
@pytest.mark.parametrize('train', [True, False], ids=['train', 'eval'])
def test_op_equals_reference_every_norm(cls, norm, train):
    grads = _compare(functools.partial(_tiny, cls, shortcut_norm_cfg=NORMS[norm]), train)
    assert grads['layer2.aggregation.shortcuts.1.weight'].abs().sum() > 0


@pytest.mark.parametrize('cls', [DSNet, DS2Net])
@pytest.mark.parametrize('train', [True, False], ids=['train', 'eval'])
def test_op_equals_reference_with_cp(cls, train):
    _compare(functools.partial(_tiny, cls, with_cp=True), train)


@pytest.mark.parametrize('kwargs', [dict(shortcut='dense_x'), dict(shortcut='dense_identity'),
                                    dict(shortcut_weight='none'),
                                    dict(shortcut_init='last'), dict(shortcut_init='uniform'),
                                    dict(block_cfg=dict(strided_inner='pool'))])
def test_op_equals_reference_other_modes(kwargs):
    _compare(functools.partial(_tiny, DS2Net, **kwargs), True)


def test_op_equals_reference_res2net_and_frozen():
    _compare(functools.partial(DS2Net, depth=50, block='bottle2neck', base_channels=8,
                               stem='cifar', out_indices=(0, 1), frozen_stages=1), True)


def test_op_equals_reference_channels_last_and_non_contiguous():
    build = functools.partial(_tiny, DS2Net, shortcut_norm_cfg='BN')
    x = torch.randn(2, 3, 13, 11, dtype=torch.float64)  # odd sizes
    _compare(build, True, x=x.contiguous(memory_format=torch.channels_last))
    _compare(build, True, x=x, channels_last=True)
    _compare(build, True, x=torch.randn(2, 3, 22, 13, dtype=torch.float64)[:, :, ::2])


def test_op_float32_is_as_accurate_as_the_reference():
    """float32 against a float64 truth: the operators' error is of the reference's own size."""
    model = randomize(_tiny(DS2Net))
    twin = reference_twin(model, functools.partial(_tiny, DS2Net))
    x = torch.randn(2, 3, 16, 16)
    _, truth, _ = _run(copy.deepcopy(twin).double(), x.double(), True)
    errors = {}
    for reference, m in ((True, twin), (False, model)):
        _, grads, _ = _run(copy.deepcopy(m), x, True)
        errors[reference] = max(((grads[k].double() - truth[k]).abs().max()
                                 / truth[k].abs().max()).item() for k in truth
                                if truth[k] is not None)
    assert errors[False] < 3 * errors[True] + 1e-6, errors


def test_each_source_is_normalized_once_per_forward():
    """Each source's statistics are computed once (paper 4.5), whatever number of later blocks
    reads them, by the ``mmdsnet::dense_aggregate`` that writes the source (``out_groups``):
    every ``Y_l`` a later block reads, each stage's ``Y_0`` included (its projected input a
    source without normalization), and DS2's inner sources ``ReLU(t)`` (no source). Stages of
    3, 4, 6, 3 blocks have 2, 3, 5, 2 sources; DS2 adds one per stride-1 3x3 conv (3 + 3 + 5 +
    2: block 0 of stage 1 has stride 1). ``mmdsnet::norm_stats`` is left for sources that no
    aggregation writes (DSNet-a's ``X_l``, a pooled inner source)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.inputs = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            if func.overloadpacket is torch.ops.mmdsnet.norm_stats:
                self.inputs.append(('norm_stats', args[0]))
            elif (func.overloadpacket is torch.ops.mmdsnet.dense_aggregate
                  and (args[7] if len(args) > 7 else (kwargs or {}).get('out_groups'))):
                self.inputs.append(('dense_aggregate', result[0]))  # out's statistics
            return result

    for cls, sources in ((DSNet, 12), (DS2Net, 12 + 13)):
        with Count() as count:
            cls(depth=50, base_channels=8).train()(torch.randn(2, 3, 32, 32))
        assert [k for k, _ in count.inputs].count('norm_stats') == 0
        assert len(count.inputs) == sources
        assert len({id(t) for _, t in count.inputs}) == len(count.inputs)  # never twice


def test_op_keeps_no_normalized_source_for_backward():
    """What autograd keeps alive: the reference keeps one N(Y_i) per source, the operator none."""
    def saved_bytes(model):
        model.train()
        seen = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        x = torch.randn(4, 3, 32, 32)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x)
        del out
        return sum(seen.values())
    net = DSNet(depth=26, base_channels=8, stem='cifar')
    ref = saved_bytes(reference_twin(net, functools.partial(DSNet, depth=26, base_channels=8,
                                                            stem='cifar')))
    ours = saved_bytes(net)
    resnet = saved_bytes(DSNet(depth=26, base_channels=8, stem='cifar', shortcut='identity'))
    assert ours < ref
    # the operator keeps ResNet's saved tensors plus per-(sample, group) statistics and W only
    assert ours - resnet < 0.01 * resnet, (ours, resnet, ref)


# ---------------------------------------------------------------------- mixed precision
@pytest.mark.parametrize('cls', [DSNet, DS2Net])
def test_bf16_autocast_train_step_is_as_accurate_as_the_reference(cls):
    """CPU bf16 autocast, one training step: the operators' output and gradients are as close to
    the float32 truth as the reference path's (which autocast runs partly in float32). Relative
    L2 errors: the output's and all gradients' together at most 1.5x the reference's + 0.01, and
    each gradient tensor's at most 3x the reference's + 0.05 (bf16 alone puts the reference's own
    per-tensor errors at 20-150% on this tiny net, so only the comparison is meaningful)."""
    torch.manual_seed(0)
    model = _tiny(cls, out_indices=(2, ))
    twin = reference_twin(model, functools.partial(_tiny, cls, out_indices=(2, )))
    x = torch.randn(8, 3, 16, 16)

    def step(autocast, reference):
        m = copy.deepcopy(twin if reference else model).train()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            out = m(x)[-1]
            out.float().pow(2).mean().backward()
        assert all(p.grad.dtype == p.dtype for p in m.parameters() if p.grad is not None)
        return {'output': out.float().detach(),
                **{n: p.grad for n, p in m.named_parameters() if p.grad is not None}}

    def rel(a, b):
        return ((a - b).norm() / b.norm()).item()

    truth = step(False, False)
    grads = [k for k in truth if k != 'output']
    errors = {}
    for reference in (True, False):
        got = step(True, reference)
        assert got.keys() == truth.keys()
        errors[reference] = {k: rel(got[k], truth[k]) for k in truth}
        errors[reference]['all gradients'] = rel(torch.cat([got[k].flatten() for k in grads]),
                                                 torch.cat([truth[k].flatten() for k in grads]))
    ref, ours = errors[True], errors[False]
    for k in ('output', 'all gradients'):
        assert ours[k] < 1.5 * ref[k] + 0.01, (k, ours[k], ref[k])
    for k in grads:
        assert ours[k] < 3 * ref[k] + 0.05, (k, ours[k], ref[k])


# ------------------------------------------------------------------- unsupported norms
def test_unsupported_norm_takes_the_reference_form_with_one_warning():
    from mmengine.registry import MODELS

    @MODELS.register_module(name='_TestScaledNorm', force=True)
    class ScaledNorm(nn.GroupNorm):  # affine: the operator does not know it
        def __init__(self, num_features, **kwargs):
            super().__init__(2, num_features, affine=True)

    build = functools.partial(_tiny, DSNet, shortcut_norm_cfg=dict(type='_TestScaledNorm'))
    model = randomize(build()).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with pytest.warns(UserWarning, match='using the reference form') as record:
        out = model(x)
        out = model(x)
    assert sum('reference form' in str(w.message) for w in record) == 3  # once per stage
    torch.testing.assert_close(out, reference_twin(model, build)(x))


def test_syncbn_shortcut_norm_in_training_takes_the_reference_form():
    agg = DenseAggregation(8, 1, dict(type='SyncBN', affine=False))
    assert isinstance(agg.norms[0], nn.SyncBatchNorm)
    agg.eval()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert agg.uses_op()  # evaluation: running statistics, local
    agg.train()
    with pytest.warns(UserWarning, match='SyncBatchNorm'):
        assert not agg.uses_op()


def test_reference_function_is_the_equation():
    x, ys = torch.randn(2, 4, 3, 3), [torch.randn(2, 4, 3, 3) for _ in range(2)]
    w = torch.randn(2, 4, 1, 1)
    torch.testing.assert_close(aggregate_reference(x, ys, w),
                               torch.relu(x + w[0] * ys[0] + w[1] * ys[1]))
    torch.testing.assert_close(aggregate_reference(x, ys), torch.relu(x + ys[0] + ys[1]))
    norm = build_shortcut_norm('GN', 4)
    assert isinstance(norm, nn.GroupNorm) and norm.num_groups == 2


def test_aggregation_impl_reference_is_the_same_model():
    """``DSNet(aggregation_impl='reference')`` computes the same outputs and gradients without the
    operators (no statistics operator runs), with the same parameters and keys."""
    from unittest import mock

    from mmdsnet.models.layers import aggregation
    torch.manual_seed(0)
    ops_model = _tiny(DS2Net).double()
    randomize(ops_model)
    ref_model = _tiny(DS2Net, aggregation_impl='reference').double()
    ref_model.load_state_dict(ops_model.state_dict(), strict=True)
    assert all(m.impl == 'reference' for m in ref_model.modules()
               if isinstance(m, DenseAggregation))
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    o_out, o_grad, _ = _run(ops_model, x, True)
    with mock.patch.object(aggregation, 'source_stats', side_effect=AssertionError('op ran')):
        r_out, r_grad, _ = _run(ref_model, x, True)
    for a, b in zip(o_out, r_out):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)
    for k in o_grad:
        torch.testing.assert_close(r_grad[k], o_grad[k], rtol=1e-9, atol=1e-9, msg=k)


def test_unknown_aggregation_impl_names_the_choices():
    with pytest.raises(ValueError, match=r"aggregation_impl must be one of \('op', 'reference'\)"):
        DSNet(depth=26, base_channels=8, aggregation_impl='fused')
