"""Does a DS variant learn at least as fast as its identity twin, on real images? (paper Fig. 4)

Real images that ship inside a registry package (scikit-image's ``skimage.data``), so the check
runs offline anywhere (tools/experiments/real_image_tasks.py). Three tasks (``--task``):

* **textures-10** (default): a 10-class patch classification cut from ten real photographs
  (brick, grass, gravel, camera, moon, astronaut, coffee, chelsea, cell, immunohistochemistry),
  grayscale, 32x32 crops shrunk to 16x16 with a random brightness/contrast jitter. A hard task:
  accuracies of 0.45-0.65 at 300 iterations, where fitting speed hardly shows.
* **textures-16/64**: the same ten plus six more photographs (coins, Hubble deep field, the
  left stereo motorcycle, retina, rocket, clock) as 16 classes, and 64x64 windows shrunk to
  16x16 (same input size and cost). Not an easy task either: the twin reaches 0.39 at 300
  iterations.
* **faces-2**: scikit-image's ``lfw_subset``, 100 face and 100 non-face crops of 25x25 shrunk to
  16x16, 70 per class for training and 30 for validation: a task the twin fits quickly, so that
  fitting speed shows in accuracy.

For the textures, training patches come from the top 60% of each photograph, validation patches
from the bottom 30%, so no validation pixel is ever seen in training; 300 training and 100
validation patches per class.

Each model is built from its mmpretrain config (default: the CIFAR-100 0.25x configs of Table 1,
with a 10-class head); the identity twin is the same config with ``model.backbone.shortcut=
'identity'`` (ResNet). A model is ``NAME[:key=value,...]``: a config name or path, and backbone
arguments as Python literals (``dsnet50:shortcut_act=None``). Training follows the config's
optimizer (SGD, momentum, weight decay, ``paramwise_cfg``) with a short schedule: batch 64,
lr 0.1, a linear warm-up then cosine, random crops padded by 2, no flips. Every model sees the
same batches for a given seed.

    python tools/experiments/learning_check.py                      # DSNet50 and DS2Net50 vs twin
    python tools/experiments/learning_check.py --iters 900          # the 3x longer schedule
    python tools/experiments/learning_check.py --task textures-16/64 --models dsnet50 \\
        dsnet50:shortcut_act=None                                  # two variants, one twin
    python tools/experiments/learning_check.py --models dsnet50 --cfg-options \\
        model.backbone.shortcut_init=1.0                           # a variant of the recipe

It prints, per model, the mean and spread (min-max) of the validation accuracy over the seeds
and the training-loss curve (mean over seeds, at every tenth of the schedule), the accuracy
difference to the twin seed by seed (mean and standard error) and the same for the training loss
at a quarter and at half of the schedule, writes
``learning_check.json`` and draws ``learning_check.png`` (loss and validation accuracy against
iteration, one line per model) in ``--work-dir``. A benchmark, not a unit test: the suite runs a
much smaller version (tests/test_tools/test_learning_check.py).
"""
import argparse
import ast
import copy
import json
import math
import os
import os.path as osp
import statistics
import sys
import time
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = {
    'dsnet50': 'configs/mmpretrain/dsnet/dsnet50-w0.25_1xb128_cifar100.py',
    'ds2net50': 'configs/mmpretrain/dsnet/ds2net50-w0.25_1xb128_cifar100.py',
}
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # its modules, however it is run
# the tasks (re-exported: the tests and signal_propagation.py reach them through this module)
from real_image_tasks import (IMAGES, MORE_IMAGES, TASKS, TEXTURES, faces2,  # noqa: E402,F401
                              make_task, textures, textures10)


# ----------------------------------------------------------------------------------- model
def literal(value: str):
    """A Python literal, or the string itself."""
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def parse_model(spec: str):
    """``NAME[:key=value,...]`` -> ``(NAME, {key: value})`` (backbone arguments)."""
    name, _, opts = spec.partition(':')
    backbone = {}
    for item in filter(None, opts.split(',')):
        key, eq, value = item.partition('=')
        if not eq or not key:
            raise SystemExit(f'model {spec!r}: options are key=value pairs separated by commas')
        backbone[key.strip()] = literal(value)
    return name, backbone


def load_cfg(name_or_path: str, cfg_options: Optional[dict] = None):
    """The config of a model spec (``NAME[:key=value,...]``), with ``cfg_options`` merged."""
    from mmengine.config import Config
    name, backbone = parse_model(name_or_path)
    path = CONFIGS.get(name, name)
    cfg = Config.fromfile(path if osp.isabs(path) else osp.join(ROOT, path))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if backbone:
        cfg.merge_from_dict({f'model.backbone.{k}': v for k, v in backbone.items()})
    return cfg


