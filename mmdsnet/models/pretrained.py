"""Loading an ImageNet classification checkpoint into a backbone, loudly.

mmengine's ``Pretrained`` initializer loads with ``strict=False`` and only lists the keys that did
not match, so a wrong file or a wrong ``prefix`` silently leaves a detector training its backbone
from scratch. :class:`StrictPretrained` is registered as ``Pretrained`` in mmdsnet's scope
(:data:`mmdsnet.registry.WEIGHT_INITIALIZERS`): DSNet's ``init_cfg=dict(type='Pretrained', ...)``
resolves to it, and any other model can ask for it as ``type='mmdsnet.Pretrained'``. It takes
mmengine's arguments (``checkpoint``, ``prefix``, ``map_location``) and, through
:func:`load_pretrained`:

* reads a plain state dict, or the ``'state_dict'`` of a checkpoint saved by MMEngine's Runner,
  through MMEngine's ``CheckpointLoader`` (local files by
  :func:`mmdsnet.compat.load_checkpoint_file`, i.e. ``torch.load(weights_only=True)``, widened
  to exactly the types a Runner checkpoint pickles: MMEngine ``HistoryBuffer`` objects and
  numpy arrays); keeps the keys starting with ``prefix`` (``'backbone.'`` for an mmpretrain
  ``ImageClassifier`` checkpoint) and strips it, and strips DDP's ``module.``
  (:func:`select_prefix`);
* logs ONE line ``loaded N/M backbone tensors from FILE (prefix 'backbone.')`` (``M`` counts
  every entry of the backbone's ``state_dict``: parameters and buffers), plus the missing and
  unexpected keys when there are any;
* raises :class:`PretrainedMismatchError`, naming the file, the prefix and the first keys found
  vs expected, when a shape differs or fewer than ``min_fraction`` (90%) of the backbone's
  tensors matched.

Tensors the checkpoint lacks keep the value the other ``init_cfg`` entries (run first) or the
constructor gave them.

Checkpoint keys are the module names (``layer1.aggregation.norms.0.weight``, as
``named_parameters()`` says). A checkpoint saved with the older keys of the dense shortcuts
(:func:`rename_old_keys`) is refused by every loader (DSNet's load-state-dict pre-hook,
:func:`compare_state_dicts`) with :class:`OldCheckpointKeysError`, which names the conversion
command, ``python tools/convert_checkpoint.py OLD.pth NEW.pth``.
"""
import os
import re
from collections import OrderedDict
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import torch
from mmengine.logging import print_log
from mmengine.model.weight_init import PretrainedInit, update_init_info
from mmengine.runner import CheckpointLoader
from torch import nn

from ..registry import WEIGHT_INITIALIZERS
from ..utils import preview

__all__ = ['MIN_FRACTION', 'OldCheckpointKeysError', 'PretrainedMismatchError',
           'ShortcutActMismatchError', 'StrictPretrained', 'compare_state_dicts',
           'load_pretrained', 'pretrained_cfg', 'read_state_dict', 'refuse_old_keys',
           'rename_old_keys', 'select_prefix']

#: Fewer matched backbone tensors than this fraction means a wrong file or prefix.
MIN_FRACTION = 0.9


class PretrainedMismatchError(RuntimeError):
    """The checkpoint named in a ``Pretrained`` init_cfg does not fit the backbone."""


class OldCheckpointKeysError(PretrainedMismatchError):
    """The checkpoint uses the keys of the dense shortcuts from before they were one module."""


class ShortcutActMismatchError(PretrainedMismatchError):
    """The checkpoint was trained with another activation after the dense sum
    (``shortcut_act``) than the model has."""


# The keys a stage's dense shortcuts and DS2's inner shortcut were saved under before they became
# one DenseAggregation child -> their module names. (^|\.) keeps any prefix (backbone., module.).
_OLD_KEYS = (
    (re.compile(r'(^|\.)(layer\d+)\.(norms|shortcuts)\.'), r'\1\2.aggregation.\3.'),
    (re.compile(r'(^|\.)(layer\d+\.\d+)\.inner_norm\.'), r'\1\2.inner_aggregation.norms.0.'),
    (re.compile(r'(^|\.)(layer\d+\.\d+)\.inner_shortcut\.'),
     r'\1\2.inner_aggregation.shortcuts.0.'),
)


