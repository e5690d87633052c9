"""init_cfg=Pretrained: one log line with N/M, loud failures, no zero-init over loaded weights."""
import logging
import re

import pytest
import torch

from mmdsnet.models import DS2Net, DSNet
from mmdsnet.models import pretrained as pretrained_mod
from mmdsnet.models.pretrained import PretrainedMismatchError, load_pretrained

TINY = dict(depth=26, base_channels=8, shortcut_norm_cfg=dict(type='GN', num_groups=4),
            out_indices=(0, 1, 2, 3))


@pytest.fixture
def logs(monkeypatch):
    """The messages :mod:`mmdsnet.models.pretrained` and DSNet send to MMEngine's logger
    (debug-level ones aside)."""
    lines = []

    def record(msg, *args, level=logging.INFO, **kwargs):
        if level > logging.DEBUG:
            lines.append(str(msg))
    monkeypatch.setattr(pretrained_mod, 'print_log', record)
    from mmdsnet.models.backbones import dsnet as dsnet_mod
    monkeypatch.setattr(dsnet_mod, 'print_log', record)
    return lines


def _random_backbone(cls=DSNet, seed=0, **kw):
    """A backbone whose every tensor is random and nonzero (so a load is visible)."""
    torch.manual_seed(seed)
    model = cls(**{**TINY, **kw})
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand_like(p) + 0.5)
    return model


def _classifier_state(backbone):
    """What an mmpretrain ImageClassifier's state_dict looks like around a backbone."""
    sd = {f'backbone.{k}': v.clone() for k, v in backbone.state_dict().items()}
    sd['head.fc.weight'] = torch.zeros(10, backbone.out_channels[-1])
    sd['head.fc.bias'] = torch.zeros(10)
    return sd


def _pretrained(path, prefix='backbone.'):
    return dict(type='Pretrained', checkpoint=str(path), prefix=prefix)


def test_loads_all_tensors_and_logs_one_line(tmp_path, logs):
    src = _random_backbone()
    path = tmp_path / 'cls.pth'
    torch.save({'state_dict': _classifier_state(src), 'meta': {'epoch': 3}}, path)
    model = DSNet(**TINY, init_cfg=_pretrained(path))
    model.init_weights()
    total = len(src.state_dict())
    assert logs == [f"loaded {total}/{total} backbone tensors from {path} (prefix 'backbone.')"]
    for k, v in src.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, msg=k)


def test_zero_init_residual_keeps_loaded_weights(tmp_path, logs):
    src = _random_backbone(DS2Net)
    path = tmp_path / 'plain.pth'
    torch.save(src.state_dict(), path)  # a bare backbone state dict: prefix None
    model = DS2Net(**TINY, zero_init_residual=True, init_cfg=_pretrained(path, prefix=None))
    model.init_weights()
    last = model.layer2.block(1).bn3.weight
    assert last.abs().min() > 0  # not zeroed after loading
    torch.testing.assert_close(last, src.layer2.block(1).bn3.weight)
    assert "prefix ''" in logs[0]


def test_from_scratch_is_logged_and_zero_inits(logs):
    model = DSNet(**TINY, init_cfg=None)
    model.init_weights()
    assert any('no Pretrained init_cfg' in m and 'from scratch' in m for m in logs)
    assert model.layer1.block(1).bn3.weight.abs().max() == 0  # zero_init_residual
    model.init_weights()  # a second call must not re-zero (or reload) anything
    assert sum('from scratch' in m for m in logs) == 1


def test_runner_checkpoint_with_message_hub_loads(tmp_path, logs):
    """A checkpoint as MMEngine's Runner saves it (HistoryBuffer, numpy) loads weights-only."""
    import numpy as np
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import save_checkpoint
    src = _random_backbone()
    hub = MessageHub.get_instance('test_det_pretrained')
    hub.update_scalar('train/loss', np.float64(1.5))
    path = tmp_path / 'epoch_1.pth'
    save_checkpoint({'meta': {'epoch': 1, 'seed': np.int64(0)},
                     'state_dict': _classifier_state(src),
                     'message_hub': hub.state_dict()}, str(path))
    model = DSNet(**TINY, init_cfg=_pretrained(path))
    model.init_weights()
    n = len(src.state_dict())
    assert f'loaded {n}/{n} backbone tensors' in logs[0]


