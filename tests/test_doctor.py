"""``edgecrack doctor`` on this machine: real probes, no mocks."""

from __future__ import annotations

import json

import onnxruntime as ort
from typer.testing import CliRunner

from edgecrack.cli import app
from edgecrack.doctor import opencv_video_io, run_doctor
from edgecrack.runtime.tensorrt_backend import tensorrt_version


def test_doctor_reports_backends_and_reasons():
    rep = run_doctor()
    checks = {c.name: c for c in rep.checks}
    assert checks["onnxruntime"].ok and ort.__version__ in checks["onnxruntime"].detail
    assert rep.backends["onnxruntime-cpu"] is None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "CUDAExecutionProvider" in rep.backends["onnxruntime-cuda"]
    if tensorrt_version() is None:
        assert not checks["TensorRT"].ok and "--target cpu" in checks["TensorRT"].fix
        assert "TensorRT is not installed" in rep.backends["tensorrt"]
    assert rep.machine["cores"] >= 1


def test_opencv_video_io_is_read_from_the_build():
    import cv2

    vio = opencv_video_io()
    assert "FFMPEG" in vio and "GStreamer" in vio
    assert vio["FFMPEG"].split()[0] in cv2.getBuildInformation()


def test_doctor_cli_json_and_table():
    r = CliRunner().invoke(app, ["doctor", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["backends"]["onnxruntime-cpu"] is None
    assert any(c["name"] == "OpenCV FFmpeg" for c in d["checks"])
    r = CliRunner().invoke(app, ["doctor"])
    assert r.exit_code == 0 and "best runtime here:" in r.output
