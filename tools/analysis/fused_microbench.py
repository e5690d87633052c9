"""Per-edge costs of the dense aggregation on one feature map (why the fused path is built as it is).

Times, on the current device, the candidate kernels for one edge ``w_l^i * N(Y_i)`` of DSNet50's
first stage at batch 8 (8 x 256 x 56 x 56): ways to get GroupNorm statistics, the fused
GroupNorm backward that gives dL/dY and dL/dw at once, the reference's per-edge products, and the
accumulations. Prints the minimum and the median of ``--repeats`` runs.

    python tools/analysis/fused_microbench.py [--shape 8 256 56 56] [--device cpu]
"""
import argparse
import time

import torch


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--shape', type=int, nargs=4, default=[8, 256, 56, 56])
    p.add_argument('--groups', type=int, default=32)
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--device', default='cpu')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    N, C, H, W = args.shape
    G, HW = args.groups, H * W
    g, Y, n, acc = (torch.randn(N, C, H, W, device=dev) for _ in range(4))
    w = torch.randn(C, device=dev)
    _, mean, rstd = torch.ops.aten.native_group_norm(Y, None, None, N, C, HW, G, 1e-5)
    cases = {
        'stats: torch.var_mean over (N, G, -1)':
            lambda: torch.var_mean(Y.reshape(N, G, -1), dim=2, correction=0),
        'stats: native_group_norm (out, mean, rstd)':
            lambda: torch.ops.aten.native_group_norm(Y, None, None, N, C, HW, G, 1e-5),
        'forward: F.group_norm (the module)': lambda: torch.nn.functional.group_norm(Y, G),
        'forward edge, fused: out.addcmul_(n, w)': lambda: acc.addcmul_(n, w.view(1, C, 1, 1)),
        'forward edge, reference: out = out + w * n': lambda: acc + w.view(1, C, 1, 1) * n,
        'backward edge, fused: native_group_norm_backward(w) -> dY, dw':
            lambda: torch.ops.aten.native_group_norm_backward(g, Y, mean, rstd, w, N, C, HW, G,
                                                              [True, True, False]),
        'backward edge, reference: dn = w * g; dw = sum(g * n)':
            lambda: (w.view(1, C, 1, 1) * g, (g * n).sum((0, 2, 3))),
        'backward: GroupNorm backward once (reference, per source)':
            lambda: torch.ops.aten.native_group_norm_backward(g, Y, mean, rstd, None, N, C, HW, G,
                                                              [True, False, False]),
        'gradient accumulation: acc.add_(g)': lambda: acc.add_(g),
    }
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == 'cuda' else (lambda: None)
    print(f'shape {tuple(args.shape)}, groups {G}, device {dev}, threads {args.threads}')
    for name, fn in cases.items():
        fn()
        ts = []
        for _ in range(args.repeats):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t)
        ts.sort()
        print(f'{name:66s} min {ts[0] * 1e3:7.2f} ms  median {ts[len(ts) // 2] * 1e3:7.2f} ms')


if __name__ == '__main__':
    main()
