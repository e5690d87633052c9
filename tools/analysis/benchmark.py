"""Table 9 of the paper, measured: training time and memory, inference speed, params and FLOPs.

One process, one device, every model in the same harness (classification setting: backbone +
global average pooling + a linear 1000-class head + cross-entropy + one SGD step). The baselines
are the stock ResNet50s users already train (mmdet's, mmpretrain's, torchvision's) beside our own
identity mode (``ResNet50``); every ratio refers to the best stock one of the run for that
measure (the fastest for time, the smallest for memory), and the table names it. A baseline that
cannot be built here (mmdet missing, say) is reported as missing, with the reason, and the run
goes on with the others.

* training time per iteration: ``--repeats`` rounds after ``--warmup`` steps; in each round every
  model runs ``--iters`` steps in turn, the order reversed every other round, so that slow phases
  of a shared machine hit every model alike; median and spread (min, max) over rounds;
  ``torch.cuda.synchronize`` around each timed stretch on CUDA;
* training peak memory: CUDA, ``max_memory_allocated`` over one step after
  ``reset_peak_memory_stats`` (parameters, gradients and momentum included, as a GPU's memory is);
  CPU, the growth of the process's peak RSS over one step (after a warm-up step; gradients are
  freed between steps, so they count), each model in its own subprocess so that no model inherits
  another's peak, with glibc's mmap threshold fixed so that freed tensors go back to the OS;
* inference images/s (eval mode, ``torch.inference_mode``), alternated like training;
* parameters and FLOPs of the whole classifier (MMEngine's ``get_model_complexity_info``).

Models: the names in :data:`ZOO` or a config file (its ``model.backbone`` is used). A name may
carry backbone keyword arguments after a colon, ``DSNet50:shortcut_init=1.0,
aggregation_impl='reference'`` (Python literals), and one suffix: ``@aten`` runs the
dense-aggregation operators' ATen implementation where a device kernel (Triton, on CUDA) is
registered; ``@dispatch`` calls the operators through the dispatcher instead of the eager calls
(docs/design.md). ``--ratio-to SPEC`` takes the per-round ratios to that model instead of the
fastest stock baseline: an A/B of two set-ups in one process. The stock baselines (:data:`STOCK`,
or those of ``--stock``) are added unless ``--no-stock``. Other settings: ``--amp bf16|fp16``
(autocast; timing only, no loss scaling), ``--channels-last``, ``--compile [BACKEND]``
(``torch.compile`` of the whole model), ``--input-size H [W]``, ``--out-indices`` and
``--backbone-only`` (no head: the loss is the sum of the means of the backbone's outputs, as in the
detection regime). Examples::

    python tools/analysis/benchmark.py --models DSNet50 DS2Net50 --batch-size 8
    python tools/analysis/benchmark.py --models DSNet50 --threads 1 --clock cpu --repeats 9 \\
        --skip memory infer flops --out work_dirs/bench.json
    python tools/analysis/benchmark.py --device cuda --batch-size 32   # the paper's per-GPU batch
    python tools/analysis/benchmark.py --device cuda --batch-size 2 --input-size 800 1216 \
        --backbone-only --out-indices 0 1 2 3 --models ResNet50 DSNet50   # detection regime
    python tools/analysis/benchmark.py --no-stock --models DSNet50 DSNet50:shortcut_init=1.0 \
        --ratio-to DSNet50 --threads 1 --clock cpu --iters 1 --repeats 7 \
        --skip flops memory infer                                         # an A/B
"""
import argparse
import ast
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

# The paper's Table 9 (four 1080Ti GPUs, batch 32 per GPU): memory per GPU (MB), s / iteration.
PAPER = {
    'ResNet50': (3929, 0.31),
    'ResNet152': (7095, 0.63),
    'DenseNet264': (9981, 0.60),
    'DSNet50': (4777, 0.37),
    'DS2Net50': (5133, 0.39),
}
#: The stock ResNet50s every ratio refers to (the best of them in each run, per measure).
STOCK = ['ResNet50-mmdet', 'ResNet50-mmpretrain', 'ResNet50-torchvision']
DEFAULT_MODELS = ['ResNet50', 'ResNet152', 'DenseNet264', 'DSNet50', 'DS2Net50']


