#!/usr/bin/env bash
# One set-up path for users, CI and every tool: builds .venv with the verified OpenMMLab stack.
#
#   bash tools/setup_env.sh          # idempotent; a second run takes seconds
#
# mmcv 2.1.0 ships only an sdist. Its compiled ops are built once per machine against torch 2.14
# (patched from -std=c++17 to c++20, which torch>=2.13's headers need) and the wheel is cached in
# $MMDSNET_CACHE. That build is nearly all of a first set-up: 24-26 min on a fresh 2-core box
# (24m06s and 25m42s, 2026-12-02), so each stage prints the time since the start, and the build
# prints a line every minute. MAX_JOBS (default: the number of cores) sets the parallel compile
# jobs; torch's ninja build puts ccache in front of the compiler when ccache is installed, which
# speeds up a rebuild (after the wheel cache was cleared), not a first build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMDSNET_VENV:-$ROOT/.venv}"
CACHE="${MMDSNET_CACHE:-$HOME/.cache/mmdsnet}"
PY="${PYTHON:-python3.11}"
MMCV_VERSION=2.1.0
WHEELS="$CACHE/wheels"
mkdir -p "$WHEELS"

START=$(date +%s)
# every line carries the time since the start, so a long stage is visibly not stuck
elapsed() { local s=$(( $(date +%s) - START )); printf '%d:%02d' $((s / 60)) $((s % 60)); }
log() { printf '[setup_env +%s] %s\n' "$(elapsed)" "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  command -v "$PY" >/dev/null || { echo "error: $PY not found; install Python 3.11 or set PYTHON=" >&2; exit 1; }
  log "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
# pip, minus the per-package notes some machines' extra local indexes print by the hundred
pip() {
  "$VPY" -m pip --disable-pip-version-check "$@" 2>&1 |
    { grep -v 'is ignored: it is neither a file nor a directory' || true; }
}

# A stamp of everything that decides the install: re-run pip only when one of these changed.
STAMP="$VENV/.mmdsnet-stamp"
WANT="$(cat "$ROOT/requirements/stack.txt" "$ROOT/pyproject.toml" "$0" | sha256sum | cut -c1-16)-$ROOT"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$VPY" -c 'import mmcv.ops, mmdet, mmpretrain, mmdsnet' 2>/dev/null; then
  log "environment up to date ($VENV)"
  exit 0
fi

log "installing torch and the build requirements"
pip install -q -r "$ROOT/requirements/build.txt"

MMCV_WHEEL="$(ls "$WHEELS"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n1 || true)"
if [ -z "$MMCV_WHEEL" ]; then
  JOBS="${MAX_JOBS:-$(nproc)}"
  if command -v ccache >/dev/null; then CCACHE="ccache $(command -v ccache) (speeds up rebuilds only)"; else CCACHE="no ccache"; fi
  log "building mmcv $MMCV_VERSION with its CPU ops, once per machine: 24-26 min on 2 cores; $JOBS parallel jobs (MAX_JOBS), $CCACHE"
  BUILD="$(mktemp -d)"
  pip download -q --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$BUILD"
  tar -xzf "$BUILD"/mmcv-$MMCV_VERSION.tar.gz -C "$BUILD"
  SRC="$BUILD/mmcv-$MMCV_VERSION"
  # torch>=2.13 headers require C++20; mmcv 2.1.0 hard-codes c++17 (mmcv#3341).
  sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
  grep -q -- '-std=c++20' "$SRC/setup.py" || { echo "error: could not patch mmcv setup.py" >&2; exit 1; }
  log "compiling (pip wheel, quiet: one line a minute until it ends)"
  # a background ticker; killed when the build ends, fails or is interrupted
  BUILD_START=$(date +%s)
  ( while sleep "${MMDSNET_TICK:-60}"; do
      log "  still compiling mmcv ops: $(( ($(date +%s) - BUILD_START) / 60 )) min of about 25"
    done ) &
  TICKER=$!
  trap 'kill "$TICKER" 2>/dev/null || true' EXIT
  # mmcv's setup.py would default MAX_JOBS to max(4, cores - 1): 4 jobs on 2 cores
  (cd "$SRC" && export MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" MAX_JOBS="$JOBS" &&
     pip wheel -q --no-build-isolation --no-deps . -w "$BUILD/dist")
  kill "$TICKER" 2>/dev/null || true
  log "mmcv built in $(( ($(date +%s) - BUILD_START) / 60 )) min"
  cp "$BUILD"/dist/mmcv-$MMCV_VERSION-*.whl "$WHEELS/"
  rm -rf "$BUILD"
  MMCV_WHEEL="$(ls "$WHEELS"/mmcv-$MMCV_VERSION-*.whl | head -n1)"
fi
log "installing $MMCV_WHEEL and the OpenMMLab stack"
pip install -q "$MMCV_WHEEL" -r "$ROOT/requirements/stack.txt"
pip install -q --no-deps --no-build-isolation -e "$ROOT"

"$VPY" - <<'PYCHECK'
import mmcv.ops, mmdet, mmpretrain, mmdsnet  # noqa: F401
from mmdsnet.utils import collect_env
collect_env(verbose=True)
PYCHECK
echo "$WANT" > "$STAMP"
log "done: activate with 'source $VENV/bin/activate'"