def test_wrong_prefix_fails_with_file_prefix_and_keys(tmp_path):
    path = tmp_path / 'cls.pth'
    torch.save({'state_dict': _classifier_state(_random_backbone())}, path)
    model = DSNet(**TINY, init_cfg=_pretrained(path, prefix='model.backbone.'))
    with pytest.raises(PretrainedMismatchError) as e:
        model.init_weights()
    msg = str(e.value)
    assert re.search(r"only 0/\d+ backbone tensors matched in .*cls\.pth \(prefix "
                     r"'model\.backbone\.'\)", msg)
    assert "First keys found: ['backbone.conv1.weight'" in msg
    assert "first keys expected: ['model.backbone.conv1.weight'" in msg


def test_wrong_checkpoint_shape_mismatch_fails(tmp_path):
    path = tmp_path / 'wide.pth'
    torch.save({'state_dict': _classifier_state(_random_backbone(base_channels=16))}, path)
    model = DSNet(**TINY, init_cfg=_pretrained(path))
    with pytest.raises(PretrainedMismatchError, match=r'wrong shape: .*conv1\.weight: '
                                                      r'checkpoint \(16, 3, 7, 7\) vs backbone '
                                                      r'\(8, 3, 7, 7\)'):
        model.init_weights()


def test_wrong_checkpoint_too_few_tensors_fails(tmp_path):
    """A different network (few common keys) is refused, not half-loaded."""
    path = tmp_path / 'other.pth'
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 7, 2, 3, bias=False))
    torch.save({'state_dict': {'backbone.conv1.weight': other[0].weight.detach()}}, path)
    model = DSNet(**TINY, init_cfg=_pretrained(path))
    with pytest.raises(PretrainedMismatchError, match=r'only 1/\d+ backbone tensors matched .* '
                                                      r'fewer than 90%'):
        model.init_weights()


def test_missing_checkpoint_names_the_fix():
    model = DSNet(**TINY, init_cfg=_pretrained('checkpoints/does_not_exist.pth'))
    with pytest.raises(FileNotFoundError, match=r'does_not_exist\.pth.*init_cfg=None'):
        model.init_weights()


def test_partial_match_logs_missing_and_unexpected(tmp_path, logs):
    """A DSNet checkpoint into DS2Net: the inner shortcuts are missing (>= 90% still match)."""
    path = tmp_path / 'dsnet.pth'
    torch.save({'state_dict': _classifier_state(_random_backbone(DSNet))}, path)
    model = DS2Net(**TINY)
    n, m = load_pretrained(model, str(path), prefix='backbone.')
    assert n < m and n >= 0.9 * m
    assert logs[0] == f"loaded {n}/{m} backbone tensors from {path} (prefix 'backbone.')"
    assert any('missing' in line and 'inner_aggregation' in line for line in logs[1:])


def test_untrusted_pickle_is_refused(tmp_path):
    """Anything beyond tensors and the Runner's own types is not unpickled (weights_only)."""
    import os

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': Evil()}, path)
    model = DSNet(**TINY, init_cfg=_pretrained(path))
    with pytest.raises(Exception, match=r'evil\.pth'):
        model.init_weights()


def test_strict_initializer_serves_any_model_as_mmdsnet_pretrained(tmp_path, logs):
    """One initializer in MMEngine's WEIGHT_INITIALIZERS: DSNet's 'Pretrained' resolves to it,
    and any BaseModule can name it 'mmdsnet.Pretrained' (MMEngine's own stays untouched)."""
    from mmengine.model import BaseModule
    from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_INITS

    from mmdsnet.registry import WEIGHT_INITIALIZERS
    assert WEIGHT_INITIALIZERS.get('Pretrained') is pretrained_mod.StrictPretrained
    assert MMENGINE_INITS.get('Pretrained') is not pretrained_mod.StrictPretrained

    class Stem(BaseModule):
        def __init__(self, init_cfg):
            super().__init__(init_cfg)
            self.conv1 = torch.nn.Conv2d(3, 8, 7, 2, 3, bias=False)

    path = tmp_path / 'cls.pth'
    src = _random_backbone()
    torch.save({'state_dict': _classifier_state(src)}, path)  # 1 of its tensors fits a Stem
    stem = Stem(dict(type='mmdsnet.Pretrained', checkpoint=str(path), prefix='backbone.',
                     min_fraction=1.0))
    stem.init_weights()
    assert logs[0] == f"loaded 1/1 backbone tensors from {path} (prefix 'backbone.')"
    assert 'that the backbone does not have, ignored' in logs[1]  # the Stem has 1 of them
    torch.testing.assert_close(stem.conv1.weight, src.conv1.weight)
    other = Stem(dict(type='mmdsnet.Pretrained', checkpoint=str(path), prefix='head.'))
    with pytest.raises(PretrainedMismatchError, match=r'only 0/1 backbone tensors matched'):
        other.init_weights()
