#!/usr/bin/env bash
# Dense shortcuts on one CUDA GPU, in one call of under 8 minutes on a bare machine:
#
#   bash tools/analysis/gpu_bench.sh [OUT_DIR]      (from the repository root; OUT_DIR defaults
#                                                    to $OUT, then work_dirs/gpu_bench)
#   bash tools/analysis/gpu_bench.sh --dry-run [OUT_DIR]   (any machine: the CPU, tiny shapes;
#                                                    the cuda tests skip)
#
# The machine needs Python 3.12 + a CUDA torch + triton and, where it has no package registry, the
# project's pure-Python dependencies as wheels in .whl/ (git-ignored: carry it along), which the
# install line below installs. Then:
#   0) tests/test_ops/test_ops_cuda.py (pytest -m cuda): every Triton kernel against the operators' ATen
#      implementation, training steps against a float64 truth, no host synchronization in a
#      step, CUDA-graph capture, the launch budget;
#   and tools/analysis/benchmark.py, each ratio to the stock ResNet50s measured in the same
#   process (the best of mmpretrain's and torchvision's; mmdet's needs mmcv's compiled ops):
#   a) fp32 (TF32 convolutions, PyTorch's default), batch 32, 224x224: training time, peak memory,
#      inference images/s; DSNet50 also with the operators' ATen implementation (@aten, i.e.
#      mmdsnet.ops.use_implementation(kernels='aten')), with every Triton launch through
#      Triton's JITFunction.run instead of the direct launches (@triton-launch) and in the
#      reference form (DSNet50:aggregation_impl='reference', also in d);
#   e) fp32, batch 128 (the GPU bounds the step): training time;
#   b) bf16 autocast + channels_last, batch 64: training time and memory;
#   d) detection regime: backbone only, out_indices (0, 1, 2, 3), batch 2 at 800x1216, fwd + bwd,
#      and a torch.profiler table of one step per model (by CPU and by GPU time);
#   c) torch.compile of torchvision's ResNet50 with DSNet50, then with DS2Net50 (inductor
#      compiling the operators' decompositions, the default), then with DSNet50 with the
#      operators opaque (@opaque: which is faster), fp32, batch 32;
#   and a summary against the targets of docs/performance.md; everything lands in OUT_DIR/gpu_bench.log and
#   OUT_DIR/results.json. Sections run under one deadline (DEADLINE_S, default 470 s from the
#   start, install included); each has a time reserved for the ones after it, and one that fails
#   or runs out of time is reported as such, the others still run.
if [ "${1:-}" != --dry-run ]; then  # the offline wheels of .whl/
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target .site .whl/*.whl && export PYTHONPATH=$PWD/.site:$PWD \
      || { echo 'install failed: put the wheels of the pure-Python dependencies in .whl/'; exit 1; }
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
DEADLINE=${DEADLINE_S:-$( [ "$DRY" = 1 ] && echo 1500 || echo 470 )}  # in $SECONDS, bash's clock
left() { local s=$((DEADLINE - SECONDS - ${1:-0})); echo $((s > 5 ? s : 5)); }
export DRY DEVICE OUT

if [ "$DRY" = 1 ]; then
  echo "DRY RUN on the CPU: tiny shapes; no number below is a GPU measurement"
  # every section at sizes a CPU finishes; compile with aot_eager (no C++ toolchain needed)
  TINY=(--batch-size 2 --input-size 32 --iters 1 --repeats 1 --warmup 1 --infer-iters 1)
  A=("${TINY[@]}" --skip flops memory)
  E=("${TINY[@]}" --skip flops memory infer)
  B=("${TINY[@]}" --skip flops infer)  # (CPU memory: one subprocess per model)
  C=("${TINY[@]}" --skip flops memory infer --compile aot_eager --stock ResNet50-torchvision)
  D=("${TINY[@]}" --batch-size 1 --input-size 64 96 --skip flops memory infer)
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
  A=(--batch-size 32 --iters 10 --repeats 5 --warmup 3 --infer-iters 10 --skip flops)
  E=(--batch-size 128 --iters 3 --repeats 3 --warmup 2 --skip flops memory infer)
  B=(--batch-size 64 --iters 5 --repeats 5 --warmup 3 --skip flops infer)
  C=(--batch-size 32 --iters 10 --repeats 3 --warmup 2 --skip flops memory infer --compile
     --stock ResNet50-torchvision)
  D=(--batch-size 2 --input-size 800 1216 --iters 5 --repeats 5 --warmup 2 --skip flops infer)
fi
$PY -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch',
  torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)" \
  | tee "$OUT/versions.txt"

echo "== 0) equivalence and the CUDA path's promises: tests/test_ops/test_ops_cuda.py"
timeout "$(left 330)" $PY -m pytest tests/test_ops/test_ops_cuda.py -m cuda -q -rs -p no:cacheprovider \
    2>&1 | tail -n 40 | tee "$OUT/equivalence.txt"

REF="DSNet50:aggregation_impl='reference'"  # the reference form: never faster than the default?
MODELS_A=(ResNet50 DSNet50 DS2Net50 DSNet50@aten DSNet50@triton-launch "$REF")
MODELS_B=(DSNet50 DS2Net50)
run() {  # name, timeout, benchmark arguments...
  local name=$1 limit=$2; shift 2
  echo "== $name (time left $(left) s)"
  timeout "$limit" $PY tools/analysis/benchmark.py --device "$DEVICE" "$@" \
      --out "$OUT/$name.json" 2>&1 | grep -v 'WARNING\|Warning' | tee "$OUT/$name.txt" \
      || echo "$name: failed or ran out of time (limit $limit s)" | tee -a "$OUT/$name.txt"
}
run a_fp32 "$(left 280)" "${A[@]}" --models "${MODELS_A[@]}"
run e_fp32_b128 "$(left 230)" "${E[@]}" --models "${MODELS_B[@]}"
run b_bf16_channels_last "$(left 190)" "${B[@]}" --amp bf16 --channels-last \
    --models "${MODELS_B[@]}"
run d_detection "$(left 160)" "${D[@]}" --backbone-only --out-indices 0 1 2 3 \
    --models "${MODELS_B[@]}" "$REF" --profile --profile-rows 12
run c_compile_dsnet "$(left 110)" "${C[@]}" --models DSNet50
run c_compile_ds2net "$(left 55)" "${C[@]}" --models DS2Net50
run c_compile_opaque "$(left 3)" "${C[@]}" --models DSNet50@opaque

echo "== summary: ratios to the best stock ResNet50 of each run (time: median of per-round"
echo "   ratios; memory: peak; inference: images/s)"
$PY - <<'PY' 2>&1 | tee "$OUT/summary.txt"
import json
import os

out = os.environ['OUT']
# setting -> measure -> bound for (DSNet50, DS2Net50): time and memory at most, inference at least
TARGETS = {
    'a_fp32': dict(time=(1.10, 1.15), memory=(1.05, 1.05), infer=(0.93, 0.90)),
    'e_fp32_b128': dict(time=(1.10, 1.15)),
    'b_bf16_channels_last': dict(time=(1.10, 1.15), memory=(1.05, 1.05)),
    'd_detection': dict(time=(1.10, 1.15)),
    'c_compile_dsnet': dict(time=(1.05, 1.08)),
    'c_compile_ds2net': dict(time=(1.05, 1.08)),
    'c_compile_opaque': {},  # (an A/B: DSNet50@opaque against c_compile_dsnet's DSNet50)
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
        if spec.startswith('DSNet50:') and 'reference' in spec and not dry:
            default = models.get('DSNet50', {}).get('train_time', {}).get('paired_ratio_median')
            if t is not None and default is not None:
                verdicts.append('reference form ' + ('FASTER than' if t < default else
                                                     'not faster than') + ' the default')
        f = lambda v: '-' if v is None else f'{v:.3f}'  # noqa: E731
        print(f'| {setting} | {spec} | {f(t)} | {f(mem)} | {f(ips)} | {"; ".join(verdicts)} |')
PY
# two files, whatever the number of sections (a remote runner may return only a few files):
# gpu_bench.log (every section's output, in order) and results.json (every section's JSON)
( cd "$OUT" && for f in versions gpu equivalence a_fp32 e_fp32_b128 b_bf16_channels_last \
      d_detection c_compile_dsnet c_compile_ds2net c_compile_opaque summary; do
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
