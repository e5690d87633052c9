#!/usr/bin/env bash
# Multi-process testing with torchrun (one process per GPU, or per CPU worker without GPUs, gloo).
#   bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [test.py options...]
# Multi-node: NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 PORT=29500 bash tools/dist_test.sh CONFIG CKPT 8
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
exec bash "$(dirname "${BASH_SOURCE[0]}")/torchrun.sh" "$NPROC" test.py "$CONFIG" "$CHECKPOINT" \
    "${@:4}"
