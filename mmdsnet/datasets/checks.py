"""Dataset checks that run before the Runner is built (tools/train.py, tools/test.py).

A run pointed at a missing or malformed dataset must stop at once, naming what is missing and
where it looked, instead of failing minutes later inside a dataloader worker, or, worse, letting
mmpretrain try to download CIFAR on an offline machine.

Checks live in the MMEngine registry :data:`mmdsnet.registry.DATASET_CHECKS`, keyed by the
dataset's ``type`` (scope prefix ignored). Register one for another dataset type from a module the
config lists in ``custom_imports``::

    from mmdsnet.datasets.checks import register_dataset_check

    @register_dataset_check('MyDataset')
    def check_mine(dataset_cfg: dict) -> List[str]:
        ...  # return one line per problem; an empty list means the dataset looks fine

Types without a registered check get :func:`check_generic` (``data_root`` and ``ann_file`` exist).
An evaluator's ``ann_file`` (COCO's ``CocoMetric``) is checked with the dataloader of its split.
This module holds the registry and the walk through a config; the checks of each dataset live
beside it: :mod:`.cifar_layout` (CIFAR10/100), :mod:`.image_folder` (ImageNet, CustomDataset:
layout, class count, unreadable images), :mod:`.coco_layout` (COCO).
"""
import copy
import os
import os.path as osp
from typing import Callable, Dict, Iterable, Iterator, List, Tuple

from ..registry import DATASET_CHECKS

DOCS = 'docs/classification.md#1-data-preparation-nothing-is-downloaded'
DET_DOCS = 'docs/detection.md#1-prepare-coco-2014-nothing-is-downloaded'

CheckFn = Callable[[dict], List[str]]


class DatasetCheckError(FileNotFoundError):
    """The dataset a config points at is missing or malformed; the message says what and where."""


class ImageProblem(str):
    """A problem with the images themselves (unreadable files), not with where the data is: the
    fix is to replace the files, not ``--data-root``."""


def register_dataset_check(*type_names: str) -> Callable[[CheckFn], CheckFn]:
    """Register ``fn(dataset_cfg) -> list of problems`` for the given dataset ``type`` names."""

    def wrap(fn: CheckFn) -> CheckFn:
        DATASET_CHECKS.register_module(name=list(type_names), module=fn)
        return fn

    return wrap


def _type_name(dataset_cfg: dict) -> str:
    t = dataset_cfg.get('type', '')
    name = t.__name__ if isinstance(t, type) else str(t)
    return name.split('.')[-1]  # 'mmpretrain.CIFAR10' -> 'CIFAR10'


def is_remote(path: str) -> bool:
    """A ``scheme://`` address (s3, http ...): not checked on the local disk."""
    return '://' in str(path)


def _shown(path: str) -> str:
    """An absolute path for messages (users launch from different directories)."""
    return osp.abspath(osp.expanduser(path))


def join_path(root: str, path: str) -> str:
    """``path`` under the dataset's ``data_root``, as MMEngine's datasets join them."""
    if not path:
        return root
    path = osp.expanduser(path)
    return path if osp.isabs(path) or not root else osp.join(root, path)


# --------------------------------------------------------------------------------------------
def check_generic(dataset_cfg: dict) -> List[str]:
    """Fallback for unregistered types: ``data_root`` and a string ``ann_file`` must exist."""
    kind = _type_name(dataset_cfg) or 'dataset'
    data_root = dataset_cfg.get('data_root', '') or ''
    if data_root and not is_remote(data_root) and not osp.isdir(data_root):
        return [f'{kind}: data_root {_shown(data_root)} does not exist']
    ann_file = dataset_cfg.get('ann_file', '')
    if isinstance(ann_file, str) and ann_file and not is_remote(ann_file):
        path = join_path(data_root, ann_file)
        if not osp.exists(path):
            return [f'{kind}: ann_file {_shown(path)} does not exist']
    return []


SPLITS = ('train', 'val', 'test')


def _leaf_datasets(dataset_cfg, key: str) -> Iterator[Tuple[str, dict]]:
    """``(key, config)`` of the datasets inside wrappers (ConcatDataset's ``datasets``,
    RepeatDataset's ``dataset``); keys are spelled as ``--cfg-options`` takes them."""
    if not isinstance(dataset_cfg, dict):
        return
    if isinstance(dataset_cfg.get('datasets'), (list, tuple)):
        for i, d in enumerate(dataset_cfg['datasets']):
            yield from _leaf_datasets(d, f'{key}.datasets.{i}')
    elif isinstance(dataset_cfg.get('dataset'), dict):
        yield from _leaf_datasets(dataset_cfg['dataset'], f'{key}.dataset')
    else:
        yield key, dataset_cfg


def _datasets(cfg, split: str) -> Iterator[Tuple[str, dict]]:
    loader = cfg.get(f'{split}_dataloader')
    if isinstance(loader, dict):
        yield from _leaf_datasets(loader.get('dataset'), f'{split}_dataloader.dataset')


def _evaluators(cfg, split: str) -> Iterator[Tuple[str, dict]]:
    evaluator = cfg.get(f'{split}_evaluator')
    if isinstance(evaluator, dict):
        yield f'{split}_evaluator', evaluator
    elif isinstance(evaluator, (list, tuple)):
        for i, e in enumerate(evaluator):
            if isinstance(e, dict):
                yield f'{split}_evaluator.{i}', e


