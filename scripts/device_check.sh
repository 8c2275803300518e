#!/usr/bin/env bash
# The device check: one command that proves and measures the pack on this machine's accelerator.
#
#   bash scripts/device_check.sh [OUT_DIR]        # default out/device_check
#
# 1. the device test subset (pytest -m gpu) on CUDA in fp16 and bf16, incl. ComfyUI's weight offloading;
# 2. the full example workflow through a real ComfyUI server on the GPU (512 px, 30 steps), and again with
#    ComfyUI's low-VRAM weight offloading forced (--novram: every layer's weights stay in CPU memory and
#    are cast to the GPU as the layer runs; --lowvram only offloads when the card is too small);
# 3. the benchmark (scripts/benchmark.py): the target cell (512 px, batch 1, 30 steps, 3 interleaved rounds;
#    the gate also with its dense bias, and the hard gate), then a grid over 512/768/1024 px and batch 1/2/4
#    at 10 steps (2 rounds), cheapest cells first;
# 4. the gate per attention call (scripts/benchmark_attention.py): dense bias against its low-rank and
#    block-sparse forms at the 64x64 and 128x128 sites; step attention_heads64: the same with the heads of
#    SD2.x and SDXL (10 x 64 channels at a 64x64 site), where the low-rank form's extra channels take a head
#    past 64 channels, which attention kernels round up to their next size;
# 5. the correction's profile (scripts/profile_correction.py): its gradient pass in parts (weight swap,
#    forward + energy, backward), in plain-step units, truncated and untruncated; then torch.profiler over one
#    plain step, one pass and its backward: device busy share, kernels, operators and the costliest operators;
# 6. host reads and operators per step (scripts/count_host_reads.py): how often each module makes the host
#    wait for the GPU, and how many operators it adds, on the tiny UNet (counts do not depend on its width).
# Without CUDA it runs the same steps at CPU size (CPU tests, a 128-px 4-step workflow, the benchmark's
# --smoke size, the attention call at a 32x32 site, the profile at 64 px, the counts at 128 px) and says so. Everything lands in OUT_DIR: summary.md, the logs, benchmark.{csv,md,png,json},
# the workflow's pictures and metrics. Exit status: non-zero if a step failed.
#
# By default it runs the check: steps 1-4 without attention_heads64 (on an H100 their times added up to
# about 7 minutes). The developer diagnostics (attention_heads64, profile_correction, host_reads: steps 4-6)
# run with CXR_DEVICE_STEPS=all, or named: CXR_DEVICE_STEPS=tests,benchmark_target (comma-separated) runs
# only those steps. CXR_DEVICE_DRY_RUN=1 lists the steps it would run in summary.md and runs none.
# Environment: by default the host comes from scripts/setup_host.sh (as for the tests). On a machine that
# cannot install (no network), set COMFYUI_DIR to a ComfyUI 0.3.75 tree and CXR_PY to a Python that has
# its requirements; CXR_DEMO_RADIOGRAPH may point at RG1_UNCR.dcm when pydicom-data is not installed.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(mkdir -p "${1:-$REPO/out/device_check}" && cd "${1:-$REPO/out/device_check}" && pwd)"
cd "$REPO"
if [ -z "${COMFYUI_DIR:-}" ] || [ -z "${CXR_PY:-}" ]; then
  ENV_FILE="$(bash "$REPO/scripts/setup_host.sh" | tail -n 1)" || exit 1
  # shellcheck disable=SC1090
  source "$ENV_FILE"
fi
link="$COMFYUI_DIR/custom_nodes/comfyui-cxr-counterfactual"
mkdir -p "$COMFYUI_DIR/custom_nodes"
[ "$(readlink "$link" 2>/dev/null)" = "$REPO" ] || ln -sfn "$REPO" "$link"
export COMFYUI_DIR CXR_PY PYTHONUNBUFFERED=1

if "$CXR_PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  MODE=cuda
else
  MODE=cpu
fi
status=0
summary="$OUT/summary.md"
{
  echo "# Device check ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo
  if [ "$MODE" = cuda ]; then
    echo "Mode: **CUDA**. $("$CXR_PY" -c 'import torch; print(torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)')"
  else
    echo "Mode: **CPU** (no CUDA device): every step runs at CPU size; these are smoke figures, not GPU figures."
  fi
  echo
} > "$summary"

CHECK_STEPS=tests,workflow,benchmark_target,benchmark_attention,benchmark_grid,workflow_offload
DIAGNOSTIC_STEPS=attention_heads64,profile_correction,host_reads
STEPS_WANTED="${CXR_DEVICE_STEPS:-$CHECK_STEPS}"
[ "$STEPS_WANTED" = all ] && STEPS_WANTED="$CHECK_STEPS,$DIAGNOSTIC_STEPS"
STEPS_WANTED=",$STEPS_WANTED,"
step() {  # step NAME TIMEOUT_S CMD...: run, log to OUT/NAME.log, record pass/fail and seconds
  local name="$1" limit="$2"; shift 2
  case "$STEPS_WANTED" in *",$name,"*) ;; *) echo "- $name: not run (CXR_DEVICE_STEPS)" >> "$summary"; return 0 ;; esac
  if [ "${CXR_DEVICE_DRY_RUN:-}" = 1 ]; then echo "- $name: would run (limit $limit s)" >> "$summary"; return 0; fi
  local t0=$SECONDS rc
  echo "[device_check] $name ..."
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || status=1
  echo "- $name: $([ $rc -eq 0 ] && echo passed || echo "FAILED (exit $rc)") in $((SECONDS - t0)) s; log \`$name.log\`" >> "$summary"
  tail -n 3 "$OUT/$name.log"
}

