#!/usr/bin/env bash
# Table 9 on one CUDA GPU, in under 5 minutes: the same harness as on the CPU, unchanged.
#   bash tools/analysis/gpu_bench.sh [OUT_DIR]    (run from the repository root)
# Batch 32 per GPU at 224x224 is the paper's setting (four 1080Ti, batch 128). Fused and reference
# dense-shortcut implementations are measured side by side against ResNet50 (our identity mode)
# and mmpretrain's own ResNet50.
set -euo pipefail
OUT=${1:-${OUT:-work_dirs/gpu_bench}}
PY=${PYTHON:-python}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
# 1) the targets: ResNet50 vs DSNet50 / DS2Net50, fused and reference (about 1.5 minutes)
timeout 240 $PY tools/analysis/benchmark.py --device cuda --batch-size 32 --iters 10 \
    --repeats 7 --warmup 5 --infer-iters 10 \
    --models ResNet50 ResNet50-mmpretrain DSNet50@fused DSNet50@reference DS2Net50@fused \
    DS2Net50@reference DSNet50@checkpoint --out "$OUT/targets.json" 2>&1 | grep -v WARNING \
    | tee "$OUT/targets.txt"
# 2) the whole Table 9 (about 2 minutes)
timeout 240 $PY tools/analysis/benchmark.py --device cuda --batch-size 32 --iters 5 \
    --repeats 5 --warmup 3 --infer-iters 5 --skip flops \
    --models ResNet50 ResNet152 DenseNet264 DSNet50 DS2Net50 --out "$OUT/table9.json" 2>&1 \
    | grep -v WARNING | tee "$OUT/table9.txt"
