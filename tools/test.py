"""Evaluate a checkpoint with an mmdsnet config (classification or detection).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl]
                         [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

Like tools/train.py it imports only mmengine and mmdsnet; the config's ``default_scope`` picks
mmpretrain or mmdet. It ends by printing the metrics the evaluator returned as a table.
"""
import argparse
import os.path as osp

from mmengine.config import Config

import mmdsnet  # noqa: F401  (registers mmdsnet's models)
from mmdsnet.engine.cli import add_common_args, build_runner, explained_errors, load_cfg, parse
from mmdsnet.evaluation import table8_view


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (evaluate) a checkpoint')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument(
        '--out', help='also dump the raw predictions to this pickle file (.pkl / .pickle)')
    add_common_args(parser, 'test_dataloader.batch_size=64')
    return parse(parser, argv)


def setup_cfg(args) -> Config:
    cfg = load_cfg(args)
    cfg.load_from = args.checkpoint

    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise SystemExit(f'--out must be a .pkl or .pickle file, got {args.out}')
        # Detection results need mmdet's dumper (it encodes masks); anything else is generic.
        dumper = 'DumpDetResults' if cfg.get('default_scope') == 'mmdet' else 'DumpResults'
        evaluators = cfg.test_evaluator
        evaluators = list(evaluators) if isinstance(evaluators, (list, tuple)) else [evaluators]
        cfg.test_evaluator = evaluators + [dict(type=dumper, out_file_path=args.out)]
    return cfg


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
    with explained_errors():
        cfg, runner = build_runner(cfg, args.launcher, ['test'])
        metrics = runner.test()
    if runner.rank == 0:  # the LoggerHook already wrote them to the log; this is for people
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
