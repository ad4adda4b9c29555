#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv and activate it.
# Sourced by scripts/main.sh and scripts/test.sh; safe to run again (it only
# reinstalls when pyproject.toml or constraints.txt changed).
#
# CPU machines: torch is pinned to 2.13.0 and installed first, so no CUDA
# wheels are pulled. GPU machines: install the CUDA build of the same version
# into .venv before running this (see README, "GPU").
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "[stemdae] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
stamp=".venv/.stemdae-install"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[stemdae] installing dependencies into .venv (about 2 minutes the first time)"
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  if ! python -c "import torch" >/dev/null 2>&1; then
    # STEMDAE_TORCH_INDEX picks a wheel index, e.g. PyTorch's CPU-only or CUDA index.
    python -m pip install -q "torch==2.13.0" ${STEMDAE_TORCH_INDEX:+--index-url "$STEMDAE_TORCH_INDEX"}
  fi
  python -m pip install -q -c constraints.txt -e ".[dev]"
  echo "$want" > "$stamp"
fi
# Persistent caches: librosa's numba kernels compile once, not in every process.
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$repo/.cache/numba}"
export MPLBACKEND="${MPLBACKEND:-Agg}"
export DVC_NO_ANALYTICS=1
export PYTHONHASHSEED="${PYTHONHASHSEED:-0}"
mkdir -p "$NUMBA_CACHE_DIR"
