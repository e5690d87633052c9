"""Checkpoints written before the refactors of issues 9 and 13 (commit 1d19ef9) still load, with
the same keys, and still compute the same thing.

* ``tests/data/legacy_ds2net38_1d19ef9.pth`` (``make_legacy_checkpoint.py``): two tiny DS2Net-38
  backbones (three blocks per stage, so two sources and their W per stage), with GN and with BN
  shortcut norms (BN running statistics are saved under the norms' keys), their state dicts, an
  input and the outputs that code computed. Covers the dense aggregation becoming one module.
* ``tests/data/ds2net26-tiny_cifar10_before-issue13.pth`` (``make_ds2net26_tiny.py``): a tiny
  DS2Net ImageClassifier saved as MMEngine's Runner saves (meta, message_hub), when configs still
  spelled DS2Net as ``DSNet + block_cfg=dict(inner_shortcut=True)``; its ``_probe.pth`` holds the
  classifier's logits on a seeded input, computed then. Covers loading through ``load_from`` and
  through ``init_cfg=Pretrained``.
"""
import os.path as osp
from pathlib import Path

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


# --------------------------------------------- Runner checkpoint of a classifier (issue 13)
DATA = Path(__file__).resolve().parent / 'data'
CKPT = DATA / 'ds2net26-tiny_cifar10_before-issue13.pth'
PROBE = DATA / 'ds2net26-tiny_cifar10_before-issue13_probe.pth'
BACKBONE = dict(type='mmdsnet.DS2Net', depth=26, stem='cifar', base_channels=8,
                shortcut_norm_cfg=dict(type='GN', num_groups=4))


def _classifier(backbone_init_cfg=None):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import mmdsnet  # noqa: F401
    init_default_scope('mmpretrain')
    return MODELS.build(dict(
        type='ImageClassifier', backbone=dict(BACKBONE, init_cfg=backbone_init_cfg),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=256,
                  loss=dict(type='CrossEntropyLoss'))))


def test_old_runner_checkpoint_loads_as_load_from_does_and_computes_the_same():
    """``load_from`` / ``--resume`` path: MMEngine's load_checkpoint, strict, weights-only."""
    from mmengine.runner.checkpoint import load_checkpoint
    model = _classifier()
    load_checkpoint(model, str(CKPT), map_location='cpu', strict=True)
    probe = torch.load(PROBE, weights_only=True)
    with torch.no_grad():
        logits = model.eval()(probe['input'], mode='tensor')
    torch.testing.assert_close(logits, probe['logits'], rtol=1e-5, atol=1e-5)


def test_old_classifier_checkpoint_initialises_a_backbone(monkeypatch):
    """``init_cfg=dict(type='Pretrained', prefix='backbone.')`` path: every tensor loads."""
    from mmdsnet.models import pretrained
    lines = []
    monkeypatch.setattr(pretrained, 'print_log', lambda msg, **k: lines.append(msg))
    model = _classifier(dict(type='Pretrained', prefix='backbone.', checkpoint=str(CKPT)))
    model.backbone.init_weights()
    n = len(model.backbone.state_dict())
    assert lines == [f"loaded {n}/{n} backbone tensors from {CKPT} (prefix 'backbone.')"]
    saved = torch.load(CKPT, weights_only=True)['state_dict']  # weights-only, as promised
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, saved[f'backbone.{k}']), k
