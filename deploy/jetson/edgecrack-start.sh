#!/usr/bin/env bash
# Starts crack inspection headless on a Jetson: builds (first start) or reuses (later starts)
# the TensorRT engine for this device, then runs `edgecrack run` on the camera or stream.
#
# Used by the systemd unit (settings in /etc/edgecrack/edgecrack.env) and as the container's
# entry point (settings as `docker run -e ...`). Every setting has a default:
#
#   EDGECRACK_MODEL       run folder or model.onnx shipped to the device   (/opt/edgecrack/model)
#   EDGECRACK_SOURCE      csi://0, a camera index (0), rtsp://..., a video file or folder  (csi://0)
#                         (a password in it is masked in the journal and kept off the process list)
#   EDGECRACK_STATE_DIR   persistent storage: engines/, results/*.jsonl, cache/  (/var/lib/edgecrack)
#   EDGECRACK_ENGINE      auto: build/reuse the engine, run the ONNX if that fails (logged);
#                         require: fail without an engine; off: run the ONNX     (auto)
#   EDGECRACK_PRECISION   fp16, fp32 or int8 (not on Nano/TX2)                   (fp16)
#                         int8 on JetPack 6 (TensorRT 10): model.qdq.onnx in the run folder
#                         (edgecrack export RUN --precision int8); on JetPack 5 (TensorRT 8.5):
#                         EDGECRACK_CALIB
#   EDGECRACK_CALIB       calibration set folder for int8 on TensorRT 8.x        ()
#   EDGECRACK_BACKEND     edgecrack run --backend                                (auto)
#   EDGECRACK_RUN_ARGS    more `edgecrack run` options, e.g. "--tile 256 --min-tiles 2"  ()
#   EDGECRACK_PYTHON      Python that has edgecrack installed                    (python3)
#   EDGECRACK_BIN         the edgecrack command of that installation             (edgecrack)
set -euo pipefail

model="${EDGECRACK_MODEL:-/opt/edgecrack/model}"
source_spec="${EDGECRACK_SOURCE:-csi://0}"
state="${EDGECRACK_STATE_DIR:-/var/lib/edgecrack}"
engine_mode="${EDGECRACK_ENGINE:-auto}"
precision="${EDGECRACK_PRECISION:-fp16}"
calib="${EDGECRACK_CALIB:-}"
backend="${EDGECRACK_BACKEND:-auto}"
python="${EDGECRACK_PYTHON:-python3}"
edgecrack="${EDGECRACK_BIN:-edgecrack}"
read -r -a run_args <<< "${EDGECRACK_RUN_ARGS:-}"

mkdir -p "$state/engines" "$state/results" "$state/cache"
# TensorRT timing/calibration caches go to persistent storage, not to a home folder.
export EDGECRACK_CACHE="$state/cache"

artifact="$model"
case "$engine_mode" in
  off) ;;
  auto|require)
    args=("$model" --cache-dir "$state/engines" --precision "$precision")
    if [ -n "$calib" ]; then args+=(--calib "$calib"); fi
    if [ "$engine_mode" = auto ]; then args+=(--fallback-onnx); else args+=(--require-engine); fi
    # Prints the engine (or the ONNX) on stdout; its reasons go to stderr, i.e. the journal.
    artifact="$("$python" -m edgecrack.engine_cache "${args[@]}")"
    ;;
  *)
    echo "edgecrack-start: EDGECRACK_ENGINE must be auto, require or off (got '$engine_mode')" >&2
    exit 2
    ;;
esac

if [[ "$source_spec" =~ ^[0-9]+$ ]]; then
  unset EDGECRACK_RUN_SOURCE
  src=(--camera "$source_spec")
else
  # Handed over in the environment, not as --source: a stream URL may hold a password, and
  # every local user can read a process's command line (/proc/PID/cmdline), not its environment.
  export EDGECRACK_RUN_SOURCE="$source_spec"
  src=()
fi
# One results file per start day; `edgecrack run` appends and flushes each frame.
log="$state/results/edgecrack-$(date -u +%Y%m%d).jsonl"
# The journal gets the source with its credentials masked (edgecrack's one redaction rule).
shown="$("$python" -m edgecrack.redact "$source_spec")"
echo "edgecrack-start: model $artifact, source $shown, results $log" >&2
exec "$edgecrack" run --model "$artifact" "${src[@]}" --backend "$backend" --log "$log" \
  --quiet --wait 120 "${run_args[@]}"