if [ "$MODE" = cuda ]; then
  SIZE=512; STEPS=30
else
  SIZE=128; STEPS=4
fi
# ComfyUI's server needs its frontend package, or any folder given as --front-end-root
if ! "$CXR_PY" -c "import comfyui_frontend_package" 2>/dev/null; then
  mkdir -p "$OUT/frontend" && echo "<!doctype html><title>headless</title>" > "$OUT/frontend/index.html"
  FRONT=(--server-arg=--front-end-root --server-arg="$OUT/frontend")
else
  FRONT=()
fi
GPU_FLAG=(); [ "$MODE" = cuda ] && GPU_FLAG=(--gpu)

step tests 120 env CXR_TEST_DEVICE="$MODE" "$CXR_PY" -m pytest -m gpu -q -p no:cacheprovider \
  --junitxml="$OUT/tests.xml" tests/test_device.py
step workflow 150 "$CXR_PY" scripts/main_job.py --size "$SIZE" --steps "$STEPS" --workdir "$OUT/workflow" \
  "${GPU_FLAG[@]}" "${FRONT[@]}"
keep_pictures() {  # keep_pictures NAME: the workflow's side-by-side picture and metrics beside the summary
  [ -f "$OUT/$1/output/cxr/demo_summary.png" ] && cp "$OUT/$1/output/cxr/demo_summary.png" "$OUT/$1_summary.png"
  [ -f "$OUT/$1/output/cxr/metrics_report.json" ] && cp "$OUT/$1/output/cxr/metrics_report.json" "$OUT/$1_report.json"
  return 0
}
keep_pictures workflow
TARGET_CONFIGS=plain,gate,gate_dense,hard_gate,hard_gate_dense,reweight,gate_reweight,correction,all
if [ "$MODE" = cuda ]; then
  step benchmark_target 150 "$CXR_PY" scripts/benchmark.py --cells 512x1 --steps 30 --repeat 3 --out "$OUT/target" \
    --configs "$TARGET_CONFIGS"
  step benchmark_attention 120 "$CXR_PY" scripts/benchmark_attention.py --sides 64,128 --repeat 10 --out "$OUT/attention"
  step attention_heads64 60 "$CXR_PY" scripts/benchmark_attention.py --sides 64 --heads 10 --head-dim 64 --repeat 10 \
    --out "$OUT/attention_heads64"
  step profile_correction 120 "$CXR_PY" scripts/profile_correction.py --size 512 --steps 30 --repeat 3 --out "$OUT/profile"
  step host_reads 60 "$CXR_PY" scripts/count_host_reads.py --size 512 --out "$OUT/host_reads"
  step benchmark_grid 130 "$CXR_PY" scripts/benchmark.py --steps 10 --repeat 2 --out "$OUT/grid" \
    --cells 512x1,512x2,768x1,512x4,1024x1,768x2,768x4,1024x2,1024x4
else
  step benchmark_target 300 "$CXR_PY" scripts/benchmark.py --smoke --out "$OUT/target" --configs "$TARGET_CONFIGS"
  step benchmark_attention 120 "$CXR_PY" scripts/benchmark_attention.py --sides 32 --repeat 2 --out "$OUT/attention"
  step attention_heads64 60 "$CXR_PY" scripts/benchmark_attention.py --sides 16 --heads 10 --head-dim 64 --repeat 1 \
    --out "$OUT/attention_heads64"
  step profile_correction 300 "$CXR_PY" scripts/profile_correction.py --size 64 --steps 4 --repeat 1 --out "$OUT/profile"
  step host_reads 120 "$CXR_PY" scripts/count_host_reads.py --size 128 --out "$OUT/host_reads"
fi
step workflow_offload 90 "$CXR_PY" scripts/main_job.py --size "$SIZE" --steps "$STEPS" \
  --workdir "$OUT/workflow_offload" "${GPU_FLAG[@]}" "${FRONT[@]}" --server-arg=--novram
keep_pictures workflow_offload
{
  echo
  grep -h "regulation:" "$OUT/workflow.log" 2>/dev/null | sed 's/^ */- workflow /'
  grep -h "^Done in" "$OUT/workflow.log" "$OUT/workflow_offload.log" 2>/dev/null | sed 's/^/- /'
  for b in target grid; do
    [ -f "$OUT/$b/benchmark.md" ] && { echo; echo "## Benchmark: $b"; echo; cat "$OUT/$b/benchmark.md"; }
  done
  [ -f "$OUT/attention/attention.md" ] && { echo; echo "## The gate per attention call"; echo; cat "$OUT/attention/attention.md"; }
  [ -f "$OUT/attention_heads64/attention.md" ] && { echo; echo "## The gate per attention call, heads of 64 channels (SD2.x, SDXL)"; echo; cat "$OUT/attention_heads64/attention.md"; }
  [ -f "$OUT/profile/profile.md" ] && { echo; echo "## The correction's gradient pass"; echo; cat "$OUT/profile/profile.md"; }
  [ -f "$OUT/host_reads/host_reads.md" ] && { echo; echo "## Host reads and operators per step"; echo; cat "$OUT/host_reads/host_reads.md"; }
} >> "$summary"
echo "[device_check] $( [ $status -eq 0 ] && echo 'all steps passed' || echo 'some steps FAILED'); see $summary"
exit $status
