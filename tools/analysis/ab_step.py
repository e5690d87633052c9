"""A/B of two DSNet set-ups in one process: is a change free in CPU (or GPU) time?

Builds two backbones from keyword dicts, each with GAP + linear(1000) + CE + SGD, and times one
training step of each, alternating A and B (AB, BA, AB, ...) so that slow drifts of a shared
machine hit both alike; prints every step and the median of the per-round ratios B / A.

    python tools/analysis/ab_step.py --a "dict(depth=50)" --b "dict(depth=50, shortcut_init=1.0)"
    python tools/analysis/ab_step.py --a "dict(depth=50)" --b "dict(depth=50)" --b-dispatch

``--b-dispatch`` makes B call the aggregation operators through the dispatcher, as anything that
records the call does, instead of the eager calls (docs/design.md, "Eager calls skip the
operator's Python layers"). On the CPU the clock is the process's CPU time with one thread
(``--threads``); on CUDA the wall clock after a synchronize.
"""
import argparse
import ast
import contextlib
import statistics
import sys
import time
from unittest import mock

import torch
import torch.nn.functional as F


def parse_kwargs(text: str) -> dict:
    """``"dict(depth=50, shortcut_init=1.0)"`` or ``"{'depth': 50}"`` -> a dict of literals."""
    node = ast.parse(text, mode='eval').body
    if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'dict' and not node.args:
        return {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    value = ast.literal_eval(node)
    if not isinstance(value, dict):
        raise SystemExit(f'expected dict(...) or {{...}} of literals, got {text!r}')
    return value


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--a', required=True, help='DSNet keyword arguments of A: "dict(depth=50)"')
    p.add_argument('--b', required=True, help='the same for B')
    p.add_argument('--b-dispatch', action='store_true',
                   help='B calls the operators through the dispatcher (no eager calls)')
    p.add_argument('--rounds', type=int, default=7)
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--device', default='cpu')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from mmdsnet.models import DSNet
    ops = sys.modules['mmdsnet.ops.dense_aggregate']  # (the package's name is the operator)
    dev = torch.device(args.device)
    x = torch.randn(args.batch_size, 3, 224, 224, device=dev)
    y = torch.randint(0, 1000, (args.batch_size, ), device=dev)

    def make(text, dispatch):
        kwargs = parse_kwargs(text)
        torch.manual_seed(0)
        net = DSNet(**kwargs).to(dev)
        net.train()
        head = torch.nn.Linear(net.out_channels[-1], 1000).to(dev)
        opt = torch.optim.SGD(list(net.parameters()) + list(head.parameters()), lr=0.01,
                              momentum=0.9)

        def step():
            with (mock.patch.object(ops, '_plain_eager', lambda t: False) if dispatch
                  else contextlib.nullcontext()):
                if dev.type == 'cuda':
                    torch.cuda.synchronize()
                t = time.perf_counter() if dev.type == 'cuda' else time.process_time()
                loss = F.cross_entropy(head(net(x)[-1].mean((2, 3))), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if dev.type == 'cuda':
                    torch.cuda.synchronize()
                return (time.perf_counter() if dev.type == 'cuda' else time.process_time()) - t
        return step
    steps = {'A': make(args.a, False), 'B': make(args.b, args.b_dispatch)}
    for s in steps.values():  # warm-up
        s()
    times = {'A': [], 'B': []}
    for r in range(args.rounds):
        for k in ('AB' if r % 2 == 0 else 'BA'):
            times[k].append(steps[k]())
    for k in 'AB':
        print(f'{k}: ' + ' '.join(f'{t:.3f}' for t in times[k]) + ' s')
    ratio = statistics.median(b / a for a, b in zip(times['A'], times['B']))
    print(f'median of per-round ratios B / A: {ratio:.4f} ({args.rounds} rounds, '
          f'{args.device}, {args.threads} thread(s), batch {args.batch_size})')


if __name__ == '__main__':
    main()
