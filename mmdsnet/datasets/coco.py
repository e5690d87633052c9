"""COCO 2014 layout checks, and ``Coco2014Dataset``: mmdet's CocoDataset that runs them first.

Without them, an incomplete COCO folder fails deep inside pycocotools (a missing json) or, worse,
hours into training (the first missing image). Here a run stops before it starts and says which
annotation file or image folder is missing, and how many of the images its json lists are on disk.

The checks are plain Python (json + os) so that ``tools/data/prepare_coco2014.py`` can use them
without mmdet. :func:`check_coco_dataset` is registered with :mod:`mmdsnet.datasets.checks` for
``CocoDataset`` and ``Coco2014Dataset``, so tools/train.py's pre-run dataset check covers COCO.
:class:`Coco2014Dataset` is registered in mmdet's ``DATASETS`` when this module is imported (the
detection configs list ``'mmdsnet.datasets.coco'`` in ``custom_imports``; the checks framework
imports it too). ``import mmdsnet`` alone never imports this module, and so never mmdet.
"""
import json
import logging
import os
import os.path as osp
import warnings
from typing import Dict, Iterable, List, Optional, Tuple

from mmengine.logging import print_log

from .checks import DatasetCheckError, _is_remote, _join, register_dataset_check

__all__ = [
    'COCO2014_SPLITS', 'CocoLayoutError', 'CocoAnnotationError', 'audit_annotations',
    'describe_audit', 'check_ann_file', 'check_img_dir', 'check_images',
    'check_coco_split', 'check_coco_dataset', 'read_file_names'
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


#: What mmdet's CocoDataset silently does with each kind of doubtful annotation.
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
    names = sorted(os.listdir(folder))
    shown = names[:limit] + ([f'... ({len(names) - limit} more)'] if len(names) > limit else [])
    return f'{osp.abspath(folder)} holds {shown}'


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
            f'{osp.abspath(img_dir)} ({len(missing)} missing, e.g. {missing[:3]}). An interrupted download or '
            f'unzip, or images of another split (2014 names look like '
            f'COCO_val2014_000000000042.jpg, 2017 names like 000000000042.jpg). {LAYOUT_HINT}')
    return listed, found


def check_coco_split(ann_file: str, img_dir: str, expected: Optional[int] = None
                     ) -> Tuple[int, int]:
    """Check one split (json + image folder) completely; see :func:`check_images`."""
    check_ann_file(ann_file)
    return check_images(read_file_names(ann_file), img_dir, ann_file, expected)


@register_dataset_check('CocoDataset', 'Coco2014Dataset')
def check_coco_dataset(dataset_cfg: dict) -> List[str]:
    """Pre-run check of a COCO-format dataset config (see :mod:`mmdsnet.datasets.checks`).

    Cheap on a complete folder (two ``stat`` calls): the full count of listed vs found images
    happens in :class:`Coco2014Dataset` after its own json parse. Only when the image folder is
    missing or empty is the json read here, to say how many images it lists.
    """
    root = dataset_cfg.get('data_root', '') or ''
    ann_file = dataset_cfg.get('ann_file', '') or ''
    prefix = dataset_cfg.get('data_prefix', {}) or {}
    img_dir = _join(root, prefix.get('img', '') if isinstance(prefix, dict) else prefix)
    if not ann_file or _is_remote(root) or _is_remote(ann_file):
        return []
    ann_file = _join(root, ann_file)
    try:
        check_ann_file(ann_file)
        if not osp.isdir(img_dir) or not os.listdir(img_dir):
            names = read_file_names(ann_file)
            check_img_dir(img_dir, len(names), ann_file)
            check_images(names, img_dir, ann_file)
    except CocoLayoutError as e:
        return [str(e)]
    return []


try:
    from mmdet.datasets import CocoDataset as _CocoDataset
    from mmdet.registry import DATASETS as _DATASETS
except ImportError as _e:  # mmdsnet[det] not installed, or mmcv built without its ops
    _CocoDataset = None
    warnings.warn(f'mmdsnet.datasets.coco: mmdet is not importable ({_e}), so Coco2014Dataset '
                  f'is not registered; the layout checks still work.')

if _CocoDataset is not None:  # a module-level class, so dataloader workers can pickle it

    @_DATASETS.register_module()
    class Coco2014Dataset(_CocoDataset):
        """mmdet's ``CocoDataset`` that checks the COCO layout before loading it.

        Before pycocotools reads the json, a missing annotation file or image folder is named
        (with what its parent folder holds); after, the images the json lists are counted on disk
        and a run with missing images stops with both counts. Remote paths (``s3://...``) are
        not checked. Same arguments as ``CocoDataset``, plus:

        Args:
            check_images (bool): Count the listed images on disk (one ``listdir``).
                Defaults to True.
        """

        def __init__(self, *args, check_images: bool = True, **kwargs) -> None:
            self._check_images = check_images
            super().__init__(*args, **kwargs)

        def load_data_list(self) -> List[dict]:
            img_dir = self.data_prefix.get('img', '') or self.data_root
            local = self.backend_args is None and not _is_remote(self.ann_file)
            if local:
                check_ann_file(self.ann_file)
                check_img_dir(img_dir, ann_file=self.ann_file)
            # mmdet deletes self.coco at the end of load_data_list; keep a handle for the audit.
            seen = []
            base_api = type(self).COCOAPI

            class _KeepHandle(base_api):

                def __init__(api, *args, **kwargs):
                    super().__init__(*args, **kwargs)
                    seen.append(api)

            self.COCOAPI = _KeepHandle
            try:
                data_list = super().load_data_list()
            except json.JSONDecodeError as e:
                size = osp.getsize(self.ann_file) if local else '?'
                raise CocoAnnotationError(
                    f'{self.ann_file} is not valid JSON ({e.msg} at line {e.lineno}, column '
                    f'{e.colno}; byte {e.pos} of {size}): a truncated download or copy? '
                    f'Re-extract it from annotations_trainval2014.zip. {LAYOUT_HINT}') from None
            finally:
                del self.COCOAPI  # back to the class attribute
            coco = seen[0]
            warning = describe_audit(
                audit_annotations(coco.anns.values(), coco.imgs, self.cat_ids), self.ann_file,
                len(coco.anns))
            if warning:
                print_log(warning, logger='current', level=logging.WARNING)
            if local and self._check_images:
                names = [osp.relpath(d['img_path'], img_dir) for d in data_list]
                check_images(names, img_dir, self.ann_file)
            return data_list

    __all__.append('Coco2014Dataset')
