"""Evaluate a checkpoint with an mmdsnet config (classification or detection).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl|results.json]
                         [--show] [--show-dir DIR] [--wait-time S] [--interval N] [--tta]
                         [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

Like tools/train.py it imports only mmengine and mmdsnet; the config's ``default_scope`` picks
mmpretrain or mmdet. It ends by printing the metrics the evaluator returned as a table.
"""
import argparse
import copy
import os
import os.path as osp
import sys

from mmengine.config import Config, ConfigDict

import mmdsnet  # noqa: F401  (registers mmdsnet's models)
from mmdsnet.engine.cli import add_common_args, load_cfg, parse, run_job
from mmdsnet.evaluation import table8_view


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (evaluate) a checkpoint')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument(
        '--out', help='also dump the raw predictions to this file: a pickle (.pkl / .pickle, as '
        'mmdet and mmpretrain write it) or the same as JSON (.json)')
    parser.add_argument(
        '--show', action='store_true',
        help='show each image with its prediction in a window (needs a display)')
    parser.add_argument(
        '--show-dir', help='save each image with its prediction drawn into this folder (a '
        'relative path goes under WORK_DIR/<timestamp>/ for mmdet, as its test.py does, and is '
        'taken as given for mmpretrain)')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='seconds each --show window stays (default 2)')
    parser.add_argument(
        '--interval', type=int, default=1,
        help='classification: draw every N-th sample (default 1; mmdet draws every image)')
    parser.add_argument(
        '--tta', action='store_true',
        help='test-time augmentation: the config\'s tta_model and tta_pipeline, else a '
        'horizontal flip (mmpretrain: class scores averaged; mmdet: boxes merged by NMS)')
    add_common_args(parser, 'test_dataloader.batch_size=64')
    return parse(parser, argv)


def setup_cfg(args) -> Config:
    cfg = load_cfg(args)
    cfg.load_from = args.checkpoint

    if args.out is not None:
        if args.out.endswith('.json'):
            import mmdsnet.evaluation.dump_results  # noqa: F401  (registers DumpJsonResults)
            dumper = 'DumpJsonResults'
        elif not args.out.endswith(('.pkl', '.pickle')):
            raise SystemExit(f'--out must be a .pkl, .pickle or .json file, got {args.out}')
        else:
            # Detection results need mmdet's dumper (it encodes masks); anything else is generic.
            dumper = 'DumpDetResults' if cfg.get('default_scope') == 'mmdet' else 'DumpResults'
        evaluators = cfg.test_evaluator
        evaluators = list(evaluators) if isinstance(evaluators, (list, tuple)) else [evaluators]
        cfg.test_evaluator = evaluators + [dict(type=dumper, out_file_path=args.out)]
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.tta:
        use_tta(cfg)
    return cfg


def enable_visualization(cfg: Config, args) -> None:
    """--show / --show-dir: switch on the config's visualization hook as mmdet's and mmpretrain's
    tools/test.py do (DetVisualizationHook's ``draw``/``test_out_dir``, VisualizationHook's
    ``enable``/``out_dir``)."""
    hook = (cfg.get('default_hooks') or {}).get('visualization')
    if hook is None:
        raise SystemExit(
            'error: --show/--show-dir need a visualization hook in the config: '
            'default_hooks.visualization=dict(type=\'DetVisualizationHook\') (mmdet) or '
            'dict(type=\'VisualizationHook\') (mmpretrain)')
    if args.show and not (os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY')
                          or sys.platform in ('win32', 'darwin')):
        raise SystemExit('error: --show needs a display ($DISPLAY is not set); save the '
                         'pictures with --show-dir DIR instead')
    if cfg.get('default_scope') == 'mmdet':
        hook['draw'] = True
        if args.show:
            hook['show'] = True
            hook['wait_time'] = args.wait_time
        if args.show_dir:
            hook['test_out_dir'] = args.show_dir
    else:
        hook['enable'] = True
        hook['show'] = args.show
        hook['wait_time'] = args.wait_time
        hook['out_dir'] = args.show_dir
        hook['interval'] = args.interval


def use_tta(cfg: Config) -> None:
    """--tta: wrap the model in the config's ``tta_model`` and test through its ``tta_pipeline``;
    without them, mmdet's and mmpretrain's default (horizontal flip, both tools/test.py)."""
    data_cfg = cfg.test_dataloader.dataset
    while 'dataset' in data_cfg:  # dataset wrappers (ConcatDataset, RepeatDataset ...)
        data_cfg = data_cfg['dataset']
    flips = [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)]
    if cfg.get('default_scope') == 'mmdet':
        cfg.setdefault('tta_model', dict(
            type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5),
                                             max_per_img=100)))
        pack = dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                     'img_shape', 'scale_factor', 'flip',
                                                     'flip_direction'))
    else:
        cfg.setdefault('tta_model', dict(type='mmpretrain.AverageClsScoreTTA'))
        pack = data_cfg.pipeline[-1]
    if 'tta_pipeline' not in cfg:
        cfg.tta_pipeline = copy.deepcopy(data_cfg.pipeline)
        cfg.tta_pipeline[-1] = dict(type='TestTimeAug', transforms=[flips, [pack]])
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    data_cfg.pipeline = cfg.tta_pipeline


def format_metrics(metrics: dict) -> str:
    """A two-column text table of the metrics (any keys: accuracy/top1, coco/bbox_mAP ...)."""
    if not metrics:
        return 'no metrics were returned (does the config set test_evaluator?)'
    rows = []
    for key, value in metrics.items():
        if isinstance(value, float):
            text = f'{value:.4f}'
        elif isinstance(value, (list, tuple)) and all(isinstance(v, float) for v in value):
            text = ', '.join(f'{v:.4f}' for v in value)
        else:
            text = str(value)
        rows.append((str(key), text))
    width_k = max(len('metric'), *(len(k) for k, _ in rows))
    width_v = max(len('value'), *(len(v) for _, v in rows))
    rule = f'+-{"-" * width_k}-+-{"-" * width_v}-+'
    lines = [rule, f'| {"metric".ljust(width_k)} | {"value".ljust(width_v)} |', rule]
    lines += [f'| {k.ljust(width_k)} | {v.rjust(width_v)} |' for k, v in rows]
    lines.append(rule)
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    cfg = setup_cfg(args)
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise SystemExit(f'error: checkpoint {osp.abspath(args.checkpoint)} does not exist')
    cfg, rank, metrics = run_job(cfg, args.launcher, ['test'], lambda runner: runner.test())
    if rank == 0:  # the LoggerHook already wrote them to the log; this is for people
        print(f'metrics of {args.checkpoint}:\n{format_metrics(metrics)}', flush=True)
        table8 = format_table8(metrics, args.checkpoint, cfg.get('test_evaluator'))
        if table8:
            print(table8, flush=True)
    return metrics


def format_table8(metrics: dict, name: str, evaluator) -> str:
    """COCO bbox metrics in the paper's Table 8 columns ('' if none), beside the paper's rows
    when ``evaluator`` scored on COCO 2014 (:func:`mmdsnet.evaluation.table8_view`)."""
    return table8_view(metrics, name, evaluator)


if __name__ == '__main__':
    main()
