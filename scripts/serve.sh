#!/usr/bin/env bash
# Set up .venv if needed, then run the bot: `warroom serve` (embedded defaults, port 3000).
# Arguments are passed on, e.g. `bash scripts/serve.sh --port 8080`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export HF_HUB_OFFLINE=1

bash scripts/setup.sh
exec .venv/bin/warroom serve "$@"
