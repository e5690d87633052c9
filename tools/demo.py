"""Offline detection demo: generate a small COCO-format dataset, fine-tune a tiny DS2Net Faster
R-CNN on it with MMEngine's Runner, and score it with mmdet's CocoMetric before and after.

    python tools/demo.py                        # ~4 CPU minutes, nothing downloaded
    python tools/demo.py --work-dir /tmp/demo --epochs 4

Everything goes to the work dir (default ``work_dirs/demo``): the generated data (``data/``),
MMEngine's logs (``<timestamp>/``, with the json scalar log), the last checkpoint, a picture of
validation images with ground truth (left) and predictions with score >= 0.5 (right) under column
headings, ``demo_predictions.png``, and ``demo_results.json`` with both evaluations. The run ends
with the table of mAP@.5, mAP@.75 and mAP@[.5:.95], the three columns of the paper's Table 8.
With the same thread count on the same CPU a rerun repeats exactly; another thread count or
instruction set (AVX2 / AVX-512 kernels) rounds differently and moves the trained numbers by
points (docs/detection.md, section 5).

``--threads`` defaults to 1: the demo's tensors are small, so a second intra-op thread gains
little, while on a machine that is busy with anything else two spinning OpenMP threads per
process made each iteration 10-25x slower (measured on the 2-core dev box: 0.65 s/iter with one
thread, 4-10 s/iter with two, next to other jobs). On an idle machine try ``--threads 2``.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

# Runnable as `python tools/demo.py` from a checkout without installing mmdsnet.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmdsnet.evaluation import COLUMNS  # noqa: E402  (CocoMetric's keys of Table 8's columns)

DEFAULT_CONFIG = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', 'demo',
                          'faster-rcnn_ds2net-tiny_fpn_shapes.py')
#: Predictions drawn in demo_predictions.png (CocoMetric scores every box, whatever its score).
SCORE_THR = 0.5


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default=DEFAULT_CONFIG, help='demo config')
    p.add_argument('--work-dir', default='work_dirs/demo', help='all outputs go here')
    p.add_argument('--epochs', type=int, default=None, help='override the config\'s epochs')
    p.add_argument('--num-train', type=int, default=256, help='generated training images')
    p.add_argument('--num-val', type=int, default=64, help='generated validation images')
    p.add_argument('--seed', type=int, default=0, help='seed of the data and of the run')
    p.add_argument('--no-eval-before', action='store_true',
                   help='skip the evaluation of the untrained detector')
    p.add_argument('--num-vis', type=int, default=4, help='validation images in the PNG')
    p.add_argument('--threads', type=int, default=1,
                   help='torch CPU threads (default 1: see the module docstring)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                   help='override config keys, as in tools/train.py')
    return p.parse_args(argv)


def build_cfg(args, data):
    """Load the demo config and point it at ``args.work_dir`` and the generated data."""
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    root = data['data_root'].rstrip('/') + '/'
    cfg.work_dir = args.work_dir
    for loader, split in (('train_dataloader', 'train'), ('val_dataloader', 'val'),
                          ('test_dataloader', 'val')):
        ds = cfg[loader]['dataset']
        ds.data_root = root
        ds.ann_file = data[f'{split}_ann']
        ds.data_prefix = dict(img=data[f'{split}_img'])
        ds.metainfo = dict(classes=data['classes'])
    for ev in ('val_evaluator', 'test_evaluator'):
        cfg[ev]['ann_file'] = root + data['val_ann']
    if args.epochs is not None:
        cfg.train_cfg.max_epochs = cfg.train_cfg.val_interval = args.epochs
        for sched in cfg.param_scheduler:
            if sched.get('by_epoch', True):
                sched['end'] = args.epochs
                if 'T_max' in sched:
                    sched['T_max'] = args.epochs
        cfg.default_hooks.checkpoint.interval = args.epochs
    cfg.randomness = dict(seed=args.seed, deterministic=False)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def make_eval_hook():
    """A hook that evaluates once before training and records every evaluation's metrics."""
    from mmengine.hooks import Hook

    class EvalBeforeAndAfterHook(Hook):
        priority = 'LOWEST'

        def __init__(self, eval_before: bool):
            self.eval_before = eval_before
            self.results = []  # (epoch, metrics) per evaluation

        def before_train(self, runner):
            # Weights are initialised by now (Runner.train does it before the loop starts), so
            # this scores exactly the detector that training starts from.
            if self.eval_before:
                runner.logger.info('evaluating the untrained detector (epoch 0)')
                runner.val_loop.run()

        def after_val_epoch(self, runner, metrics=None):
            metrics = dict(metrics or {})
            if not any(k in metrics for _, k in COLUMNS):
                # CocoMetric returns nothing when no box passes the score threshold: that is
                # an mAP of 0, and the table says so instead of failing.
                metrics.update({k: 0.0 for _, k in COLUMNS}, no_detections=True)
            self.results.append((runner.epoch, metrics))

    return EvalBeforeAndAfterHook


