"""Grad-CAM of several classification checkpoints on the same images (the paper's Fig. 5).

    python tools/visualization/vis_cam.py img1.jpg img2.jpg \\
        --configs configs/mmpretrain/resnet/resnet50_4xb32_in1k.py \\
                  configs/mmpretrain/dsnet/dsnet50_4xb32_in1k.py \\
                  configs/mmpretrain/dsnet/ds2net50_4xb32_in1k.py \\
        --checkpoints work_dirs/resnet50_4xb32_in1k/epoch_100.pth \\
                      work_dirs/dsnet50_4xb32_in1k/epoch_100.pth \\
                      work_dirs/ds2net50_4xb32_in1k/epoch_100.pth \\
        --names ResNet50 DSNet50 DS2Net50 --out fig5.png

The figure has the paper's layout: one column per image, the input in the first row, then one
row per model with its class activation map over the image, titled with its predicted class.
Everything is local (config files and checkpoints on disk); it runs on the CPU.

Target layer (``--target-layers``, one for all models or one per model; ``--list-layers``
prints every name of a model): by default the output of the backbone's last stage, the
feature map the global-average-pooled classifier reads:

* ``mmdsnet.DSNet`` / ``DS2Net`` (every variant, ResNet baselines with ``shortcut='identity'``
  included): ``backbone.layer4`` (``layer3`` for the 3-stage CIFAR nets: DSNeXt-29, WRN-28-10).
  That is the stage module, whose output is the aggregation ``Y_{n-1}`` after the last dense
  shortcut; the last *block* (``backbone.layer4.2``) returns only the residual branch ``X_l``.
* mmpretrain ``ResNet`` / ``ResNet_CIFAR`` / ``ResNeXt``: ``backbone.layer4``, the same place.
* mmpretrain ``DenseNet``: ``backbone.transitions.3``, the last block's norm + ReLU.

Images go through the config's test pipeline (resize, crop) and the model's data preprocessor.
CIFAR configs have no loading or resizing step (their data are arrays): images are read as RGB,
like CIFAR's arrays, and ``--resize 32`` gives them CIFAR's size. The CAM is computed with the
``grad-cam`` package (``pip install -e .[vis]``) for the predicted class, or
``--target-category``.
"""
import argparse
import difflib
import os
import os.path as osp
import sys
from typing import List, Optional, Sequence

import numpy as np
import torch

METHODS = ('gradcam', 'gradcam++', 'xgradcam')


class TargetLayerError(ValueError):
    """A target layer name that the model does not have."""


def default_target_layer(classifier) -> str:
    """The name of the backbone's last stage (see the module docstring)."""
    backbone = classifier.backbone
    if hasattr(backbone, 'res_layers'):  # mmdsnet DSNet/DS2Net; mmpretrain ResNet family
        return f'backbone.{backbone.res_layers[-1]}'
    if hasattr(backbone, 'transitions'):  # mmpretrain DenseNet: the last transition is norm+act
        return f'backbone.transitions.{len(backbone.transitions) - 1}'
    raise TargetLayerError(
        f'no default target layer for {type(backbone).__name__}: pass --target-layers NAME '
        f'(--list-layers prints the names)')


def resolve_layer(classifier, name: str, model_name: str):
    """The module called ``name``; an unknown name lists the valid ones."""
    modules = dict(classifier.named_modules())
    if name in modules and name:
        return modules[name]
    top = [n for n in modules if n and n.count('.') <= 1]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.6)
    hint = f'; close: {", ".join(close)}' if close else ''
    raise TargetLayerError(
        f'target layer {name!r} is not a module of {model_name}{hint}; valid names: '
        f'{", ".join(top)}, or any module below them ({len(modules) - 1} in all; '
        f'--list-layers prints every one)')


