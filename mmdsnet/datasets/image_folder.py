"""Pre-run check of image-folder datasets: mmpretrain's ``ImageNet`` and ``CustomDataset``.

Besides the layout (``<data_root>/<split>/`` by class folders, or a ``meta/<split>.txt`` list), it
checks what would otherwise stop a run late:

* **the class count.** In the folder layout mmpretrain numbers the classes by the sorted folder
  names and asserts that there are as many folders as classes (ImageNet: 1000). A subset of
  ImageNet fails that assertion when the dataset is built, and would get other labels than the
  full set if it passed.
* **unreadable images.** mmcv's ``LoadImageFromFile`` raises on an image it cannot decode. In
  validation (and test) that stops the run, possibly after a whole training epoch, so every image
  of those splits has its header read here (PIL; about 0.15 ms per small file in the page cache,
  docs/robustness.md). Training pipelines that load with
  :class:`~mmdsnet.datasets.transforms.LoadImageOrSkip` skip such an image with a warning, so
  there only a sample is read (the first images of each class folder, at most
  :data:`SKIP_SAMPLE`), to catch a copy that is broken as a whole. ``MMDSNET_IMAGE_CHECK=full``
  reads every image of every split, ``=off`` none; a split of more than :data:`FULL_LIMIT` images
  is sampled evenly, and the log says so.
"""
import logging
import os
import os.path as osp
import time
from itertools import islice
from typing import Iterator, List, Optional, Sequence, Tuple

from .checks import ImageProblem, _shown, _type_name, is_remote, join_path, register_dataset_check

_IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')
#: mmpretrain's ImageNet / CustomDataset default ``extensions`` (the files they read).
DATASET_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif')
IMAGENET_CLASSES = 1000
IMAGE_CHECK_ENV = 'MMDSNET_IMAGE_CHECK'
#: Above this many images a split is sampled evenly (100k headers: about 2 min on a 2-core box).
FULL_LIMIT = 100_000
#: Images read per class folder of a split whose pipeline skips unreadable images ...
PER_CLASS_SAMPLE = 2
#: ... and at most this many in all (an even sample; also of an annotation list).
SKIP_SAMPLE = 2000
#: Such a sample stops the run from this share of unreadable images on (a broken copy); fewer
#: are only named in a warning (training skips them).
BROKEN_SHARE = 0.1


def _listdir(path: str) -> Iterator[str]:
    try:
        yield from sorted(os.listdir(path))
    except OSError:
        return


def _log(msg: str, level: int = logging.INFO) -> None:
    try:
        from mmengine.logging import print_log
        print_log(msg, logger='current', level=level)
    except ImportError:  # the checks also run without mmengine (prepare scripts)
        print(msg)


@register_dataset_check('ImageNet', 'CustomDataset')
def check_image_folder(dataset_cfg: dict) -> List[str]:
    """``<data_root>/<split or data_prefix>/`` with either ``meta/<split>.txt`` (lines
    ``relative/path.JPEG label``; mmpretrain finds it by itself) or one folder per class, as many
    as the dataset has classes; then the images' headers (module docstring)."""
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
        problems = _check_ann_list(kind, ann_file, img_dir)
        return problems or check_images(dataset_cfg, _listed_images(ann_file, img_dir), img_dir)
    entries = list(_listdir(img_dir))
    classes = [e for e in entries if osp.isdir(osp.join(img_dir, e))]
    if not classes:
        images = [e for e in entries if e.lower().endswith(_IMG_EXTENSIONS)]
        # Unlabelled sets (with_label=False; mmpretrain's ImageNet 'test' split) are flat.
        unlabelled = dataset_cfg.get('with_label', True) is False or split == 'test'
        if images and unlabelled:
            return check_images(dataset_cfg, [(osp.join(img_dir, e), ) for e in images], img_dir)
        if images:
            return [f'{kind}: {_shown(img_dir)}/ holds images directly but no annotation list; '
                    f'sort them into one folder per class or add '
                    f'{_shown(osp.join(data_root, "meta", (split or "val") + ".txt"))} '
                    f'(lines "filename label")']
        return [f'{kind}: {_shown(img_dir)}/ is empty (expected one folder per class, or a '
                f'meta/{split or "<split>"}.txt annotation list)']
    first = osp.join(img_dir, classes[0])
    if not any(e.lower().endswith(_IMG_EXTENSIONS) for e in islice(_listdir(first), 50)):
        return [f'{kind}: class folder {_shown(first)}/ holds no images '
                f'({", ".join(_IMG_EXTENSIONS)})']
    problems = _check_class_count(kind, dataset_cfg, img_dir, classes, split)
    return problems or check_images(dataset_cfg, _folder_images(dataset_cfg, img_dir, classes),
                                    img_dir, per_class=True)


