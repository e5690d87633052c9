#!/usr/bin/env bash
# What dist_train.sh and dist_test.sh share: torchrun with MMEngine's pytorch launcher.
#   bash tools/torchrun.sh NUM_PROCS {train.py|test.py} [arguments...]
# NNODES, NODE_RANK, MASTER_ADDR and PORT set the rendezvous (defaults: one node, 127.0.0.1:29500).
set -euo pipefail
NPROC=$1
SCRIPT=$2
: "${NNODES:=1}" "${NODE_RANK:=0}" "${PORT:=29500}" "${MASTER_ADDR:=127.0.0.1}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$([ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python)}"
PYTHONPATH="$ROOT:${PYTHONPATH:-}" \
"$PY" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" \
    "$ROOT/tools/$SCRIPT" "${@:3}" --launcher pytorch
