#!/usr/bin/env bash
# One shard of a runner job on one cluster task: one ComfyUI per GPU of the task, then the
# runner over those servers with --shard I/N; the servers stop when the runner ends.
#
#   scripts/cluster/run_shard.sh study study.json --out /shared/runs/paper
#   scripts/cluster/run_shard.sh manifest WF.json rows.csv --map-file rows.map.json --out /shared/runs/full
#
# The arguments are the runner's (python -m cxr_runner ...) without --server/--shard.
# Shard I/N comes from SHARD_INDEX/SHARD_COUNT, else Slurm's array variables
# (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT), else a Kubernetes
# indexed Job's JOB_COMPLETION_INDEX with SHARD_COUNT. Every shard may write the same --out:
# finished rows are recorded under a file lock, and a rerun of a killed shard resumes.
#
# Environment: COMFYUI_DIR (a ComfyUI checkout with this pack in custom_nodes/, required),
# COMFYUI_PYTHON (ComfyUI's python, default python3), RUNNER_PYTHON (default $COMFYUI_PYTHON),
# COMFYUI_ARGS (extra main.py arguments, e.g. "--cpu" or "--extra-model-paths-config F.yaml"),
# CUDA_VISIBLE_DEVICES (the task's GPUs; one ComfyUI each; none set: one server),
# SHARD_WORKDIR (scratch for the servers' folders, default ${TMPDIR:-/tmp}).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
COMFYUI_PYTHON="${COMFYUI_PYTHON:-python3}"
RUNNER_PYTHON="${RUNNER_PYTHON:-$COMFYUI_PYTHON}"

die() { echo "run_shard: $*" >&2; exit 2; }
[[ $# -ge 1 ]] || die "no runner arguments; expected e.g. 'study study.json --out DIR'"
[[ -n "${COMFYUI_DIR:-}" && -f "${COMFYUI_DIR}/main.py" ]] ||
  die "COMFYUI_DIR='${COMFYUI_DIR:-}' is not a ComfyUI checkout (no main.py); set it to the folder holding main.py"

if [[ -n "${SHARD_INDEX:-}" ]]; then
  index="$SHARD_INDEX"; count="${SHARD_COUNT:?SHARD_INDEX is set, so SHARD_COUNT must be too}"
elif [[ -n "${SLURM_ARRAY_TASK_ID:-}" ]]; then
  index=$((SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0})); count="${SLURM_ARRAY_TASK_COUNT:?}"
elif [[ -n "${JOB_COMPLETION_INDEX:-}" ]]; then
  index="$JOB_COMPLETION_INDEX"; count="${SHARD_COUNT:?an indexed Job must set SHARD_COUNT to its completions}"
else
  index=0; count=1
fi

IFS=, read -r -a gpus <<<"${CUDA_VISIBLE_DEVICES:-}"
[[ ${#gpus[@]} -gt 0 ]] || gpus=("")
work="$(mktemp -d "${SHARD_WORKDIR:-${TMPDIR:-/tmp}}/cxr-shard-${index}-XXXXXX")"
pids=()
stop_servers() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop_servers EXIT
trap 'exit 143' TERM INT

servers=()
for slot in "${!gpus[@]}"; do
  port="$("$RUNNER_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  dir="$work/comfy$slot"
  mkdir -p "$dir/input" "$dir/output" "$dir/temp" "$dir/user"
  # shellcheck disable=SC2086  # COMFYUI_ARGS is a list of words
  # with a GPU list, each server sees its own GPU; without one (k8s device plugin, CPU) it inherits the task's
  (cd "$COMFYUI_DIR" && exec env ${gpus[$slot]:+CUDA_VISIBLE_DEVICES="${gpus[$slot]}"} "$COMFYUI_PYTHON" main.py --listen 127.0.0.1 \
    --port "$port" --disable-auto-launch --input-directory "$dir/input" --output-directory "$dir/output" \
    --temp-directory "$dir/temp" --user-directory "$dir/user" --database-url sqlite:///:memory: \
    ${COMFYUI_ARGS:-} >"$dir/server.log" 2>&1) &
  pids+=($!)
  servers+=(--server "http://127.0.0.1:$port")
done
for slot in "${!pids[@]}"; do
  url="${servers[$((2 * slot + 1))]}"
  for _ in $(seq 1 "${SERVER_START_TIMEOUT_S:-300}"); do
    kill -0 "${pids[$slot]}" 2>/dev/null || { tail -n 40 "$work/comfy$slot/server.log" >&2; die "ComfyUI $slot exited during start"; }
    "$RUNNER_PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/system_stats", timeout=2)' \
      "$url" 2>/dev/null && break
    sleep 1
  done
done
echo "run_shard: shard $index/$count on ${#pids[@]} server(s): ${servers[*]}" >&2
cd "$REPO"
set +e
"$RUNNER_PYTHON" -m cxr_runner "$@" "${servers[@]}" --shard "$index/$count"
code=$?
exit "$code"
