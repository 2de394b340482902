#!/usr/bin/env bash
# Create .venv and install warroom into it (editable, with the test extras).
# Idempotent: when .venv/.warroom-installed is newer than pyproject.toml nothing is reinstalled.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export HF_HUB_OFFLINE=1

stamp=.venv/.warroom-installed

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv" >&2
  python3 -m venv .venv
fi

if [[ -f "$stamp" && "$stamp" -nt pyproject.toml && -x .venv/bin/warroom ]]; then
  exit 0
fi

echo "setup: installing dependencies into .venv (the first run takes a few minutes)" >&2
# CPU torch first, with exactly this pin: it resolves to the local CPU wheel, while a looser
# requirement (e.g. the one sentence-transformers brings) would pull gigabytes of CUDA.
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[test]"
touch "$stamp"
echo "setup: .venv is ready" >&2
