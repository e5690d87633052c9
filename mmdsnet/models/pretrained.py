"""Loading an ImageNet classification checkpoint into a backbone, loudly.

mmengine's ``PretrainedInit`` loads with ``strict=False`` and only lists the keys that did not
match, so a wrong file or a wrong ``prefix`` silently leaves a detector training its backbone
from scratch. :func:`load_pretrained` is what :meth:`mmdsnet.models.DSNet.init_weights` calls
for an ``init_cfg=dict(type='Pretrained', ...)`` entry instead. It:

* reads a plain state dict, or the ``'state_dict'`` of a checkpoint saved by MMEngine's Runner
  (``mmengine.runner.save_checkpoint``), keeps the keys starting with ``prefix`` (``'backbone.'``
  for an mmpretrain ``ImageClassifier`` checkpoint) and strips it, and strips DDP's ``module.``;
* logs ONE line ``loaded N/M backbone tensors from FILE (prefix 'backbone.')`` (``M`` counts
  every entry of the backbone's ``state_dict``: parameters and buffers), plus the missing and
  unexpected keys when there are any;
* raises :class:`PretrainedMismatchError`, naming the file, the prefix and the first keys found
  vs expected, when a shape differs or fewer than ``min_fraction`` (90%) of the backbone's
  tensors matched.

Local checkpoints are read by :func:`mmdsnet.compat.load_checkpoint_file`: a plain state dict
with ``torch.load(weights_only=True)``; a Runner checkpoint, whose ``message_hub`` pickles
MMEngine ``HistoryBuffer`` objects and numpy arrays, with ``weights_only=True`` widened to
exactly those types; anything else only when trusted (``MMDSNET_TRUST_CHECKPOINTS=1``).
"""
import os
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import torch
from mmengine.logging import print_log
from torch import nn

__all__ = ['PretrainedMismatchError', 'load_pretrained', 'read_state_dict', 'pretrained_cfg']

#: Fewer matched backbone tensors than this fraction means a wrong file or prefix.
MIN_FRACTION = 0.9


class PretrainedMismatchError(RuntimeError):
    """The checkpoint named in a ``Pretrained`` init_cfg does not fit the backbone."""


def pretrained_cfg(init_cfg) -> Optional[dict]:
    """Return the ``Pretrained`` entry of an ``init_cfg`` (dict or list of dicts), else None."""
    from mmengine.model.weight_init import PretrainedInit
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    found = [c for c in cfgs if isinstance(c, dict)
             and c.get('type') in ('Pretrained', PretrainedInit)]
    if len(found) > 1:
        raise ValueError(f'init_cfg has {len(found)} Pretrained entries; give one: {init_cfg}')
    return found[0] if found else None


def _load_local(filename: str, map_location):
    """A local checkpoint through :func:`mmdsnet.compat.load_checkpoint_file` (weights-only)."""
    try:
        from ..compat import load_checkpoint_file
    except ImportError:  # pragma: no cover  (compat ships with mmdsnet)
        return torch.load(filename, map_location=map_location, weights_only=True)
    # No torch.serialization.safe_globals(...) context here: leaving one removes its globals
    # process-wide; load_checkpoint_file allowlists the Runner's types itself.
    return load_checkpoint_file(filename, map_location=map_location)


def read_state_dict(filename: str, map_location='cpu') -> Dict[str, torch.Tensor]:
    """Read the model weights of ``filename``: its ``'state_dict'``, or the file itself.

    Local files go through :func:`mmdsnet.compat.load_checkpoint_file` (weights-only); a
    ``scheme://`` address that is not a local file goes through MMEngine's ``CheckpointLoader``.

    Raises:
        FileNotFoundError: ``filename`` is neither a local file nor a ``scheme://`` address.
    """
    if os.path.isfile(filename):
        ckpt = _load_local(filename, map_location)
    elif '://' in filename:
        from mmengine.runner import CheckpointLoader
        ckpt = CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    else:
        raise FileNotFoundError(
            f'Pretrained checkpoint {filename!r} does not exist (cwd {os.getcwd()}). Produce it '
            f'with the ImageNet classification config (configs/mmpretrain/...) and copy the '
            f'last checkpoint there, fix model.backbone.init_cfg.checkpoint, or start the '
            f'backbone from scratch on purpose with model.backbone.init_cfg=None.')
    if isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'), dict):
        ckpt = ckpt['state_dict']
    if not isinstance(ckpt, dict):
        raise PretrainedMismatchError(
            f'{filename} holds a {type(ckpt).__name__}, not a state dict or a checkpoint '
            f'with a "state_dict" entry')
    return ckpt


