"""Export a config's backbone (or its whole classifier) to ONNX and check it with onnxruntime.

    python tools/deployment/export_onnx.py CONFIG [--checkpoint CKPT] [--shape 224 224]
        [--full-model] [--fixed-shape] [--batch 1] [--out FILE.onnx] [--atol 1e-4]
        [--opset 18] [--cfg-options model.backbone.out_indices="(0,1,2,3)"]

What is exported:

* by default ``model.backbone``; one ONNX output per returned stage, named after it (``layer1``
  .. ``layer4``, the stages of ``out_indices``);
* ``--full-model`` (a classification config): the classifier, input -> class scores (one output,
  ``cls_score``: the head's logits before softmax). The input is what the data preprocessor
  hands the model (normalized, RGB, NCHW float), as mmdeploy takes it.

The batch and spatial axes of the input (``input``) and outputs are dynamic by default;
``--fixed-shape`` exports for ``--batch`` x 3 x ``--shape`` only. The model goes through
``torch.export``, the dense aggregation's custom operators are written out with standard ATen
operators (:func:`mmdsnet.ops.export_decompositions`), then ``torch.onnx.export``. onnxruntime
runs the file on random inputs, at two batch sizes and two input sizes unless the shape is fixed,
and the tool stops with an error naming the largest difference when any output differs from
PyTorch's by more than ``--atol``. ``--checkpoint`` takes an mmpretrain / mmdet checkpoint (its
``backbone.`` tensors; the whole state dict with ``--full-model``) or a bare backbone state dict.
Needs the ``[deploy]`` extra (onnx, onnxruntime, onnxscript).
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import DictAction

INPUT_NAME = 'input'


def _load_cfg(config: str, cfg_options=None):
    from mmengine.config import Config

    import mmdsnet  # noqa: F401  (registers the backbones)
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'backbone' in cfg.model:
        cfg.model.backbone.pop('init_cfg', None)  # weights: --checkpoint, not a download
    return cfg


def build_backbone(config: str, checkpoint=None, cfg_options=None):
    from mmengine.registry import MODELS, DefaultScope
    cfg = _load_cfg(config, cfg_options)
    bcfg = cfg.model.backbone if 'backbone' in cfg.model else cfg.model
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain')):
        backbone = MODELS.build(bcfg)
    if checkpoint:
        from mmdsnet.models.pretrained import load_pretrained, read_state_dict
        keys = read_state_dict(checkpoint)
        prefix = 'backbone.' if any(k.startswith('backbone.') for k in keys) else None
        load_pretrained(backbone, checkpoint, prefix=prefix)
    return backbone.eval()


def build_classifier(config: str, checkpoint=None, cfg_options=None):
    """The config's whole classifier (mmpretrain), wrapped to return the class scores."""
    cfg = _load_cfg(config, cfg_options)
    if cfg.get('default_scope') != 'mmpretrain' or 'head' not in cfg.model:
        raise SystemExit(f'error: --full-model exports classifiers (mmpretrain configs with a '
                         f'head); {config} is not one: export its backbone (drop --full-model)')
    from mmengine.registry import DefaultScope
    from mmpretrain.apis import init_model
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = init_model(cfg, None, device='cpu')
    if checkpoint:
        from mmengine.runner import load_checkpoint
        try:  # strict: an export of half-loaded weights would be silently wrong
            load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
        except RuntimeError as e:
            raise SystemExit(f'error: checkpoint {checkpoint} does not fit {config}: '
                             f'{" ".join(str(e).split())[:300]}') from None
    from mmdsnet.utils.class_scores import ClassScores
    return ClassScores(model.eval()).eval()


def output_names(model) -> List[str]:
    """``layer1`` .. ``layer4`` for the stages a backbone returns, ``cls_score`` for a
    classifier."""
    from mmdsnet.utils.class_scores import ClassScores
    if isinstance(model, ClassScores):
        return ['cls_score']
    layers, indices = getattr(model, 'res_layers', None), getattr(model, 'out_indices', None)
    if layers and indices is not None:
        indices = (indices, ) if isinstance(indices, int) else indices
        return [layers[i % len(layers)] for i in indices]
    with torch.no_grad():  # another backbone: out0, out1, ...
        outs = model(torch.zeros(1, 3, 64, 64))
    return [f'out{i}' for i in range(len(outs) if isinstance(outs, (tuple, list)) else 1)]


def export(model, shape: Sequence[int], out: str, opset: int = 18, batch: int = 1,
           dynamic: bool = True) -> str:
    """Write ``model`` to ``out``; batch, height and width dynamic unless ``dynamic=False``."""
    from mmdsnet.ops import export_decompositions
    x = torch.randn(max(batch, 2) if dynamic else batch, 3, *shape)
    dims = None
    if dynamic:  # AUTO: torch.export keeps an axis dynamic unless the model fixes it
        auto = torch.export.Dim.AUTO
        dims = ({0: auto, 2: auto, 3: auto}, )
    with torch.no_grad():
        exported = torch.export.export(model, (x, ), dynamic_shapes=dims)
        exported = exported.run_decompositions(export_decompositions())
        program = torch.onnx.export(exported, (x, ), dynamo=True, opset_version=opset,
                                    input_names=[INPUT_NAME], output_names=output_names(model),
                                    verbose=False)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    program.save(out)
    if dynamic:
        name_axes(out)
    return out


