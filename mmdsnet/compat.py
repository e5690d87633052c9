"""Safe checkpoint loading for mmengine 0.10.7 under torch>=2.6.

torch>=2.6 loads with ``weights_only=True`` by default; mmengine 0.10.7 calls ``torch.load``
without ``weights_only``, so every Runner checkpoint (its message hub holds ``HistoryBuffer``
objects and numpy scalars) fails to load: ``--resume``, ``load_from`` and ``init_cfg=Pretrained``
all break.

:func:`patch_torch_load` fixes this without giving up the safe loader:

1. It allowlists, with :func:`torch.serialization.add_safe_globals`, exactly the types that
   mmengine's own checkpoints contain: ``HistoryBuffer``, numpy scalars, arrays and dtypes. A
   ``HistoryBuffer`` pickles its statistics methods as ``getattr(HistoryBuffer, 'min')``; rather
   than allowing ``builtins.getattr`` (which would reach any attribute of any allowlisted
   object), a restricted stand-in resolves only ``HistoryBuffer``'s registered statistics
   methods. Such checkpoints then load with ``weights_only=True``.
2. It replaces mmengine's local-file checkpoint loader. A checkpoint that still needs full
   unpickling (an unknown class: arbitrary code could run) is loaded with ``weights_only=False``
   only if it lies inside a trusted directory (the run's own ``work_dir``, see
   :func:`trust_directory`) or ``MMDSNET_TRUST_CHECKPOINTS=1`` is set; otherwise a
   :class:`CheckpointLoadError` says exactly that. A file that is not a PyTorch checkpoint at all
   gets a plain message instead of a raw ``UnpicklingError`` / ``KeyError``.

Remote checkpoints (``http://``, ``torchvision://`` ...) keep mmengine's loaders; they load with
torch's default ``weights_only=True`` and profit from the allowlist of step 1.
"""
import os
import os.path as osp
import pickle
import zipfile
from typing import Iterable, List, Optional

import numpy as np
import torch

TRUST_ENV = 'MMDSNET_TRUST_CHECKPOINTS'

# The pickle of torch's legacy (non-zip) format starts with its magic number, a pickled long.
_LEGACY_MAGIC = pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)[:10]

# Fragments of torch's weights_only errors that mean "a global outside the allowlist", as
# opposed to a corrupt file (torch wraps both in the same UnpicklingError).
_UNSAFE_MARKERS = ('Unsupported global', 'unrecognized function', 'Can only build',
                   'Can only create new object', 'whose module',
                   'is not allowed by mmdsnet.compat')

_trusted_dirs: List[str] = []


class CheckpointLoadError(RuntimeError):
    """A checkpoint could not be loaded; the message names the file, the cause and the fix."""


def _history_buffer_getattr(obj, name: str):
    """Stand-in for ``builtins.getattr`` inside the weights-only unpickler.

    Only ``HistoryBuffer``'s statistics methods (``min``, ``max``, ``current``, ``mean`` and any
    registered with ``HistoryBuffer.register_statistics``) can be fetched.
    """
    from mmengine.logging import HistoryBuffer
    allowed = set(HistoryBuffer._statistics_methods) | {'min', 'max', 'current', 'mean'}
    if obj is HistoryBuffer and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed by mmdsnet.compat (only HistoryBuffer '
        f'statistics methods are)')


def safe_globals() -> list:
    """The globals mmengine's Runner checkpoints need beyond torch's default allowlist."""
    from mmengine.logging import HistoryBuffer
    numpy_core = getattr(np, '_core', None) or np.core  # numpy 2 renamed np.core to np._core
    globals_ = [
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
        numpy_core.multiarray.scalar,
        numpy_core.multiarray._reconstruct,
        np.ndarray,
        np.dtype,
    ]
    # numpy>=1.25 gives every dtype its own class (np.dtypes.Float64DType ...); unpickling a
    # dtype builds an instance of that class, so each one must be allowlisted.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        globals_ += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    # Checkpoints written under numpy 1 name the module numpy.core.multiarray.
    globals_ += [(numpy_core.multiarray.scalar, 'numpy.core.multiarray.scalar'),
                 (numpy_core.multiarray._reconstruct, 'numpy.core.multiarray._reconstruct')]
    return globals_


def trust_directory(path: str) -> None:
    """Allow full unpickling of checkpoints inside ``path`` (e.g. the run's own work_dir)."""
    path = osp.realpath(osp.expanduser(path))
    if path not in _trusted_dirs:
        _trusted_dirs.append(path)


def trusted_directories() -> List[str]:
    """Directories whose checkpoints may be fully unpickled (see :func:`trust_directory`)."""
    return list(_trusted_dirs)


