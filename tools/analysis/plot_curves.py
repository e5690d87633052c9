"""Training curves of several runs side by side (the paper's Fig. 4), from MMEngine's logs.

    python tools/analysis/plot_curves.py work_dirs/resnet50_4xb32_in1k \\
        work_dirs/dsnet50_4xb32_in1k work_dirs/ds2net50_4xb32_in1k --out fig4.png --svg

Each RUN is a training work dir (or one ``scalars.json``). MMEngine's ``LocalVisBackend`` writes
``<work_dir>/<timestamp>/vis_data/scalars.json`` during training: one json line per logged
training iteration (``loss``, ``lr``, ... and ``accuracy_top-1`` when the classifier's head has
``cal_acc=True``) and one per validation (``accuracy/top1``, or ``coco/bbox_mAP`` ...). A resumed
run has one such file per start; they are read in order and a step logged twice keeps its later
value.

Two panels, one line per run, in the same colour in both:

* classification: training top-1 error (100 - ``accuracy_top-1``; the training loss when the
  run did not log training accuracy) and validation top-1 error (100 - ``accuracy/top1``);
* detection: training loss and validation mAP@[.5:.95] (``coco/bbox_mAP``, in percent).

``--train-key`` / ``--val-key`` plot other logged scalars. The x axis is the run's own unit
(epochs for epoch-based runs, the training value averaged over each epoch; iterations for
iteration-based runs such as the CIFAR configs); ``--x iter`` puts epoch-based runs on
iterations. The legend is each run's config name (the config file MMEngine copies into the work
dir), or ``--labels``. Output: a PNG (``--out``), plus an SVG beside it with ``--svg``; no display
is needed (matplotlib's Agg backend).
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

#: Known scalars: how to show them (label, transform of the logged value).
KNOWN_KEYS = {
    'accuracy_top-1': ('training top-1 error (%)', lambda v: 100.0 - v),
    'accuracy/top1': ('validation top-1 error (%)', lambda v: 100.0 - v),
    'accuracy/top5': ('validation top-5 error (%)', lambda v: 100.0 - v),
    'coco/bbox_mAP': ('validation mAP@[.5:.95] (%)', lambda v: 100.0 * v),
    'coco/bbox_mAP_50': ('validation mAP@.5 (%)', lambda v: 100.0 * v),
    'coco/bbox_mAP_75': ('validation mAP@.75 (%)', lambda v: 100.0 * v),
    'loss': ('training loss', lambda v: v),
}
#: Default (train key, val key) per task, decided by the validation metrics a run logged.
TASKS = {
    'classification': ('accuracy_top-1', 'accuracy/top1'),
    'detection': ('loss', 'coco/bbox_mAP'),
}


class Run:
    """One training run's logged scalars: training records and validation records by step."""

    def __init__(self, path: str, label: Optional[str] = None):
        self.path = path
        self.files = find_scalars(path)
        self.train: Dict[int, dict] = {}
        self.val: Dict[int, dict] = {}
        for f in self.files:  # oldest start first: a step logged again after a resume wins
            for rec in _read_json_lines(f):
                step = rec.get('step')
                if not isinstance(step, int):
                    continue
                if 'lr' in rec or 'loss' in rec:  # LoggerHook.after_train_iter
                    self.train[step] = rec
                else:  # LoggerHook.after_val_epoch: the evaluator's metrics
                    self.val[step] = rec
        if not self.train and not self.val:
            raise ValueError(f'{self.files[-1]}: no logged training or validation scalars yet')
        # Epoch-based loops log the epoch with every training record (LogProcessor by_epoch).
        self.by_epoch = any('epoch' in r for r in self.train.values())
        self.label = label or config_name(path)

    def keys(self, split: str) -> List[str]:
        records = self.train if split == 'train' else self.val
        return sorted({k for r in records.values() for k in r if k != 'step'})