def name_axes(onnx_file: str) -> None:
    """Rename the exporter's symbols (``s77``, ``s53``) to ``batch``, ``height``, ``width``
    after the input's axes, in every shape of the file (outputs: ``(height - 1)//2 + 1`` ...)."""
    import re

    import onnx
    model = onnx.load(onnx_file)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    names = {d.dim_param: new for d, new in zip(dims, ('batch', None, 'height', 'width'))
             if new and d.dim_param}
    if not names:
        return
    symbol = re.compile(r'\b(' + '|'.join(map(re.escape, names)) + r')\b')
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param:
                d.dim_param = symbol.sub(lambda m: names[m.group(1)], d.dim_param)
    onnx.save(model, onnx_file)


def onnx_axes(onnx_file: str) -> dict:
    """``{name: [dim, ...]}`` of the file's inputs and outputs (a str for a dynamic dim)."""
    import onnx
    graph = onnx.load(onnx_file, load_external_data=False).graph
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(graph.input) + list(graph.output)}


def check_shapes(shape: Sequence[int], batch: int, dynamic: bool) -> List[Tuple[int, int, int]]:
    """``(batch, H, W)`` to compare on: two batch sizes and two input sizes when dynamic."""
    if not dynamic:
        return [(batch, *shape)]
    h, w = shape
    other = (h + h // 2, w + w // 4)  # another size, not a multiple of the first
    return [(1, h, w), (3, h, w), (1, *other), (3, *other)]


def check(model, onnx_file: str, shapes: Sequence[Tuple[int, int, int]], atol: float,
          seed: int = 0) -> float:
    """Largest absolute difference between onnxruntime's and PyTorch's outputs over ``shapes``
    (``(batch, H, W)``)."""
    import onnxruntime
    session = onnxruntime.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]
    worst = 0.0
    for i, (n, h, w) in enumerate(shapes):
        x = torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed + i))
        try:
            theirs = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        except Exception as e:  # an axis the export fixed after all
            raise SystemExit(f'error: onnxruntime cannot run {onnx_file} on a {n}x3x{h}x{w} '
                             f'input ({" ".join(str(e).split())[:300]}); its axes: '
                             f'{onnx_axes(onnx_file)}. Export with --fixed-shape for one shape.'
                             ) from None
        with torch.no_grad():
            ours = model(x)
        ours = ours if isinstance(ours, (tuple, list)) else (ours, )
        if len(theirs) != len(ours):
            raise SystemExit(f'error: the ONNX file returns {len(theirs)} outputs ({names}), '
                             f'PyTorch {len(ours)}')
        for name, t, o in zip(names, theirs, ours):
            if t.shape != tuple(o.shape):
                raise SystemExit(f'error: output {name} is {t.shape} in onnxruntime, '
                                 f'{tuple(o.shape)} in PyTorch, on a {n}x3x{h}x{w} input')
            worst = max(worst, float(np.abs(t - o.numpy()).max()))
    if not worst <= atol:
        raise SystemExit(f'error: onnxruntime and PyTorch differ by up to {worst:.3g} (allowed '
                         f'{atol:g}); {onnx_file} is not a faithful export')
    return worst


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--checkpoint')
    p.add_argument('--shape', type=int, nargs=2, default=[224, 224], metavar=('H', 'W'),
                   help='input height and width to export and check at (default 224 224)')
    p.add_argument('--batch', type=int, default=1,
                   help='batch size of the fixed shape (--fixed-shape; default 1)')
    p.add_argument('--fixed-shape', action='store_true',
                   help='export for --batch x 3 x --shape only (default: batch, height and '
                   'width dynamic)')
    p.add_argument('--full-model', action='store_true',
                   help='export the whole classifier (input -> cls_score), not the backbone')
    p.add_argument('--out', default=None,
                   help='ONNX file (default: work_dirs/<config>_backbone.onnx or _full.onnx)')
    p.add_argument('--atol', type=float, default=1e-4)
    p.add_argument('--opset', type=int, default=18)
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings of the config, e.g. '
                   'model.backbone.out_indices="(0,1,2,3)"')
    args = p.parse_args(argv)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise SystemExit(f'error: ONNX export needs the deploy extra (pip install '
                         f'"mmdsnet[deploy]"): {e}') from None
    if not osp.isfile(args.config):
        raise SystemExit(f'error: config {args.config} does not exist')
    if args.batch < 1:
        raise SystemExit(f'error: --batch {args.batch}: give 1 or more')
    name = osp.splitext(osp.basename(args.config))[0]
    out = args.out or osp.join('work_dirs', f'{name}_{"full" if args.full_model else "backbone"}'
                               f'.onnx')
    build = build_classifier if args.full_model else build_backbone
    model = build(args.config, args.checkpoint, args.cfg_options)
    dynamic = not args.fixed_shape
    export(model, args.shape, out, args.opset, args.batch, dynamic)
    shapes = check_shapes(args.shape, args.batch, dynamic)
    worst = check(model, out, shapes, args.atol)
    axes = onnx_axes(out)
    inputs = ' x '.join(map(str, axes.pop(INPUT_NAME)))
    print(f'wrote {out} ({"dynamic batch and H x W" if dynamic else "fixed shape"}; input: '
          f'{inputs}; outputs: {", ".join(axes)}): onnxruntime matches PyTorch to '
          f'{worst:.2e} (allowed {args.atol:g}) on '
          f'{", ".join(f"{n}x3x{h}x{w}" for n, h, w in shapes)} inputs')


if __name__ == '__main__':
    sys.exit(main())
