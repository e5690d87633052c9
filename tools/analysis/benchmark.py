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

Models (tools/analysis/bench_models.py): the names in ``ZOO`` or a config file (its
``model.backbone`` is used). A name may carry backbone keyword arguments after a colon,
``DSNet50:shortcut_init=1.0`` (Python literals): how the dense aggregation computes is the
model's own ``aggregation_impl`` (``DSNet50:aggregation_impl='reference'``: norm modules and a
weighted sum instead of the custom operators). One suffix picks what runs behind the operators:
``@aten`` their ATen implementation where a device kernel (Triton, on CUDA) is registered;
``@dispatch`` the dispatcher instead of the eager calls (docs/design.md); ``@opaque``, under
``--compile``, the operators as opaque nodes calling their device kernels instead of inductor
compiling their decompositions; ``@triton-launch`` the Triton kernels through Triton's
``JITFunction.run`` instead of the direct launches. ``--ratio-to SPEC``
takes the per-round ratios to that model instead of the fastest stock baseline: an A/B of two
set-ups in one process. The stock baselines (:data:`STOCK`,
or those of ``--stock``) are added unless ``--no-stock``. Other settings: ``--amp bf16|fp16``
(autocast; timing only, no loss scaling), ``--channels-last``, ``--compile [BACKEND]``
(``torch.compile`` of the whole model), ``--input-size H [W]``, ``--out-indices`` and
``--backbone-only`` (no head: the loss is the sum of the means of the backbone's outputs, as in the
detection regime). ``--profile`` adds torch.profiler's table of one training step per model
(operators by self CPU time; on CUDA the GPU kernels and GPU busy time; ``--trace-dir`` writes
Chrome traces) and ``--python-profile [STEPS]`` cProfile's functions with the most own time.
Examples::

    python tools/analysis/benchmark.py --models DSNet50 DS2Net50 --batch-size 8
    python tools/analysis/benchmark.py --models DSNet50 --threads 1 --clock cpu --repeats 9 \\
        --skip memory infer flops --out work_dirs/bench.json
    python tools/analysis/benchmark.py --device cuda --batch-size 32   # the paper's per-GPU batch
    python tools/analysis/benchmark.py --device cuda --batch-size 2 --input-size 800 1216 \\
        --backbone-only --out-indices 0 1 2 3 --models ResNet50 DSNet50   # detection regime
    python tools/analysis/benchmark.py --no-stock --models DSNet50 DSNet50:shortcut_init=1.0 \\
        --ratio-to DSNet50 --threads 1 --clock cpu --iters 1 --repeats 7 \\
        --skip flops memory infer                                         # an A/B
    python tools/analysis/benchmark.py --device cuda --batch-size 32 --no-stock --models \\
        DSNet50 DSNet50@aten "DSNet50:aggregation_impl='reference'" ResNet50-mmpretrain \\
        --skip memory flops --profile          # where a GPU step's time goes, per implementation
"""
import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # its modules, however it is run

from bench_models import ZOO, Classifier, build, parse_spec  # noqa: E402,F401
from bench_profile import profiles  # noqa: E402
from bench_report import (PAPER, STOCK, best_stock, paired_ratios, references,  # noqa: E402,F401
                          summary, table)

DEFAULT_MODELS = ['ResNet50', 'ResNet152', 'DenseNet264', 'DSNet50', 'DS2Net50']
AMP = {'bf16': torch.bfloat16, 'fp16': torch.float16}


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


@contextlib.contextmanager
def opaque_operators():
    """Under ``--compile``, inductor keeps each dense-aggregation operator one node that calls its
    device kernel, instead of compiling (and fusing) its decomposition."""
    from mmdsnet.ops import use_implementation
    with use_implementation(compiled='operators'):
        yield


@contextlib.contextmanager
def triton_launches():
    """The Triton kernels launched through Triton's ``JITFunction.run`` every time, instead of
    the direct launches of their compiled variants."""
    from mmdsnet.ops import use_implementation
    with use_implementation(launches='triton'):
        yield


class Runner:
    """One model's training step and inference step on fixed random data."""

    def __init__(self, spec, args, device):
        torch.manual_seed(0)
        self.spec = spec
        self.device = device
        name, options, impl = parse_spec(spec)
        self.ops = {'aten': aten_operators, 'dispatch': dispatched_operators,
                    'opaque': opaque_operators, 'triton-launch': triton_launches}.get(
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
    p.add_argument('--profile', action='store_true',
                   help='torch.profiler over one training step of each model: its operators by '
                   'self CPU time; on CUDA also the GPU kernels and the GPU busy time')
    p.add_argument('--python-profile', type=int, nargs='?', const=10, metavar='STEPS',
                   help='cProfile over STEPS (default 10) training steps of each model: the '
                   'Python functions with the most own time')
    p.add_argument('--profile-rows', type=int, default=20, help='rows of each profile table')
    p.add_argument('--trace-dir', help='with --profile: write a Chrome trace of each model '
                   '(chrome://tracing, ui.perfetto.dev) into this folder')
    p.add_argument('--out', help='write the results as JSON here')
    p.add_argument('--memory-child', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if len(args.input_size) > 2:
        p.error('--input-size takes H, or H and W')
    args.input_size = (args.input_size * 2)[:2]
    if args.trace_dir and not args.profile:
        p.error('--trace-dir writes the traces of --profile: add --profile')
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
    if args.profile or args.python_profile:
        profiles(runners, args, device, res)
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
    for s in specs:
        for name, what in (('profile', 'torch.profiler, one training step'),
                           ('python_profile', f'cProfile, {args.python_profile} training steps')):
            if name in res['models'][s]:
                print(f"\n== {s}: {what}\n{res['models'][s][name]}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(res, f, indent=1)
        log(f'wrote {args.out}')


if __name__ == '__main__':
    main()