class CamModel:
    """One config + checkpoint, ready to give Grad-CAMs of images."""

    def __init__(self, config: str, checkpoint: Optional[str], name: Optional[str] = None,
                 target_layer: Optional[str] = None, device: str = 'cpu'):
        from mmengine.config import Config
        from mmengine.dataset import Compose
        from mmengine.registry import init_default_scope
        from mmengine.runner import load_checkpoint
        from mmpretrain.apis import init_model

        import mmdsnet  # noqa: F401  (registers the backbones; checkpoints load under torch>=2.6)

        self.name = name or osp.splitext(osp.basename(config))[0]
        cfg = Config.fromfile(config)
        cfg.model.backbone.pop('init_cfg', None)  # weights come from the checkpoint, not a hub
        init_default_scope(cfg.get('default_scope', 'mmpretrain'))
        self.model = init_model(cfg, None, device=device)
        self.classes = None
        if checkpoint:
            if not osp.isfile(checkpoint):
                raise FileNotFoundError(f'checkpoint {checkpoint} does not exist')
            try:  # strict: a Grad-CAM of half-loaded weights would mislead
                ckpt = load_checkpoint(self.model, checkpoint, map_location='cpu', strict=True,
                                       logger='silent')
            except RuntimeError as e:
                first = ' '.join(str(e).split())[:300]
                raise ValueError(f'checkpoint {checkpoint} does not fit {config}: {first}') \
                    from None
            self.classes = (ckpt.get('meta', {}).get('dataset_meta') or {}).get('classes')
        self.model.eval()
        self.layer_name = target_layer or default_target_layer(self.model)
        self.layer = resolve_layer(self.model, self.layer_name, self.name)

        pipeline = list(cfg.test_dataloader.dataset.pipeline)
        loads = [t for t in pipeline if 'Load' in str(t.get('type', ''))]
        # Array datasets (CIFAR) have no loader: their arrays are RGB, so files are read as RGB.
        self.channel_order = 'bgr' if loads else 'rgb'
        self.pipeline = Compose([t for t in pipeline if t not in loads])

    def prepare(self, image: np.ndarray):
        """``(input tensor (1, C, H, W), image as displayed (H, W, 3) RGB float 0-1)``."""
        from mmengine.dataset import default_collate
        results = dict(img=image.copy(), img_shape=image.shape[:2], ori_shape=image.shape[:2])
        data = self.pipeline(results)
        shown = data['inputs'].numpy().transpose(1, 2, 0).astype(np.float32) / 255.0
        if self.channel_order == 'bgr':
            shown = shown[..., ::-1]
        batch = self.model.data_preprocessor(default_collate([data]), False)
        return batch['inputs'], np.ascontiguousarray(shown)

    def cam(self, image: np.ndarray, method: str = 'gradcam',
            target_category: Optional[int] = None) -> dict:
        """Grad-CAM of one image (H, W, 3 in ``self.channel_order``) for the target class."""
        from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, XGradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        from mmdsnet.utils.class_scores import ClassScores

        inputs, shown = self.prepare(image)
        net = ClassScores(self.model)  # what Grad-CAM differentiates
        with torch.no_grad():
            scores = net(inputs).softmax(-1)[0]
        pred = int(scores.argmax())
        target = pred if target_category is None else target_category
        if not 0 <= target < scores.numel():
            raise ValueError(f'--target-category {target}: {self.name} has {scores.numel()} '
                             f'classes')
        cam_cls = {'gradcam': GradCAM, 'gradcam++': GradCAMPlusPlus, 'xgradcam': XGradCAM}[method]
        with cam_cls(model=net, target_layers=[self.layer]) as cam:
            grayscale = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(target)])[0]
        return dict(cam=grayscale, image=shown, pred=pred, score=float(scores[pred]),
                    target=target, label=self.class_name(pred))

    def class_name(self, index: int) -> str:
        if self.classes is not None and index < len(self.classes):
            return str(self.classes[index])
        return f'class {index}'


def read_image(path: str, channel_order: str, resize: Optional[int] = None) -> np.ndarray:
    import mmcv
    if not osp.isfile(path):
        raise FileNotFoundError(f'image {path} does not exist')
    img = mmcv.imread(path, channel_order=channel_order)
    if img is None:
        raise ValueError(f'{path} is not an image OpenCV can read')
    if resize:
        img = mmcv.imresize(img, (resize, resize))
    return img


def run(images: Sequence[str], models: Sequence[CamModel], method: str = 'gradcam',
        target_category: Optional[int] = None, resize: Optional[int] = None) -> List[List[dict]]:
    """``results[m][i]``: model ``m`` on image ``i`` (see :meth:`CamModel.cam`)."""
    return [[m.cam(read_image(p, m.channel_order, resize), method, target_category)
             for p in images] for m in models]


