"""``shortcut_act``: the activation after the dense sum (ResNet's ReLU, or none as Eq. 12 prints
it), through every path: the operator, the reference form, DS2's inner shortcut, identity mode."""
import copy

import pytest
import torch
from torch.nn import functional as F

from mmdsnet.models import DS2Net, DSNet
from mmdsnet.models.layers import DenseAggregation
from mmdsnet.models.pretrained import ShortcutActMismatchError


def _sources(agg, ys):
    return [agg.normalize(i, y) for i, y in enumerate(ys)]


@pytest.mark.parametrize('norm', ['GN', 'BN', None])
@pytest.mark.parametrize('act', ['relu', None])
def test_operator_equals_the_reference_form(norm, act):
    """Output and every gradient of the operator path equal the reference form's (float64)."""
    torch.manual_seed(0)
    agg = DenseAggregation(8, 3, norm, init=0.7, act=act).double()
    with torch.no_grad():
        for w in agg.shortcuts.parameters():
            w.normal_()
    ref = copy.deepcopy(agg)
    ref.impl = 'reference'
    x = torch.randn(2, 8, 5, 3, dtype=torch.float64, requires_grad=True)
    ys = [torch.randn(2, 8, 5, 3, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    out_op = agg(x, _sources(agg, ys))
    out_ref = ref(x, _sources(ref, ys))
    assert (out_op < 0).any().item() == (act is None)
    torch.testing.assert_close(out_op, out_ref, rtol=0, atol=1e-12)
    g = torch.randn_like(out_op)
    wanted = [x, *ys, agg.shortcuts[2].weight]
    grads_op = torch.autograd.grad(out_op, wanted, g)
    grads_ref = torch.autograd.grad(out_ref, [x, *ys, ref.shortcuts[2].weight], g)
    for a, b in zip(grads_op, grads_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_no_act_is_the_plain_sum():
    """Without the ReLU the aggregation is exactly ``X_l + sum_i W_l^i N(Y_i)``."""
    torch.manual_seed(0)
    agg = DenseAggregation(8, 2, 'GN', init='uniform', act=None).double()
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    ys = [torch.randn(2, 8, 4, 4, dtype=torch.float64) for _ in range(2)]
    expected = x + sum(0.5 * F.group_norm(y, agg.norms[i].num_groups) for i, y in enumerate(ys))
    torch.testing.assert_close(agg(x, _sources(agg, ys)), expected, rtol=0, atol=1e-12)


def test_unknown_activation_names_the_choices():
    with pytest.raises(ValueError, match=r"shortcut_act must be one of \('relu', 'none', None\)"):
        DSNet(depth=26, base_channels=16, shortcut_act='gelu')
    with pytest.raises(ValueError, match='shortcut_act'):
        DenseAggregation(8, 1, act=True)


def test_identity_mode_ignores_the_option():
    """ResNet (identity) stays ResNet whatever ``shortcut_act`` says: same outputs, bit for bit."""
    torch.manual_seed(0)
    a = DSNet(depth=26, base_channels=16, shortcut='identity', out_indices=(0, 1, 2, 3))
    b = DSNet(depth=26, base_channels=16, shortcut='identity', shortcut_act=None,
              out_indices=(0, 1, 2, 3))
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    for fa, fb in zip(a.eval()(x), b.eval()(x)):
        assert torch.equal(fa, fb)


@pytest.mark.parametrize('model', [DSNet, DS2Net])
def test_no_act_model_op_equals_reference(model):
    """A whole backbone without the ReLU: the operators and the reference form agree, and the
    stage outputs are no longer rectified."""
    torch.manual_seed(0)
    kwargs = dict(depth=26, base_channels=16, out_indices=(0, 1, 2, 3), shortcut_act=None,
                  zero_init_residual=False)
    op = model(**kwargs)
    op.init_weights()
    op.double()
    ref = model(aggregation_impl='reference', **kwargs).double()
    ref.load_state_dict(op.state_dict())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    outs_op, outs_ref = op(x), ref(x)
    for a, b in zip(outs_op, outs_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    assert all((o < 0).any() for o in outs_op)
    sum(o.sum() for o in outs_op).backward()
    sum(o.sum() for o in outs_ref).backward()
    grads = dict(ref.named_parameters())
    for name, p in op.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-7, atol=1e-7, msg=name)


def test_ds2_inner_shortcut_without_act_keeps_the_branch_relu():
    """DS2's inner shortcut with ``shortcut_act=None``: ``relu(bn2(conv2(u))) + w * N(u)``."""
    torch.manual_seed(0)
    net = DS2Net(depth=26, base_channels=16, shortcut_act=None).eval()
    block = net.layer1.block(1)
    agg = block.inner_aggregation
    with torch.no_grad():
        agg.shortcuts[0].weight.normal_()
    x = torch.randn(2, 64, 8, 8)
    u = block.relu(block.bn1(block.conv1(x)))
    inner = (torch.relu(block.bn2(block.conv2(u)))
             + agg.shortcuts[0].weight[0] * F.group_norm(u, agg.norms[0].num_groups))
    expected = block.bn3(block.conv3(inner))
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_freezing_does_not_depend_on_the_activation():
    """``norm_eval`` and ``frozen_stages`` act the same with either activation, and a
    checkpoint loads into a detection backbone (all stages out, frozen) trained the same way."""
    for act in ('relu', None):
        torch.manual_seed(0)
        src = DS2Net(depth=26, base_channels=16, shortcut_act=act)  # as pretrained
        det = DS2Net(depth=26, base_channels=16, out_indices=(0, 1, 2, 3), frozen_stages=1,
                     norm_eval=True, shortcut_act=act, shortcut_norm_cfg='GN')
        det.load_state_dict(src.state_dict(), strict=True)
        det.train()
        frozen = [n for n, p in det.named_parameters() if not p.requires_grad]
        assert frozen and all(n.startswith(('conv1', 'bn1', 'layer1.')) for n in frozen)
        assert any(n.startswith('layer1.aggregation') for n in frozen)
        assert all(not m.training for m in det.modules()
                   if isinstance(m, torch.nn.BatchNorm2d))
        assert [a.relu for a in det.modules() if isinstance(a, DenseAggregation)] == [
            act == 'relu'] * sum(isinstance(a, DenseAggregation) for a in det.modules())


# ------------------------------------------------------- the activation is in the checkpoint
NET = dict(depth=26, base_channels=8, shortcut_norm_cfg=dict(type='GN', num_groups=4))


@pytest.mark.parametrize('model', [DSNet, DS2Net])
def test_weights_of_the_other_activation_are_refused(model):
    """The activation has no tensor, so the state dict's metadata records it; a model with the
    other one refuses the weights, naming the setting to build it with."""
    relu = model(shortcut_act='relu', **NET)
    assert relu.state_dict()._metadata['']['shortcut_act'] == 'relu'
    with pytest.raises(ShortcutActMismatchError,
                       match=r"trained with shortcut_act='relu'.*shortcut_act=None.*"
                             r"--cfg-options model\.backbone\.shortcut_act=relu\)"):
        model(shortcut_act=None, **NET).load_state_dict(relu.state_dict())
    no_act = model(shortcut_act='none', **NET)
    with pytest.raises(ShortcutActMismatchError,
                       match=r'trained with shortcut_act=None.*shortcut_act=None\)'):
        model(shortcut_act='relu', **NET).load_state_dict(no_act.state_dict(), strict=False)
    model(shortcut_act=None, **NET).load_state_dict(no_act.state_dict())  # same: loads


def test_metadata_of_version_1_means_the_relu_and_resnet_weights_say_nothing():
    """State dicts saved before the record (version 1) come from models with the ReLU; a ResNet
    (identity) checkpoint has no dense shortcut and loads into either."""
    old = DSNet(shortcut_act='relu', **NET).state_dict()
    old._metadata[''] = {'version': 1}
    with pytest.raises(ShortcutActMismatchError, match="trained with shortcut_act='relu'"):
        DSNet(shortcut_act=None, **NET).load_state_dict(old)
    DSNet(shortcut_act='relu', **NET).load_state_dict(old)
    resnet = DSNet(shortcut='identity', **NET).state_dict()
    resnet._metadata['']['shortcut_act'] = 'relu'
    DSNet(shortcut='identity', shortcut_act=None, **NET).load_state_dict(resnet)
    loaded = DSNet(shortcut_act=None, **NET)
    loaded.load_state_dict(resnet, strict=False)  # ImageNet ResNet weights into a DSNet


def test_the_record_survives_runner_checkpoints_and_pretrained_prefixes(tmp_path):
    """MMEngine's save_checkpoint / load_checkpoint (``load_from``, ``--resume``) and the
    ``Pretrained`` init_cfg with ``prefix='backbone.'`` (a classifier's checkpoint into a
    detector's backbone) both carry the record."""
    from mmengine.runner.checkpoint import load_checkpoint, save_checkpoint

    classifier = torch.nn.Module()
    classifier.backbone = DS2Net(shortcut_act='relu', **NET)
    save_checkpoint(classifier.state_dict(), str(tmp_path / 'cls.pth'))
    wrapped = torch.nn.Module()
    wrapped.backbone = DS2Net(shortcut_act=None, **NET)
    with pytest.raises(ShortcutActMismatchError):
        load_checkpoint(wrapped, str(tmp_path / 'cls.pth'))
    for act, raises in (('relu', False), (None, True)):
        backbone = DS2Net(shortcut_act=act, out_indices=(0, 1, 2, 3), **NET)
        backbone.init_cfg = dict(type='Pretrained', checkpoint=str(tmp_path / 'cls.pth'),
                                 prefix='backbone.')
        if raises:
            with pytest.raises(ShortcutActMismatchError):
                backbone.init_weights()
        else:
            backbone.init_weights()
            torch.testing.assert_close(backbone.layer2.aggregation.shortcuts[0].weight,
                                       classifier.backbone.layer2.aggregation.shortcuts[0].weight)
