#!/usr/bin/env bash
# Set up .venv if needed, then run the test suite (pytest config lives in pyproject.toml).
# Arguments are passed on to pytest, e.g. `bash scripts/test.sh -k audit -x`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export HF_HUB_OFFLINE=1

bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
