"""Which initial value of the dense-shortcut weights W trains best? (docs/design.md)

The paper does not give W's initial value. This trains a small CIFAR-style DSNet on a generated,
learnable 10-class task for each candidate value and seed, and prints the early (first 30 steps)
and final training loss and the held-out accuracy. CPU, offline, a few minutes:

    python tools/experiments/shortcut_init.py --inits 0.1 0.5 1.0 2.0 --seeds 0 1 2
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from torch import nn

from mmdsnet.models import DSNet


def make_task(n: int, seed: int, size: int = 16, classes: int = 10):
    """Images whose class decides the orientation and frequency of a noisy grating."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n, ), generator=g)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing='ij')
    angle = labels.float() * (3.14159 / classes)
    freq = 0.5 + 0.25 * (labels % 3).float()
    phase = torch.rand(n, generator=g) * 6.28
    proj = (xx[None] * torch.cos(angle)[:, None, None]
            + yy[None] * torch.sin(angle)[:, None, None])
    img = torch.sin(proj * freq[:, None, None] + phase[:, None, None])
    img = img[:, None].repeat(1, 3, 1, 1) + 1.5 * torch.randn(n, 3, size, size, generator=g)
    return img, labels


class Net(nn.Module):

    def __init__(self, init: float, head_norm: bool = False):
        super().__init__()
        self.backbone = DSNet(depth=26, stem='cifar', base_channels=8, shortcut_init=init,
                              shortcut_norm_cfg=dict(type='GN', num_groups=8))
        self.backbone.init_weights()
        c = self.backbone.out_channels[-1]
        # head_norm: a BatchNorm before the classifier takes the feature scale (which grows with
        # W) out of the head's effective learning rate, isolating the backbone's optimization.
        self.norm = nn.BatchNorm1d(c) if head_norm else nn.Identity()
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        return self.fc(self.norm(self.backbone(x)[-1].mean((2, 3))))


def run(init: float, seed: int, steps: int, batch: int, lr: float, head_norm: bool):
    torch.manual_seed(seed)
    xtr, ytr = make_task(2048, seed=100 + seed)
    xte, yte = make_task(1024, seed=999)
    model = Net(init, head_norm)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [steps // 2, steps * 3 // 4], 0.1)
    losses = []
    for step in range(steps):
        idx = torch.randint(0, len(xtr), (batch, ))
        loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    return statistics.mean(losses[:30]), statistics.mean(losses[-20:]), acc


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--inits', type=float, nargs='+', default=[0.1, 0.5, 1.0, 2.0])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--steps', type=int, default=150)
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--lr', type=float, default=0.1)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--head-norm', action='store_true',
                   help='BatchNorm before the classifier (controls for the feature scale)')
    p.add_argument('--out', default=None, help='write the results as JSON here')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    MMLogger.get_current_instance().setLevel('WARNING')  # no per-parameter init report
    results = {}
    print(f'{"init W":>7} | {"early loss":>10} | {"final loss":>10} | {"held-out acc":>12}  '
          f'(means over seeds; per-seed accuracies)')
    for init in args.inits:
        runs = []
        for seed in args.seeds:
            t = time.time()
            runs.append(run(init, seed, args.steps, args.batch, args.lr, args.head_norm))
            print(f'  init={init} seed={seed}: early loss {runs[-1][0]:.4f} final loss '
                  f'{runs[-1][1]:.4f} acc {runs[-1][2]:.4f} ({time.time() - t:.0f}s)', flush=True)
        early, final, acc = (statistics.mean(r[i] for r in runs) for i in range(3))
        accs = ', '.join(f'{r[2]:.3f}' for r in runs)
        results[init] = dict(early_loss=early, final_loss=final, acc=acc, runs=runs)
        print(f'{init:>7} | {early:>10.4f} | {final:>10.4f} | {acc:>12.4f}  ({accs})', flush=True)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=2)


if __name__ == '__main__':
    main()
