"""Extract the backbone of a classification checkpoint, for detection fine-tuning.

    python tools/extract_backbone.py work_dirs/dsnet50_4xb32_in1k/epoch_100.pth \
        checkpoints/dsnet50_in1k_backbone.pth

The output holds only ``backbone.*`` tensors with the prefix removed, as a plain
``{name: tensor}`` dict: it loads with ``torch.load(..., weights_only=True)`` and needs no
``prefix`` in a detector's ``init_cfg=dict(type='Pretrained', checkpoint=...)``. The full
mmpretrain checkpoint works too, with ``prefix='backbone.'``.
"""
import argparse
import os
import os.path as osp
from collections import Counter, OrderedDict
from typing import Dict, Tuple

import torch

from mmdsnet.compat import load_checkpoint_file
from mmdsnet.engine.cli import explained_errors
from mmdsnet.models.pretrained import select_prefix


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Keep only the backbone of a checkpoint')
    parser.add_argument('src', help='classification checkpoint (full Runner checkpoint or a '
                        'state_dict)')
    parser.add_argument('dst', help='output file (.pth)')
    parser.add_argument('--prefix', default='backbone.',
                        help='key prefix of the backbone in the source (default: backbone.)')
    parser.add_argument('--force', action='store_true', help='overwrite dst if it exists')
    return parser.parse_args(argv)


def extract(state_dict: Dict[str, torch.Tensor],
            prefix: str = 'backbone.') -> Tuple['OrderedDict[str, torch.Tensor]', Counter]:
    """Split ``state_dict`` into the backbone (prefix removed) and a count of dropped keys.

    Returns:
        tuple: The backbone state_dict and a Counter of dropped tensors by their first key
        component (``head``, ``neck``, ``data_preprocessor`` ...).
    """
    # clone(): a slice of a larger storage would otherwise save the whole storage
    kept = OrderedDict((k, v.detach().clone().contiguous())
                       for k, v in select_prefix(state_dict, prefix).items())
    dropped = Counter(k.split('.', 1)[0] for k in select_prefix(state_dict)
                      if not k.startswith(prefix))
    return kept, dropped


def main(argv=None) -> int:
    args = parse_args(argv)
    if osp.exists(args.dst) and not args.force:
        raise SystemExit(f'error: {args.dst} exists; pass --force to overwrite it')
    with explained_errors():  # a missing or unreadable file: one line, no traceback
        ckpt = load_checkpoint_file(args.src, map_location='cpu')
    state_dict = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state_dict, dict) or not all(
            isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise SystemExit(f'error: {args.src} holds no state_dict of tensors (keys: '
                         f'{list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__})')
    kept, dropped = extract(state_dict, args.prefix)
    if not kept:
        firsts = sorted({k.split('.', 1)[0] for k in state_dict})
        raise SystemExit(f'error: no key of {args.src} starts with {args.prefix!r} (top-level '
                         f'names: {firsts}); pass --prefix')
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save(kept, args.dst)
    n_params = sum(v.numel() for v in kept.values())
    detail = ', '.join(f'{k}: {n}' for k, n in sorted(dropped.items())) or 'none'
    print(f'kept {len(kept)} tensors ({n_params / 1e6:.2f}M values) under {args.prefix!r}; '
          f'dropped {sum(dropped.values())} ({detail}); wrote {args.dst}')
    return len(kept)


if __name__ == '__main__':
    main()
