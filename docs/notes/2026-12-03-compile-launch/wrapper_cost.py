"""Host time per training step of the Triton path's Python around the launches, on the CPU: the
kernels' wrappers (``mmdsnet.ops.triton_aggregate``) run on CPU tensors with every launch
replaced by the direct launcher's hit path minus the driver call (its key and lookup), so what
is timed is what a GPU host would spend per step before the launches' own cost. A narrow
DSNet50 / DS2Net50 (base 8 channels, batch 1, 64 x 64: the host work does not depend on the
sizes); the outputs are left unwritten, so only the time means anything.
Run: python docs/notes/2026-12-03-compile-launch/wrapper_cost.py"""
import time

import torch

from mmdsnet.models import DS2Net, DSNet
from mmdsnet.ops import operators as ops
from mmdsnet.ops import triton_aggregate as ta

SPENT = {}


class _HitOnly:
    """A launcher that does what a direct hit does on the host but the driver call."""

    def __init__(self, kernel):
        self.cache, self.direct = {}, ta._Direct(kernel)

    def __getitem__(self, grid):
        def launch(*args, **constexprs):
            self.cache.get(self.direct.key(0, args, constexprs))
        return launch


def _timed(name, fn):
    def call(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name] = SPENT.get(name, 0.0) + time.perf_counter() - t
    return call


def main():
    torch.set_num_threads(1)
    for k in ('_stats_kernel', '_aggregate_kernel', '_backward_reduce_kernel',
              '_backward_apply_kernel'):
        setattr(ta, k, _HitOnly(getattr(ta, k)))
    for op, fn in ((ops.norm_stats, ta.norm_stats), (ops.dense_aggregate, ta.dense_aggregate),
                   (ops.dense_aggregate_backward, ta.dense_aggregate_backward),
                   (ops.CHAIN_BACKWARD, ta.chain_backward)):
        ops.register_device_kernel(op, 'cpu', _timed(fn.__name__, fn))  # (this process only)
    for cls in (DSNet, DS2Net):
        torch.manual_seed(0)
        model = cls(depth=50, base_channels=8).train()
        x = torch.randn(1, 3, 64, 64)
        times = []
        for step in range(12):
            SPENT.clear()
            model(x)[-1].sum().backward()
            times.append(dict(SPENT))
        last = times[2:]  # (after two warm-up steps)
        total = sorted(sum(t.values()) for t in last)
        per_fn = {k: sorted(t[k] for t in last)[len(last) // 2] * 1e3 for k in last[0]}
        print(f'{cls.__name__}50: wrappers per training step, median of 10 steps '
              f'{total[len(total) // 2] * 1e3:.2f} ms (min {total[0] * 1e3:.2f}); per function '
              + ', '.join(f'{k} {v:.2f} ms' for k, v in per_fn.items()))


if __name__ == '__main__':
    main()