def build_model(cfg, num_classes: int, twin: bool, w_scale: float = 1.0):
    """The config's classifier with a ``num_classes`` head; ``twin``: identity shortcuts.
    ``w_scale`` multiplies every dense ``W_l^i`` of the stages after initialization (an
    experiment knob; DS2's inner shortcut keeps its ``W``)."""
    from mmengine.registry import MODELS, DefaultScope

    import mmdsnet  # noqa: F401  (registers the backbones)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.head.num_classes = num_classes
    model_cfg.head.topk = (1, )
    model_cfg.pop('data_preprocessor', None)
    model_cfg.backbone.in_channels = 1
    if twin:
        model_cfg.backbone.shortcut = 'identity'
        for key in ('shortcut_norm_cfg', 'shortcut_weight', 'shortcut_init', 'shortcut_act'):
            model_cfg.backbone.pop(key, None)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain')):
        model = MODELS.build(model_cfg)
    model.init_weights()
    if w_scale != 1.0 and not twin:
        with torch.no_grad():
            for name in model.backbone.res_layers:
                aggregation = getattr(getattr(model.backbone, name), 'aggregation', None)
                for w in ([] if aggregation is None else aggregation.shortcuts.parameters()):
                    w.mul_(w_scale)
    return model


def build_optimizer(cfg, model):
    from mmengine.optim import build_optim_wrapper
    wrapper_cfg = copy.deepcopy(cfg.optim_wrapper)
    wrapper_cfg.optimizer.lr = 0.1  # the check's learning rate (no auto-scaling)
    return build_optim_wrapper(model, wrapper_cfg).optimizer


def lr_at(it: int, iters: int, warmup: int, base: float) -> float:
    """Linear warm-up from base/10, then cosine to 0."""
    if it < warmup:
        return base * (0.1 + 0.9 * it / warmup)
    return 0.5 * base * (1 + math.cos(math.pi * (it - warmup) / max(iters - warmup, 1)))


