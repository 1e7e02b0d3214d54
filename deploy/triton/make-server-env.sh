#!/usr/bin/env bash
# Creates a Python environment holding a real Triton Inference Server for CPU-only machines:
# the `tritonserver` binary and python backend shipped in the nvidia-pytriton wheel, plus
# onnxruntime for edgecrack's python-backend model variant.
#
# It is a separate environment on purpose: the python backend stub of that Triton release is
# built against numpy 1.x (with numpy 2 it returns empty output tensors), while edgecrack's own
# environment uses numpy 2.
#
# Usage: deploy/triton/make-server-env.sh [ENV_DIR] [PYTHON]
#   ENV_DIR  default .venv-triton (what tests/test_triton.py looks for; or set EDGECRACK_TRITON_ENV)
#   PYTHON   default python3
set -euo pipefail

env_dir="${1:-.venv-triton}"
python="${2:-python3}"
pytriton_version="0.7.0"

if [ -x "$env_dir/bin/python" ] && "$env_dir/bin/python" -c "import pytriton, onnxruntime" 2>/dev/null; then
  echo "Triton server environment ready: $env_dir"
  exit 0
fi
# pip -q still prints a line per package for index locations a pip.conf names but a machine
# lacks; they say nothing about this environment (pip's status still decides, pipefail).
quiet_pip() { "$env_dir/bin/pip" install -q "$@" 2>&1 | { grep -v -e 'is ignored: it is neither a file nor a directory' || true; }; }
"$python" -m venv "$env_dir"
quiet_pip --upgrade pip
quiet_pip "nvidia-pytriton==${pytriton_version}" "numpy<2" onnxruntime
"$env_dir/bin/python" -c "import pytriton, onnxruntime, numpy; print('Triton server environment ready:', '$env_dir', 'numpy', numpy.__version__, 'onnxruntime', onnxruntime.__version__)"
