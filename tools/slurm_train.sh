#!/usr/bin/env bash
# Training on a SLURM cluster through MMEngine's slurm launcher (one task per GPU).
#   GPUS=16 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options...]
# CPU-only partitions work too (GPUS_PER_NODE=0 CPUS_PER_TASK=N): mmdsnet switches to gloo.
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$([ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python)}"
GRES=()
[ "$GPUS_PER_NODE" -gt 0 ] && GRES=(--gres="gpu:$GPUS_PER_NODE")
PYTHONPATH="$ROOT:${PYTHONPATH:-}" \
srun -p "$PARTITION" --job-name="$JOB_NAME" "${GRES[@]}" --ntasks="$GPUS" \
    --ntasks-per-node="$([ "$GPUS_PER_NODE" -gt 0 ] && echo "$GPUS_PER_NODE" || echo 1)" \
    --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 $SRUN_ARGS \
    "$PY" -u "$ROOT/tools/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher slurm "${@:5}"