def check_evaluator(evaluator_cfg: dict) -> List[str]:
    """An evaluator's local ``ann_file`` (COCO's ``CocoMetric`` reads one) must exist."""
    ann_file = evaluator_cfg.get('ann_file')
    if isinstance(ann_file, str) and ann_file and not is_remote(ann_file) \
            and not osp.isfile(ann_file):
        return [f'{_type_name(evaluator_cfg) or "evaluator"}: ann_file {_shown(ann_file)} does '
                f'not exist']
    return []


def _same_file(evaluator_ann_file, dataset_ann_file) -> bool:
    """Whether an evaluator reads its split's annotation file (COCO's CocoMetric: data_root +
    ann_file, written out), whatever the data_root is now."""
    if not all(isinstance(f, str) and f and not is_remote(f)
               for f in (evaluator_ann_file, dataset_ann_file)) or osp.isabs(dataset_ann_file):
        return False
    ev, ds = osp.normpath(evaluator_ann_file), osp.normpath(dataset_ann_file)
    return ev == ds or ev.endswith(os.sep + ds)


def set_data_root(cfg, data_root: str, splits: Iterable[str] = SPLITS) -> List[str]:
    """Point the datasets the splits read at ``data_root``, and the evaluators that read the
    same annotation file with them (what the tools' ``--data-root`` does).

    Returns:
        list[str]: The keys set, as ``--cfg-options`` spells them.
    """
    keys = []
    for split in splits:
        for key, ds in _datasets(cfg, split):
            ds['data_root'] = data_root
            keys.append(f'{key}.data_root')
            for ev_key, ev in _evaluators(cfg, split):
                if _same_file(ev.get('ann_file'), ds.get('ann_file')):
                    ev['ann_file'] = osp.join(data_root, ds['ann_file'])
                    keys.append(f'{ev_key}.ann_file')
    return list(dict.fromkeys(keys))


def _problems(cfg, splits: Iterable[str]) -> Dict[str, List[str]]:
    """problem -> the loaders / evaluators that have it (train and val often share a root)."""
    found: Dict[str, List[str]] = {}
    for split in splits:
        checked = [(f'{split}_dataloader', ds, DATASET_CHECKS.get(_type_name(ds)) or check_generic)
                   for _, ds in _datasets(cfg, split)]
        checked += [(key, ev, check_evaluator) for key, ev in _evaluators(cfg, split)]
        for where, node, check in checked:
            for p in check(node):
                if where not in found.setdefault(p, []):
                    found[p].append(where)
    return found


def find_problems(cfg, splits: Iterable[str] = SPLITS) -> List[str]:
    """Problems of every dataset the config's ``<split>_dataloader`` uses, and of the files its
    ``<split>_evaluator`` reads, one line each, prefixed with where they are."""
    return [f'{", ".join(where)}: {p}' for p, where in _problems(cfg, splits).items()]


def check_datasets(cfg, splits: Iterable[str] = SPLITS) -> None:
    """Raise :class:`DatasetCheckError` if a dataset the given splits use is missing/malformed.

    The message lists the problems, where each one is, and the keys that ``--data-root`` would
    set for the splits that failed (so a config edited by hand gets all of them right).

    Args:
        cfg (Config | dict): The loaded config (after ``--cfg-options``).
        splits (Iterable[str]): Which ``<split>_dataloader`` / ``<split>_evaluator`` entries to
            check: train.py checks ``('train', 'val')``, test.py ``('test',)``.
    """
    found = _problems(cfg, splits)
    if not found:
        return
    lines = '\n'.join(f'  - {", ".join(where)}: {p}' for p, where in found.items())
    layout = {p: where for p, where in found.items() if not isinstance(p, ImageProblem)}
    hints = []
    if layout:
        failed = [s for s in splits
                  if any(w.startswith(f'{s}_') for ws in layout.values() for w in ws)]
        keys = set_data_root(copy.deepcopy(cfg), 'DIR', failed)
        docs = DET_DOCS if cfg.get('default_scope') == 'mmdet' else DOCS
        hints.append(f'Prepare the data as described in {docs}, then point the run at it with '
                     f'--data-root DIR, which sets {", ".join(keys)} (or set those keys in the '
                     f'config).')
    if len(layout) < len(found):
        hints.append('Fix the images named above, then start again: from the beginning, or, if '
                     'the run has saved checkpoints, from its last one with --resume (the check '
                     'runs again first).')
    raise DatasetCheckError(
        f'Dataset check failed (nothing was downloaded; runs are offline):\n{lines}\n'
        + '\n'.join(hints))

def __getattr__(name: str):
    """The per-dataset checks moved to their own modules; their names stay importable here."""
    if name == 'check_cifar':
        from .cifar_layout import check_cifar
        return check_cifar
    if name == 'check_image_folder':
        from .image_folder import check_image_folder
        return check_image_folder
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['DATASET_CHECKS', 'SPLITS', 'DatasetCheckError', 'ImageProblem', 'check_datasets',
           'check_evaluator', 'check_generic', 'find_problems', 'is_remote', 'join_path',
           'register_dataset_check', 'set_data_root']
