"""Export a config's backbone to ONNX and check it with onnxruntime against PyTorch.

    python tools/deployment/export_onnx.py CONFIG [--checkpoint CKPT] [--shape 224 224]
        [--out work_dirs/backbone.onnx] [--atol 1e-4] [--opset 18]

The backbone (``model.backbone`` of the config; every returned stage is an ONNX output) goes
through ``torch.export``, then the dense aggregation's custom operators are written out with
standard ATen operators (:func:`mmdsnet.ops.export_decompositions`), then ``torch.onnx.export``.
onnxruntime runs the file on a random input and the tool stops with an error, naming the largest
difference, when any output differs from PyTorch's by more than ``--atol``. ``--checkpoint``
takes an mmpretrain / mmdet checkpoint (its ``backbone.`` tensors) or a bare backbone state dict.
Needs the ``[deploy]`` extra (onnx, onnxruntime, onnxscript).
"""
import argparse
import os
import os.path as osp
import sys

import numpy as np
import torch


def build_backbone(config: str, checkpoint=None):
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    import mmdsnet  # noqa: F401
    cfg = Config.fromfile(config)
    bcfg = cfg.model.backbone if 'backbone' in cfg.model else cfg.model
    bcfg.pop('init_cfg', None)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain')):
        backbone = MODELS.build(bcfg)
    if checkpoint:
        from mmdsnet.models.pretrained import load_pretrained, read_state_dict
        keys = read_state_dict(checkpoint)
        prefix = 'backbone.' if any(k.startswith('backbone.') for k in keys) else None
        load_pretrained(backbone, checkpoint, prefix=prefix)
    return backbone.eval()


def export(backbone, shape, out: str, opset: int = 18):
    from mmdsnet.ops import export_decompositions
    x = torch.randn(1, 3, *shape)
    with torch.no_grad():
        exported = torch.export.export(backbone, (x, ))
        exported = exported.run_decompositions(export_decompositions())
        program = torch.onnx.export(exported, (x, ), dynamo=True, opset_version=opset,
                                    verbose=False)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    program.save(out)
    return out


def check(backbone, onnx_file: str, shape, atol: float, seed: int = 0) -> float:
    """Largest absolute difference between onnxruntime's and PyTorch's outputs."""
    import onnxruntime
    x = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(seed))
    session = onnxruntime.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    theirs = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ours = backbone(x)
    ours = ours if isinstance(ours, (tuple, list)) else (ours, )
    if len(theirs) != len(ours):
        raise SystemExit(f'error: the ONNX file returns {len(theirs)} outputs, PyTorch '
                         f'{len(ours)}')
    worst = max(float(np.abs(t - o.numpy()).max()) for t, o in zip(theirs, ours))
    if not worst <= atol:
        raise SystemExit(f'error: onnxruntime and PyTorch differ by up to {worst:.3g} (allowed '
                         f'{atol:g}); {onnx_file} is not a faithful export')
    return worst


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--checkpoint')
    p.add_argument('--shape', type=int, nargs=2, default=[224, 224], metavar=('H', 'W'))
    p.add_argument('--out', default='work_dirs/backbone.onnx')
    p.add_argument('--atol', type=float, default=1e-4)
    p.add_argument('--opset', type=int, default=18)
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
    backbone = build_backbone(args.config, args.checkpoint)
    out = export(backbone, args.shape, args.out, args.opset)
    worst = check(backbone, out, args.shape, args.atol)
    print(f'wrote {out}: onnxruntime matches PyTorch to {worst:.2e} (allowed {args.atol:g}) on '
          f'a 1x3x{args.shape[0]}x{args.shape[1]} input')


if __name__ == '__main__':
    sys.exit(main())