def _with_metadata(state_dict: Dict[str, torch.Tensor], like: Dict[str, torch.Tensor],
                   module_name=lambda name: name) -> 'OrderedDict[str, torch.Tensor]':
    """``state_dict`` as an OrderedDict carrying ``like``'s per-module metadata (torch's
    ``_metadata``: versions, DSNet's ``shortcut_act``), each module name mapped by
    ``module_name`` (None drops it). Without it, a re-keyed copy would lose what the tensors
    cannot say."""
    out = OrderedDict(state_dict)
    metadata = getattr(like, '_metadata', None)
    if metadata is not None:
        out._metadata = OrderedDict(
            (module_name(k), v) for k, v in metadata.items() if module_name(k) is not None)
    return out


def _new_key(key: str) -> str:
    for old, new in _OLD_KEYS:
        key = old.sub(new, key, count=1)
    return key


def rename_old_keys(state_dict: Dict[str, torch.Tensor]
                    ) -> Tuple['OrderedDict[str, torch.Tensor]', Dict[str, str]]:
    """``state_dict`` with the old dense-shortcut keys renamed to the module names, in the same
    order, and ``{old key: new key}`` of what was renamed.

    ``layerK.norms.{i}.*`` -> ``layerK.aggregation.norms.{i}.*``,
    ``layerK.shortcuts.{j}.weight`` -> ``layerK.aggregation.shortcuts.{j}.weight``,
    ``layerK.{b}.inner_norm.*`` -> ``layerK.{b}.inner_aggregation.norms.0.*``,
    ``layerK.{b}.inner_shortcut.weight`` -> ``layerK.{b}.inner_aggregation.shortcuts.0.weight``;
    any prefix (``backbone.``) is kept.
    """
    renamed = {k: _new_key(k) for k in state_dict}
    return (_with_metadata(((renamed[k], v) for k, v in state_dict.items()), state_dict),
            {k: n for k, n in renamed.items() if n != k})


def refuse_old_keys(keys: Iterable[str], checkpoint: Optional[str] = None) -> None:
    """Raise :class:`OldCheckpointKeysError`, naming the conversion command (with the file
    ``checkpoint`` where known), when any of ``keys`` is an old dense-shortcut key
    (:func:`rename_old_keys`)."""
    old = [k for k in keys if _new_key(k) != k]
    if old:
        raise OldCheckpointKeysError(
            f'{checkpoint or "The checkpoint"} was saved with the old keys of the dense '
            f'shortcuts ({len(old)} keys, e.g. {old[0]!r}, now {_new_key(old[0])!r}). Convert it '
            f'once with `python tools/convert_checkpoint.py {checkpoint or "OLD.pth"} NEW.pth` '
            f'and load NEW.pth instead.')


def pretrained_cfg(init_cfg) -> Optional[dict]:
    """Return the ``Pretrained`` entry of an ``init_cfg`` (dict or list of dicts), else None."""
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    found = [c for c in cfgs if isinstance(c, dict) and (
        c.get('type') in ('Pretrained', 'mmdsnet.Pretrained')
        or isinstance(c.get('type'), type) and issubclass(c['type'], PretrainedInit))]
    if len(found) > 1:
        raise ValueError(f'init_cfg has {len(found)} Pretrained entries; give one: {init_cfg}')
    return found[0] if found else None


def read_state_dict(filename: str, map_location='cpu') -> Dict[str, torch.Tensor]:
    """Read the model weights of ``filename``: its ``'state_dict'``, or the file itself.

    Read by MMEngine's ``CheckpointLoader``: local files by
    :func:`mmdsnet.compat.load_checkpoint_file` (weights-only), ``scheme://`` addresses by
    MMEngine's loader for the scheme.

    Raises:
        FileNotFoundError: ``filename`` is neither a local file nor a ``scheme://`` address.
    """
    if '://' not in filename and not os.path.isfile(filename):
        raise FileNotFoundError(
            f'Pretrained checkpoint {filename!r} does not exist (cwd {os.getcwd()}). Produce it '
            f'with the ImageNet classification config (configs/mmpretrain/...) and copy the '
            f'last checkpoint there, fix model.backbone.init_cfg.checkpoint, or start the '
            f'backbone from scratch on purpose with model.backbone.init_cfg=None.')
    ckpt = CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    if isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'), dict):
        ckpt = ckpt['state_dict']
    if not isinstance(ckpt, dict):
        raise PretrainedMismatchError(
            f'{filename} holds a {type(ckpt).__name__}, not a state dict or a checkpoint '
            f'with a "state_dict" entry')
    return ckpt