def _dsnet(**kw):
    from mmdsnet.models import DS2Net, DSNet
    return (DS2Net if kw.pop('ds2', False) else DSNet)(**kw)


def _mmpretrain(name, **kw):
    from mmpretrain.models import DenseNet, ResNet
    return {'ResNet': ResNet, 'DenseNet': DenseNet}[name](**kw)


def _mmdet_resnet50(out_indices=(3, ), norm_eval=False):
    from mmdet.models.backbones import ResNet  # imports mmcv.ops: needs mmcv's compiled ops

    # norm_eval=False: every model here trains its BatchNorms. mmdet's own default (True, for
    # detection fine-tuning) keeps them in eval mode, which alone makes a training step ~7% cheaper
    # on a CPU (ResNet50-mmdet-normeval; docs/performance.md, issue 15).
    return ResNet(depth=50, out_indices=out_indices, norm_eval=norm_eval)


class _TorchvisionResNet50(nn.Module):
    """torchvision's ResNet50 up to layer4 (avgpool and fc are ours), returning the outputs of
    the stages in ``out_indices``."""

    def __init__(self, out_indices=(3, )):
        super().__init__()
        import torchvision
        net = torchvision.models.resnet50()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.out_indices = tuple(out_indices)

    def forward(self, x):
        x, outs = self.stem(x), []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


ZOO = {  # name -> constructor; keyword arguments (out_indices) go to the backbone
    'ResNet50': lambda **kw: _dsnet(depth=50, shortcut='identity', **kw),  # our identity mode
    'ResNet152': lambda **kw: _dsnet(depth=152, shortcut='identity', **kw),
    'DSNet50': lambda **kw: _dsnet(depth=50, **kw),
    'DS2Net50': lambda **kw: _dsnet(depth=50, ds2=True, **kw),
    'DSNet101': lambda **kw: _dsnet(depth=101, **kw),
    'DS2Net101': lambda **kw: _dsnet(depth=101, ds2=True, **kw),
    'ResNet50-mmdet': _mmdet_resnet50,
    'ResNet50-mmdet-normeval': lambda **kw: _mmdet_resnet50(norm_eval=True, **kw),  # its default
    'ResNet50-mmpretrain': lambda **kw: _mmpretrain('ResNet', depth=50, **kw),
    'ResNet50-torchvision': _TorchvisionResNet50,
    # DenseNet-264 (Huang et al.): growth 32, blocks 6-12-64-48; not in mmpretrain's arch table
    'DenseNet264': lambda **kw: _mmpretrain(
        'DenseNet', arch=dict(growth_rate=32, depths=[6, 12, 64, 48], init_channels=64), **kw),
}
AMP = {'bf16': torch.bfloat16, 'fp16': torch.float16}


class Classifier(nn.Module):
    """backbone -> last feature map -> global average pool -> linear head (1000 classes)."""

    def __init__(self, backbone: nn.Module, channels: int, num_classes: int = 1000):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x):
        feat = self.backbone(x)
        feat = feat[-1] if isinstance(feat, (tuple, list)) else feat
        return self.head(feat.mean((2, 3)))


def parse_spec(spec: str) -> Tuple[str, dict, str]:
    """``'NAME[:key=value,...][@impl]'`` -> ``(NAME, {key: value}, impl)``."""
    rest, _, impl = spec.partition('@')
    name, _, options = rest.partition(':')
    if impl not in ('', 'aten', 'dispatch'):
        raise SystemExit(f'unknown implementation {impl!r} in {spec!r}: only @aten and @dispatch')
    try:
        call = ast.parse(f'dict({options})', mode='eval').body
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        if call.args or None in kwargs:
            raise ValueError
    except (SyntaxError, ValueError):
        raise SystemExit(f'bad options {options!r} in {spec!r}: write key=value pairs of Python '
                         f"literals, e.g. DSNet50:shortcut_init=1.0,aggregation_impl='reference'"
                         ) from None
    return name, kwargs, impl


