"""Pre-run check of mmpretrain's CIFAR10 / CIFAR100 folders (see :mod:`.checks`).

mmpretrain downloads CIFAR when its files are missing or have another md5; on an offline machine
that fails deep inside the dataset. Here the folder, the files and their md5 are checked first.
"""
import os.path as osp
import pickle
from typing import List, Optional, Tuple

from .checks import _shown, _type_name, is_remote, join_path, register_dataset_check

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


