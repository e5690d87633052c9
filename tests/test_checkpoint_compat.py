"""Checkpoints saved before the dense aggregation became one module load after it, and today's
checkpoints are saved with the same keys. tests/data/legacy_ds2net38_1d19ef9.pth was written by
mmdsnet at commit 1d19ef9 (tests/data/make_legacy_checkpoint.py): two tiny DS2Net-38 (three blocks
per stage, so two sources and their W per stage), with GN and with BN shortcut norms, their
state dicts, an input and the outputs that code computed."""
import os.path as osp

import pytest
import torch

from mmdsnet.models import DS2Net

LEGACY = osp.join(osp.dirname(__file__), 'data', 'legacy_ds2net38_1d19ef9.pth')


@pytest.mark.parametrize('name', ['ds2net38_gn', 'ds2net38_bn'])
def test_legacy_checkpoint_loads_strictly_and_computes_the_same(name):
    saved = torch.load(LEGACY, weights_only=True)['models'][name]
    model = DS2Net(**saved['kwargs'])
    assert set(model.state_dict()) == set(saved['state_dict'])  # same keys, saved and expected
    model.load_state_dict(saved['state_dict'], strict=True)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved['state_dict'][key], rtol=0, atol=0, msg=key)
    with torch.no_grad():
        outs = model.eval()(saved['input'])
    for ours, theirs in zip(outs, saved['outputs']):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_state_dict_keys_are_the_legacy_ones_and_load_both_ways():
    model = DS2Net(depth=38, base_channels=4, stem='cifar', shortcut_norm_cfg='BN')
    keys = list(model.state_dict())
    assert 'layer1.shortcuts.1.weight' in keys and 'layer1.norms.1.running_var' in keys
    assert 'layer1.1.inner_shortcut.weight' in keys and 'layer1.1.inner_norm.running_mean' in keys
    assert not any('aggregation' in k for k in keys)
    # the module tree's own names load too (e.g. a dict built from named_parameters)
    params = dict(model.named_parameters())
    assert 'layer1.aggregation.shortcuts.1.weight' in params
    missing, unexpected = model.load_state_dict(
        {k: v.detach() for k, v in params.items()}, strict=False)
    assert not unexpected and all('running' in k or 'num_batches' in k or 'bn' in k
                                  or 'downsample.1' in k for k in missing)
