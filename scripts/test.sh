#!/usr/bin/env bash
# Sets up (if needed), checks the import layering (pyproject [tool.importlinter]) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/lint-imports
exec .venv/bin/python -m pytest -q "$@"
