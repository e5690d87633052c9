"""Rename the old dense-shortcut keys of a checkpoint to the module names, so that it loads.

    python tools/convert_checkpoint.py OLD.pth NEW.pth

Checkpoints saved before the dense shortcuts of a stage (and DS2's inner shortcut) became one
module hold ``layerK.norms.{i}.*``, ``layerK.shortcuts.{j}.weight``, ``layerK.{b}.inner_norm.*``
and ``layerK.{b}.inner_shortcut.weight``; the models now save and load
``layerK.aggregation.norms.{i}.*``, ``layerK.aggregation.shortcuts.{j}.weight``,
``layerK.{b}.inner_aggregation.norms.0.*`` and ``layerK.{b}.inner_aggregation.shortcuts.0.weight``
(:func:`mmdsnet.models.pretrained.rename_old_keys`), and refuse the old ones. OLD.pth may be a
bare state dict or a full MMEngine checkpoint (``state_dict``, and ``ema_state_dict`` where an EMA
hook saved one, are converted; ``meta``, ``message_hub``, optimizer and the rest are kept as they
are). Any key prefix (``backbone.``, ``module.``) is kept. Nothing else changes: the tensors are
the same.
"""
import argparse
import os
import os.path as osp
from typing import List, Optional

import torch

from mmdsnet.compat import load_checkpoint_file
from mmdsnet.engine.cli import explained_errors
from mmdsnet.models.pretrained import rename_old_keys
from mmdsnet.utils import preview

#: The entries of an MMEngine checkpoint that hold model weights by name.
STATE_DICTS = ('state_dict', 'ema_state_dict')


def main(argv: Optional[List[str]] = None) -> int:
    """Convert; return how many keys were renamed."""
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('src', help='checkpoint with the old keys (state dict or MMEngine checkpoint)')
    p.add_argument('dst', help='output file (.pth)')
    p.add_argument('--force', action='store_true', help='overwrite dst if it exists')
    args = p.parse_args(argv)
    if osp.exists(args.dst) and not args.force:
        raise SystemExit(f'error: {args.dst} exists; pass --force to overwrite it')
    with explained_errors():  # a missing or unreadable file: one line, no traceback
        ckpt = load_checkpoint_file(args.src, map_location='cpu')
    if not isinstance(ckpt, dict):
        raise SystemExit(f'error: {args.src} holds a {type(ckpt).__name__}, not a state dict or '
                         f'a checkpoint')
    # a full checkpoint: its state dicts by name; a bare state dict: itself
    entries = [k for k in STATE_DICTS if isinstance(ckpt.get(k), dict)] or [None]
    renamed = {}
    for entry in entries:
        weights, done = rename_old_keys(ckpt if entry is None else ckpt[entry])
        if entry is None:
            ckpt = weights
        else:
            ckpt[entry] = weights
        renamed.update(done)
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save(ckpt, args.dst)
    where = 'the state dict' if entries == [None] else ', '.join(entries)
    if renamed:
        pairs = ', '.join(preview((f'{old} -> {new}' for old, new in renamed.items()), 3))
        print(f'renamed {len(renamed)} keys of {where} in {args.src} (e.g. {pairs}); wrote '
              f'{args.dst}')
    else:
        print(f'no old key in {where} of {args.src}: it already loads; wrote an unchanged copy '
              f'to {args.dst}')
    return len(renamed)


if __name__ == '__main__':
    main()
