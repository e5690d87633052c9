"""Checkpoints saved before issue 13 still load, and still compute the same thing.

``tests/data/ds2net26-tiny_cifar10_before-issue13.pth`` was written by the tree before issue 13
(commit 1d19ef9; how: ``tests/data/make_ds2net26_tiny.py``): a tiny DS2Net ImageClassifier,
saved as MMEngine's Runner saves (meta, message_hub), when configs still spelled DS2Net as
``DSNet + block_cfg=dict(inner_shortcut=True)``. Its ``_probe.pth`` holds the classifier's
logits on a seeded input, computed then.
"""
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmpretrain')

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
