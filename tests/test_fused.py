"""The fused dense aggregation (the default) equals the straightforward reference form: outputs,
gradients of every parameter and of the input, BatchNorm running statistics; and its autograd
Function passes a float64 gradcheck. No timing here: see tools/analysis/benchmark.py."""
import copy

import pytest
import torch
from torch import nn

from mmdsnet.models import DS2Net, DSNet
from mmdsnet.models.layers import build_shortcut_norm
from mmdsnet.models.layers.fused import (IMPLS, DenseAggregate, get_default_impl,
                                         normalize_once, set_shortcut_impl, shortcut_impl)

from helpers import randomize

NORMS = {'GN': dict(type='GN', num_groups=4), 'LN': 'LN', 'IN': 'IN', 'BN': 'BN', 'none': None}


def _run(model, x, impl, train):
    """Forward + backward under ``impl``; returns output, grads by name, buffers by name."""
    set_shortcut_impl(model, impl)
    model.train(train)
    model.zero_grad(set_to_none=True)
    xi = x.clone().requires_grad_()
    outs = model(xi)
    # a loss that weighs every channel and position differently
    loss = sum((o * torch.linspace(-1, 2, o.numel(), dtype=o.dtype).view_as(o)).sum()
               for o in outs)
    loss.backward()
    grads = {'input': xi.grad, **{n: p.grad for n, p in model.named_parameters()}}
    return [o.detach() for o in outs], grads, {n: b.clone() for n, b in model.named_buffers()}


def _compare(cls, kwargs, train, size=16, dtype=torch.float64, tol=1e-9):
    # depth 29: three stages of three blocks, so every stage has two sources and three edges
    kwargs = dict(dict(depth=29, base_channels=8, out_indices=(0, 1, 2), stem='cifar'),
                  **kwargs)
    ref = randomize(cls(**kwargs)).to(dtype)
    fused = copy.deepcopy(ref)
    x = torch.randn(2, 3, size, size, dtype=dtype, generator=torch.Generator().manual_seed(1))
    r_out, r_grad, r_buf = _run(ref, x, 'reference', train)
    f_out, f_grad, f_buf = _run(fused, x, 'fused', train)
    for a, b in zip(r_out, f_out):
        torch.testing.assert_close(b, a, rtol=tol, atol=tol)
    assert r_grad.keys() == f_grad.keys()
    for k in r_grad:
        assert (r_grad[k] is None) == (f_grad[k] is None), k
        if r_grad[k] is not None:
            torch.testing.assert_close(f_grad[k], r_grad[k], rtol=tol, atol=tol, msg=k)
    for k in r_buf:  # BN running statistics (shortcut BNs included) and batch counters
        torch.testing.assert_close(f_buf[k], r_buf[k], rtol=tol, atol=tol, msg=k)
    return r_grad


@pytest.mark.parametrize('cls', [DSNet, DS2Net])
@pytest.mark.parametrize('norm', list(NORMS))
@pytest.mark.parametrize('train', [True, False], ids=['train', 'eval'])
def test_fused_equals_reference_every_norm(cls, norm, train):
    grads = _compare(cls, dict(shortcut_norm_cfg=NORMS[norm]), train)
    # the comparison is not vacuous: the shortcut weights do get gradients
    assert grads['layer2.shortcuts.0.weight'].abs().sum() > 0


@pytest.mark.parametrize('cls', [DSNet, DS2Net])
@pytest.mark.parametrize('train', [True, False], ids=['train', 'eval'])
def test_fused_equals_reference_with_cp(cls, train):
    _compare(cls, dict(with_cp=True), train)


@pytest.mark.parametrize('kwargs', [
    dict(shortcut='dense_x'), dict(shortcut='dense_identity'), dict(shortcut_weight='none'),
    dict(shortcut_weight='none', shortcut_norm_cfg='BN'), dict(shortcut_init=0.0),
], ids=str)
def test_fused_equals_reference_other_modes(kwargs):
    _compare(DS2Net, kwargs, train=True)


def test_fused_equals_reference_res2net_and_frozen():
    _compare(DS2Net, dict(depth=50, block='bottle2neck',
                          block_cfg=dict(base_width=26 * 2, scales=2)), train=True)
    # frozen stages: W and the sources of the first stages need no gradient
    _compare(DS2Net, dict(frozen_stages=1, shortcut_norm_cfg='BN'), train=True)


def test_fused_float32_is_as_accurate_as_the_reference():
    """In float32 the two orders of summation round differently; measured against a float64 run
    of the reference, the fused path's gradient error is of the reference's own size."""
    base = randomize(DS2Net(depth=26, base_channels=8, out_indices=(0, 1, 2, 3), stem='cifar'))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    _, truth, _ = _run(copy.deepcopy(base).double(), x.double(), 'reference', True)
    errors = {}
    for impl in ('reference', 'fused'):
        _, grads, _ = _run(copy.deepcopy(base), x, impl, True)
        errors[impl] = max(((grads[k].double() - truth[k]).norm() / truth[k].norm()).item()
                           for k in truth)
    assert errors['fused'] < 3 * errors['reference'] + 1e-6, errors


