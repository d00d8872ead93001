#!/usr/bin/env bash
# Creates .venv and installs dtd into it (editable), idempotently.
# torch: if the venv already has a torch (for example a CUDA build you installed first with
# `.venv/bin/pip install torch --index-url ...`), it is kept. Otherwise torch==$DTD_TORCH
# (default 2.13.0, the CPU build on this kind of machine) is installed before the package, so
# the package's `torch>=2.1` requirement is already met and pip pulls no CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/pip install -q --disable-pip-version-check "torch==${DTD_TORCH:-2.13.0}"
fi
if ! .venv/bin/python -c "import dtd, pytest, onnxruntime, importlinter, scipy" >/dev/null 2>&1 || [ pyproject.toml -nt .venv/.dtd-installed ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
  touch .venv/.dtd-installed
fi
