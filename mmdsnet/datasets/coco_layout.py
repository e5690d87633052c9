"""COCO layout checks: annotation files, image folders, categories (no mmdet needed).

Without them, an incomplete COCO folder fails deep inside pycocotools (a missing json) or, worse,
hours into training (the first missing image), and a folder whose categories are not the
dataset's classes trains on nothing and dies in a raw traceback. Here a run stops before it starts
and says which annotation file or image folder is missing, how many of the images its json lists
are on disk, or which category names do not match.

The checks are plain Python (json + os) so that ``tools/data/prepare_coco2014.py`` can use them
without building a dataset. :func:`check_coco_dataset` is registered in
:data:`mmdsnet.registry.DATASET_CHECKS` for ``CocoDataset`` and ``Coco2014Dataset``, so the tools'
pre-run dataset check covers COCO; :class:`mmdsnet.datasets.coco.Coco2014Dataset` runs the rest
once mmdet has parsed the json.
"""
import json
import os
import os.path as osp
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..utils import preview
from .checks import DatasetCheckError, is_remote, join_path, register_dataset_check

__all__ = [
    'COCO2014_SPLITS', 'CocoLayoutError', 'CocoAnnotationError', 'audit_annotations',
    'describe_audit', 'check_ann_file', 'check_img_dir', 'check_images', 'check_categories',
    'check_coco_split', 'check_coco_dataset', 'coco_classes', 'read_categories',
    'read_file_names', 'unusable_annotations'
]

#: Image counts of the COCO 2014 splits (and val2017, which equals minival2014).
COCO2014_SPLITS: Dict[str, int] = {
    'train2014': 82783,
    'val2014': 40504,
    'minival2014': 5000,
    'valminusminival2014': 35504,
    'val2017': 5000,
}

LAYOUT_HINT = ('Expected layout (docs/detection.md): '
               'DATA_ROOT/annotations/instances_train2014.json, '
               'DATA_ROOT/annotations/instances_val2014.json, DATA_ROOT/train2014/*.jpg, '
               'DATA_ROOT/val2014/*.jpg; run `python tools/data/prepare_coco2014.py DATA_ROOT` to '
               'check a folder (and --make-minival to derive the minival2014 json).')


class CocoLayoutError(FileNotFoundError):
    """A COCO annotation file or image folder is missing or incomplete."""


class CocoAnnotationError(DatasetCheckError):
    """A COCO annotation file that cannot be parsed (truncated, not JSON)."""


#: What mmdet's CocoDataset silently does with each kind of doubtful annotation (all but the
#: last are dropped from training).
AUDIT_KINDS: Dict[str, str] = {
    'unknown category id': 'skipped (not among the dataset classes)',
    'unknown image id': 'never used (no such image in "images")',
    'box outside its image': 'skipped',
    'degenerate box (w or h < 1, or area <= 0)': 'skipped',
    'box partly outside its image': 'kept unclipped',
}


def audit_annotations(anns: Iterable[dict], imgs: Dict[int, dict],
                      cat_ids: Iterable[int]) -> Dict[str, List[int]]:
    """Annotation ids per doubtful kind (:data:`AUDIT_KINDS`), in mmdet's order of checks."""
    cat_ids = set(cat_ids)
    found: Dict[str, List[int]] = {k: [] for k in AUDIT_KINDS}
    for ann in anns:
        img = imgs.get(ann.get('image_id'))
        if img is None:
            kind = 'unknown image id'
        else:
            x, y, w, h = ann['bbox']
            width, height = img['width'], img['height']
            inter = (max(0, min(x + w, width) - max(x, 0)) *
                     max(0, min(y + h, height) - max(y, 0)))
            if inter == 0:
                kind = 'box outside its image'
            elif ann.get('area', w * h) <= 0 or w < 1 or h < 1:
                kind = 'degenerate box (w or h < 1, or area <= 0)'
            elif ann.get('category_id') not in cat_ids:
                kind = 'unknown category id'
            elif x < 0 or y < 0 or x + w > width or y + h > height:
                kind = 'box partly outside its image'
            else:
                continue
        found[kind].append(ann.get('id'))
    return {k: v for k, v in found.items() if v}


def unusable_annotations(found: Dict[str, List[int]]) -> int:
    """How many of :func:`audit_annotations`'s doubtful annotations mmdet drops."""
    return sum(len(ids) for kind, ids in found.items() if AUDIT_KINDS[kind] != 'kept unclipped')


