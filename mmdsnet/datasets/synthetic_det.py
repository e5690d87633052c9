"""A small, learnable COCO-format detection dataset the project generates itself (no download).

Each image is a noisy colour-gradient background with 1-4 filled shapes (square, disc, triangle
by default) of random colour, size and place; the class is the shape, never the colour, so a
detector has to learn shapes. Annotations are COCO json (``bbox = [x, y, w, h]``, ``iscrowd=0``),
so mmdet's ``CocoDataset`` reads them and mmdet's ``CocoMetric`` scores predictions on them, the
same code paths as real COCO. Generation is seeded (same seed, same bytes) and takes a few
seconds for a few hundred 128x128 images.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import numpy as np

__all__ = ['SHAPES', 'make_synthetic_coco', 'draw_shape']

#: Shapes the generator knows, in category-id order (ids start at 1 as in COCO).
SHAPES = ('square', 'disc', 'triangle')


def draw_shape(img: np.ndarray, shape: str, box: Tuple[int, int, int, int],
               color: Sequence[int]) -> None:
    """Fill ``shape`` inscribed in ``box = (x0, y0, x1, y1)`` (exclusive x1, y1) into ``img``."""
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    if shape == 'square':
        mask = np.ones((h, w), bool)
    elif shape == 'disc':
        mask = ((xx - w / 2) / (w / 2))**2 + ((yy - h / 2) / (h / 2))**2 <= 1.0
    elif shape == 'triangle':  # apex at the top centre, base along the bottom edge
        mask = np.abs(xx - w / 2) <= (yy / h) * (w / 2)
    else:
        raise ValueError(f'unknown shape {shape!r}; choose from {SHAPES}')
    region = img[y0:y1, x0:x1]
    region[mask] = np.asarray(color, dtype=img.dtype)


def _overlap(a, b) -> float:
    """Intersection over the smaller box's area (catches a small box inside a big one)."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / smaller


def _make_image(rng: np.random.Generator, size: int, shapes: Sequence[str],
                min_obj: int, max_obj: int, max_per_image: int
                ) -> Tuple[np.ndarray, List[Tuple[int, Tuple[int, int, int, int]]]]:
    # Background: a random linear colour gradient plus Gaussian noise, so that "object" is not
    # simply "not black".
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, size, dtype=np.float32)
    ramp = t[None, :] if rng.random() < 0.5 else t[:, None]
    bg = np.broadcast_to(c0 + (c1 - c0) * ramp[..., None], (size, size, 3))
    img = bg + rng.normal(0, 20, (size, size, 3))
    objects = []
    for _ in range(int(rng.integers(1, max_per_image + 1))):
        for _try in range(20):  # place without heavy overlap
            s = int(rng.integers(min_obj, max_obj + 1))
            w = s if rng.random() < 0.5 else int(s * rng.uniform(0.7, 1.3))
            w = min(max(w, min_obj), size - 1)
            x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - s + 1))
            box = (x0, y0, x0 + w, y0 + s)
            if all(_overlap(box, b) < 0.15 for _, b in objects):
                break
        else:
            continue
        label = int(rng.integers(len(shapes)))
        # Keep the object's colour at least ~60 grey levels from the local background.
        local = bg[box[1]:box[3], box[0]:box[2]].reshape(-1, 3).mean(0)
        for _c in range(20):
            color = rng.uniform(0, 255, 3)
            if np.abs(color - local).max() > 60:
                break
        draw_shape(img, shapes[label], box, color + rng.normal(0, 8, 3))
        objects.append((label, box))
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    return img, objects


def make_synthetic_coco(out_dir: str,
                        num_train: int = 256,
                        num_val: int = 64,
                        img_size: int = 128,
                        shapes: Sequence[str] = SHAPES,
                        min_obj: int = 14,
                        max_obj: int = 44,
                        max_per_image: int = 4,
                        seed: int = 0) -> Dict[str, str]:
    """Write a COCO-format shapes dataset under ``out_dir``; reuse it if already complete.

    Layout (what mmdet's ``CocoDataset`` expects)::

        out_dir/annotations/train.json, out_dir/annotations/val.json
        out_dir/train/000000.png ..., out_dir/val/000000.png ...

    Args:
        out_dir (str): Where to write.
        num_train (int): Training images. Defaults to 256.
        num_val (int): Validation images. Defaults to 64.
        img_size (int): Side of the square images. Defaults to 128.
        shapes (Sequence[str]): Class names, a subset of :data:`SHAPES`.
        min_obj (int): Smallest object side in pixels. Defaults to 14.
        max_obj (int): Largest object side in pixels. Defaults to 44.
        max_per_image (int): At most this many objects per image. Defaults to 4.
        seed (int): Seed of the generator; train and val use independent streams of it.

    Returns:
        dict: ``data_root``, ``train_ann``, ``val_ann`` (relative to ``data_root``),
        ``train_img``, ``val_img`` (folder prefixes relative to ``data_root``), ``classes``.
    """
    import cv2  # mmcv's dependency; imported here so that importing this module stays light
    for s in shapes:
        if s not in SHAPES:
            raise ValueError(f'unknown shape {s!r}; choose from {SHAPES}')
    if not 4 <= min_obj <= max_obj < img_size:
        raise ValueError(f'need 4 <= min_obj <= max_obj < img_size, got {min_obj}, {max_obj}, '
                         f'{img_size}')
    params = dict(num_train=num_train, num_val=num_val, img_size=img_size, shapes=list(shapes),
                  min_obj=min_obj, max_obj=max_obj, max_per_image=max_per_image, seed=seed,
                  version=1)
    info = dict(data_root=out_dir, train_ann='annotations/train.json',
                val_ann='annotations/val.json', train_img='train/', val_img='val/',
                classes=tuple(shapes))
    stamp = osp.join(out_dir, 'params.json')
    if osp.isfile(stamp):
        with open(stamp) as f:
            if json.load(f) == params:  # written last, so its presence means complete
                return info
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    categories = [dict(id=i + 1, name=n, supercategory='shape') for i, n in enumerate(shapes)]
    for split, num, stream in (('train', num_train, 0), ('val', num_val, 1)):
        rng = np.random.default_rng([seed, stream])
        os.makedirs(osp.join(out_dir, split), exist_ok=True)
        images, annotations = [], []
        for i in range(num):
            img, objects = _make_image(rng, img_size, shapes, min_obj, max_obj, max_per_image)
            name = f'{i:06d}.png'
            cv2.imwrite(osp.join(out_dir, split, name), img[..., ::-1])  # RGB -> BGR file
            images.append(dict(id=i + 1, file_name=name, width=img_size, height=img_size))
            for label, (x0, y0, x1, y1) in objects:
                w, h = x1 - x0, y1 - y0
                annotations.append(
                    dict(id=len(annotations) + 1, image_id=i + 1, category_id=label + 1,
                         bbox=[x0, y0, w, h], area=w * h, iscrowd=0))
        with open(osp.join(out_dir, info[f'{split}_ann']), 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    with open(stamp, 'w') as f:
        json.dump(params, f)
    return info
