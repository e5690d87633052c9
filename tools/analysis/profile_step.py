"""Where a CUDA training step's time goes: the dense-aggregation implementations side by side.

    python tools/analysis/profile_step.py [--batch-sizes 32 128] [--profile]

One training step = backbone + GAP + linear(1000) + CE + SGD (momentum), fp32 (TF32 convolutions,
PyTorch's default), 224x224, as tools/analysis/benchmark.py. For each batch size it times (mean
of 10 steps after 5 of warm-up; wall clock and the process's CPU time over the same steps)
mmpretrain's ResNet50 and DSNet50 / DS2Net50 with each implementation of the aggregation:

* ``triton``: the operators with their CUDA kernels (the default);
* ``triton-stats-aten``: the Triton aggregate / backward kernels, ATen statistics;
* ``aten``: the operators' ATen implementation (``set_kernel_enabled('cuda', False)``);
* ``reference``: no operator, the reference form (norm modules + weighted sum, PyTorch autograd).

A step whose CPU time is close to its wall time is bound by the CPU (Python, dispatch, launches),
not by the GPU. ``--profile`` adds torch.profiler's top operators by self CPU time, and
``--python-profile`` the Python functions that take the most CPU time (cProfile over 10 steps).
"""
import argparse
import contextlib
import time
from unittest import mock

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

VARIANTS = ('triton', 'triton-stats-aten', 'aten', 'reference')


def build(name):
    if name == 'ResNet50-mmpretrain':
        from mmpretrain.models import ResNet
        return ResNet(depth=50)
    from mmdsnet.models import DS2Net, DSNet
    return {'DSNet50': lambda: DSNet(depth=50), 'DS2Net50': lambda: DS2Net(depth=50)}[name]()


@contextlib.contextmanager
def variant(name):
    from mmdsnet.models.layers import DenseAggregation
    from mmdsnet.ops import triton_aggregate as ta
    with contextlib.ExitStack() as stack:
        ops = {'triton': (), 'triton-stats-aten': (ta._stats_op, ),
               'aten': (ta._stats_op, ta._aggregate_op, ta._backward_op),
               'reference': ()}[name]
        for op in ops:
            stack.enter_context(op.set_kernel_enabled('cuda', False))
        if name == 'reference':
            stack.enter_context(mock.patch.object(DenseAggregation, 'uses_op', lambda self: False))
        yield


def measure(name, batch, dev, prof=False, python_prof=False):
    torch.manual_seed(0)
    net = build(name).to(dev)
    net.train()  # (mmpretrain's ResNet.train returns None)
    head = torch.nn.Linear(2048, 1000).to(dev)
    opt = torch.optim.SGD(list(net.parameters()) + list(head.parameters()), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 224, 224, device=dev)
    y = torch.randint(0, 1000, (batch, ), device=dev)

    def step():
        loss = F.cross_entropy(head(net(x)[-1].mean((2, 3))), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    t, c = time.perf_counter(), time.process_time()
    for _ in range(10):
        step()
    torch.cuda.synchronize()
    wall, cpu = (time.perf_counter() - t) * 100, (time.process_time() - c) * 100
    table = None
    if python_prof:
        import cProfile
        import io
        import pstats
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(10):
            step()
        torch.cuda.synchronize()
        pr.disable()
        buf = io.StringIO()
        pstats.Stats(pr, stream=buf).sort_stats('tottime').print_stats(30)
        table = buf.getvalue()
    elif prof:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            step()
            torch.cuda.synchronize()
        kernels = [e for e in p.events() if e.device_type.name == 'CUDA']
        gpu = sum(e.device_time for e in kernels) / 1e3
        table = (f'   one step: {len(kernels)} GPU kernels, GPU busy {gpu:.1f} ms\n'
                 + p.key_averages().table(sort_by='self_cpu_time_total', row_limit=12,
                                          max_name_column_width=48))
    return wall, cpu, table


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--batch-sizes', nargs='+', type=int, default=[32, 128])
    p.add_argument('--models', nargs='+', default=['DSNet50', 'DS2Net50'])
    p.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS)
    p.add_argument('--profile', action='store_true')
    p.add_argument('--python-profile', action='store_true')
    args = p.parse_args()
    dev = torch.device('cuda')
    print(torch.cuda.get_device_name(), 'torch', torch.__version__)
    for batch in args.batch_sizes:
        base, base_cpu, table = measure('ResNet50-mmpretrain', batch, dev, args.profile,
                                     args.python_profile)
        print(f'\nbatch {batch}: ResNet50-mmpretrain {base:.1f} ms/step (CPU {base_cpu:.1f} ms)')
        print('| model | aggregation | ms/step | x ResNet50-mmpretrain | CPU ms/step |')
        print('|---|---|---|---|---|')
        tables = [('ResNet50-mmpretrain', table)]
        for name in args.models:
            for v in args.variants:
                with variant(v):
                    wall, cpu, table = measure(name, batch, dev, args.profile,
                                              args.python_profile)
                print(f'| {name} | {v} | {wall:.1f} | {wall / base:.3f} | {cpu:.1f} |', flush=True)
                tables.append((f'{name} {v}', table))
        for label, table in tables if args.profile or args.python_profile else ():
            print(f'\n== batch {batch}, {label}\n{table}')


if __name__ == '__main__':
    main()