def figure(images: Sequence[str], models: Sequence[CamModel], results: List[List[dict]],
           method: str):
    """The paper's layout (module docstring) as a matplotlib figure."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rows, cols = len(models) + 1, len(images)
    width = 2.2 * cols + 0.6
    fig, axes = plt.subplots(rows, cols, figsize=(width, 2.2 * rows), squeeze=False)
    for i, path in enumerate(images):
        axes[0][i].imshow(results[0][i]['image'])
        axes[0][i].set_title(_fit(osp.basename(path), 2.2, 8), fontsize=8)
        for m, model in enumerate(models):
            r = results[m][i]
            axes[m + 1][i].imshow(show_cam_on_image(r['image'], r['cam'], use_rgb=True))
            axes[m + 1][i].set_title(_fit(f'{r["label"]} ({r["score"]:.2f})', 2.2, 8),
                                     fontsize=8)
    for r, label in enumerate(['input'] + [f'{m.name}\n{m.layer_name}' for m in models]):
        axes[r][0].set_ylabel(label, fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    # One image column is 2.8 inches wide: the title is wrapped to the figure's width, or its
    # ends would be cut off ("am: class activation maps ...").
    fig.suptitle(_fit(f'{method}: class activation maps of the predicted class', width, 9),
                 fontsize=9)
    fig.tight_layout()
    return fig


def _fit(text: str, inches: float, points: float) -> str:
    """``text`` wrapped to lines that fit ``inches`` at ``points`` (average glyph: 0.6 em)."""
    import textwrap
    return textwrap.fill(text, max(8, int(inches * 72 / (points * 0.6))))


def draw(images: Sequence[str], models: Sequence[CamModel], results: List[List[dict]],
         out: str, method: str) -> str:
    import matplotlib.pyplot as plt
    fig = figure(images, models, results, method)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _per_model(values: Optional[List[str]], n: int, option: str) -> List[Optional[str]]:
    if not values:
        return [None] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ValueError(f'{option} has {len(values)} entries for {n} models (give 1 or {n})')
    return values


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('images', nargs='*', help='image files')
    p.add_argument('--configs', nargs='+', required=True, help='one config per model')
    p.add_argument('--checkpoints', nargs='+', help='one checkpoint per model (local files)')
    p.add_argument('--names', nargs='+', help='row labels (default: config names)')
    p.add_argument('--target-layers', nargs='+',
                   help='module name(s), one for all models or one per model (default: the '
                   'last stage of the backbone, e.g. backbone.layer4)')
    p.add_argument('--target-category', type=int,
                   help='class index to explain (default: each model\'s predicted class)')
    p.add_argument('--method', default='gradcam', choices=METHODS)
    p.add_argument('--resize', type=int, help='resize images to N x N first (CIFAR models: 32)')
    p.add_argument('--list-layers', action='store_true',
                   help='print the module names of each model and exit')
    p.add_argument('--device', default='cpu')
    p.add_argument('--out', default='cam.png', help='output PNG (default: cam.png)')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        n = len(args.configs)
        if not args.checkpoints and not args.list_layers:
            raise ValueError('--checkpoints: give one checkpoint per config (a Grad-CAM of '
                             'random weights shows nothing)')
        ckpts = args.checkpoints or [None] * n
        names = args.names or [None] * n
        for option, values in (('--checkpoints', ckpts), ('--names', names)):
            if len(values) != n:
                raise ValueError(f'{option} has {len(values)} entries for {n} configs')
        layers = _per_model(args.target_layers, n, '--target-layers')
        if args.list_layers:
            for cfg, name in zip(args.configs, names):
                model = CamModel(cfg, None, name, target_layer='backbone', device=args.device)
                try:
                    default = default_target_layer(model.model)
                except TargetLayerError:
                    default = 'none, pass --target-layers'
                print(f'{model.name} (default target layer: {default}):')
                print('\n'.join(f'  {k}' for k, _ in model.model.named_modules() if k))
            return 0
        if not args.images:
            raise ValueError('no images given')
        models = [CamModel(c, k, nm, layer, args.device)
                  for c, k, nm, layer in zip(args.configs, ckpts, names, layers)]
        results = run(args.images, models, args.method, args.target_category, args.resize)
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    except ImportError as e:
        print(f'error: {e}; Grad-CAM needs the [vis] extra: pip install -e ".[vis]"',
              file=sys.stderr)
        return 1
    print(f'wrote {draw(args.images, models, results, args.out, args.method)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