def _env_trusts() -> bool:
    return os.environ.get(TRUST_ENV, '').strip().lower() in ('1', 'true', 'yes', 'on')


def _is_trusted(filename: str) -> bool:
    if _env_trusts():
        return True
    real = osp.realpath(filename)
    return any(osp.commonpath([real, d]) == d for d in _trusted_dirs)


def _check_format(filename: str) -> None:
    """Raise :class:`CheckpointLoadError` unless ``filename`` looks like a ``torch.save`` file."""
    if zipfile.is_zipfile(filename):
        with zipfile.ZipFile(filename) as zf:
            if any(n.endswith('/data.pkl') for n in zf.namelist()):
                return
        raise CheckpointLoadError(
            f'{filename} is a zip archive but not a PyTorch checkpoint (it has no data.pkl '
            f'record). Pass the .pth file that torch.save / the Runner wrote.')
    with open(filename, 'rb') as f:
        head = f.read(len(_LEGACY_MAGIC))
    if head != _LEGACY_MAGIC:
        size = osp.getsize(filename)
        raise CheckpointLoadError(
            f'{filename} ({size} bytes) is not a PyTorch checkpoint: it is neither a torch.save '
            f'zip archive nor a legacy torch.save file, or it was truncated while being written '
            f'or copied. Check the path (a log or config file?) and re-copy the file.')


def load_checkpoint_file(filename: str, map_location=None):
    """Load a local checkpoint safely (weights-only first; see the module docstring).

    Args:
        filename (str): Path of the checkpoint.
        map_location (str | callable, optional): Same as :func:`torch.load`.

    Returns:
        The unpickled checkpoint (usually a dict).

    Raises:
        FileNotFoundError: The file does not exist.
        CheckpointLoadError: Not a checkpoint, corrupt, or needs full unpickling without trust.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} can not be found')
    _check_format(filename)
    # Re-assert the allowlist on every load: leaving a torch.serialization.safe_globals(...)
    # context removes its globals process-wide, even ones patch_torch_load() had added.
    torch.serialization.add_safe_globals(safe_globals())
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e)
        if not any(m in reason for m in _UNSAFE_MARKERS):
            raise CheckpointLoadError(
                f'{filename} could not be read as a PyTorch checkpoint (corrupt or truncated?): '
                f'{reason.splitlines()[-1] if reason else type(e).__name__}') from e
        if _is_trusted(filename):
            from mmengine.logging import print_log
            print_log(f'{filename} holds objects outside the weights-only allowlist; loading it '
                      f'with full unpickling because it is trusted (inside '
                      f'{trusted_directories()} or {TRUST_ENV}=1).', logger='current')
            return torch.load(filename, map_location=map_location, weights_only=False)
        detail = next((ln for ln in reason.splitlines() if any(m in ln for m in _UNSAFE_MARKERS)),
                      reason)
        raise CheckpointLoadError(
            f'{filename} needs full unpickling, which can run arbitrary code: {detail.strip()} '
            f'It was not loaded because it lies outside this run\'s work_dir '
            f'({trusted_directories() or "none set"}). If you trust the file, set '
            f'{TRUST_ENV}=1 or copy it into the work_dir; or re-save it as a plain state_dict '
            f'(tools/extract_backbone.py does so for backbones). mmengine>0.10.7 may also fix '
            f'this.') from None
    except (RuntimeError, EOFError, KeyError, ValueError) as e:
        raise CheckpointLoadError(
            f'{filename} could not be read as a PyTorch checkpoint (corrupt or truncated?): '
            f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}') from e


def load_from_local(filename, map_location):
    """Replaces MMEngine's loader of the same name, which logs "by local backend" from it."""
    return load_checkpoint_file(filename, map_location)


def patch_torch_load(trusted_dirs: Optional[Iterable[str]] = None) -> None:
    """Make mmengine's checkpoint loading work under torch>=2.6 while staying safe.

    Idempotent. Registers :func:`safe_globals` with torch and replaces mmengine's local
    checkpoint loader (``CheckpointLoader`` scheme ``''``) by :func:`load_checkpoint_file`.

    Args:
        trusted_dirs (Iterable[str], optional): Directories (typically the run's ``work_dir``)
            whose checkpoints may be fully unpickled if the safe loader refuses them.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    torch.serialization.add_safe_globals(safe_globals())
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
    for d in trusted_dirs or ():
        trust_directory(d)


__all__ = ['CheckpointLoadError', 'TRUST_ENV', 'load_checkpoint_file', 'patch_torch_load',
           'safe_globals', 'trust_directory', 'trusted_directories']