def find_scalars(path: str) -> List[str]:
    """The ``scalars.json`` files of a run, oldest first (timestamp folders sort by time)."""
    if osp.isfile(path):
        return [path]
    if not osp.isdir(path):
        raise FileNotFoundError(f'{path}: no such run dir or scalars.json')
    files = sorted(glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json')))
    if not files:
        raise FileNotFoundError(
            f'{path}: no scalars.json (expected {osp.join(path, "<timestamp>", "vis_data")}'
            f'/scalars.json, which MMEngine\'s LocalVisBackend writes while training; is this a '
            f'training work dir, and does its config keep vis_backends=[dict('
            f'type=\'LocalVisBackend\')]?)')
    return files


def _read_json_lines(path: str) -> List[dict]:
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a killed run
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def config_name(path: str) -> str:
    """The config's name: the ``*.py`` the Runner copied into the work dir, else the dir name."""
    run_dir = path if osp.isdir(path) else osp.dirname(osp.dirname(osp.dirname(path)))
    configs = sorted(glob.glob(osp.join(run_dir, '*.py')))
    if len(configs) == 1:
        return osp.splitext(osp.basename(configs[0]))[0]
    return osp.basename(osp.normpath(run_dir))


def pick_task(runs: Sequence[Run]) -> str:
    tasks = set()
    for run in runs:
        keys = run.keys('val')
        for task, (_, val_key) in TASKS.items():
            if val_key in keys:
                tasks.add(task)
    if len(tasks) > 1:
        raise ValueError('the runs mix classification and detection; plot them separately')
    return tasks.pop() if tasks else 'classification'


def series(run: Run, split: str, key: str, x: str) -> Tuple[List[float], List[float]]:
    """``(xs, ys)`` of ``key`` (raw logged values) on the ``x`` axis ('epoch' or 'iter')."""
    if x == 'epoch' and not run.by_epoch:
        raise ValueError(f'{run.path} is iteration-based (no epoch in its training log): '
                         f'plot it with --x iter')
    if split == 'train':
        recs = [(s, r) for s, r in sorted(run.train.items()) if key in r]
        if x == 'iter':
            return [s for s, _ in recs], [float(r[key]) for _, r in recs]
        per_epoch = defaultdict(list)  # the mean over each epoch's logged iterations
        for _, r in recs:
            per_epoch[r['epoch']].append(float(r[key]))
        epochs = sorted(per_epoch)
        return epochs, [sum(per_epoch[e]) / len(per_epoch[e]) for e in epochs]
    recs = [(s, r) for s, r in sorted(run.val.items()) if key in r]
    xs = [s for s, _ in recs]  # epoch-based runs log validation at the epoch, others at the iter
    if x == 'iter' and run.by_epoch:  # the last training iteration logged in that epoch
        last_iter = {}
        for s, r in sorted(run.train.items()):
            last_iter[r['epoch']] = s
        xs = [last_iter.get(e, float('nan')) for e in xs]
    return xs, [float(r[key]) for _, r in recs]


def collect(runs: Sequence[Run], train_key: Optional[str], val_key: Optional[str],
            x: Optional[str]) -> dict:
    """Everything the figure shows: per panel, a y label and one line per run (``run`` index,
    ``label``, ``x``, ``y`` as plotted)."""
    task = pick_task(runs)
    default_train, default_val = TASKS[task]
    if train_key is None:
        # Training error needs the head's training accuracy (cal_acc=True); else the loss.
        train_key = default_train if all(default_train in r.keys('train') for r in runs) \
            else 'loss'
        if train_key != default_train:
            print(f'note: not every run logged {default_train!r} (set model.head.cal_acc=True '
                  f'to log training accuracy); plotting the training loss', file=sys.stderr)
    val_key = val_key or default_val
    if x is None:
        x = 'epoch' if all(r.by_epoch for r in runs) else 'iter'
    panels = []
    for split, key in (('train', train_key), ('val', val_key)):
        ylabel, fn = KNOWN_KEYS.get(key, (f'{"training" if split == "train" else "validation"} '
                                          f'{key}', lambda v: v))
        lines = []
        for i, run in enumerate(runs):
            if key not in run.keys(split):
                have = ', '.join(run.keys(split)) or 'nothing'
                if split == 'train':
                    raise ValueError(f'{run.path}: no {key!r} in its training log (it has: '
                                     f'{have}); pick one with --train-key')
                print(f'note: {run.path} logged no {key!r} in validation (it has: {have})',
                      file=sys.stderr)
                continue
            xs, ys = series(run, split, key, x)
            lines.append(dict(run=i, label=run.label, x=xs, y=[fn(v) for v in ys]))
        panels.append(dict(split=split, key=key, ylabel=ylabel, lines=lines))
    if not panels[1]['lines']:
        raise ValueError(f'no run logged {val_key!r} in validation (has any reached its '
                         f'val_interval?); pick another with --val-key')
    return dict(task=task, x=x, panels=panels)


def plot(data: dict, out: str, svg: bool = False, title: Optional[str] = None) -> List[str]:
    """Draw the two panels; returns the files written."""
    import matplotlib
    matplotlib.use('Agg')  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    plt.rcParams['svg.fonttype'] = 'none'  # SVG text stays text (editable, searchable)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for ax, panel in zip(axes, data['panels']):
        for line in panel['lines']:  # a run keeps its colour in both panels
            ax.plot(line['x'], line['y'], label=line['label'],
                    color=colors[line['run'] % len(colors)],
                    marker='o' if len(line['x']) < 30 else None, markersize=3)
        ax.set_xlabel('epoch' if data['x'] == 'epoch' else 'iteration')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and iterations count
        ax.set_ylabel(panel['ylabel'])
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize='small')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    written = []
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    written.append(out)
    if svg:
        svg_path = osp.splitext(out)[0] + '.svg'
        fig.savefig(svg_path)
        written.append(svg_path)
    plt.close(fig)
    return written


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('runs', nargs='+', metavar='RUN',
                   help='training work dirs (or vis_data/scalars.json files)')
    p.add_argument('--labels', nargs='+', help='one legend entry per run (default: config name)')
    p.add_argument('--out', default='curves.png', help='output PNG (default: curves.png)')
    p.add_argument('--svg', action='store_true', help='also write an SVG beside the PNG')
    p.add_argument('--x', choices=['epoch', 'iter'],
                   help='x axis (default: epoch when every run is epoch-based, else iteration)')
    p.add_argument('--train-key', help='training scalar of the left panel (default: '
                   'accuracy_top-1 as error, else loss; detection: loss)')
    p.add_argument('--val-key', help='validation scalar of the right panel (default: '
                   'accuracy/top1 as error; detection: coco/bbox_mAP)')
    p.add_argument('--title', help='figure title')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.labels and len(args.labels) != len(args.runs):
            raise ValueError(f'--labels has {len(args.labels)} entries for {len(args.runs)} runs')
        runs = [Run(p, args.labels[i] if args.labels else None) for i, p in enumerate(args.runs)]
        data = collect(runs, args.train_key, args.val_key, args.x)
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    for f in plot(data, args.out, args.svg, args.title):
        print(f'wrote {f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