def describe_audit(found: Dict[str, List[int]], ann_file: str, total: int) -> str:
    """One warning text for :func:`audit_annotations`'s result ('' when clean)."""
    if not found:
        return ''
    lines = [f'  - {len(ids)} with {kind} (e.g. annotation ids {ids[:3]}): {AUDIT_KINDS[kind]}'
             for kind, ids in found.items()]
    return (f'{ann_file}: {sum(map(len, found.values()))} of {total} annotations are doubtful; '
            f'training goes on as mmdet handles them:\n' + '\n'.join(lines) +
            '\nFix the annotation file if these boxes matter (ids as in its "annotations").')


def _listing(folder: str, limit: int = 10) -> str:
    if not osp.isdir(folder):
        return f'{osp.abspath(folder)} does not exist either'
    return f'{osp.abspath(folder)} holds {preview(sorted(os.listdir(folder)), limit)}'


def check_ann_file(ann_file: str) -> None:
    """Raise :class:`CocoLayoutError` naming ``ann_file`` (and what its folder holds) if absent."""
    if not osp.isfile(ann_file):
        raise CocoLayoutError(f'COCO annotation file missing: {osp.abspath(ann_file)} '
                              f'({_listing(osp.dirname(ann_file) or ".")}). {LAYOUT_HINT}')


def check_img_dir(img_dir: str, num_listed: Optional[int] = None, ann_file: str = '') -> None:
    """Raise :class:`CocoLayoutError` naming ``img_dir`` if it is not a folder."""
    if not osp.isdir(img_dir):
        listed = (f'; {ann_file} lists {num_listed} images in it' if num_listed is not None
                  else '')
        raise CocoLayoutError(f'COCO image folder missing: {osp.abspath(img_dir)}{listed} '
                              f'({_listing(osp.dirname(osp.normpath(img_dir)) or ".")}). '
                              f'{LAYOUT_HINT}')


def read_file_names(ann_file: str) -> List[str]:
    """The ``file_name`` of every image a COCO json lists (plain json, no pycocotools)."""
    check_ann_file(ann_file)
    with open(ann_file) as f:
        images = json.load(f).get('images')
    if not isinstance(images, list):
        raise CocoLayoutError(f'{ann_file} has no "images" list: not a COCO annotation file')
    return [im['file_name'] for im in images]


def check_images(file_names: Iterable[str], img_dir: str, ann_file: str = '',
                 expected: Optional[int] = None) -> Tuple[int, int]:
    """Count the listed images found in ``img_dir``; raise if any is missing.

    Args:
        file_names (Iterable[str]): Image file names relative to ``img_dir`` (the json's
            ``file_name`` fields).
        img_dir (str): The image folder.
        ann_file (str): The json they come from, for the message. Defaults to ``''``.
        expected (int, optional): The split's official image count; a json listing another
            number is reported as the wrong (or a truncated) annotation file.

    Returns:
        tuple[int, int]: ``(listed, found)``; equal when the check passes.

    Raises:
        CocoLayoutError: the folder is missing, some listed images are not in it, or the json
            lists another number of images than ``expected``.
    """
    file_names = list(file_names)
    listed = len(file_names)
    check_img_dir(img_dir, listed, ann_file)
    if expected is not None and listed != expected:
        raise CocoLayoutError(f'{ann_file} lists {listed} images, but this split has {expected}: '
                              f'a truncated or wrong annotation file. {LAYOUT_HINT}')
    on_disk = set(os.listdir(img_dir))  # one listdir instead of 80k stat calls
    missing = [n for n in file_names
               if (n not in on_disk if '/' not in n else not osp.isfile(osp.join(img_dir, n)))]
    found = listed - len(missing)
    if missing:
        raise CocoLayoutError(
            f'COCO images missing: {ann_file} lists {listed} images, only {found} are in '
            f'{osp.abspath(img_dir)} ({len(missing)} missing, e.g. {missing[:3]}). An '
            f'interrupted download or unzip, or images of another split (2014 names look like '
            f'COCO_val2014_000000000042.jpg, 2017 names like 000000000042.jpg). {LAYOUT_HINT}')
    return listed, found