def build(name: str, out_indices=None, backbone_only: bool = False,
          options: Optional[dict] = None) -> nn.Module:
    kw = {} if out_indices is None else dict(out_indices=tuple(out_indices))
    kw.update(options or {})
    if name in ZOO:
        backbone = ZOO[name](**kw)
    elif name.endswith('.py') and os.path.exists(name):
        from mmengine.config import Config
        from mmengine.registry import MODELS, DefaultScope, init_default_scope

        import mmdsnet  # noqa: F401
        cfg = Config.fromfile(name)
        bcfg = cfg.model.backbone if 'backbone' in cfg.model else cfg.model
        bcfg.pop('init_cfg', None)  # no checkpoint downloads: timing does not need weights
        bcfg.update(kw)
        scope = cfg.get('default_scope', 'mmdsnet')
        init_default_scope(scope)
        with DefaultScope.overwrite_default_scope(scope):
            backbone = MODELS.build(bcfg)
    else:
        raise SystemExit(f'unknown model {name!r}: use one of {sorted(ZOO)} or a config file path')
    # No init_weights(): timing and memory do not depend on the values, and MMEngine's
    # per-parameter init report would flood the log.
    if backbone_only:
        return backbone
    with torch.no_grad():
        backbone.eval()  # (mmpretrain's ResNet.train() returns None: no chaining)
        feat = backbone(torch.zeros(1, 3, 64, 64))
    feat = feat[-1] if isinstance(feat, (tuple, list)) else feat
    return Classifier(backbone, feat.shape[1])


@contextlib.contextmanager
def aten_operators():
    """The dense-aggregation operators run their ATen implementation on every device (the
    device kernels registered beside it, Triton on CUDA, stand aside meanwhile)."""
    from mmdsnet.ops import use_implementation
    with use_implementation(kernels='aten'):
        yield


@contextlib.contextmanager
def dispatched_operators():
    """The models call the dense-aggregation operators through the dispatcher, as anything that
    records the call does, instead of the eager calls (docs/design.md)."""
    from mmdsnet.ops import use_implementation
    with use_implementation(calls='dispatcher'):
        yield


class Runner:
    """One model's training step and inference step on fixed random data."""

    def __init__(self, spec, args, device):
        torch.manual_seed(0)
        self.spec = spec
        self.device = device
        name, options, impl = parse_spec(spec)
        self.ops = {'aten': aten_operators, 'dispatch': dispatched_operators}.get(
            impl, contextlib.nullcontext)
        self.model = build(name, args.out_indices, args.backbone_only, options).to(device)
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=fmt)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9,
                                   weight_decay=1e-4)
        if args.compile:
            self.model = torch.compile(self.model, backend=args.compile)
        n, (h, w) = args.batch_size, args.input_size
        self.x = torch.randn(n, 3, h, w, device=device).contiguous(memory_format=fmt)
        self.y = torch.randint(0, 1000, (n, ), device=device)
        self.amp = args.amp
        self.backbone_only = args.backbone_only
        self.ce = nn.CrossEntropyLoss()

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AMP[self.amp])

    def loss(self, out):
        if self.backbone_only:  # the detection regime: every output feeds the loss
            outs = out if isinstance(out, (tuple, list)) else (out, )
            return sum(o.float().mean() for o in outs)
        return self.ce(out.float(), self.y)

    def train_step(self):
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        with self.ops():
            with self.autocast():
                loss = self.loss(self.model(self.x))
            loss.backward()
        self.opt.step()

    def infer_step(self):
        self.model.eval()
        with self.ops(), self.autocast(), torch.inference_mode():
            self.model(self.x)


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}
CLOCK = 'wall'


def timed(fn, iters, device) -> float:
    clock = CLOCKS[CLOCK]
    _sync(device)
    t0 = clock()
    for _ in range(iters):
        fn()
    _sync(device)
    return (clock() - t0) / iters


def alternate(runners: List[Runner], step: str, iters: int, repeats: int, device,
              log) -> Dict[str, List[float]]:
    samples = {r.spec: [] for r in runners}
    for rep in range(repeats):
        order = runners if rep % 2 == 0 else runners[::-1]
        for r in order:
            samples[r.spec].append(timed(getattr(r, step), iters, device))
        log(f'  {step} round {rep + 1}/{repeats}: ' + ', '.join(
            f'{r.spec} {samples[r.spec][-1]:.3f}s' for r in runners))
    return samples


def summary(xs: List[float]) -> dict:
    return dict(median=statistics.median(xs), min=min(xs), max=max(xs), samples=xs)