def _expected_classes(kind: str, dataset_cfg: dict) -> Optional[Sequence[str]]:
    """The classes mmpretrain will give the dataset (``classes``, ``metainfo.classes``, else
    ImageNet's 1000); ``None`` when it takes them from the folders (CustomDataset)."""
    classes = dataset_cfg.get('classes')
    if classes is None:
        metainfo = dataset_cfg.get('metainfo') or {}
        classes = metainfo.get('classes') if isinstance(metainfo, dict) else None
    if isinstance(classes, str):  # mmpretrain reads a file of class names, one per line
        if not osp.isfile(classes):
            return None
        with open(classes) as f:
            classes = [ln.strip() for ln in f if ln.strip()]
    if classes is not None:
        return list(classes)
    return [''] * IMAGENET_CLASSES if kind == 'ImageNet' else None


def _check_class_count(kind, dataset_cfg, img_dir, classes, split) -> List[str]:
    expected = _expected_classes(kind, dataset_cfg)
    if expected is None or len(expected) == len(classes):
        return []
    n, want = len(classes), len(expected)
    source = 'ImageNet has' if kind == 'ImageNet' and not any(expected) else \
        'the dataset\'s classes list'
    shown = ', '.join(repr(c) for c in classes[:3]) + (', ...' if n > 3 else '')
    ann_file = _shown(osp.join(osp.dirname(img_dir), 'meta', (split or 'val') + '.txt'))
    return [f'{kind}: {_shown(img_dir)}/ holds {n} class folders, but {source} {want} classes '
            f'(mmpretrain would stop with "The number of subfolders ({n}) doesn\'t match the '
            f'number of specified classes ({want})"). In this layout a class is numbered by its '
            f'folder\'s place in the sorted folder names, so a subset of the classes would get '
            f'other labels than the full set. Either list the images with their labels of the '
            f'full set in {ann_file} (lines "{classes[0]}/image.JPEG LABEL"; the dataset '
            f'reads it instead of the folders), or, to use these {n} classes only, set '
            f'classes=[{shown}] (the folder names, sorted) on every dataloader\'s dataset and '
            f'model.head.num_classes={n}.']


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


# ------------------------------------------------------------------------------ image headers
def _listed_images(ann_file: str, img_dir: str) -> List[Tuple[str, str]]:
    """``(path, where it is listed)`` for every line of an annotation list."""
    out = []
    with open(ann_file) as f:
        for i, ln in enumerate(f, 1):
            name = ln.strip().rsplit(' ', 1)[0]
            if name:
                out.append((osp.join(img_dir, name), f'{ann_file}:{i}'))
    return out


def _folder_images(dataset_cfg: dict, img_dir: str, classes: Sequence[str]):
    """The images a folder-per-class dataset reads (mmpretrain's walk: every file with one of
    the dataset's extensions, at any depth below its class folder). Splits that skip unreadable
    images: only the first :data:`PER_CLASS_SAMPLE` of each folder (no full listing)."""
    extensions = tuple(e.lower() for e in dataset_cfg.get('extensions') or DATASET_EXTENSIONS)
    per_class = None if _mode() == 'full' or not skips_unreadable(dataset_cfg) \
        else PER_CLASS_SAMPLE
    images = []
    for c in classes:
        found = 0
        for folder, dirs, files in os.walk(osp.join(img_dir, c)):
            dirs.sort()
            for name in sorted(files):
                if name.lower().endswith(extensions):
                    images.append((osp.join(folder, name), ))
                    found += 1
                    if per_class is not None and found >= per_class:
                        break
            if per_class is not None and found >= per_class:
                break
    return images


def skips_unreadable(dataset_cfg: dict) -> bool:
    """Whether the dataset's pipeline loads with ``LoadImageOrSkip`` (an unreadable image is
    skipped with a warning instead of stopping the run)."""
    return any(isinstance(t, dict) and str(t.get('type', '')).split('.')[-1] == 'LoadImageOrSkip'
               for t in dataset_cfg.get('pipeline') or [])