def test_checkpoint_impl_equals_reference_and_refuses_training_bn():
    ref = randomize(DSNet(depth=26, base_channels=8, stem='cifar')).double()
    ckpt = copy.deepcopy(ref)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    r_out, r_grad, _ = _run(ref, x, 'reference', True)
    c_out, c_grad, _ = _run(ckpt, x, 'checkpoint', True)
    torch.testing.assert_close(c_out[0], r_out[0])
    for k in r_grad:
        torch.testing.assert_close(c_grad[k], r_grad[k], msg=k)
    bn = set_shortcut_impl(DSNet(depth=26, base_channels=8, shortcut_norm_cfg='BN'), 'checkpoint')
    with pytest.raises(ValueError, match='would update BatchNorm running statistics'):
        bn.train()(torch.randn(2, 3, 16, 16))


def test_fused_keeps_no_normalized_source_for_backward():
    """What autograd keeps alive: the reference keeps one N(Y_i) per source, fused none."""
    def saved_bytes(impl):
        model = set_shortcut_impl(DSNet(depth=26, base_channels=8, stem='cifar'), impl).train()
        seen = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.randn(4, 3, 16, 16))
        return sum(seen.values())

    ref, fused = saved_bytes('reference'), saved_bytes('fused')
    resnet_model = DSNet(depth=26, base_channels=8, stem='cifar', shortcut='identity').train()
    seen = {}
    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: seen.__setitem__(t.untyped_storage().data_ptr(),
                                       t.untyped_storage().nbytes()) or t, lambda t: t):
        resnet_model(torch.randn(4, 3, 16, 16))
    resnet = sum(seen.values())
    assert fused < ref
    # fused keeps ResNet's saved tensors plus per-(sample, group) statistics and W only
    assert fused - resnet < 0.01 * resnet, (fused, resnet, ref)


def test_default_impl_and_switch():
    assert get_default_impl() == 'fused' and IMPLS == ('fused', 'reference', 'checkpoint')
    m = DSNet(depth=26, base_channels=8)
    with shortcut_impl('reference'):
        assert get_default_impl() == 'reference'
    assert get_default_impl() == 'fused'
    set_shortcut_impl(m, 'reference')
    assert m.layer1.shortcut_impl == 'reference' and m.layer1.block(1).shortcut_impl == 'reference'
    with pytest.raises(ValueError, match=r"impl must be one of \('fused', 'reference'"):
        set_shortcut_impl(m, 'cuda')


# ------------------------------------------------------------------------------ the Function
@pytest.mark.parametrize('norm', list(NORMS) + ['BN-eval'])
@pytest.mark.parametrize('weighted', [True, False], ids=['W', 'noW'])
def test_dense_aggregate_gradcheck(norm, weighted):
    torch.manual_seed(0)
    C = 4
    cfg = 'BN' if norm == 'BN-eval' else NORMS[norm]
    norms = [build_shortcut_norm(cfg if cfg != dict(type='GN', num_groups=4)
                                 else dict(type='GN', num_groups=2), C).double()
             for _ in range(2)]
    for n in norms:
        n.train(norm != 'BN-eval')
        if norm == 'BN-eval':
            n.running_mean.uniform_(-0.5, 0.5)
            n.running_var.uniform_(0.5, 1.5)
    # values away from the ReLU kink, so finite differences are valid
    res = torch.randn(3, C, 2, 3, dtype=torch.float64, requires_grad=True)
    ys = [torch.randn(3, C, 2, 3, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    w = (torch.randn(2, C, 1, 1, dtype=torch.float64) + 0.5).requires_grad_() if weighted else None

    def fn(res, w, *ys):
        normed, stats = zip(*(normalize_once(nm, y, True) for nm, y in zip(norms, ys)))
        return DenseAggregate.apply(res, w, list(normed), list(stats), True, *ys)

    inputs = (res, w, *ys)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)
    # and against autograd through the reference form
    out = fn(*inputs)
    ref = torch.relu(res + sum((1 if w is None else w[i]) * nm(y)
                               for i, (nm, y) in enumerate(zip(norms, ys))))
    torch.testing.assert_close(out, ref)


def test_dsnet_takes_the_implementation_as_an_argument():
    from mmdsnet.models import DS2Net
    m = DS2Net(depth=26, base_channels=8, shortcut_impl='reference')
    impls = {x.shortcut_impl for x in m.modules() if hasattr(x, 'shortcut_impl')}
    assert impls == {'reference'}
    assert {x.shortcut_impl for x in DS2Net(depth=26, base_channels=8).modules()
            if hasattr(x, 'shortcut_impl')} == {None}  # follows the process default
    with pytest.raises(ValueError, match='must be one of'):
        DS2Net(depth=26, base_channels=8, shortcut_impl='cuda')