def best_stock(res, value, lowest=True) -> Optional[str]:
    """The stock baseline with the best ``value(model result)`` in this run, or None."""
    found = [(value(res['models'][s]), s) for s in STOCK
             if s in res['models'] and value(res['models'][s]) is not None]
    return (min if lowest else max)(found)[1] if found else None


def paired_ratios(res, samples, specs, key, ratio_to: Optional[str] = None):
    """Median over rounds of (model time / reference time in the same round), the reference
    being ``ratio_to`` or else the fastest stock baseline: with alternation, a slow phase of a
    shared machine cancels out of each round's ratio."""
    base = ratio_to or best_stock(res, lambda m: m.get(key, {}).get('median'))
    res['reference'][key] = base
    if base is None:
        return
    for s in specs:
        ratios = [a / b for a, b in zip(samples[s], samples[base])]
        res['models'][s][key]['paired_ratio_median'] = statistics.median(ratios)
        res['models'][s][key]['paired_ratios'] = ratios


# ------------------------------------------------------------------------------------ memory
def _proc_status(key: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f'{key} not in /proc/self/status')


def memory_child(spec: str, args) -> dict:
    """Run in a fresh process: warm-up step, reset the RSS high-water mark, one measured step."""
    torch.set_num_threads(args.threads)
    runner = Runner(spec, args, torch.device('cpu'))
    runner.train_step()  # momentum buffers and one-off allocations
    results = []
    for _ in range(args.memory_steps):
        runner.opt.zero_grad(set_to_none=True)
        gc.collect()
        before = _proc_status('VmRSS')
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # reset VmHWM to the current RSS (Linux >= 4.0)
        runner.train_step()
        results.append((_proc_status('VmHWM') - before, _proc_status('VmHWM')))
    growth = max(r[0] for r in results)
    return dict(peak_growth_mb=growth / 2**20, peak_rss_mb=max(r[1] for r in results) / 2**20,
                samples_mb=[r[0] / 2**20 for r in results])


def memory_cpu(spec: str, args) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', MALLOC_TRIM_THRESHOLD_='0',
               OMP_NUM_THREADS=str(args.threads), CUDA_VISIBLE_DEVICES='')
    cmd = [sys.executable, __file__, '--memory-child', spec,
           '--batch-size', str(args.batch_size), '--input-size', *map(str, args.input_size),
           '--threads', str(args.threads), '--memory-steps', str(args.memory_steps)]
    cmd += (['--amp', args.amp] * bool(args.amp) + ['--channels-last'] * args.channels_last
            + ['--compile', args.compile] * bool(args.compile)
            + ['--backbone-only'] * args.backbone_only
            + (['--out-indices', *map(str, args.out_indices)] if args.out_indices else []))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f'memory measurement of {spec} failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_cuda(runner: Runner, device) -> dict:
    runner.opt.zero_grad(set_to_none=True)
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    runner.train_step()
    _sync(device)
    return dict(peak_allocated_mb=torch.cuda.max_memory_allocated(device) / 2**20,
                peak_reserved_mb=torch.cuda.max_memory_reserved(device) / 2**20)


def complexity(runner: Runner, args) -> dict:
    from mmengine.analysis import get_model_complexity_info
    model = runner.model
    model.eval()  # (mmdet's and mmpretrain's ResNet.train() return None: no chaining)
    with torch.no_grad():
        info = get_model_complexity_info(model, input_shape=(3, *args.input_size),
                                         show_table=False, show_arch=False)
    return dict(params_m=info['params'] / 1e6, gflops=info['flops'] / 1e9)


# ------------------------------------------------------------------------------------- report
def _ratio(v, base):
    return None if v is None or base in (None, 0) else v / base


def references(res: dict, memory_key: str) -> Dict[str, Optional[str]]:
    """The stock baseline each ratio column divides by (named in the table's header)."""
    return {
        'time': best_stock(res, lambda m: m.get('train_time', {}).get('median')),
        'memory': best_stock(res, lambda m: m.get('memory', {}).get(memory_key)),
        'infer': best_stock(res, lambda m: m.get('infer_img_s'), lowest=False),
    }


