"""Train a classifier or a detector with an mmdsnet config.

The command line is mmdet's and mmpretrain's::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
                                 [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

It imports only mmengine and mmdsnet: the config's ``default_scope`` (``mmpretrain`` or ``mmdet``)
decides which downstream library the Runner uses. Before the Runner is built, the datasets the
run will read are checked (a missing one stops the run with a message saying what and where)
and checkpoint loading is made to work under torch>=2.6 (:mod:`mmdsnet.compat`).
"""
import argparse
import sys

from mmengine.config import Config
from mmengine.device import get_device

import mmdsnet  # noqa: F401  (registers mmdsnet's models)
from mmdsnet.engine.cli import add_common_args, load_cfg, parse, run_job


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model from an mmdsnet config')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and checkpoints')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint; without a path, from the latest checkpoint in the '
        'work dir')
    parser.add_argument(
        '--amp', action='store_true', help='enable automatic mixed precision (needs a GPU)')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr linearly by (total batch size) / auto_scale_lr.base_batch_size')
    add_common_args(parser, 'train_cfg.max_iters=100 train_dataloader.batch_size=32')
    return parse(parser, argv)


def setup_cfg(args) -> Config:
    """Load the config and apply the command line to it (everything but building the Runner)."""
    cfg = load_cfg(args)
    if args.amp:
        optim_wrapper = cfg.get('optim_wrapper')
        if optim_wrapper is None:
            raise SystemExit('--amp: the config has no optim_wrapper to switch to mixed precision')
        if optim_wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
            print('--amp: the config already uses AmpOptimWrapper', file=sys.stderr)
        else:
            optim_wrapper.type = 'AmpOptimWrapper'
            optim_wrapper.setdefault('loss_scale', 'dynamic')

    if args.auto_scale_lr:
        # mmpretrain's schedules carry base_batch_size but no `enable` key, so only
        # base_batch_size is required here (mmdet's train.py would reject them).
        if 'base_batch_size' not in (cfg.get('auto_scale_lr') or {}):
            raise SystemExit(
                '--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=N) in the config (N: '
                'the total batch size its lr was set for)')
        cfg.auto_scale_lr.enable = True

    # resume: an explicit checkpoint, or (no path) the latest one in work_dir
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def describe_batch_and_lr(cfg, world_size: int) -> str:
    """One line with the total batch size and the lr the run will use (after auto_scale_lr)."""
    per_gpu = (cfg.get('train_dataloader') or {}).get('batch_size')
    if per_gpu is None:
        return 'total batch size: unknown (no train_dataloader.batch_size)'
    total = per_gpu * world_size
    optimizer = (cfg.get('optim_wrapper') or {}).get('optimizer') or {}
    lr = optimizer.get('lr')
    line = f'total batch size {total} ({world_size} process(es) x {per_gpu})'
    scale = cfg.get('auto_scale_lr') or {}
    base = scale.get('base_batch_size')
    if lr is None:
        return line + '; lr: not set in optim_wrapper.optimizer'
    if base is None:
        return line + f'; lr {lr:g} (the config has no auto_scale_lr.base_batch_size)'
    if scale.get('enable', False):
        return (line + f'; auto_scale_lr on: lr {lr:g} x {total}/{base} = '
                f'effective lr {lr * total / base:g}')
    line += f'; lr {lr:g} as configured for a total batch of {base}'
    if total != base:
        line += (f'. WARNING: the total batch differs from {base} and the lr is NOT scaled; '
                 f'pass --auto-scale-lr to use lr {lr * total / base:g}')
    return line


def main(argv=None):
    args = parse_args(argv)
    cfg = setup_cfg(args)
    if args.amp and get_device() == 'cpu':  # mmengine would assert deep inside the Runner
        raise SystemExit('error: --amp needs a GPU (mmengine\'s AmpOptimWrapper supports CUDA, '
                         'NPU, MLU and MUSA); drop --amp to train on the CPU')

    splits = ['train'] + (['val'] if cfg.get('val_dataloader') and cfg.get('val_cfg') is not None
                          else [])

    def train(runner):
        runner.logger.info(describe_batch_and_lr(runner.cfg, runner.world_size))
        runner.train()

    run_job(cfg, args.launcher, splits, train)


if __name__ == '__main__':
    main()