def _mode() -> str:
    mode = os.environ.get(IMAGE_CHECK_ENV, 'auto').strip().lower() or 'auto'
    if mode not in ('auto', 'full', 'off'):
        raise ValueError(f'{IMAGE_CHECK_ENV}={mode!r}: use auto (the default), full or off')
    return mode


def unreadable_reason(path: str) -> Optional[str]:
    """Why ``path`` is not an image mmcv can load, or ``None``.

    PIL reads the header (format, size), which is what random bytes, an empty file or an HTML
    error page in place of an image fail. Only when PIL cannot, OpenCV (mmcv's default decoder)
    decodes the whole file, so a format only OpenCV knows is not refused.
    """
    try:
        from PIL import Image
        with Image.open(path) as im:
            if im.size[0] > 0 and im.size[1] > 0:
                return None
            reason = f'size {im.size}'
    except ImportError:
        reason = None
    except Exception as e:  # not an image, truncated header, unreadable file
        reason = f'{type(e).__name__}: {str(e).strip()[:120]}'
    try:
        import cv2
        import numpy as np
        with open(path, 'rb') as f:
            data = np.frombuffer(f.read(), np.uint8)
        if data.size and cv2.imdecode(data, cv2.IMREAD_UNCHANGED) is not None:
            return None
        return reason or 'OpenCV cannot decode it'
    except ImportError:
        return reason
    except OSError as e:
        return f'{type(e).__name__}: {e}'


def check_images(dataset_cfg: dict, images: Sequence[tuple], img_dir: str = '',
                 per_class: bool = False) -> List[str]:
    """Read the header of ``images`` (``(path[, where it is listed])``); one problem naming the
    unreadable ones (:class:`~mmdsnet.datasets.checks.ImageProblem`), or none. ``per_class``:
    the images are already :func:`_folder_images`'s first few of each class folder."""
    mode = _mode()
    if mode == 'off' or not images:
        return []
    kind = _type_name(dataset_cfg)
    total = len(images)
    skips = mode != 'full' and skips_unreadable(dataset_cfg)
    limit = SKIP_SAMPLE if skips else FULL_LIMIT
    sampled = ''
    if mode != 'full' and total > limit:
        step = total / limit
        images = [images[int(i * step)] for i in range(limit)]
        sampled = f'an even sample of {limit} of {total}'
    if skips and per_class:
        sampled = f'the first {PER_CLASS_SAMPLE} of each class folder' + (
            f', then {sampled}' if sampled else '')
    if sampled:
        why = ': the pipeline skips unreadable images' if skips else ''
        sampled = f' ({sampled}{why}; {IMAGE_CHECK_ENV}=full reads all)'
    start = time.perf_counter()
    bad = []
    for item in images:
        reason = unreadable_reason(item[0])
        if reason is not None:
            bad.append((item, reason))
    seconds = time.perf_counter() - start
    _log(f'dataset check: read the headers of {len(images)} {kind} images in {_shown(img_dir)} in '
         f'{seconds:.1f} s{sampled}; {len(bad)} unreadable')
    if not bad:
        return []
    listed = '; '.join(f'{_shown(item[0])}' + (f' (listed at {item[1]})' if len(item) > 1 else '')
                       + f' [{reason}]' for item, reason in bad[:10])
    more = f' and {len(bad) - 10} more' if len(bad) > 10 else ''
    if skips and len(bad) < BROKEN_SHARE * len(images):
        _log(f'dataset check: {len(bad)} of {len(images)} {kind} images checked in '
             f'{_shown(img_dir)} cannot be read{sampled}: {listed}{more}. Training skips them '
             f'with a warning each; replace them when you can.', logging.WARNING)
        return []
    if skips_unreadable(dataset_cfg):
        effect = ('This pipeline skips them with a warning, but ' + (
            'so many mean a bad copy' if skips else 'every image was asked for'))
    else:
        effect = ('Validation and test do not skip images (the metric would silently count '
                  'fewer images than the split has), so the run would stop when it reaches them')
    return [ImageProblem(
        f'{kind}: {len(bad)} of {len(images)} images checked cannot be read{sampled}: '
        f'{listed}{more}. {effect}. Replace each with a good copy (re-extract it from the '
        f'dataset\'s archive), or remove it (and its line in the annotation list) if the split '
        f'may lose it.')]


__all__ = ['check_image_folder', 'check_images', 'skips_unreadable', 'unreadable_reason',
           'IMAGE_CHECK_ENV', 'FULL_LIMIT']