def table(res: dict, memory_key: str) -> str:
    ref = references(res, memory_key)
    models = res['models']
    bt = models.get(ref['time'], {}).get('train_time', {}).get('median')
    bm = models.get(ref['memory'], {}).get('memory', {}).get(memory_key)
    bi = models.get(ref['infer'], {}).get('infer_img_s')
    rows = [('model', 'params M', 'GFLOPs', 'train s/it (min-max)', 'x ref', 'memory MB', 'x ref',
             'infer img/s', 'x ref', "paper's MB", 'x', "paper's s/it", 'x')]
    pr = PAPER['ResNet50']
    for spec, m in models.items():
        if 'missing' in m:
            rows.append((spec, f"missing: {m['missing']}", *([''] * 11)))
            continue
        t = m.get('train_time', {}).get('median')
        mem = m.get('memory', {}).get(memory_key)
        ips = m.get('infer_img_s')
        p = PAPER.get(spec)

        def f(v, fmt):
            return '-' if v is None else format(v, fmt)
        rows.append((
            spec, f(m.get('params_m'), '.2f'), f(m.get('gflops'), '.2f'),
            '-' if t is None else f"{t:.3f} ({m['train_time']['min']:.3f}-"
                                  f"{m['train_time']['max']:.3f})",
            f(_ratio(t, bt), '.3f'), f(mem, '.0f'), f(_ratio(mem, bm), '.3f'), f(ips, '.1f'),
            f(_ratio(ips, bi), '.3f'),
            f(p and p[0], 'd'), f(p and p[0] / pr[0], '.2f'), f(p and p[1], '.2f'),
            f(p and p[1] / pr[1], '.2f')))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ['| ' + ' | '.join(str(c).ljust(w) for c, w in zip(r, widths)) + ' |' for r in rows]
    lines.insert(1, '|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    head = (f"Ratios ('x ref') to the best stock ResNet50 of this run: time {ref['time']}, "
            f"memory {ref['memory']}, inference {ref['infer']}. The paper's ratios are to its "
            f"ResNet50.")
    return head + '\n' + '\n'.join(lines)


