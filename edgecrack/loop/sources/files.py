"""Recorded sources: image files (folders, globs, lists) and video files.

They deliver every frame, in order, reproducibly. A reader thread decodes ahead into a small
bounded queue so decoding overlaps inference. Corrupt images are skipped and counted.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ...errors import ImageDecodeError, SourceError
from ...geo import geotag_from_image, telemetry_for_video
from ...preprocess import DEFAULT_MAX_PIXELS, decode_image, to_bgr8
from ..types import Frame
from .base import BoundedQueue, Source, nbytes_of

_END = object()


class _QueuedSource(Source):
    """A reader thread decodes ahead into a bounded queue; nothing is ever dropped."""

    def __init__(self, description: str, prefetch: int = 16, prefetch_bytes: int = 256 << 20):
        super().__init__(description)
        self._q = BoundedQueue(prefetch, prefetch_bytes)
        self._done = False
        self._error: BaseException | None = None

    def start(self, cancel: threading.Event | None = None) -> "Source":
        self._open()
        self._thread = threading.Thread(target=self._run, name=f"edgecrack-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def _open(self) -> None:
        pass

    def _produce(self) -> Any:
        raise NotImplementedError

    def _run(self) -> None:
        try:
            self._produce()
        except BaseException as e:  # noqa: BLE001 - handed to the consumer thread, re-raised there
            self._error = e
        finally:
            self._put(_END)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, nbytes_of(item), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next_frame(self, timeout: float = 0.5) -> Frame | None:
        if self._done:
            return None
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _END:
            self._done = True
            if self._error is not None:
                raise self._error
            return None
        self.frames += 1
        return item

    @property
    def ended(self) -> bool:
        return self._done


class ImageFilesSource(_QueuedSource):
    """Image files in order (a folder, a glob or a list). Corrupt files are skipped and counted.

    Args:
        paths: Image files, in the order they are delivered.
        description: What the user asked for (folder or pattern).
        prefetch: Images decoded ahead.
        prefetch_bytes: Decoded bytes held ahead.
        max_pixels: Largest image decoded at full size (0: no limit); bigger ones are skipped
            with the reason, or decoded reduced when :attr:`min_size` allows it.

    Attributes:
        min_size: ``(height, width)`` the consumer needs at least, when it only resizes whole
            images down (set before :meth:`start`): an over-limit JPEG is then decoded reduced.
    """

    kind = "images"

    def __init__(self, paths: list[Path], description: str, prefetch: int = 16, prefetch_bytes: int = 256 << 20,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        super().__init__(description, prefetch, prefetch_bytes)
        self.paths = list(paths)
        self.max_pixels = max_pixels
        self.min_size: tuple[int, int] | None = None

    def _produce(self) -> None:
        n = 0
        for i, p in enumerate(self.paths):
            if self._stop.is_set():
                return
            t0 = time.perf_counter()
            try:
                img = decode_image(p, self.max_pixels, self.min_size)
            except ImageDecodeError as e:
                self.skipped += 1
                self._event("skipped", e.message)
                continue
            t1 = time.perf_counter()
            f = Frame(img, n, p.name, time.time(), i, path=str(p), capture_ms=(t1 - t0) * 1e3, captured=t1,
                      geo=geotag_from_image(p))
            n += 1
            if not self._put(f):
                return
        self.end_reason = "all images read"


class VideoFileSource(_QueuedSource):
    """Every frame of a video file, in order.

    Args:
        path: Video file.
        prefetch: Frames decoded ahead.
    """

    kind = "video"

    def __init__(self, path: Path, prefetch: int = 16, prefetch_bytes: int = 256 << 20,
                 max_pixels: int = DEFAULT_MAX_PIXELS, telemetry: str | None = None):
        super().__init__(str(path), prefetch, prefetch_bytes)
        self.max_pixels = max_pixels
        self.path = Path(path)
        self._cap: cv2.VideoCapture | None = None
        self.frame_count: int | None = None
        self._telemetry_file = telemetry
        self.telemetry = None

    def _open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"video file not found: {self.path}")
        if self.path.stat().st_size == 0:
            raise SourceError(f"video file is empty: {self.path}")
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"OpenCV cannot open video {self.path} (corrupt, or a codec FFmpeg lacks)",
                              "check it plays with ffprobe; re-encode with: ffmpeg -i IN -c:v libx264 OUT.mp4")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and fps > 0 and fps < 1000 else None
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = n if n > 0 else None
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if self.max_pixels and w * h > self.max_pixels:
            cap.release()
            raise SourceError(f"{self.path}: frames of {w}x{h} ({w * h / 1e6:.0f} megapixels) are over the limit of "
                              f"{self.max_pixels / 1e6:g} (--max-pixels)", "raise --max-pixels on a machine with the memory")
        self._cap = cap
        try:
            self.telemetry = telemetry_for_video(self.path, self._telemetry_file)
        except SourceError:
            cap.release()
            raise

    def _produce(self) -> None:
        cap = self._cap
        try:
            i = 0
            while not self._stop.is_set():
                t0 = time.perf_counter()
                ok, img = cap.read()
                if not ok or img is None:
                    break
                pos = cap.get(cv2.CAP_PROP_POS_MSEC)
                t1 = time.perf_counter()
                if img.dtype != np.uint8 or img.ndim != 3:
                    img = to_bgr8(img, str(self.path))
                f = Frame(img, i, f"frame {i}", time.time(), i, position_ms=pos if pos >= 0 else None,
                          capture_ms=(t1 - t0) * 1e3, captured=t1,
                          geo=self.telemetry.at(pos if pos >= 0 else None) if self.telemetry else None)
                i += 1
                if not self._put(f):
                    return
            self.end_reason = "end of video"
            if self.frame_count and i < self.frame_count - 1:
                # FFmpeg stops at the first undecodable packet run; say so instead of ending silently.
                self._event("error", f"{self.path}: decoding stopped at frame {i} of {self.frame_count} "
                                     "(truncated or corrupt file)")
                self.end_reason = f"decoding stopped at frame {i} of {self.frame_count}"
        finally:
            cap.release()
