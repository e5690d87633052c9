#!/usr/bin/env bash
# Table 9 on one CUDA GPU, in under 5 minutes: the same harness as on the CPU, unchanged.
#   bash tools/analysis/gpu_bench.sh [OUT_DIR]    (run from the repository root)
# Batch 32 per GPU at 224x224 is the paper's setting (four 1080Ti, batch 128). Fused and reference
# dense-shortcut implementations are measured side by side against ResNet50 (our identity mode)
# and mmpretrain's own ResNet50. FLOPs are device-independent and measured on the CPU.
set -uo pipefail
OUT=${1:-${OUT:-work_dirs/gpu_bench}}
PY=${PYTHON:-python}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
# 0) fused == reference on CUDA (float32, relative gradient error vs the reference), ~15 s
timeout 60 $PY - <<'PY' 2>&1 | tee "$OUT/cuda_equivalence.txt"
import copy, torch
from mmdsnet.models import DS2Net
from mmdsnet.models.layers.fused import set_shortcut_impl
for norm in ['GN', 'BN', 'LN', None]:
    torch.manual_seed(0)
    ref = DS2Net(depth=50, base_channels=16, shortcut_norm_cfg=norm).cuda().train()
    fused = copy.deepcopy(ref)
    x = torch.randn(4, 3, 64, 64, device='cuda')
    res = []
    for m, impl in ((ref, 'reference'), (fused, 'fused')):
        set_shortcut_impl(m, impl)
        xi = x.clone().requires_grad_()
        out = m(xi)[0]
        out.square().mean().backward()
        res.append((out.detach(), {'input': xi.grad, **{n: p.grad for n, p in m.named_parameters()}}))
    out_err = ((res[0][0] - res[1][0]).norm() / res[0][0].norm()).item()
    grad_err = max(((res[0][1][k] - res[1][1][k]).norm() / (res[0][1][k].norm() + 1e-12)).item()
                   for k in res[0][1])
    print(f'norm={norm}: output rel err {out_err:.2e}, worst grad rel err {grad_err:.2e}',
          'OK' if out_err < 1e-4 and grad_err < 1e-3 else 'CHECK')
PY
# 1) the targets: ResNet50 vs DSNet50 / DS2Net50, fused and reference (about 1.5 minutes)
timeout 150 $PY tools/analysis/benchmark.py --device cuda --batch-size 32 --iters 10 \
    --repeats 7 --warmup 5 --infer-iters 10 --skip flops \
    --models ResNet50 ResNet50-mmpretrain DSNet50@fused DSNet50@reference DS2Net50@fused \
    DS2Net50@reference DSNet50@checkpoint --out "$OUT/targets.json" 2>&1 | grep -v WARNING \
    | tee "$OUT/targets.txt" || echo 'targets run failed or timed out'
# 2) the whole Table 9 (about 1.5 minutes)
timeout 150 $PY tools/analysis/benchmark.py --device cuda --batch-size 32 --iters 5 \
    --repeats 5 --warmup 3 --infer-iters 5 --skip flops \
    --models ResNet50 ResNet152 DenseNet264 DSNet50 DS2Net50 --out "$OUT/table9.json" 2>&1 \
    | grep -v WARNING | tee "$OUT/table9.txt" || echo 'table 9 run failed or timed out'
