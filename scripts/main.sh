#!/usr/bin/env bash
# The README's main-job command. Until the example workflows land, it sets up
# the host, starts ComfyUI headless with this pack, and prints the pack's nodes.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_FILE="$(bash "$REPO/scripts/setup_host.sh" | tail -n 1)"
# shellcheck disable=SC1090
source "$ENV_FILE"
cd "$REPO"
exec "$CXR_PY" scripts/main_job.py "$@"