def headings_band(widths, titles, height=36):
    """A white RGB band of ``height`` px with one black title centred over each column.

    ``widths`` are the columns' widths in px, left to right; the band is as wide as their sum.
    """
    import cv2
    import numpy as np
    band = np.full((height, sum(widths), 3), 255, dtype=np.uint8)
    x0 = 0
    for width, title in zip(widths, titles):
        font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1
        (w, h), _ = cv2.getTextSize(title, font, scale, thick)
        while w > width - 8 and scale > 0.3:  # shrink a title that does not fit its column
            scale -= 0.05
            (w, h), _ = cv2.getTextSize(title, font, scale, thick)
        org = (x0 + max((width - w) // 2, 2), (height + h) // 2)
        cv2.putText(band, title, org, font, scale, (0, 0, 0), thick, cv2.LINE_AA)
        x0 += width
    return band


def save_predictions_png(runner, out_file, num=4, scale=3, score_thr=SCORE_THR):
    """Draw ``num`` validation images: ground truth left, predictions (score >= thr) right,
    under a heading band that says which column is which."""
    import mmcv
    import numpy as np
    import torch
    from mmdet.visualization import DetLocalVisualizer
    from mmengine.dataset import pseudo_collate

    dataset = runner.val_dataloader.dataset
    vis = DetLocalVisualizer(name='demo_vis', line_width=2)
    vis.dataset_meta = dataset.metainfo
    model = runner.model
    model.eval()
    rows = []
    for i in range(min(num, len(dataset))):
        item = dataset[i]
        with torch.no_grad():
            pred = model.test_step(pseudo_collate([item]))[0]
        img = mmcv.imread(item['data_samples'].img_path, channel_order='rgb')
        # Upscale so that the labels drawn on 128 px images stay readable; boxes follow.
        img = mmcv.imrescale(img, scale, interpolation='nearest')
        pred.pred_instances.bboxes = pred.pred_instances.bboxes * scale
        pred.gt_instances.bboxes = pred.gt_instances.bboxes * scale
        vis.add_datasample(f'val_{i}', img, data_sample=pred, draw_gt=True, draw_pred=True,
                           show=False, pred_score_thr=score_thr)
        rows.append(vis.get_image())  # [ground truth | prediction], side by side
    width = rows[0].shape[1] // 2
    band = headings_band([width, rows[0].shape[1] - width],
                         ['ground truth', f'prediction (score >= {score_thr:g})'])
    mmcv.imwrite(np.concatenate([band] + rows, axis=0)[..., ::-1], out_file)  # RGB -> BGR
    return out_file


def format_table(results):
    """The three Table 8 columns, in percent, one row per evaluation."""
    head = f'| {"detector":<34} | ' + ' | '.join(f'{c:>12}' for c, _ in COLUMNS) + ' |'
    lines = [head, '|' + '-' * 36 + '|' + '|'.join('-' * 14 for _ in COLUMNS) + '|']
    for name, metrics in results:
        if metrics.get('no_detections'):
            name += ' (no box)'
        vals = ' | '.join(f'{100 * metrics.get(k, float("nan")):>12.1f}' for _, k in COLUMNS)
        lines.append(f'| {name:<34} | {vals} |')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, t0)
    finally:
        torch.set_num_threads(threads)  # main() is also called in-process by the tests


def _run(args, t0):
    from mmdsnet.datasets.synthetic_det import make_synthetic_coco
    data = make_synthetic_coco(osp.join(args.work_dir, 'data'), num_train=args.num_train,
                               num_val=args.num_val, seed=args.seed)
    print(f'synthetic COCO-format data in {data["data_root"]}: {args.num_train} train / '
          f'{args.num_val} val images, classes {data["classes"]} ({time.time() - t0:.1f} s)',
          flush=True)

    cfg = build_cfg(args, data)
    from mmengine.runner import Runner

    from mmdsnet.engine import prepare_cfg
    cfg = prepare_cfg(cfg, 'none')
    runner = Runner.from_cfg(cfg)
    hook = make_eval_hook()(eval_before=not args.no_eval_before)
    runner.register_hook(hook)
    runner.train()
    train_time = time.time() - t0

    before = [m for e, m in hook.results if e == 0]
    after = hook.results[-1][1] if hook.results else {}
    rows = ([('untrained (same init, epoch 0)', before[0])] if before else [])
    rows.append((f'trained ({cfg.train_cfg.max_epochs} epochs)', after))
    png = save_predictions_png(runner, osp.join(args.work_dir, 'demo_predictions.png'),
                               num=args.num_vis)
    import datetime

    import torch
    summary = dict(config=args.config, work_dir=args.work_dir, seed=args.seed,
                   num_train=args.num_train, num_val=args.num_val,
                   epochs=cfg.train_cfg.max_epochs, wall_s=round(time.time() - t0, 1),
                   torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                   date_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(
                       timespec='seconds'),
                   untrained=before[0] if before else None, trained=after,
                   predictions_png=png, predictions_score_thr=SCORE_THR)
    with open(osp.join(args.work_dir, 'demo_results.json'), 'w') as f:
        json.dump(summary, f, indent=2, default=float)

    print('\nCOCO bbox mAP (%) on the generated validation set, mmdet CocoMetric:')
    print(format_table(rows))
    print(f'\ntotal {train_time / 60:.1f} min; validation images, ground truth (left) and '
          f'predictions with score >= {SCORE_THR:g} (right): {png}; metrics: '
          f'{osp.join(args.work_dir, "demo_results.json")}')
    return summary


if __name__ == '__main__':
    main()
