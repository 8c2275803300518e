#!/usr/bin/env bash
# The README's main-job command: set up the host (idempotent), then run the
# example counterfactual workflow headless on the demo radiograph.
# Arguments go to scripts/main_job.py (e.g. --size 512, --steps 30).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_FILE="$(bash "$REPO/scripts/setup_host.sh" | tail -n 1)"
# shellcheck disable=SC1090
source "$ENV_FILE"
cd "$REPO"
exec "$CXR_PY" scripts/main_job.py "$@"
