"""Dataset presence checks that run before the Runner is built (tools/train.py, tools/test.py).

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
"""
import copy
import os
import os.path as osp
import pickle
from itertools import islice
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from ..registry import DATASET_CHECKS

DOCS = 'docs/classification.md#1-data-preparation-nothing-is-downloaded'
DET_DOCS = 'docs/detection.md#1-prepare-coco-2014-nothing-is-downloaded'

CheckFn = Callable[[dict], List[str]]


class DatasetCheckError(FileNotFoundError):
    """The dataset a config points at is missing or malformed; the message says what and where."""


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
# CIFAR (mmpretrain's CIFAR10 / CIFAR100: python-pickle batches in one sub-folder)
_CIFAR_LAYOUT = {
    # type: (sub-folder, archive, files [(name, md5 or None)] when mmpretrain is absent)
    'CIFAR10': ('cifar-10-batches-py', 'cifar-10-python.tar.gz',
                [(f'data_batch_{i}', None) for i in range(1, 6)] + [('test_batch', None)]),
    'CIFAR100': ('cifar-100-python', 'cifar-100-python.tar.gz', [('train', None),
                                                                 ('test', None)]),
}
_OTHER_CIFAR = {'CIFAR10': 'CIFAR100', 'CIFAR100': 'CIFAR10'}


def _cifar_files(kind: str) -> Tuple[str, List[Tuple[str, Optional[str]]]]:
    """Sub-folder and (file, md5) list exactly as mmpretrain's dataset class will check them."""
    folder, _, files = _CIFAR_LAYOUT[kind]
    try:
        from mmpretrain import datasets as mmpretrain_datasets
        cls = getattr(mmpretrain_datasets, kind)
        return cls.base_folder, [tuple(f) for f in cls.train_list + cls.test_list]
    except ImportError:
        return folder, files


def _md5(path: str) -> str:
    import hashlib
    h = hashlib.md5()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


@register_dataset_check('CIFAR10', 'CIFAR100')
def check_cifar(dataset_cfg: dict) -> List[str]:
    """mmpretrain's CIFAR layout: ``<data_root>/cifar-100-python/{train,test}`` (CIFAR-100) or
    ``<data_root>/cifar-10-batches-py/{data_batch_1..5,test_batch}`` (CIFAR-10), every file a
    pickled batch with the md5 mmpretrain expects (it would otherwise try to download)."""
    kind = _type_name(dataset_cfg)
    root = join_path(dataset_cfg.get('data_root', ''), dataset_cfg.get('data_prefix', '') or '')
    if not root:
        return [f'{kind}: data_root is empty; set it to the folder that holds '
                f'{_CIFAR_LAYOUT[kind][0]}/']
    if is_remote(root):
        return []
    folder, files = _cifar_files(kind)
    base = osp.join(root, folder)
    if not osp.isdir(root):
        return [f'{kind}: data_root {_shown(root)} does not exist (looked for '
                f'{_shown(base)}/). Put the extracted {_CIFAR_LAYOUT[kind][1]} there or point '
                f'data_root at it.']
    if not osp.isdir(base):
        archive = osp.join(root, _CIFAR_LAYOUT[kind][1])
        other_folder = _CIFAR_LAYOUT[_OTHER_CIFAR[kind]][0]
        if osp.isfile(archive):
            hint = f'the archive {_shown(archive)} is there but not extracted: run ' \
                   f'`tar -xzf {_shown(archive)} -C {_shown(root)}`'
        elif all(osp.isfile(osp.join(root, f)) for f, _ in files):
            hint = f'the batch files lie directly in {_shown(root)}; mmpretrain expects them ' \
                   f'inside {folder}/ (move them, or set data_root to the parent folder)'
        elif osp.isdir(osp.join(root, other_folder)):
            hint = f'{_shown(root)} holds {other_folder}/ ({_OTHER_CIFAR[kind]}), but the ' \
                   f'config uses {kind}'
        else:
            hint = f'extract {_CIFAR_LAYOUT[kind][1]} into {_shown(root)}'
        return [f'{kind}: folder {_shown(base)}/ is missing; {hint}.']
    problems = []
    for name, md5 in files:
        path = osp.join(base, name)
        if not osp.isfile(path):
            problems.append(f'{kind}: file {_shown(path)} is missing')
            continue
        with open(path, 'rb') as f:
            head = f.read(2)
        if len(head) < 2 or head[0] != pickle.PROTO[0]:
            problems.append(f'{kind}: {_shown(path)} is not a pickled CIFAR batch (empty, or '
                            f'another format); re-extract the official archive')
        elif md5 is not None and _md5(path) != md5:
            problems.append(f'{kind}: {_shown(path)} does not have the md5 of the official file '
                            f'({md5}): corrupt or incomplete copy; re-extract the official '
                            f'archive')
    return problems


# --------------------------------------------------------------------------------------------
# ImageNet (mmpretrain's ImageNet: <root>/<split>/ by class folders, or + meta/<split>.txt)
_IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')