def main(argv: Optional[List[str]] = None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', nargs='+', default=DEFAULT_MODELS,
                   help=f'names ({", ".join(sorted(ZOO))}) or config files; the stock '
                   f'baselines {STOCK} are added unless --no-stock')
    p.add_argument('--no-stock', action='store_true',
                   help='do not add the stock baselines (ratios are then not printed)')
    p.add_argument('--ratio-to', metavar='SPEC',
                   help='per-round time ratios to this model of --models (an A/B), not to the '
                   'fastest stock baseline')
    p.add_argument('--stock', nargs='+', choices=STOCK, default=STOCK,
                   help='the stock baselines to add (default: all)')
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--input-size', type=int, nargs='+', default=[224], metavar='H [W]')
    p.add_argument('--amp', choices=sorted(AMP), help='autocast dtype (timing: no loss scaling)')
    p.add_argument('--channels-last', action='store_true', help='model and input channels_last')
    p.add_argument('--compile', nargs='?', const='inductor', metavar='BACKEND',
                   help='torch.compile every model (default backend: inductor)')
    p.add_argument('--out-indices', type=int, nargs='+', help="the backbones' out_indices")
    p.add_argument('--backbone-only', action='store_true',
                   help='no head: the loss is the sum of the means of the backbone outputs')
    p.add_argument('--iters', type=int, default=2, help='training steps per timed stretch')
    p.add_argument('--repeats', type=int, default=5, help='alternating timed rounds')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps per model first')
    p.add_argument('--infer-iters', type=int, default=2)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, default=2, help='torch threads (CPU)')
    p.add_argument('--clock', default='wall', choices=sorted(CLOCKS),
                   help='wall: elapsed time (the measure); cpu: CPU time of this process, which '
                   'time slices given to other processes on a shared machine do not inflate '
                   '(use with --threads 1: idle OpenMP threads spin and count as CPU time)')
    p.add_argument('--memory-steps', type=int, default=1, help='measured steps (CPU memory)')
    p.add_argument('--skip', nargs='*', default=[], choices=['train', 'memory', 'infer', 'flops'])
    p.add_argument('--out', help='write the results as JSON here')
    p.add_argument('--memory-child', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if len(args.input_size) > 2:
        p.error('--input-size takes H, or H and W')
    args.input_size = (args.input_size * 2)[:2]
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = args.clock
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args)))
        return
    specs = list(dict.fromkeys(([] if args.no_stock else args.stock) + args.models))
    if args.ratio_to is not None and args.ratio_to not in specs:
        p.error(f'--ratio-to {args.ratio_to!r} is not one of the models {specs}')
    device = torch.device(args.device)
    log = lambda s: print(s, flush=True)  # noqa: E731
    res = dict(
        date=time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()),
        command=' '.join([os.path.relpath(__file__)] + (argv or sys.argv[1:])),
        machine=dict(platform=platform.platform(), processor=platform.processor(),
                     cpus=os.cpu_count(), threads=torch.get_num_threads(), torch=torch.__version__,
                     device=(torch.cuda.get_device_name(device) if device.type == 'cuda'
                             else 'cpu')),
        settings=dict(batch_size=args.batch_size, input_size=args.input_size, iters=args.iters,
                      repeats=args.repeats, warmup=args.warmup, clock=args.clock,
                      threads=args.threads, amp=args.amp, channels_last=args.channels_last,
                      compile=args.compile, out_indices=args.out_indices,
                      backbone_only=args.backbone_only),
        models={s: {} for s in specs}, reference={})
    log(f"{res['date']}  {res['machine']}  {res['settings']}")

    runners = []
    for s in specs:
        log(f'building {s}')
        try:
            runners.append(Runner(s, args, device))
        except Exception as e:  # noqa: BLE001  (a baseline we cannot build is reported)
            if s not in STOCK:
                raise
            res['models'][s]['missing'] = f'{type(e).__name__}: {e}'.splitlines()[0][:200]
            log(f"  {s} is missing: {res['models'][s]['missing']}")
    specs = [r.spec for r in runners]
    for r in runners:
        if 'flops' not in args.skip:
            res['models'][r.spec].update(complexity(r, args))
        else:
            res['models'][r.spec]['params_m'] = sum(
                q.numel() for q in r.model.parameters()) / 1e6
    if 'train' not in args.skip:
        for r in runners:
            for _ in range(args.warmup):
                r.train_step()
        samples = alternate(runners, 'train_step', args.iters, args.repeats, device, log)
        for s, xs in samples.items():
            res['models'][s]['train_time'] = summary(xs)
        paired_ratios(res, samples, specs, 'train_time', args.ratio_to)
    if 'infer' not in args.skip:
        for r in runners:
            r.infer_step()
        samples = alternate(runners, 'infer_step', args.infer_iters, args.repeats, device, log)
        for s, xs in samples.items():
            res['models'][s]['infer_img_s'] = args.batch_size / statistics.median(xs)
            res['models'][s]['infer_time'] = summary(xs)
        paired_ratios(res, samples, specs, 'infer_time', args.ratio_to)
    if 'memory' not in args.skip:
        for r in runners:
            if device.type == 'cuda':
                res['models'][r.spec]['memory'] = memory_cuda(r, device)
            else:
                res['models'][r.spec]['memory'] = memory_cpu(r.spec, args)
            log(f"  memory {r.spec}: {res['models'][r.spec]['memory']}")
    key = 'peak_allocated_mb' if device.type == 'cuda' else 'peak_growth_mb'
    res['memory_measure'] = key
    print()
    measure = ('CUDA max_memory_allocated' if device.type == 'cuda' else
               'CPU peak RSS growth over one step')
    print(f"Training memory: {measure}; paper's columns: Table 9, four 1080Ti GPUs, "
          f"batch 32 per GPU")
    print(table(res, key))
    to = (f'--ratio-to {args.ratio_to}' if args.ratio_to else 'the fastest stock ResNet50')
    print(f"Median of per-round ratios to {to} (train time: "
          f"{res['reference'].get('train_time')}; inference time: "
          f"{res['reference'].get('infer_time')}):")
    for s in specs:
        m = res['models'][s]
        print(f"  {s}: {m.get('train_time', {}).get('paired_ratio_median', float('nan')):.3f}; "
              f"{m.get('infer_time', {}).get('paired_ratio_median', float('nan')):.3f}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(res, f, indent=1)
        log(f'wrote {args.out}')


if __name__ == '__main__':
    main()
