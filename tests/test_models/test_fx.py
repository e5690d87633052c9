"""torch.fx feature extraction, as timm and torchvision users do it
(``torchvision.models.feature_extraction.create_feature_extractor``): the dense aggregation is
recorded as single calls, and the extracted features equal the eager model's."""
import pytest
import torch

from mmdsnet.models import DS2Net, DSNet

fe = pytest.importorskip('torchvision.models.feature_extraction')


@pytest.mark.parametrize('model,norm', [(DSNet, 'GN'), (DS2Net, 'GN'), (DSNet, 'BN'),
                                        (DSNet, None)])
def test_create_feature_extractor_equals_the_eager_model(model, norm):
    torch.manual_seed(0)
    net = model(depth=50, base_channels=16, out_indices=(0, 1, 2, 3), shortcut_norm_cfg=norm,
                zero_init_residual=False)
    net.init_weights()
    x = torch.randn(2, 3, 64, 64)
    if norm == 'BN':  # running statistics of the shortcut BNs, then evaluation mode
        net.train()(x)
    net.eval()
    nodes = {'layer1': 'c2', 'layer2': 'c3', 'layer3': 'c4', 'layer4': 'c5'}
    extractor = fe.create_feature_extractor(net, return_nodes=nodes)
    code = extractor.code
    # recorded as calls: the aggregations, and the chain's buffers (made anew per call)
    assert 'aggregate' in code and '_new_chain' in code, code
    feats = extractor(x)
    for (name, key), expected in zip(nodes.items(), net(x)):
        torch.testing.assert_close(feats[key], expected, rtol=0, atol=0, msg=name)


def test_feature_extractor_trains_like_the_model():
    """The training graph updates the shortcut BNs' running statistics as the model does, and
    gradients flow to ``W``."""
    torch.manual_seed(0)
    kwargs = dict(depth=26, base_channels=16, out_indices=(3, ), shortcut_norm_cfg='BN')
    net = DS2Net(**kwargs)
    ref = DS2Net(**kwargs)
    ref.load_state_dict(net.state_dict())
    extractor = fe.create_feature_extractor(net, return_nodes={'layer4': 'out'})
    x = torch.randn(2, 3, 64, 64)
    out = extractor.train()(x)['out']
    expected = ref.train()(x)[0]
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    w = extractor.get_parameter('layer2.aggregation.shortcuts.0.weight')
    assert w.grad is not None and w.grad.abs().sum() > 0
    buffers = dict(extractor.named_buffers())
    running = [key for key in buffers if 'aggregation' in key and 'running' in key]
    assert running
    for key, value in ref.named_buffers():
        if key in running:
            torch.testing.assert_close(buffers[key], value, msg=key)
