"""A stage's aggregations as a chain: each source's shortcut gradient summed in one buffer and
normalized once (``mmdsnet.ops.aggregate(..., chain=...)``), on the ATen implementation (the
Triton kernels' chain: tests/test_ops/interpreter_kernels.py). Autograd's contract holds:
partial and repeated backward passes, a loss on an inner output, checkpointing; double backward
and calls out of the stage order are refused with an error that names the way out."""
import functools

import pytest
import torch
import torch.utils.checkpoint as cp

from mmdsnet.models import DSNet
from mmdsnet.models.layers import DenseAggregation

from helpers import randomize, reference_twin

# depth 50: stages of 3, 4, 6 and 3 blocks; a source of a stage of 4 or more blocks has its sum
# started, added into and finalized by three different aggregations
BUILD = functools.partial(DSNet, depth=50, base_channels=8, stem='cifar', out_indices=(3, ))


def _pair():
    ours = randomize(BUILD()).double().train()
    return ours, reference_twin(ours, BUILD)


def _x():
    return torch.randn(2, 3, 16, 16, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(1))


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(got, want, tol=1e-9):
    assert got.keys() == want.keys()
    for k in want:
        scale = max(want[k].abs().max().item(), 1.0)  # (some are 0 up to rounding)
        torch.testing.assert_close(got[k], want[k], rtol=tol, atol=tol * scale, msg=k)


def test_each_aggregation_returns_one_source_gradient_and_the_sum_is_exact():
    ours, ref = _pair()
    returned = []  # per aggregation call: how many source gradients it hands to autograd

    def on_backward(node, grad_inputs, _):
        # (grad_inputs: x, W, the sources, their statistics)
        returned.append(sum(g is not None for g in grad_inputs[2:2 + node.num_sources]))

    def on_forward(module, args, out):
        node = (out.y if hasattr(out, 'y') else out).grad_fn
        node.num_sources = len(args[1])
        node.register_hook(functools.partial(on_backward, node))
    for m in ours.modules():
        if isinstance(m, DenseAggregation):
            m.register_forward_hook(on_forward)
    for model in (ours, ref):
        model(_x())[0].sum().backward()
    assert returned == [1] * 12  # (DSNet50: 2 + 3 + 5 + 2 aggregations)
    _assert_same(_grads(ours), _grads(ref))


def test_partial_and_repeated_backward_passes_are_exact():
    ours, ref = _pair()
    inner = {}
    ours.layer3.block(3).register_forward_hook(lambda m, a, out: inner.update(x=out))
    for model in (ours, ref):
        out = model(_x())[0].sum()
        if model is ours:  # a pass over part of the graph leaves sums that are never finalized
            torch.autograd.grad(out, inner['x'], retain_graph=True)
        out.backward(retain_graph=True)
        out.backward()  # twice: the second pass starts its sums afresh
    _assert_same(_grads(ours), _grads(ref))


def test_a_loss_on_an_inner_output_and_a_checkpointed_stage_are_exact():
    ours, ref = _pair()
    for model in (ours, ref):
        seen = []
        model.layer3.aggregation.register_forward_hook(lambda m, a, out: seen.append(out))
        model(_x())
        y2 = seen[1].y  # Y_2 of the 6-block stage: its later aggregations take no part
        (y2 * torch.linspace(-1, 1, y2.numel()).view_as(y2)).sum().backward()
    _assert_same(_grads(ours), _grads(ref))
    x = torch.randn(2, 8, 16, 16, dtype=torch.float64)
    want = None
    for reentrant in (None, False, True):
        ours.zero_grad()
        xi = x.clone().requires_grad_()
        run = ours.layer1 if reentrant is None else functools.partial(
            cp.checkpoint, ours.layer1, use_reentrant=reentrant)
        run(xi).sum().backward()
        got = {**_grads(ours.layer1), 'input': xi.grad}
        want = want or got
        _assert_same(got, want)


def test_double_backward_is_refused_with_the_way_out():
    ours, _ = _pair()
    loss = ours(_x())[0].pow(2).sum()
    with pytest.raises(RuntimeError, match="double backward.*aggregation_impl='reference'"):
        torch.autograd.grad(loss, list(ours.parameters()), create_graph=True)


def test_calls_out_of_the_stage_order_are_refused():
    agg = DenseAggregation(8, 2).double()
    maps = [torch.randn(2, 8, 3, 3, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    sources = [agg.normalize(i, y) for i, y in enumerate(maps[:2])]
    chain = agg.new_chain(maps[0])
    # target 2 (last source Y_1) before target 1 (Y_0), and not computed from its output: in
    # backward target 1 finalizes Y_0 first, then target 2 adds into it
    y2 = agg(maps[3], sources, chain=chain)
    y1 = agg(maps[2], sources[:1], chain=chain)
    with pytest.raises(RuntimeError, match="stage order.*aggregation_impl='reference'"):
        (y1.sum() + y2.sum()).backward()


def test_a_training_step_after_inference_mode():
    """The constant statistics of a source without normalization (each stage's projected
    input) are made once; made first under ``torch.inference_mode`` they must still serve a
    later training step (inference tensors cannot be saved for backward)."""
    import subprocess
    import sys
    code = ('import torch\n'
            'from mmdsnet.models import DSNet\n'
            'model = DSNet(depth=26, base_channels=8, stem="cifar")\n'
            'x = torch.randn(2, 3, 16, 16)\n'
            'with torch.inference_mode():\n'
            '    model(x)\n'
            'model(x)[-1].sum().backward()\n'
            'print("ok")\n')
    # a fresh interpreter: the constants of this process may already exist
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr[-2000:]