def select_prefix(state_dict: Dict[str, torch.Tensor],
                  prefix: str = '') -> Dict[str, torch.Tensor]:
    """The entries whose key starts with ``prefix``, with it removed, after removing the
    ``module.`` of a state dict saved from a DDP-wrapped model; the modules' metadata follows
    the same renaming."""
    def strip(key: str) -> Optional[str]:
        key = key[len('module.'):] if key.startswith('module.') else key
        return key[len(prefix):] if key.startswith(prefix) else None

    def module_name(name: str) -> Optional[str]:  # a module 'a.b' owns the keys 'a.b.*'
        key = strip(name + '.')
        return None if key is None else key[:-1]

    out = OrderedDict((strip(k), v) for k, v in state_dict.items() if strip(k) is not None)
    return _with_metadata(out, state_dict, module_name)


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
                         f'{preview(self.mismatched, 3)}')
        if self.missing:
            parts.append(f'{len(self.missing)} missing, e.g. {preview(self.missing, 3)}')
        if self.unexpected:
            parts.append(f'{len(self.unexpected)} unexpected, e.g. {preview(self.unexpected, 3)}')
        return '; '.join(parts) or 'every tensor matches'


def compare_state_dicts(target: Dict[str, torch.Tensor], source: Dict[str, torch.Tensor],
                        checkpoint: Optional[str] = None) -> StateDictMatch:
    """Match ``source`` (a checkpoint's tensors) against ``target`` (a module's state dict).

    ``module.`` prefixes of DDP-wrapped saves are ignored. Old dense-shortcut keys raise
    :class:`OldCheckpointKeysError` (:func:`refuse_old_keys`), naming the file ``checkpoint``.
    """
    refuse_old_keys(source, checkpoint)
    source = select_prefix(source)
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
    source = select_prefix(raw, prefix)
    target = module.state_dict()
    cmp = compare_state_dicts(target, source, checkpoint)
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
            f'{preview(shapes, 3)}. {fix}')
    num, total = len(matched), len(target)
    if num < min_fraction * total:
        raise PretrainedMismatchError(
            f'only {num}/{total} {name} tensors matched in {where}, fewer than '
            f'{min_fraction:.0%}: a wrong file or prefix. First keys found: '
            f'{preview(raw, 5)}; first keys expected: {preview(prefix + k for k in target)}. '
            f'{fix}')
    module.load_state_dict(_with_metadata({k: source[k] for k in matched}, source),
                           strict=False)
    print_log(f'loaded {num}/{total} {name} tensors from {checkpoint} (prefix {prefix!r})',
              logger='current')
    if missing:
        print_log(f'{name} tensors missing from {where}, left at their initial value: '
                  f'{preview(missing, 10)}', logger='current')
    if unexpected:
        print_log(f'checkpoint tensors under {prefix!r} that the {name} does not have, '
                  f'ignored: {preview(unexpected, 10)}', logger='current')
    return num, total


@WEIGHT_INITIALIZERS.register_module(name='Pretrained')
class StrictPretrained(PretrainedInit):
    """MMEngine's ``Pretrained`` initializer that logs how much it loaded and refuses a checkpoint
    that does not fit (:func:`load_pretrained`).

    Args:
        checkpoint (str): Path (or ``scheme://`` address) of the checkpoint.
        prefix (str, optional): The prefix of the module's keys in the checkpoint, e.g.
            ``'backbone.'``. Defaults to None (the whole checkpoint).
        map_location (str): Defaults to ``'cpu'``.
        min_fraction (float): Least fraction of the module's tensors that must match.
            Defaults to :data:`MIN_FRACTION`.
    """

    def __init__(self, checkpoint: str, prefix: Optional[str] = None, map_location='cpu',
                 min_fraction: float = MIN_FRACTION) -> None:
        super().__init__(checkpoint, prefix=prefix, map_location=map_location)
        self.min_fraction = min_fraction

    def __call__(self, module: nn.Module) -> None:
        load_pretrained(module, self.checkpoint, prefix=self.prefix,
                        map_location=self.map_location, min_fraction=self.min_fraction)
        if hasattr(module, '_params_init_info'):  # MMEngine's per-parameter init report
            update_init_info(module, init_info=self._get_init_info())
