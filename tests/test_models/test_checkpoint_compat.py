"""Checkpoint keys are the module names; checkpoints with the old dense-shortcut keys are refused
on every load path with the conversion command, and tools/convert_checkpoint.py converts them.

Fixtures written by the code of commit 1d19ef9, whose checkpoints hold the old keys
(``layerK.norms.{i}``, ``layerK.shortcuts.{j}.weight``, ``layerK.{b}.inner_norm``,
``layerK.{b}.inner_shortcut.weight``):

* ``tests/data/legacy_ds2net38_1d19ef9.pth`` (``make_legacy_checkpoint.py``): two tiny DS2Net-38
  backbones (three blocks per stage, so two sources and their W per stage), with GN and with BN
  shortcut norms (BN running statistics are saved under the norms' keys), their state dicts, an
  input and the outputs that code computed.
* ``tests/data/ds2net26-tiny_cifar10_old-keys.pth`` (``make_ds2net26_tiny.py``): a tiny DS2Net
  ImageClassifier saved as MMEngine's Runner saves (meta, message_hub), when configs still spelled
  DS2Net as ``DSNet + block_cfg=dict(inner_shortcut=True)``; its ``_probe.pth`` holds the
  classifier's logits on a seeded input, computed then. Covers ``load_from`` / ``--resume``
  (MMEngine's load_checkpoint, the CheckpointMatchHook) and ``init_cfg=Pretrained``.
"""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mmdsnet.models import DS2Net
from mmdsnet.models.pretrained import (OldCheckpointKeysError, ShortcutActMismatchError,
                                       rename_old_keys)

from helpers import load_tool

DATA = Path(__file__).resolve().parents[1] / 'data'
LEGACY = DATA / 'legacy_ds2net38_1d19ef9.pth'
CKPT = DATA / 'ds2net26-tiny_cifar10_old-keys.pth'
PROBE = DATA / 'ds2net26-tiny_cifar10_old-keys_probe.pth'
# the fixtures were trained with the ReLU after the dense sum, the default then
BACKBONE = dict(type='mmdsnet.DS2Net', depth=26, stem='cifar', base_channels=8,
                shortcut_norm_cfg=dict(type='GN', num_groups=4), shortcut_act='relu')
COMMAND = 'python tools/convert_checkpoint.py'


@pytest.fixture(scope='module')
def convert():
    """tools/convert_checkpoint.py's main(argv)."""
    return load_tool('convert_checkpoint.py').main


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


def _check_logits(model):
    probe = torch.load(PROBE, weights_only=True)
    with torch.no_grad():
        logits = model.eval()(probe['input'], mode='tensor')
    torch.testing.assert_close(logits, probe['logits'], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ the keys now
def test_state_dict_keys_are_the_module_names():
    model = DS2Net(depth=38, base_channels=4, stem='cifar', shortcut_norm_cfg='BN')
    keys = set(model.state_dict())
    assert keys == set(dict(model.named_parameters())) | set(dict(model.named_buffers()))
    assert {'layer1.aggregation.shortcuts.1.weight', 'layer1.aggregation.norms.1.running_var',
            'layer1.1.inner_aggregation.shortcuts.0.weight',
            'layer1.1.inner_aggregation.norms.0.running_mean'} <= keys
    assert rename_old_keys(model.state_dict())[1] == {}  # nothing looks old
    model.load_state_dict(model.state_dict(), strict=True)


def test_rename_old_keys_keeps_prefixes_order_and_other_keys():
    sd = {'backbone.layer1.norms.0.running_mean': 1, 'backbone.layer1.0.conv1.weight': 2,
          'layer2.shortcuts.1.weight': 3, 'module.backbone.layer3.2.inner_norm.running_var': 4,
          'layer3.2.inner_shortcut.weight': 5, 'head.fc.weight': 6}
    new, renamed = rename_old_keys(sd)
    assert list(new) == [
        'backbone.layer1.aggregation.norms.0.running_mean', 'backbone.layer1.0.conv1.weight',
        'layer2.aggregation.shortcuts.1.weight',
        'module.backbone.layer3.2.inner_aggregation.norms.0.running_var',
        'layer3.2.inner_aggregation.shortcuts.0.weight', 'head.fc.weight']
    assert list(new.values()) == [1, 2, 3, 4, 5, 6]
    assert len(renamed) == 4 and renamed['layer2.shortcuts.1.weight'] == list(new)[2]


# ---------------------------------------------------------------- old keys: refused everywhere
@pytest.mark.parametrize('name', ['ds2net38_gn', 'ds2net38_bn'])
def test_old_checkpoint_converted_loads_strictly_and_computes_the_same(name):
    saved = torch.load(LEGACY, weights_only=True)['models'][name]
    model = DS2Net(**saved['kwargs'], shortcut_act='relu')
    with pytest.raises(OldCheckpointKeysError, match=COMMAND):
        model.load_state_dict(saved['state_dict'], strict=False)  # not even leniently
    state, renamed = rename_old_keys(saved['state_dict'])
    with pytest.raises(ShortcutActMismatchError, match="shortcut_act='relu'"):
        DS2Net(**saved['kwargs']).load_state_dict(state)  # today's default has no ReLU
    assert renamed and set(model.state_dict()) == set(state)
    model.load_state_dict(state, strict=True)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)
    with torch.no_grad():
        outs = model.eval()(saved['input'])
    for ours, theirs in zip(outs, saved['outputs']):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_old_keys_under_a_prefix_are_refused_by_torch_load_state_dict():
    """A classifier's state dict (``backbone.`` keys) through torch's own load_state_dict: the
    error names an old key with its prefix and the new name."""
    saved = torch.load(CKPT, weights_only=True)['state_dict']
    model = _classifier()
    with pytest.raises(OldCheckpointKeysError) as err:
        model.load_state_dict(saved)
    msg = str(err.value)
    assert msg.startswith('The checkpoint was saved with the old keys') and COMMAND in msg
    assert "e.g. 'backbone.layer" in msg and 'aggregation.' in msg


