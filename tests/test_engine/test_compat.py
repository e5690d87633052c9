"""mmdsnet.compat: Runner checkpoints load safely under torch>=2.6; unsafe ones only if trusted."""
import fractions
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner.checkpoint import _load_checkpoint

from mmdsnet import compat


@pytest.fixture(autouse=True)
def _patched(monkeypatch):
    compat.patch_torch_load()
    monkeypatch.delenv(compat.TRUST_ENV, raising=False)
    monkeypatch.setattr(compat, '_trusted_dirs', [])


def _runner_like_checkpoint(path):
    """What mmengine's Runner saves: message hub with HistoryBuffers and numpy values."""
    hub = MessageHub('compat-test')
    for i in range(3):
        hub.update_scalar('train/loss', 1.0 / (i + 1))
        hub.update_scalar('train/lr', np.float64(0.1))
    hub.update_info('iter', 3)
    hub.update_info('numpy_scalar', np.float32(2.5))
    hub.update_info('numpy_array', np.arange(4, dtype=np.int64))
    ckpt = dict(meta=dict(iter=3, epoch=0, seed=np.int64(7)),
                state_dict={'w': torch.ones(2, 2)},
                message_hub=hub.state_dict(),
                optimizer={'state': {}, 'param_groups': [{'lr': 0.1, 'params': [0]}]})
    torch.save(ckpt, path)
    return ckpt


def test_plain_torch_load_fails_without_the_patch(tmp_path):
    """The problem being solved: torch>=2.6's weights_only rejects HistoryBuffer."""
    path = tmp_path / 'iter_3.pth'
    _runner_like_checkpoint(path)
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        with pytest.raises(pickle.UnpicklingError, match='Unsupported global'):
            torch.load(path)
    finally:
        torch.serialization.add_safe_globals(saved)


def test_runner_checkpoint_loads_weights_only(tmp_path):
    path = tmp_path / 'iter_3.pth'
    _runner_like_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)  # no fallback involved
    buf = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer)
    assert buf.current() == pytest.approx(1 / 3)
    assert buf.mean() == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert ckpt['message_hub']['runtime_info']['numpy_scalar'] == np.float32(2.5)
    np.testing.assert_array_equal(ckpt['message_hub']['runtime_info']['numpy_array'],
                                  np.arange(4))
    assert ckpt['meta']['seed'] == 7


def test_mmengine_loader_uses_the_safe_path(tmp_path):
    """load_from / resume / init_cfg=Pretrained all go through CheckpointLoader."""
    path = tmp_path / 'iter_3.pth'
    _runner_like_checkpoint(path)
    ckpt = _load_checkpoint(str(path), map_location='cpu')
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2, 2))


def test_unsafe_checkpoint_is_refused_with_a_message(tmp_path):
    path = tmp_path / 'foreign.pth'
    torch.save({'state_dict': {}, 'extra': fractions.Fraction(1, 3)}, path)
    with pytest.raises(compat.CheckpointLoadError) as info:
        _load_checkpoint(str(path), map_location='cpu')
    msg = str(info.value)
    assert str(path) in msg
    assert 'fractions.Fraction' in msg
    assert compat.TRUST_ENV in msg and 'work_dir' in msg


def test_unsafe_checkpoint_loads_when_opted_in(tmp_path, monkeypatch):
    path = tmp_path / 'foreign.pth'
    torch.save({'extra': fractions.Fraction(1, 3)}, path)
    monkeypatch.setenv(compat.TRUST_ENV, '1')
    assert _load_checkpoint(str(path))['extra'] == fractions.Fraction(1, 3)


def test_unsafe_checkpoint_loads_inside_the_trusted_work_dir(tmp_path):
    work_dir = tmp_path / 'work_dir'
    (work_dir / 'sub').mkdir(parents=True)
    inside, outside = work_dir / 'sub' / 'a.pth', tmp_path / 'b.pth'
    for p in (inside, outside):
        torch.save({'extra': fractions.Fraction(2, 3)}, p)
    compat.patch_torch_load(trusted_dirs=[str(work_dir)])
    assert compat.load_checkpoint_file(str(inside))['extra'] == fractions.Fraction(2, 3)
    with pytest.raises(compat.CheckpointLoadError, match='outside this run'):
        compat.load_checkpoint_file(str(outside))
    # A sibling whose name merely starts with the work_dir's name is not inside it.
    sibling = tmp_path / 'work_dir_evil'
    sibling.mkdir()
    torch.save({'extra': fractions.Fraction(1, 2)}, sibling / 'c.pth')
    with pytest.raises(compat.CheckpointLoadError):
        compat.load_checkpoint_file(str(sibling / 'c.pth'))


class _GetattrAttack:
    """Pickles as getattr(HistoryBuffer, 'register_statistics'): not a statistics method."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, 'register_statistics')


def test_restricted_getattr_only_reaches_statistics_methods(tmp_path):
    path = tmp_path / 'attack.pth'
    torch.save({'x': _GetattrAttack()}, path)
    with pytest.raises(compat.CheckpointLoadError, match='needs full unpickling'):
        compat.load_checkpoint_file(str(path))


@pytest.mark.parametrize('content, match', [
    (b'', 'is not a PyTorch checkpoint'),
    (b'model:\n  type: DSNet\n', 'is not a PyTorch checkpoint'),
    (os.urandom(256), 'is not a PyTorch checkpoint'),
])
def test_not_a_checkpoint_gives_a_clear_message(tmp_path, content, match):
    path = tmp_path / 'not_a_ckpt.pth'
    path.write_bytes(content)
    with pytest.raises(compat.CheckpointLoadError, match=match):
        _load_checkpoint(str(path))


def test_truncated_and_foreign_zip(tmp_path):
    full = tmp_path / 'full.pth'
    torch.save({'w': torch.randn(64, 64)}, full)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(full.read_bytes()[:full.stat().st_size // 2])
    with pytest.raises(compat.CheckpointLoadError, match='truncated'):
        compat.load_checkpoint_file(str(truncated))
    import zipfile
    foreign = tmp_path / 'foreign.zip'
    with zipfile.ZipFile(foreign, 'w') as zf:
        zf.writestr('readme.txt', 'hello')
    with pytest.raises(compat.CheckpointLoadError, match='not a PyTorch checkpoint'):
        compat.load_checkpoint_file(str(foreign))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='can not be found'):
        compat.load_checkpoint_file(str(tmp_path / 'nope.pth'))


def test_legacy_format_still_loads(tmp_path):
    path = tmp_path / 'legacy.pth'
    torch.save({'w': torch.ones(1)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(compat.load_checkpoint_file(str(path))['w'], torch.ones(1))


def test_loader_survives_a_safe_globals_context(tmp_path):
    """torch's safe_globals context removes its globals on exit, even pre-existing ones."""
    path = tmp_path / 'iter_3.pth'
    _runner_like_checkpoint(path)
    with torch.serialization.safe_globals(compat.safe_globals()):
        pass
    ckpt = compat.load_checkpoint_file(str(path))
    assert isinstance(ckpt['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
