"""The learning check's tasks: real photographs that ship inside a registry package
(scikit-image's ``skimage.data``), so the check runs offline anywhere. Descriptions of the tasks
in :mod:`learning_check`; every builder is deterministic for a given ``seed``."""
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F

IMAGES = ('brick', 'grass', 'gravel', 'camera', 'moon', 'astronaut', 'coffee', 'chelsea', 'cell',
          'immunohistochemistry')
MORE_IMAGES = ('coins', 'hubble_deep_field', 'stereo_motorcycle', 'retina', 'rocket', 'clock')
#: texture task -> (photographs, window side; every window is shrunk to 16x16)
TEXTURES = {'textures-10': (IMAGES, 32), 'textures-16/64': (IMAGES + MORE_IMAGES, 64)}
TASKS = (*TEXTURES, 'faces-2')


def _photo(name: str) -> np.ndarray:
    import skimage.data
    from skimage.color import rgb2gray
    img = getattr(skimage.data, name)()
    if name == 'stereo_motorcycle':
        img = img[0]  # the left view
    img = np.asarray(img)
    return rgb2gray(img[..., :3]) if img.ndim == 3 else img / 255.0


def textures(images=IMAGES, window: int = 32, train_per_class: int = 300,
             val_per_class: int = 100, size: int = 16, seed: int = 0) -> Dict[str, torch.Tensor]:
    """A patch set of ``images`` (one class each): ``window`` x ``window`` crops shrunk to
    ``size`` x ``size``. ``x_train (N, 1, size, size)`` float in [0, 1], ``y_train``, ``x_val``,
    ``y_val``. Deterministic for a given ``seed``."""
    try:
        import skimage  # noqa: F401
    except ImportError as e:  # pragma: no cover
        raise SystemExit('the learning check needs scikit-image (pip install scikit-image), '
                         f'whose wheel carries the photographs: {e}') from None
    rng = np.random.default_rng(seed)
    crop = window
    xs = {'train': [], 'val': []}
    ys = {'train': [], 'val': []}
    for label, name in enumerate(images):
        img = torch.as_tensor(np.asarray(_photo(name), dtype=np.float32))
        h, w = img.shape
        for split, (lo, hi), count in (('train', (0.0, 0.6), train_per_class),
                                       ('val', (0.7, 1.0), val_per_class)):
            top = rng.integers(int(lo * h), int(hi * h) - crop, size=count)
            left = rng.integers(0, w - crop, size=count)
            patches = torch.stack([img[t:t + crop, s:s + crop] for t, s in zip(top, left)])
            patches = F.adaptive_avg_pool2d(patches[:, None], size)  # low resolution
            # brightness / contrast jitter: the class is the texture, not the gray level
            gain = torch.tensor(rng.uniform(0.6, 1.4, size=(count, 1, 1, 1)), dtype=torch.float32)
            bias = torch.tensor(rng.uniform(-0.2, 0.2, size=(count, 1, 1, 1)), dtype=torch.float32)
            mean = patches.mean((2, 3), keepdim=True)
            xs[split].append(((patches - mean) * gain + mean + bias).clamp(0, 1))
            ys[split].append(torch.full((count, ), label))
    return dict(x_train=torch.cat(xs['train']), y_train=torch.cat(ys['train']),
                x_val=torch.cat(xs['val']), y_val=torch.cat(ys['val']),
                num_classes=len(images))


def textures10(train_per_class: int = 300, val_per_class: int = 100, size: int = 16,
               seed: int = 0) -> Dict[str, torch.Tensor]:
    """The textures-10 set (32x32 windows of ten photographs)."""
    return textures(IMAGES, 2 * size, train_per_class, val_per_class, size, seed)


def faces2(train_per_class: int = 70, size: int = 16, seed: int = 0) -> Dict[str, torch.Tensor]:
    """The faces-2 set: ``lfw_subset``'s 100 faces (class 0) and 100 non-faces (class 1), shrunk
    to ``size`` x ``size``; a random ``train_per_class`` of each class for training, the rest for
    validation. Deterministic for a given ``seed``."""
    import skimage.data
    images = torch.as_tensor(np.asarray(skimage.data.lfw_subset(), dtype=np.float32))
    images = F.adaptive_avg_pool2d(images[:, None], size)
    rng = np.random.default_rng(seed)
    split = {'train': [], 'val': []}
    for label in (0, 1):
        order = torch.as_tensor(rng.permutation(100)) + 100 * label
        split['train'].append(order[:train_per_class])
        split['val'].append(order[train_per_class:])
    labels = torch.arange(200) // 100
    train, val = torch.cat(split['train']), torch.cat(split['val'])
    return dict(x_train=images[train], y_train=labels[train], x_val=images[val],
                y_val=labels[val], num_classes=2)


def make_task(name: str, **kwargs) -> Dict[str, torch.Tensor]:
    if name not in TASKS:
        raise SystemExit(f'unknown task {name!r}; choose one of {list(TASKS)}')
    if name == 'faces-2':
        return faces2(**kwargs)
    images, window = TEXTURES[name]
    return textures(images, window, **kwargs)
