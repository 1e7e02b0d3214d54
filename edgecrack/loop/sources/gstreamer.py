"""GStreamer sources: raw pipeline strings and Jetson CSI cameras (``csi://N``).

OpenCV wheels from PyPI are built without GStreamer, also on Jetson. GStreamer pipelines
therefore run through OpenCV when it has GStreamer, and otherwise through ``gst-launch-1.0``
in a subprocess that writes YUV4MPEG2 to a pipe, read by :class:`Y4MReader`.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from ...errors import SourceError
from ...platform import opencv_has_gstreamer
from ...redact import redact
from ..config import SourceOptions, check_gstreamer_mode
from .live import LiveSource, _Capture
from .opencv import _cv_open




def csi_pipeline(sensor_id: int = 0, width: int = 1920, height: int = 1080, fps: float = 30, flip: int = 0,
                 sink: str = "appsink") -> str:
    """The GStreamer pipeline for a Jetson CSI camera (``nvarguscamerasrc``).

    Args:
        sensor_id: CSI sensor (``csi://N``).
        width: Capture width.
        height: Capture height.
        fps: Capture rate.
        flip: ``nvvidconv flip-method`` (0 none, 2 rotate 180, 4 horizontal, 6 vertical).
        sink: ``appsink`` (BGR for OpenCV) or ``y4m`` (I420 YUV4MPEG2 on stdout for gst-launch).

    Returns:
        A ``gst-launch`` style pipeline string.
    """
    fr = f"{int(fps)}/1" if float(fps).is_integer() else f"{int(round(fps * 1000))}/1000"
    head = (f"nvarguscamerasrc sensor-id={sensor_id} ! "
            f"video/x-raw(memory:NVMM),width={width},height={height},framerate={fr},format=NV12 ! "
            f"nvvidconv flip-method={flip}")
    if sink == "appsink":
        return (f"{head} ! video/x-raw,width={width},height={height},format=BGRx ! videoconvert ! "
                "video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false")
    if sink == "y4m":
        # nvvidconv writes I420 to system memory itself, so no software videoconvert runs on the CPU.
        return f"{head} ! video/x-raw,width={width},height={height},format=I420 ! y4menc ! fdsink fd=1"
    raise ValueError(f"unknown sink {sink!r}")


_APPSINK_TAIL = re.compile(r"\s*!\s*appsink\b[^!]*$")


def appsink_pipeline(pipeline: str) -> str:
    """A pipeline string ending in an OpenCV-readable ``appsink`` (added when missing)."""
    p = pipeline.strip()
    if _APPSINK_TAIL.search(p):
        return p
    return f"{p} ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false"


def y4m_pipeline(pipeline: str) -> str:
    """The same pipeline with its ``appsink`` replaced by YUV4MPEG2 on stdout (for gst-launch)."""
    p = _APPSINK_TAIL.sub("", pipeline.strip())
    if p.rstrip().endswith("fdsink fd=1"):
        return p
    return f"{p} ! videoconvert ! video/x-raw,format=I420 ! y4menc ! fdsink fd=1"


class Y4MReader:
    """Frames from a YUV4MPEG2 byte stream (what GStreamer's ``y4menc`` writes).

    Args:
        stream: A binary file object (a pipe).
    """

    def __init__(self, stream: Any):
        self.stream = stream
        header = stream.readline()
        if not header.startswith(b"YUV4MPEG2"):
            raise SourceError(f"not a YUV4MPEG2 stream (header {header[:40]!r})")
        tags = {t[:1]: t[1:] for t in header.split()[1:]}
        self.width = int(tags[b"W"])
        self.height = int(tags[b"H"])
        cs = tags.get(b"C", b"420jpeg").decode()
        if not cs.startswith("420"):
            raise SourceError(f"YUV4MPEG2 colour space C{cs} is not supported (need 4:2:0)")
        if self.width % 2 or self.height % 2:
            raise SourceError(f"GStreamer frame size {self.width}x{self.height} is odd",
                              "add 'videoscale ! video/x-raw,width=W,height=H' with even W and H to the pipeline")
        self.frame_bytes = self.width * self.height * 3 // 2
        fps = tags.get(b"F", b"0:1").split(b":")
        self.fps = int(fps[0]) / int(fps[1]) if len(fps) == 2 and int(fps[1]) else None

    def read(self) -> np.ndarray | None:
        line = self.stream.readline()
        if not line.startswith(b"FRAME"):
            return None
        buf = _read_exact(self.stream, self.frame_bytes)
        if buf is None:
            return None
        yuv = np.frombuffer(buf, np.uint8).reshape(self.height * 3 // 2, self.width)
        return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420)


def _read_exact(stream: Any, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        b = stream.read(n - got)
        if not b:
            return None
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


class GstLaunchCapture(_Capture):
    """A live capture read from ``gst-launch-1.0`` writing YUV4MPEG2 to a pipe."""

    def __init__(self, pipeline: str):
        exe = shutil.which("gst-launch-1.0")
        if exe is None:
            raise SourceError("GStreamer pipelines need OpenCV built with GStreamer or gst-launch-1.0, and "
                              "neither is available", "apt install gstreamer1.0-tools (Jetson: it ships with JetPack)")
        launch = y4m_pipeline(pipeline)
        try:
            # The argv a shell would pass to ``gst-launch-1.0 PIPELINE``: the way users test a pipeline.
            argv = shlex.split(launch)
        except ValueError as e:
            raise SourceError(redact(f"GStreamer pipeline cannot be split into arguments ({e})"),
                              "close the quotes in the pipeline") from None
        self.proc = subprocess.Popen([exe, "-q", "-e", *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=0)
        try:
            self.reader = Y4MReader(self.proc.stdout)
        except (SourceError, ValueError, KeyError) as e:
            err = self._stderr()
            self.release()
            raise SourceError(redact(f"GStreamer pipeline failed to start: {err or e}"), f"pipeline: {redact(launch)}") from None

    def _stderr(self) -> str:
        try:
            _, err = self.proc.communicate(timeout=2)
        except (subprocess.TimeoutExpired, ValueError):
            return ""
        lines = [ln for ln in (err or b"").decode(errors="replace").splitlines() if ln.strip()]
        return " / ".join(lines[-3:])[:400]

    def read(self) -> np.ndarray | None:
        try:
            return self.reader.read()
        except (OSError, ValueError):
            return None

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for s in (self.proc.stdout, self.proc.stderr):
            if s is not None:
                s.close()


def _gst_opener(pipeline: str, launch_pipeline: str | None, opts: SourceOptions) -> Callable[[], _Capture]:
    mode = opts.gstreamer
    check_gstreamer_mode(mode)
    use_cv = mode == "opencv" or (mode == "auto" and opencv_has_gstreamer())
    if mode == "opencv" and not opencv_has_gstreamer():
        raise SourceError("this OpenCV build has no GStreamer support",
                          "use the gst-launch mode, or an OpenCV built with -DWITH_GSTREAMER=ON")

    def open_gst() -> _Capture:
        if use_cv:
            return _cv_open(appsink_pipeline(pipeline), cv2.CAP_GSTREAMER, [], "GStreamer pipeline",
                            f"test it with: gst-launch-1.0 {redact(pipeline)}")
        return GstLaunchCapture(launch_pipeline or pipeline)

    return open_gst


def gstreamer_source(pipeline: str, opts: SourceOptions) -> LiveSource:
    """A GStreamer pipeline string (``... ! appsink``)."""
    return LiveSource("GStreamer pipeline", _gst_opener(pipeline, None, opts), opts, kind="gstreamer")


def csi_source(spec: str, opts: SourceOptions) -> LiveSource:
    """A Jetson CSI camera, ``csi://N[?width=&height=&fps=&flip=]``."""
    u = urlsplit(spec)
    try:
        sensor = int(u.netloc or u.path.strip("/") or 0)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        width = int(q.get("width", opts.width or 1920))
        height = int(q.get("height", opts.height or 1080))
        fps = float(q.get("fps", opts.fps or 30))
        flip = int(q.get("flip", opts.flip))
    except ValueError:
        raise SourceError(f"bad CSI camera address {spec}", "use csi://0 or csi://0?width=1280&height=720&fps=60") from None
    return LiveSource(f"csi://{sensor} {width}x{height}@{fps:g}",
                      _gst_opener(csi_pipeline(sensor, width, height, fps, flip),
                                  csi_pipeline(sensor, width, height, fps, flip, sink="y4m"), opts), opts, kind="csi")
