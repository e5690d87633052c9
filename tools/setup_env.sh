#!/usr/bin/env bash
# One set-up path for users, CI and every tool: builds .venv with the verified OpenMMLab stack.
#
#   bash tools/setup_env.sh          # idempotent; a second run takes seconds
#
# mmcv 2.1.0 ships only an sdist. Its compiled ops are built once per machine against torch 2.14
# (the -std=c++17 -> c++20 fix from ENVIRONMENT.md) and the wheel is cached in $MMDSNET_CACHE.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMDSNET_VENV:-$ROOT/.venv}"
CACHE="${MMDSNET_CACHE:-$HOME/.cache/mmdsnet}"
PY="${PYTHON:-python3.11}"
MMCV_VERSION=2.1.0
WHEELS="$CACHE/wheels"
mkdir -p "$WHEELS"

log() { printf '[setup_env] %s\n' "$*"; }

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
  log "building mmcv $MMCV_VERSION with its CPU ops (once per machine, ~15 min on 2 cores)"
  BUILD="$(mktemp -d)"
  pip download -q --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$BUILD"
  tar -xzf "$BUILD"/mmcv-$MMCV_VERSION.tar.gz -C "$BUILD"
  SRC="$BUILD/mmcv-$MMCV_VERSION"
  # torch>=2.13 headers require C++20; mmcv 2.1.0 hard-codes c++17 (mmcv#3341).
  sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
  grep -q -- '-std=c++20' "$SRC/setup.py" || { echo "error: could not patch mmcv setup.py" >&2; exit 1; }
  (cd "$SRC" && export MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" &&
     pip wheel -q --no-build-isolation --no-deps . -w "$BUILD/dist")
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
