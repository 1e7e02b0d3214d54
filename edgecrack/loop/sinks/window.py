"""A window showing annotated frames (needs a display and an OpenCV with GUI support)."""

from __future__ import annotations

import os

import cv2

from ...errors import ConfigError
from ..types import FrameResult, RunInfo, RunSummary, Sink

def display_problem() -> str | None:
    """None when a window can be shown here, else why not."""
    from ...platform import opencv_has_gui

    if not opencv_has_gui():
        return ("this OpenCV has no GUI support (opencv-python-headless); install opencv-python, "
                    "or use --save-video / --save-flagged")
    if os.name != "nt" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set); use --save-video / --save-flagged, or run it on the device's desktop"
    return None


class WindowSink(Sink):
    """Shows annotated frames; ``q`` or Esc stops the run."""

    needs_overlay = True

    def __init__(self, title: str = "edgecrack", max_width: int = 1280):
        why = display_problem()
        if why:
            raise ConfigError(f"--show cannot open a window: {why}")
        self.title = title
        self.max_width = max_width
        self._info: RunInfo | None = None

    def open(self, info: RunInfo) -> None:
        self._info = info

    def _keys(self) -> None:
        k = cv2.waitKey(1) & 0xFF
        if k in (ord("q"), 27) and self._info is not None:
            self._info.request_stop("window closed (q)")

    def write(self, r: FrameResult) -> None:
        img = r.overlay
        if img.shape[1] > self.max_width:
            s = self.max_width / img.shape[1]
            img = cv2.resize(img, (self.max_width, int(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
        cv2.imshow(self.title, img)
        self._keys()

    def idle(self, info: RunInfo) -> None:
        self._keys()

    def close(self, summary: RunSummary | None) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass
