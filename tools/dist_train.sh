#!/usr/bin/env bash
# Multi-process training with torchrun (one process per GPU, or per CPU worker without GPUs, gloo).
#   bash tools/dist_train.sh CONFIG NUM_PROCS [train.py options...]
# Multi-node: NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 PORT=29500 bash tools/dist_train.sh CONFIG 8
set -euo pipefail
CONFIG=$1
NPROC=$2
exec bash "$(dirname "${BASH_SOURCE[0]}")/torchrun.sh" "$NPROC" train.py "$CONFIG" "${@:3}"