def _strip(state_dict: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in state_dict.items():
        if k.startswith('module.'):  # saved from a DDP-wrapped model
            k = k[len('module.'):]
        if k.startswith(prefix):
            out[k[len(prefix):]] = v
    return out


def _first(keys: Iterable[str], n: int = 5) -> List[str]:
    keys = list(keys)
    return keys[:n] + ([f'... ({len(keys) - n} more)'] if len(keys) > n else [])


class StateDictMatch(NamedTuple):
    """How a checkpoint's tensors line up with a module's (:func:`compare_state_dicts`)."""
    matched: List[str]      # same key, same shape
    mismatched: List[str]   # same key, other shape
    missing: List[str]      # in the module only
    unexpected: List[str]   # in the checkpoint only
    total: int              # entries of the module's state dict

    def describe(self) -> str:
        parts = []
        if self.mismatched:
            parts.append(f'{len(self.mismatched)} with another shape, e.g. '
                         f'{_first(self.mismatched, 3)}')
        if self.missing:
            parts.append(f'{len(self.missing)} missing, e.g. {_first(self.missing, 3)}')
        if self.unexpected:
            parts.append(f'{len(self.unexpected)} unexpected, e.g. {_first(self.unexpected, 3)}')
        return '; '.join(parts) or 'every tensor matches'


def compare_state_dicts(target: Dict[str, torch.Tensor],
                        source: Dict[str, torch.Tensor]) -> StateDictMatch:
    """Match ``source`` (a checkpoint's tensors) against ``target`` (a module's state dict).

    ``module.`` prefixes of DDP-wrapped saves are ignored.
    """
    source = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in source.items()}
    shared = [k for k in target if k in source]
    return StateDictMatch(
        matched=[k for k in shared if tuple(source[k].shape) == tuple(target[k].shape)],
        mismatched=[k for k in shared if tuple(source[k].shape) != tuple(target[k].shape)],
        missing=[k for k in target if k not in source],
        unexpected=[k for k in source if k not in target],
        total=len(target))


def load_pretrained(module: nn.Module,
                    checkpoint: str,
                    prefix: Optional[str] = None,
                    map_location='cpu',
                    min_fraction: float = MIN_FRACTION,
                    name: str = 'backbone') -> Tuple[int, int]:
    """Load ``checkpoint`` into ``module``; log how much matched; fail when too little did.

    Args:
        module (nn.Module): The module to fill (a DSNet backbone).
        checkpoint (str): Path (or ``scheme://`` address) of the checkpoint.
        prefix (str, optional): Keep only the keys starting with it and strip it, e.g.
            ``'backbone.'`` for an mmpretrain classifier checkpoint. Defaults to None (all keys).
        map_location: Passed to ``torch.load``. Defaults to ``'cpu'``.
        min_fraction (float): Least fraction of ``module``'s state-dict entries that must be
            found with the right shape. Defaults to 0.9.
        name (str): What ``module`` is, for the messages. Defaults to ``'backbone'``.

    Returns:
        tuple[int, int]: ``(N, M)``: tensors loaded, tensors in ``module``'s state dict.

    Raises:
        PretrainedMismatchError: a shape differs, or fewer than ``min_fraction`` matched.
    """
    prefix = prefix or ''
    raw = read_state_dict(checkpoint, map_location)
    source = _strip(raw, prefix)
    target = module.state_dict()
    cmp = compare_state_dicts(target, source)
    matched, mismatched, missing, unexpected = (cmp.matched, cmp.mismatched, cmp.missing,
                                                cmp.unexpected)
    where = f'{checkpoint} (prefix {prefix!r})'
    fix = (f'Check model.{name}.init_cfg: the checkpoint must come from a classifier whose '
           f'backbone has the same architecture (depth, block_cfg, shortcut, base_channels), '
           f'and prefix must be what its keys start with (\'backbone.\' for an mmpretrain '
           f'ImageClassifier, None for a bare backbone state dict).')
    if mismatched:
        shapes = [f'{k}: checkpoint {tuple(source[k].shape)} vs {name} '
                  f'{tuple(target[k].shape)}' for k in mismatched]
        raise PretrainedMismatchError(
            f'{len(mismatched)} {name} tensors of {where} have the wrong shape: '
            f'{_first(shapes, 3)}. {fix}')
    num, total = len(matched), len(target)
    if num < min_fraction * total:
        raise PretrainedMismatchError(
            f'only {num}/{total} {name} tensors matched in {where}, fewer than '
            f'{min_fraction:.0%}: a wrong file or prefix. First keys found: '
            f'{_first(raw, 5)}; first keys expected: {_first(prefix + k for k in target)}. '
            f'{fix}')
    module.load_state_dict({k: source[k] for k in matched}, strict=False)
    print_log(f'loaded {num}/{total} {name} tensors from {checkpoint} (prefix {prefix!r})',
              logger='current')
    if missing:
        print_log(f'{name} tensors missing from {where}, left at their initial value: '
                  f'{_first(missing, 10)}', logger='current')
    if unexpected:
        print_log(f'checkpoint tensors under {prefix!r} that the {name} does not have, '
                  f'ignored: {_first(unexpected, 10)}', logger='current')
    return num, total
