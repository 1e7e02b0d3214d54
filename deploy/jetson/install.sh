#!/usr/bin/env bash
# Installs edgecrack on a flashed Jetson (JetPack 5.x or 6.x) as a service started at boot.
#
#   sudo deploy/jetson/install.sh --model runs/deck [--package DIR_OR_WHEEL] [--source csi://0]
#                                 [--precision fp16] [--no-start]
#
# What it does:
#   - checks this is a Jetson (/etc/nv_tegra_release) with JetPack's TensorRT and OpenCV;
#   - creates the `edgecrack` system user (groups: video);
#   - creates /opt/edgecrack/venv with --system-site-packages, so JetPack's tensorrt, cv2
#     (with GStreamer) and numpy are used; installs edgecrack and its few device dependencies;
#   - copies the model to /opt/edgecrack/model, the start script, this doc and the unit;
#   - writes /etc/edgecrack/edgecrack.env (kept if it exists; mode 0640 root:edgecrack, as it
#     may hold a stream password) and enables the service.
# The first start builds the TensorRT engine for this device into /var/lib/edgecrack/engines.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
prefix=/opt/edgecrack
model=""
package="$repo"
source_spec="csi://0"
precision="fp16"
start=1

usage() {
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --package) package="$2"; shift 2 ;;
    --source) source_spec="$2"; shift 2 ;;
    --precision) precision="$2"; shift 2 ;;
    --no-start) start=0; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage 2 ;;
  esac
done

fail() { echo "install.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root (sudo $0 ...)"
[ -n "$model" ] || fail "--model RUN_FOLDER_OR_ONNX is required"
[ -e "$model" ] || fail "model not found: $model"
if [ -d "$model" ] && [ ! -f "$model/model.onnx" ]; then
  fail "$model holds no model.onnx (export it: edgecrack export $model)"
fi
[ -r /etc/nv_tegra_release ] || fail "not a Jetson (no /etc/nv_tegra_release); flash JetPack first"
echo "L4T: $(head -n 1 /etc/nv_tegra_release)"
case "$precision" in fp16|fp32|int8) ;; *) fail "--precision must be fp16, fp32 or int8" ;; esac

apt-get update -qq
apt-get install -y -qq --no-install-recommends python3-venv python3-pip python3-dev >/dev/null
python3 - <<'PY' || fail "JetPack's TensorRT / OpenCV Python bindings are missing: sudo apt-get install nvidia-jetpack"
import importlib.util, sys
missing = [m for m in ("tensorrt", "cv2", "numpy") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python modules: {', '.join(missing)}")
import cv2
gst = [l for l in cv2.getBuildInformation().splitlines() if "GStreamer" in l]
print("OpenCV", cv2.__version__, "|", (gst[0].strip() if gst else "GStreamer: unknown"))
PY

if ! id edgecrack >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/edgecrack --shell /usr/sbin/nologin --user-group --groups video edgecrack
fi

python3 -m venv --system-site-packages "$prefix/venv"
pip=("$prefix/venv/bin/pip" install -q)
"${pip[@]}" --upgrade pip
export PATH="/usr/local/cuda/bin:$PATH"  # pycuda builds against JetPack's CUDA
"${pip[@]}" -r "$here/requirements-jetson.txt"
# JetPack 5 ships Python 3.8; edgecrack's device path (runtime, engine cache, run loop) works
# there, while training needs 3.10+ and never runs on the device.
pyminor="$("$prefix/venv/bin/python" -c 'import sys; print(sys.version_info[1])')"
extra=()
if [ "$pyminor" -lt 10 ]; then extra+=(--ignore-requires-python); fi
# --no-deps: PyPI's opencv-python (no GStreamer) must not shadow JetPack's OpenCV.
"${pip[@]}" --no-deps "${extra[@]}" "$package"

install -d -m 0755 "$prefix/bin" "$prefix/docs" /etc/edgecrack
install -m 0755 "$here/edgecrack-start.sh" "$prefix/bin/edgecrack-start"
install -m 0644 "$repo/docs/jetson.md" "$prefix/docs/jetson.md" 2>/dev/null || true
rm -rf "$prefix/model.new"
if [ -d "$model" ]; then
  install -d "$prefix/model.new"
  cp -a "$model/model.onnx" "$prefix/model.new/"
  for f in model.onnx.json manifest.json; do
    if [ -f "$model/$f" ]; then cp -a "$model/$f" "$prefix/model.new/"; fi
  done
else
  install -d "$prefix/model.new"
  cp -a "$model" "$prefix/model.new/model.onnx"
  if [ -f "$model.json" ]; then cp -a "$model.json" "$prefix/model.new/model.onnx.json"; fi
fi
rm -rf "$prefix/model.old"
if [ -e "$prefix/model" ]; then mv "$prefix/model" "$prefix/model.old"; fi
mv "$prefix/model.new" "$prefix/model"
rm -rf "$prefix/model.old"

# The settings may hold a stream password (rtsp://user:pass@...): readable by root and the
# service's group only, never by every local user. Created with that mode (umask) before
# anything is written into it; an existing file is kept, its mode tightened.
if [ ! -f /etc/edgecrack/edgecrack.env ]; then
  (umask 0137 && sed -e "s#^EDGECRACK_SOURCE=.*#EDGECRACK_SOURCE=$source_spec#" \
      -e "s#^EDGECRACK_PRECISION=.*#EDGECRACK_PRECISION=$precision#" \
      "$here/edgecrack.env" > /etc/edgecrack/edgecrack.env)
else
  echo "keeping existing /etc/edgecrack/edgecrack.env"
fi
chown root:edgecrack /etc/edgecrack/edgecrack.env
chmod 0640 /etc/edgecrack/edgecrack.env
install -m 0644 "$here/edgecrack.service" /etc/systemd/system/edgecrack.service
systemctl daemon-reload
systemctl enable edgecrack.service
if [ "$start" -eq 1 ]; then
  systemctl restart edgecrack.service
  echo "started: journalctl -u edgecrack -f   (the first start builds the TensorRT engine)"
fi
"$prefix/venv/bin/edgecrack" --version
echo "results: /var/lib/edgecrack/results/*.jsonl   settings: /etc/edgecrack/edgecrack.env"
