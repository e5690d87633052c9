#!/usr/bin/env bash
# Dense shortcuts on one CUDA GPU, in one call of under 6 minutes on a bare machine (issue 10):
#
#   bash tools/analysis/gpu_bench.sh [OUT_DIR]      (from the repository root; OUT_DIR defaults
#                                                    to $OUT, then work_dirs/gpu_bench)
#   bash tools/analysis/gpu_bench.sh --dry-run [OUT_DIR]   (any machine: the CPU, tiny shapes,
#                                                    the kernels under TRITON_INTERPRET=1)
#
# The machine needs Python 3.12 + a CUDA torch + triton and the wheels that
# ../shared/gpu/offline_wheels.sh puts in .whl/ (git-ignored: carry it along); the install line
# below is that script's. Then, each ratio to the stock ResNet50s measured in the same process
# (tools/analysis/benchmark.py: the best of mmpretrain's and torchvision's; mmdet's needs mmcv's
# compiled ops and is reported missing):
#   0) equivalence on CUDA: every Triton kernel against the operators' ATen implementation (every
#      norm, fp32 / bf16 / fp16 / fp64, NCHW / channels_last, odd and detection-sized maps), and
#      DS2Net training steps against a float64 truth (TF32 off); CHECK marks a real disagreement;
#   a) fp32 (TF32 convolutions, PyTorch's default), batch 32, 224x224: training time, peak memory,
#      inference images/s; DSNet50 also with the operators' ATen implementation (@aten);
#   b) bf16 autocast + channels_last, batch 64: the same measures;
#   d) detection regime: backbone only, out_indices (0, 1, 2, 3), batch 2 at 800x1216, fwd + bwd;
#   c) torch.compile of torchvision's ResNet50 with DSNet50, then with DS2Net50, fp32, batch 32
#      (last: compiling takes ~45 s per model);
#   and a summary against the issue's targets; everything lands in OUT_DIR/gpu_bench.log and
#   OUT_DIR/results.json. Sections run under one deadline (DEADLINE_S,
#   default 340 s from the start, install included); each has a time reserved for the ones after
#   it, and one that fails or runs out of time is reported as such, the others still run.
if [ "${1:-}" != --dry-run ]; then  # the install line of ../shared/gpu/offline_wheels.sh
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target .site .whl/*.whl && export PYTHONPATH=$PWD/.site:$PWD \
      || { echo 'install failed: run ../shared/gpu/offline_wheels.sh, copy .whl/ here'; exit 1; }
  DRY=0; DEVICE=cuda; PY=${PYTHON:-python3}
else
  shift
  DRY=1; DEVICE=cpu; PY=${PYTHON:-python3}
  [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
set -uo pipefail
OUT=${1:-${OUT:-work_dirs/gpu_bench}}
mkdir -p "$OUT"
DEADLINE=${DEADLINE_S:-$( [ "$DRY" = 1 ] && echo 1500 || echo 340 )}  # in $SECONDS, bash's clock
left() { local s=$((DEADLINE - SECONDS - ${1:-0})); echo $((s > 5 ? s : 5)); }
export DRY DEVICE OUT

if [ "$DRY" = 1 ]; then
  echo "DRY RUN on the CPU: tiny shapes; no number below is a GPU measurement"
  # (a)-(d) at sizes a CPU finishes; compile with aot_eager (no C++ toolchain needed)
  TINY=(--batch-size 2 --input-size 32 --iters 1 --repeats 1 --warmup 1 --infer-iters 1)
  A=("${TINY[@]}" --skip flops memory)
  B=("${TINY[@]}" --skip flops)  # (CPU memory: one subprocess per model)
  C=("${TINY[@]}" --skip flops memory infer --compile aot_eager --stock ResNet50-torchvision)
  D=("${TINY[@]}" --batch-size 1 --input-size 64 96 --skip flops memory infer)
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
  A=(--batch-size 32 --iters 10 --repeats 5 --warmup 3 --infer-iters 10 --skip flops)
  B=(--batch-size 64 --iters 5 --repeats 5 --warmup 3 --infer-iters 5 --skip flops)
  C=(--batch-size 32 --iters 10 --repeats 3 --warmup 2 --skip flops infer --compile
     --stock ResNet50-torchvision)
  D=(--batch-size 2 --input-size 800 1216 --iters 5 --repeats 5 --warmup 2 --skip flops infer)
fi
$PY -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch',
  torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)" \
  | tee "$OUT/versions.txt"

# 0) equivalence (the dry run makes the Triton functions the CPU kernels, under the interpreter)
echo "== 0) equivalence: Triton kernels vs ATen, and training steps vs a float64 truth"
( [ "$DRY" = 1 ] && export TRITON_INTERPRET=1; timeout "$(left 240)" $PY - <<'PY' ) 2>&1 \
    | grep -v Warning | tee "$OUT/equivalence.txt"
import contextlib
import copy
import os
from unittest import mock

import torch

from mmdsnet.models import DS2Net
from mmdsnet.models.layers import DenseAggregation
from mmdsnet.ops import stats_dtype
from mmdsnet.ops import triton_aggregate as ta

DRY = os.environ['DRY'] == '1'
dev = torch.device(os.environ['DEVICE'])
print('Triton kernels registered for CUDA:',
      torch._C._dispatch_has_kernel_for_dispatch_key('mmdsnet::dense_aggregate', 'CUDA'))
if DRY:  # the operators on CPU tensors run the (interpreted) Triton functions
    for op, fn in ((ta._stats_op, ta.norm_stats), (ta._aggregate_op, ta.dense_aggregate),
                   (ta._backward_op, ta.dense_aggregate_backward)):
        ta.register_device_kernel(op, 'cpu', fn)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
bad = []


def verdict(what, err, tol):
    ok = err <= tol
    if not ok:
        bad.append(what)
    return f'{what}: {err:.2e} (tolerance {tol:g}) ' + ('OK' if ok else 'CHECK')


# -- every kernel against the operators' ATen implementation, on this device
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}
NORMS = {'GN': 'group', 'LN': 'group', 'IN': 'group', 'BN-batch': 'batch',
         'BN-running': 'running', 'none': 'none'}
if DRY:
    SHAPES = [(1, 12, 5, 7, (torch.float32, torch.bfloat16))]
else:
    SHAPES = [(3, 96, 13, 17, (torch.float32, torch.bfloat16, torch.float16, torch.float64)),
              (2, 256, 200, 304, (torch.float32, torch.bfloat16))]
aten = {k: ta._ATEN[getattr(ta, f'_{k}_op')]  # the operators' ATen implementation
        for k in ('stats', 'aggregate', 'backward')}


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


g = torch.Generator(device=dev).manual_seed(0)
for n, c, h, w, dtypes in SHAPES:
    for dtype in dtypes:
        acc = stats_dtype(dtype)
        for fmt in (torch.contiguous_format, torch.channels_last):
            worst = {}
            for norm, kind in NORMS.items():
                groups = {'GN': min(32, c // 2), 'LN': 1, 'IN': c}.get(norm, c)
                t = lambda: (torch.randn(n, c, h, w, device=dev, generator=g) + 0.5).to(  # noqa
                    dtype).contiguous(memory_format=fmt)
                x, ys, grad = t(), [t() for _ in range(3)], t()
                errs = {}
                if kind in ('group', 'batch'):
                    stats = [aten['stats'](y, groups, 1e-5, kind == 'batch') for y in ys]
                    got = ta.norm_stats(ys[0], groups, 1e-5, kind == 'batch')
                    errs['statistics'] = (max(rel(a, b) for a, b in zip(got, stats[0])), TOL[acc])
                    own = [1, 1, 1]
                elif kind == 'running':
                    stats = [(0.3 * torch.randn(1, c, device=dev, dtype=acc, generator=g),
                              0.5 + torch.rand(1, c, device=dev, dtype=acc, generator=g))] * 3
                    own = [0, 0, 0]
                else:
                    stats = [(torch.zeros(1, 1, device=dev, dtype=acc),
                              torch.ones(1, 1, device=dev, dtype=acc))] * 3
                    own = [0, 0, 0]
                weight = torch.randn(3, c, 1, 1, device=dev, dtype=acc, generator=g)
                args = (ys, [s[0] for s in stats], [s[1] for s in stats], weight, own)
                ref = aten['aggregate'](x, *args)
                errs['output'] = (rel(ta.dense_aggregate(x, *args), ref), TOL[dtype])
                refs = aten['backward'](grad, ref, *args, [True] * 3, True)
                gots = ta.dense_aggregate_backward(grad, ref, *args, [True] * 3, True)
                errs['dL/dx'] = (rel(gots[0], refs[0]), TOL[dtype])
                errs['dL/dy'] = (max(rel(a, b) for a, b in zip(gots[1], refs[1])), TOL[dtype])
                errs['dL/dW'] = (rel(gots[2], refs[2]), TOL[acc])
                for k, (e, tol) in errs.items():
                    if e > tol:
                        print(verdict(f'kernels {norm} {k} {(n, c, h, w)} {dtype} {fmt}', e, tol))
                    worst[k] = max(worst.get(k, (0, tol)), (e / tol, tol))
            print(f'kernels vs ATen, {(n, c, h, w)}, {str(dtype)[6:]}, '
                  f'{"channels_last" if fmt == torch.channels_last else "NCHW"}, every norm: '
                  + ', '.join(f'{k} {r * tol:.1e}' for k, (r, tol) in worst.items()))

# -- training steps against a float64 truth (the reference form), TF32 off
size, base = (16, 8) if DRY else (64, 16)
depth = 29 if DRY else 50
for norm in (['GN'] if DRY else ['GN', 'BN', 'LN', None]):
    torch.manual_seed(0)
    model = DS2Net(depth=depth, base_channels=base, shortcut_norm_cfg=norm,
                   stem='cifar' if DRY else 'imagenet').to(dev).train()
    x = torch.randn(4, 3, size, size, device=dev)

    def step(m, x, autocast=False):
        m = copy.deepcopy(m)
        xi = x.clone().requires_grad_()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            out = m(xi)[-1]
            out.float().square().mean().backward()
        grads = [xi.grad] + [p.grad for p in m.parameters() if p.grad is not None]
        return out.detach().double(), torch.cat([t.double().flatten() for t in grads])

    def l2(a, b):
        return ((a - b).norm() / b.norm()).item()
    with mock.patch.object(DenseAggregation, 'uses_op', lambda self: False):
        truth = step(model.double(), x.double())
    ours = step(model.float(), x)
    print(f'DS2Net{depth} shortcut norm {norm}, float32 (TF32 off) vs float64 truth: '
          + verdict('output', l2(ours[0], truth[0]), 1e-4) + '; '
          + verdict('all gradients', l2(ours[1], truth[1]), 1e-3))
    ours64 = step(model.double(), x.double())
    print(f'  float64 on the kernels vs the reference form: '
          + verdict('output', l2(ours64[0], truth[0]), 1e-10) + '; '
          + verdict('all gradients', l2(ours64[1], truth[1]), 1e-10))
    # bf16 autocast: as close to the truth as the ATen operators (tests' criterion)
    bf = step(model.float(), x, autocast=True)
    with contextlib.ExitStack() as stack:  # the same step on the operators' ATen implementation
        for op in (ta._stats_op, ta._aggregate_op, ta._backward_op):
            stack.enter_context(op.set_kernel_enabled(dev.type, False))
        at = step(model.float(), x, autocast=True)
    for i, what in enumerate(('output', 'all gradients')):
        ob, ab = l2(bf[i], truth[i]), l2(at[i], truth[i])
        print(f'  bf16 autocast {what}: kernels {ob:.2e}, ATen {ab:.2e} vs the truth; '
              + verdict(f'{norm} bf16 {what} (kernels - 1.5 x ATen)', ob - 1.5 * ab, 0.01))
print('equivalence:', 'CHECK ' + '; '.join(bad) if bad else 'all OK')
PY

MODELS_A=(ResNet50 DSNet50 DS2Net50 DSNet50@aten)
MODELS_B=(DSNet50 DS2Net50)
run() {  # name, timeout, benchmark arguments...
  local name=$1 limit=$2; shift 2
  echo "== $name (time left $(left) s)"
  timeout "$limit" $PY tools/analysis/benchmark.py --device "$DEVICE" "$@" \
      --out "$OUT/$name.json" 2>&1 | grep -v 'WARNING\|Warning' | tee "$OUT/$name.txt" \
      || echo "$name: failed or ran out of time (limit $limit s)" | tee -a "$OUT/$name.txt"
}
run a_fp32 "$(left 185)" "${A[@]}" --models "${MODELS_A[@]}"
run b_bf16_channels_last "$(left 145)" "${B[@]}" --amp bf16 --channels-last \
    --models "${MODELS_B[@]}"
run d_detection "$(left 115)" "${D[@]}" --backbone-only --out-indices 0 1 2 3 \
    --models "${MODELS_B[@]}"
run c_compile_dsnet "$(left 60)" "${C[@]}" --models DSNet50
run c_compile_ds2net "$(left 3)" "${C[@]}" --models DS2Net50

echo "== summary: ratios to the best stock ResNet50 of each run (time: median of per-round"
echo "   ratios; memory: peak; inference: images/s)"
$PY - <<'PY' 2>&1 | tee "$OUT/summary.txt"
import json
import os

out = os.environ['OUT']
# setting -> measure -> bound for (DSNet50, DS2Net50): time and memory at most, inference at least
TARGETS = {
    'a_fp32': dict(time=(1.10, 1.15), memory=(1.05, 1.05), infer=(0.93, 0.90)),
    'b_bf16_channels_last': dict(time=(1.10, 1.15), memory=(1.05, 1.05)),
    'd_detection': dict(time=(1.10, 1.15)),
    'c_compile_dsnet': dict(time=(1.05, 1.08)),
    'c_compile_ds2net': dict(time=(1.05, 1.08)),
}
dry = os.environ['DRY'] == '1'
if dry:
    print('DRY RUN (CPU, tiny shapes): not GPU numbers, and not judged against the targets')
print('| setting | model | train time x | memory x | inference img/s x | targets |')
print('|---|---|---|---|---|---|')
for setting, targets in TARGETS.items():
    path = os.path.join(out, setting + '.json')
    if not os.path.exists(path):
        print(f'| {setting} | - | did not finish | | | |')
        continue
    res = json.load(open(path))
    models, mkey = res['models'], res.get('memory_measure')
    stock = [m for s, m in models.items() if s.startswith('ResNet50-') and 'missing' not in m]
    ref_mem = min((m['memory'][mkey] for m in stock if m.get('memory', {}).get(mkey)),
                  default=None)
    ref_ips = max((m['infer_img_s'] for m in stock if m.get('infer_img_s')), default=None)
    for spec, m in models.items():
        if 'missing' in m:
            print(f'| {setting} | {spec} | missing: {m["missing"][:60]} | | | |')
            continue
        t = m.get('train_time', {}).get('paired_ratio_median')
        mem = m.get('memory', {}).get(mkey)
        mem = mem / ref_mem if mem and ref_mem else None
        ips = m.get('infer_img_s')
        ips = ips / ref_ips if ips and ref_ips else None
        verdicts = []
        base = spec.split('@')[0]
        if base in ('DSNet50', 'DS2Net50') and '@' not in spec and not dry:
            i = base == 'DS2Net50'
            for key, v in (('time', t), ('memory', mem), ('infer', ips)):
                if key in targets and v is not None:
                    bound = targets[key][i]
                    met = v >= bound if key == 'infer' else v <= bound
                    verdicts.append(f"{key} {'>=' if key == 'infer' else '<='} {bound}: "
                                    + ('met' if met else 'MISSED'))
        f = lambda v: '-' if v is None else f'{v:.3f}'  # noqa: E731
        print(f'| {setting} | {spec} | {f(t)} | {f(mem)} | {f(ips)} | {"; ".join(verdicts)} |')
PY
# two files, whatever the number of sections (a remote runner may return only a few files):
# gpu_bench.log (every section's output, in order) and results.json (every section's JSON)
( cd "$OUT" && for f in versions gpu equivalence a_fp32 b_bf16_channels_last d_detection \
      c_compile_dsnet c_compile_ds2net summary; do
    [ -f "$f.txt" ] && { echo "=== $f"; cat "$f.txt"; rm -f "$f.txt"; }
  done > gpu_bench.log )
$PY - <<'PY'
import glob
import json
import os

out = os.environ['OUT']
merged = {}
for path in sorted(glob.glob(os.path.join(out, '*.json'))):
    if os.path.basename(path) != 'results.json':
        merged[os.path.basename(path)[:-5]] = json.load(open(path))
        os.remove(path)
json.dump(merged, open(os.path.join(out, 'results.json'), 'w'), indent=1)
PY
echo "total $SECONDS s; results in $OUT/gpu_bench.log and $OUT/results.json"
