#!/usr/bin/env bash
# The README's test command: set up the host (idempotent), lint, run every test.
# Extra arguments go to pytest (e.g. -k gate, -m "not server").
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_FILE="$(bash "$REPO/scripts/setup_host.sh" | tail -n 1)"
# shellcheck disable=SC1090
source "$ENV_FILE"
cd "$REPO"
echo "[test] ruff check"
"$CXR_PY" -m ruff check .
"$CXR_PY" -m ruff format --check .
echo "[test] pytest (host: $COMFYUI_DIR)"
exec "$CXR_PY" -m pytest "$@"
