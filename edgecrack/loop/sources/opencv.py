"""OpenCV openers of live sources: USB/V4L2 cameras and network streams (FFmpeg)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from ...errors import SourceError
from ...redact import redact
from ..config import SourceOptions
from .live import LiveSource, _Capture


class _CvCapture(_Capture):
    def __init__(self, cap: cv2.VideoCapture):
        self.cap = cap

    def read(self) -> np.ndarray | None:
        ok, img = self.cap.read()
        return img if ok and img is not None and img.size else None

    def release(self) -> None:
        self.cap.release()


def _cv_open(target: Any, api: int, props: list[int], what: str, hint: str | None) -> _CvCapture:
    cap = cv2.VideoCapture(target, api, props) if props else cv2.VideoCapture(target, api)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"cannot open {what}", hint)
    return _CvCapture(cap)


def _camera_opener(index: int, opts: SourceOptions) -> Callable[[], _Capture]:
    api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
    dev = Path(f"/dev/video{index}")

    def open_camera() -> _Capture:
        if sys.platform.startswith("linux") and not dev.exists():
            raise SourceError(f"camera {index}: {dev} does not exist (unplugged or wrong index)",
                              "list cameras with: v4l2-ctl --list-devices; a Jetson CSI camera is --source csi://0")
        c = _cv_open(index, api, [], f"camera {index} ({dev})",
                     "is another program using it? check permissions (group 'video')")
        # Small driver queue: the newest frame matters, not the backlog.
        c.cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if opts.width:
            c.cap.set(cv2.CAP_PROP_FRAME_WIDTH, opts.width)
        if opts.height:
            c.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, opts.height)
        if opts.fps:
            c.cap.set(cv2.CAP_PROP_FPS, opts.fps)
        return c

    return open_camera


def _stream_opener(url: str, opts: SourceOptions) -> Callable[[], _Capture]:
    ms = int(max(1.0, opts.watchdog_s) * 1000)
    props = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    shown = redact(url)

    def open_stream() -> _Capture:
        return _cv_open(url, cv2.CAP_FFMPEG, props, f"stream {shown}",
                        "is the server up and the address right? (test with: ffprobe URL)")

    return open_stream


def camera_source(index: int, opts: SourceOptions) -> LiveSource:
    """A USB/V4L2 camera (``0``, ``/dev/video0``)."""
    return LiveSource(f"camera {index}", _camera_opener(index, opts), opts, kind="camera")


def stream_source(url: str, opts: SourceOptions) -> LiveSource:
    """A network stream read by FFmpeg; shown and logged with its credentials masked."""
    return LiveSource(redact(url), _stream_opener(url, opts), opts, kind="stream")