def test_old_runner_checkpoint_is_refused_by_load_checkpoint_then_converted(convert, tmp_path,
                                                                           capsys):
    """``load_from`` / ``--resume`` path: MMEngine's load_checkpoint (strict or not) refuses the
    old keys; the converted file keeps meta and message_hub, loads strictly and computes the
    logits the old code computed."""
    from mmengine.runner.checkpoint import load_checkpoint
    model = _classifier()
    with pytest.raises(OldCheckpointKeysError, match=COMMAND):
        load_checkpoint(model, str(CKPT), map_location='cpu', strict=False)
    new = tmp_path / 'new.pth'
    renamed = convert([str(CKPT), str(new)])
    out = capsys.readouterr().out
    assert renamed > 0 and f'renamed {renamed} keys of state_dict in {CKPT}' in out
    assert f'wrote {new}' in out and 'inner_aggregation' in out
    old, ckpt = torch.load(CKPT, weights_only=False), torch.load(new, weights_only=False)
    assert ckpt['meta'] == old['meta'] and ckpt['message_hub'].keys() == old['message_hub'].keys()
    assert len(ckpt['state_dict']) == len(old['state_dict'])
    load_checkpoint(model, str(new), map_location='cpu', strict=True)
    _check_logits(model)
    with pytest.raises(SystemExit, match='exists'):
        convert([str(CKPT), str(new)])
    assert convert([str(new), str(new), '--force']) == 0  # already converted: nothing to do
    assert 'no old key' in capsys.readouterr().out


def test_checkpoint_match_hook_names_the_old_keys_and_the_file():
    """Runner's load_from / resume: the CheckpointMatchHook sees the checkpoint first and gives
    the conversion command, not "another architecture"; the tools print it as one line."""
    from mmdsnet.engine import CheckpointMatchHook, user_errors
    model = _classifier()
    runner = SimpleNamespace(model=model, _load_from=str(CKPT), logger=None)
    with pytest.raises(OldCheckpointKeysError, match=f'{COMMAND} {CKPT} NEW.pth'):
        CheckpointMatchHook().after_load_checkpoint(runner, torch.load(CKPT, weights_only=True))
    assert issubclass(OldCheckpointKeysError, user_errors())


def test_old_classifier_checkpoint_as_pretrained_is_refused_then_converted(convert, tmp_path,
                                                                          monkeypatch):
    """``init_cfg=dict(type='Pretrained', prefix='backbone.')`` path (StrictPretrained): the old
    file is refused naming itself; the converted one loads every tensor."""
    from mmdsnet.models import pretrained
    with pytest.raises(OldCheckpointKeysError, match=f'{COMMAND} {CKPT} NEW.pth'):
        _classifier(dict(type='Pretrained', prefix='backbone.',
                         checkpoint=str(CKPT))).backbone.init_weights()
    new = tmp_path / 'new.pth'
    convert([str(CKPT), str(new)])
    lines = []
    monkeypatch.setattr(pretrained, 'print_log', lambda msg, **k: lines.append(msg))
    model = _classifier(dict(type='Pretrained', prefix='backbone.', checkpoint=str(new)))
    model.backbone.init_weights()
    n = len(model.backbone.state_dict())
    assert lines == [f"loaded {n}/{n} backbone tensors from {new} (prefix 'backbone.')"]
    saved = torch.load(new, weights_only=True)['state_dict']  # weights-only, as promised
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, saved[f'backbone.{k}']), k


def test_convert_a_bare_state_dict(convert, tmp_path):
    saved = torch.load(LEGACY, weights_only=True)['models']['ds2net38_bn']
    old, new = tmp_path / 'old.pth', tmp_path / 'sub' / 'new.pth'
    torch.save(saved['state_dict'], old)
    assert convert([str(old), str(new)]) == len(rename_old_keys(saved['state_dict'])[1])
    with pytest.raises(ShortcutActMismatchError):  # the conversion keeps the metadata
        DS2Net(**saved['kwargs']).load_state_dict(torch.load(new, weights_only=True))
    model = DS2Net(**saved['kwargs'], shortcut_act='relu')
    model.load_state_dict(torch.load(new, weights_only=True), strict=True)
    wrapped = nn.Module()  # the same keys under a prefix load too (a detector's backbone.)
    wrapped.backbone = DS2Net(**saved['kwargs'], shortcut_act='relu')
    wrapped.load_state_dict({f'backbone.{k}': v for k, v in
                             torch.load(new, weights_only=True).items()}, strict=True)


@pytest.mark.slow
@pytest.mark.parametrize('how', ['load_from', 'resume'])
def test_train_tool_refuses_old_keys_in_one_line(tmp_path, how):
    """tools/train.py with ``load_from=OLD`` / ``--resume OLD``: exit 1 before any training step,
    one error line naming the file and the conversion command, no traceback (the tool runs in
    this process)."""
    from tiny_runs import call_tool, write_cfg
    cfg = write_cfg(tmp_path, frozen=-1, with_cp=False, iters=1, interval=1)
    args = (['--cfg-options', f'load_from={CKPT}'] if how == 'load_from'
            else ['--resume', str(CKPT)])
    out = call_tool('train.py', cfg, '--work-dir', str(tmp_path / 'wd'), *args,
                    cwd=DATA.parent.parent)
    assert out.returncode == 1, out.stderr[-2000:]
    assert f'{COMMAND} {CKPT} NEW.pth' in out.stderr and 'Traceback' not in out.stderr
    assert 'Iter(train)' not in out.stdout + out.stderr