# ----------------------------------------------------------------------------------- train
def train_one(model, optimizer, data, iters: int, seed: int, batch_size: int = 64,
              warmup: int = 50, log_every: int = 10) -> dict:
    """Train and evaluate; returns the training-loss curve and the validation accuracy."""
    gen = torch.Generator().manual_seed(seed)
    mean, std = data['x_train'].mean(), data['x_train'].std()
    x_train = (data['x_train'] - mean) / std
    x_val = (data['x_val'] - mean) / std
    base_lrs = [g['lr'] for g in optimizer.param_groups]
    losses, curve = [], []
    model.train()
    for it in range(iters):
        for g, base in zip(optimizer.param_groups, base_lrs):
            g['lr'] = lr_at(it, iters, warmup, base)
        idx = torch.randint(0, len(x_train), (batch_size, ), generator=gen)
        size = x_train.shape[-1]
        x = F.pad(x_train[idx], (2, 2, 2, 2))
        dy, dx = torch.randint(0, 5, (2, ), generator=gen).tolist()  # one crop per batch
        x = x[:, :, dy:dy + size, dx:dx + size]
        logits = model.head.fc(model.neck(model.backbone(x))[-1])
        loss = F.cross_entropy(logits, data['y_train'][idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if (it + 1) % log_every == 0:
            curve.append((it + 1, statistics.fmean(losses[-log_every:])))
    model.eval()
    with torch.no_grad():
        correct = sum((model.head.fc(model.neck(model.backbone(x_val[i:i + 250]))[-1])
                       .argmax(1) == data['y_val'][i:i + 250]).sum().item()
                      for i in range(0, len(x_val), 250))
    return dict(curve=curve, val_acc=correct / len(x_val), final_loss=curve[-1][1])


TWIN = 'twin (identity)'


def run(models: List[str], seeds: List[int], iters: int, cfg_options: Optional[dict] = None,
        data: Optional[dict] = None, log=print, twin: bool = True, only_twin: bool = False,
        w_scale: float = 1.0, **train_kwargs) -> dict:
    """Train every model and its identity twin (once, from the first model's config) for every
    seed; returns ``{name: {'runs': [...], ...}}``."""
    data = data or textures10()
    num_classes = data.get('num_classes', 10)
    cfgs = {m: load_cfg(m, cfg_options) for m in models}
    jobs = (([(TWIN, cfgs[models[0]], True)] if twin or only_twin else [])
            + ([] if only_twin else [(m, cfgs[m], False) for m in models]))
    results = {name: dict(runs=[]) for name, _, _ in jobs}
    for seed in seeds:
        for name, cfg, twin in jobs:
            torch.manual_seed(seed)
            model = build_model(cfg, num_classes, twin, w_scale)
            t0 = time.time()
            out = train_one(model, build_optimizer(cfg, model), data, iters, seed,
                            **train_kwargs)
            out['seconds'] = time.time() - t0
            results[name]['runs'].append(dict(seed=seed, **out))
            log(f'  seed {seed} {name}: val acc {out["val_acc"]:.3f}, final loss '
                f'{out["final_loss"]:.3f} ({out["seconds"]:.0f} s)')
    return summarize(results)


def summarize(results: dict) -> dict:
    """Add each model's accuracy mean, min, max and mean training-loss curve over its runs."""
    for res in results.values():
        accs = [r['val_acc'] for r in res['runs']]
        res.update(mean_acc=statistics.fmean(accs), min_acc=min(accs), max_acc=max(accs))
        its = [it for it, _ in res['runs'][0]['curve']]
        res['mean_curve'] = [(it, statistics.fmean(r['curve'][k][1] for r in res['runs']))
                             for k, it in enumerate(its)]
    return results


def combine(paths: List[str]) -> dict:
    """The runs of several ``learning_check.json`` files (e.g. one per seed, run apart) as one
    result; they must share the task and the schedule."""
    records = []
    for path in paths:
        with open(path) as f:
            records.append(json.load(f))
    for key in ('task', 'iters'):
        if len({r.get(key) for r in records}) > 1:
            raise SystemExit(f'--combine: the files differ in {key}: '
                             f'{[r.get(key) for r in records]}')
    results = {}
    for record in records:
        for name, res in record['results'].items():
            results.setdefault(name, dict(runs=[]))['runs'].extend(res['runs'])
    return dict(task=records[0].get('task'), iters=records[0].get('iters'),
                commands=[r['command'] for r in records], results=summarize(results))


def report(results: dict, iters: int) -> str:
    twin = results.get(TWIN)
    w = max(16, *(len(name) for name in results))
    lines = [f'{"model":<{w}} {"val acc mean":>12} {"min-max":>13}   training loss (mean of '
             f'seeds) at 10%, 20%, ... of {iters} iterations']
    for name, res in results.items():
        curve = res['mean_curve']
        marks = [curve[max(round(len(curve) * k / 10) - 1, 0)][1] for k in range(1, 11)]
        lines.append(f'{name:<{w}} {res["mean_acc"]:>12.3f} {res["min_acc"]:>6.3f}-'
                     f'{res["max_acc"]:.3f}   ' + ' '.join(f'{v:.3f}' for v in marks))
    for name, res in results.items():
        if twin is None or res is twin:
            continue
        # first point from which DS's mean training loss stays at or below the twin's
        below = [a[1] <= b[1] for a, b in zip(res['mean_curve'], twin['mean_curve'])]
        start = next((i for i in range(len(below)) if all(below[i:])), None)
        when = ('never' if start is None else
                f"from iteration {res['mean_curve'][start][0]} "
                f"({res['mean_curve'][start][0] / iters:.0%} of the schedule)")
        lines.append(f'{name}: mean accuracy {res["mean_acc"] - twin["mean_acc"]:+.3f} vs the '
                     f'twin{paired(res, twin)}; training loss at or below the twin\'s {when}')
        loss = {k: paired_loss(res, twin, k) for k in (0.25, 0.5)}
        if all(loss.values()):
            lines.append(f'{name}: training loss minus the twin\'s, seed by seed, '
                         + '; '.join(f'at {k:.0%} {v}' for k, v in loss.items()))
    return '\n'.join(lines)


def paired_loss(res: dict, twin: dict, frac: float) -> str:
    """The training-loss difference to the twin at ``frac`` of the schedule, seed by seed (mean
    +- standard error); '' below two shared seeds."""
    k = max(round(len(twin['runs'][0]['curve']) * frac) - 1, 0)
    by_seed = {r['seed']: r['curve'][k][1] for r in twin['runs']}
    diffs = [r['curve'][k][1] - by_seed[r['seed']] for r in res['runs'] if r['seed'] in by_seed]
    if len(diffs) < 2:
        return ''
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    return f'{statistics.fmean(diffs):+.3f} +- {se:.3f}'



def paired(res: dict, twin: dict) -> str:
    """The accuracy difference seed by seed (same batches, same init seed): mean, standard error,
    and on how many seeds DS is ahead; '' below two shared seeds. A difference within about two
    standard errors of 0 is not one the seeds can tell from noise."""
    by_seed = {r['seed']: r['val_acc'] for r in twin['runs']}
    diffs = [r['val_acc'] - by_seed[r['seed']] for r in res['runs'] if r['seed'] in by_seed]
    if len(diffs) < 2:
        return ''
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    ahead = sum(d > 0 for d in diffs)
    return (f' (seed by seed {statistics.fmean(diffs):+.3f} +- {se:.3f} s.e., ahead on {ahead} of '
            f'{len(diffs)} seeds)')


def plot(results: dict, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, res in results.items():
        its = [it for it, _ in res['mean_curve']]
        runs = np.array([[v for _, v in r['curve']] for r in res['runs']])
        line, = ax.plot(its, runs.mean(0), label=f'{name}: val acc {res["mean_acc"]:.3f}')
        ax.fill_between(its, runs.min(0), runs.max(0), color=line.get_color(), alpha=0.2)
    ax.set_yscale('log')
    ax.set_xlabel('iteration')
    ax.set_ylabel('training loss (mean of seeds, band: min-max)')
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', nargs='+', default=['dsnet50', 'ds2net50'],
                   help=f'NAME[:key=value,...]: config names ({", ".join(CONFIGS)}) or config '
                   'paths, with backbone arguments as Python literals '
                   '(dsnet50:shortcut_act=None); '
                   'the identity twin is built from the first one')
    p.add_argument('--task', default='textures-10', choices=TASKS)
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--iters', type=int, default=300)
    p.add_argument('--warmup', type=int, default=50)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='config overrides applied to every model (the twin too), VALUE a Python '
                   "literal or a string, e.g. model.backbone.shortcut_init=1.0 or "
                   "\"model.backbone.shortcut_norm_cfg={'type': 'GN', 'num_groups': 8}\"")
    p.add_argument('--only-twin', action='store_true',
                   help='train only the identity twin (e.g. under a --cfg-options recipe)')
    p.add_argument('--no-twin', action='store_true',
                   help='skip the identity twin (e.g. when comparing recipes against one twin '
                   'run: with the same seeds and one thread it repeats exactly)')
    p.add_argument('--w-scale', type=float, default=1.0, metavar='S',
                   help='multiply every dense W_l^i of the DS models by S after initialization '
                   '(e.g. 0.5 with the default init: W_l^i = 0.5 / l); the twin has none')
    p.add_argument('--work-dir', default='work_dirs/learning_check')
    p.add_argument('--combine', nargs='+', metavar='JSON',
                   help='train nothing: report the runs of these learning_check.json files '
                   '(e.g. one per seed) as one, into --work-dir')
    args = p.parse_args(argv)
    if args.combine:
        merged = combine(args.combine)
        print(report(merged['results'], merged['iters']))
        os.makedirs(args.work_dir, exist_ok=True)
        with open(osp.join(args.work_dir, 'learning_check.json'), 'w') as f:
            json.dump(merged, f, indent=1)
        seeds = sorted({r['seed'] for res in merged['results'].values() for r in res['runs']})
        plot(merged['results'], osp.join(args.work_dir, 'learning_check.png'),
             f'{merged["task"]}, {merged["iters"]} iterations, seeds {seeds}')
        print(f'wrote {args.work_dir}/learning_check.json and learning_check.png')
        return
    torch.set_num_threads(args.threads)
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine', log_level='WARNING')  # no per-parameter init report
    options = {}
    for item in args.cfg_options:
        key, _, value = item.partition('=')
        options[key] = literal(value)
    for spec in args.models:  # a bad spec stops here, not after the first model's training
        parse_model(spec)
    os.makedirs(args.work_dir, exist_ok=True)
    t0 = time.time()
    results = run(args.models, args.seeds, args.iters, options, data=make_task(args.task),
                  twin=not args.no_twin,
                  only_twin=args.only_twin, w_scale=args.w_scale, warmup=args.warmup)
    text = report(results, args.iters)
    print(text)
    print(f'total {time.time() - t0:.0f} s, {args.threads} threads')
    command = 'python tools/experiments/learning_check.py ' + ' '.join(argv or sys.argv[1:])
    with open(osp.join(args.work_dir, 'learning_check.json'), 'w') as f:
        json.dump(dict(command=command, date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                       task=args.task, iters=args.iters, threads=args.threads, results=results),
                  f, indent=1)
    plot(results, osp.join(args.work_dir, 'learning_check.png'),
         f'{args.task}, {args.iters} iterations, seeds {args.seeds}\n'
         f'{" ".join(args.cfg_options)}')
    print(f'wrote {args.work_dir}/learning_check.json and learning_check.png')


if __name__ == '__main__':
    main()