def check_coco_split(ann_file: str, img_dir: str, expected: Optional[int] = None
                     ) -> Tuple[int, int]:
    """Check one split (json + image folder) completely; see :func:`check_images`."""
    check_ann_file(ann_file)
    return check_images(read_file_names(ann_file), img_dir, ann_file, expected)


# The key of a json's category list, looked for near its start and its end (read_categories).
_CATEGORIES_KEY = re.compile(rb'"categories"\s*:\s*\[')


def read_categories(ann_file: str, window: int = 1 << 20) -> List[dict]:
    """The ``categories`` of a COCO json, without parsing its images and annotations.

    Those are nearly all of a 300 MB train2014 json; its categories come last (COCO's files),
    or first (``json.dump`` of a dict built with them first). So the first and the last
    ``window`` bytes are searched for the list, and only when neither holds it is the whole file
    parsed.
    """
    check_ann_file(ann_file)
    size = osp.getsize(ann_file)
    with open(ann_file, 'rb') as f:
        chunks = [f.read(window)]
        if size > window:
            f.seek(max(size - window, window))
            chunks.append(f.read())
    decoder = json.JSONDecoder()
    for chunk in chunks:
        for match in _CATEGORIES_KEY.finditer(chunk):
            text = chunk[match.end() - 1:].decode('utf-8', errors='replace')
            try:
                cats, _ = decoder.raw_decode(text)
            except ValueError:  # cut by the window: parse the whole file below
                continue
            if all(isinstance(c, dict) and 'name' in c for c in cats):
                return cats
    with open(ann_file) as f:
        cats = json.load(f).get('categories')
    if not isinstance(cats, list):
        raise CocoLayoutError(f'{ann_file} has no "categories" list: not a COCO annotation file')
    return cats


def coco_classes() -> Tuple[str, ...]:
    """The 80 class names of mmdet's ``CocoDataset`` (what a config without
    ``metainfo=dict(classes=...)`` trains on)."""
    from mmdet.datasets import CocoDataset
    return tuple(CocoDataset.METAINFO['classes'])


def check_categories(ann_file: str, classes: Sequence[str]) -> List[str]:
    """Problems when the json's category names are not the dataset's ``classes``.

    mmdet keeps the annotations whose category name is one of the classes and silently drops the
    others; with no name in common nothing is left to train on (mmdet then fails with
    ``need at least one array to concatenate``).
    """
    names = [c['name'] for c in read_categories(ann_file)]
    if not names or set(names) & set(classes):
        return []
    return [f'none of the {len(names)} categories of {ann_file} ({preview(names)}) is among the '
            f'{len(classes)} classes the dataset trains ({preview(classes)}), so every '
            f'annotation would be dropped. For a dataset of your own, give every dataloader\'s '
            f'dataset metainfo=dict(classes=(...)) with its category names and set the bbox '
            f'head\'s num_classes; for COCO, check ann_file.']


@register_dataset_check('CocoDataset', 'Coco2014Dataset')
def check_coco_dataset(dataset_cfg: dict) -> List[str]:
    """Pre-run check of a COCO-format dataset config (see :mod:`mmdsnet.datasets.checks`).

    Cheap on a complete folder: a few ``stat`` calls and the json's category list
    (:func:`read_categories`), compared with the dataset's classes (its
    ``metainfo=dict(classes=...)``, else COCO's 80). The full count of listed vs found images
    happens in :class:`~mmdsnet.datasets.coco.Coco2014Dataset` after its own json parse. Only
    when the image folder is missing or empty is the whole json read here, to say how many images
    it lists.
    """
    root = dataset_cfg.get('data_root', '') or ''
    ann_file = dataset_cfg.get('ann_file', '') or ''
    prefix = dataset_cfg.get('data_prefix', {}) or {}
    img_dir = join_path(root, prefix.get('img', '') if isinstance(prefix, dict) else prefix)
    if not ann_file or is_remote(root) or is_remote(ann_file):
        return []
    ann_file = join_path(root, ann_file)
    try:
        check_ann_file(ann_file)
        if not osp.isdir(img_dir) or not os.listdir(img_dir):
            names = read_file_names(ann_file)
            check_img_dir(img_dir, len(names), ann_file)
            check_images(names, img_dir, ann_file)
        metainfo = dataset_cfg.get('metainfo') or {}
        classes = metainfo.get('classes') if isinstance(metainfo, dict) else None
        return check_categories(ann_file, classes or coco_classes())
    except CocoLayoutError as e:
        return [str(e)]