@register_dataset_check('ImageNet', 'CustomDataset')
def check_image_folder(dataset_cfg: dict) -> List[str]:
    """``<data_root>/<split or data_prefix>/`` with either ``meta/<split>.txt`` (lines
    ``relative/path.JPEG label``; mmpretrain finds it by itself) or one folder per class."""
    kind = _type_name(dataset_cfg)
    data_root = dataset_cfg.get('data_root', '') or ''
    split = dataset_cfg.get('split', '') or ''
    prefix = dataset_cfg.get('data_prefix', '') or ''
    if isinstance(prefix, dict):
        prefix = prefix.get('img_path', prefix.get('img', ''))
    prefix = prefix or split
    ann_file = dataset_cfg.get('ann_file', '') or ''
    if is_remote(data_root) or is_remote(prefix):
        return []
    if data_root and not osp.isdir(data_root):
        return [f'{kind}: data_root {_shown(data_root)} does not exist (looked for '
                f'{_shown(join_path(data_root, prefix))}/)']
    img_dir = join_path(data_root, prefix)
    if not osp.isdir(img_dir):
        present = sorted(d for d in islice(_listdir(data_root), 20)
                         if osp.isdir(osp.join(data_root, d))) if data_root else []
        return [f'{kind}: image folder {_shown(img_dir)}/ is missing'
                + (f' ({_shown(data_root)} holds {present})' if present else '')]
    if not ann_file and split:
        auto = osp.join(data_root, 'meta', f'{split}.txt')
        ann_file = auto if osp.isfile(auto) else ''
    else:
        ann_file = join_path(data_root, ann_file) if ann_file else ''
    if ann_file:
        return _check_ann_list(kind, ann_file, img_dir)
    entries = list(islice(_listdir(img_dir), 2000))
    classes = [e for e in entries if osp.isdir(osp.join(img_dir, e))]
    if not classes:
        images = [e for e in entries if e.lower().endswith(_IMG_EXTENSIONS)]
        # Unlabelled sets (with_label=False; mmpretrain's ImageNet 'test' split) are flat.
        unlabelled = dataset_cfg.get('with_label', True) is False or split == 'test'
        if images and unlabelled:
            return []
        if images:
            return [f'{kind}: {_shown(img_dir)}/ holds images directly but no annotation list; '
                    f'sort them into one folder per class or add '
                    f'{_shown(osp.join(data_root, "meta", (split or "val") + ".txt"))} '
                    f'(lines "filename label")']
        return [f'{kind}: {_shown(img_dir)}/ is empty (expected one folder per class, or a '
                f'meta/{split or "<split>"}.txt annotation list)']
    first = osp.join(img_dir, sorted(classes)[0])
    if not any(e.lower().endswith(_IMG_EXTENSIONS) for e in islice(_listdir(first), 50)):
        return [f'{kind}: class folder {_shown(first)}/ holds no images '
                f'({", ".join(_IMG_EXTENSIONS)})']
    return []


def _listdir(path: str) -> Iterator[str]:
    try:
        yield from sorted(os.listdir(path))
    except OSError:
        return


def _check_ann_list(kind: str, ann_file: str, img_dir: str) -> List[str]:
    if not osp.isfile(ann_file):
        return [f'{kind}: annotation file {_shown(ann_file)} is missing']
    with open(ann_file) as f:
        lines = [ln.strip() for ln in islice((ln for ln in f if ln.strip()), 3)]
    if not lines:
        return [f'{kind}: annotation file {_shown(ann_file)} is empty']
    problems = []
    for ln in lines:
        parts = ln.rsplit(' ', 1)
        if len(parts) != 2 or not parts[1].lstrip('-').isdigit():
            problems.append(f'{kind}: {_shown(ann_file)}: line {ln!r} is not '
                            f'"relative/path label"')
        elif not osp.isfile(osp.join(img_dir, parts[0])):
            problems.append(f'{kind}: {_shown(ann_file)} lists {parts[0]}, but '
                            f'{_shown(osp.join(img_dir, parts[0]))} is missing')
    return problems


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
    failed = [s for s in splits if any(w.startswith(f'{s}_') for ws in found.values() for w in ws)]
    keys = set_data_root(copy.deepcopy(cfg), 'DIR', failed)
    docs = DET_DOCS if cfg.get('default_scope') == 'mmdet' else DOCS
    raise DatasetCheckError(
        f'Dataset check failed (nothing was downloaded; runs are offline):\n{lines}\n'
        f'Prepare the data as described in {docs}, then point the run at it with '
        f'--data-root DIR, which sets {", ".join(keys)} (or set those keys in the config).')


__all__ = ['DATASET_CHECKS', 'SPLITS', 'DatasetCheckError', 'check_cifar', 'check_datasets',
           'check_evaluator', 'check_generic', 'check_image_folder', 'find_problems',
           'is_remote', 'join_path', 'register_dataset_check', 'set_data_root']
