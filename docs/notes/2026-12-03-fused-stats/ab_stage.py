"""In-process CPU A/B of the fused statistics (2026-12-03): DSNet50 training steps with each
stage's forward as committed (the aggregation computes the next source's statistics,
``as_source``) and as before (a statistics call per source), alternating, one thread, CPU time.

    .venv/bin/python docs/notes/2026-12-03-fused-stats/ab_stage.py
"""
import statistics
import time

import torch

from mmdsnet.models import DSNet
from mmdsnet.models.stage import DSLayer

FUSED = DSLayer.forward


def unfused(self, x):
    """The earlier route: normalize(l - 1, Y_{l-1}) as a call of its own."""
    first = self.block(0)
    y = self.act(self._residual(first, x).add_(first.project(x)))
    sources = []
    for l in range(1, self.num_blocks):
        x_l = self._residual(self.block(l), y)
        sources.append(self.aggregation.normalize(l - 1, y))
        y = self.aggregation(x_l, sources)
    return y


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = DSNet(depth=50).train()
    x = torch.randn(4, 3, 112, 112)

    def step():
        model.zero_grad(set_to_none=True)
        sum(o.float().mean() for o in model(x)).backward()
    forms = {'fused': FUSED, 'unfused': unfused}
    grads = {}
    for name, forward in forms.items():
        DSLayer.forward = forward
        step()
        grads[name] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    diff = max((a - b).abs().max().item() for a, b in zip(*grads.values()))
    print(f'largest gradient difference, fused vs unfused: {diff}')
    times = {name: [] for name in forms}
    for r in range(8):
        for name in (list(forms) if r % 2 else list(forms)[::-1]):
            DSLayer.forward = forms[name]
            t = time.process_time()
            step()
            step()
            times[name].append((time.process_time() - t) / 2)
    DSLayer.forward = FUSED
    for name, v in times.items():
        print(f'{name}: median {statistics.median(v):.4f} s/step, min {min(v):.4f}')
    ratio = statistics.median(times['fused']) / statistics.median(times['unfused'])
    print(f'fused / unfused (medians): {ratio:.3f}')


if __name__ == '__main__':
    main()
