"""Frame sources: cameras, CSI cameras, network streams, video files, folders, globs, GStreamer.

Two kinds of source behave differently on purpose:

- **Live** sources (camera index, ``csi://N``, ``rtsp://``, ``http(s)://``, GStreamer
  pipelines) never fall behind: a capture thread reads continuously and keeps only the newest
  frame; frames the consumer did not take in time are counted as drops. A dead or unplugged
  camera or stream is reconnected with exponential backoff, a watchdog restarts a capture that
  stops delivering frames, and every step is reported as a :class:`SourceEvent`
  (:mod:`edgecrack.live`).
- **Recorded** sources (video files, folders, globs, single images) deliver every frame, in
  order, reproducibly. A reader thread decodes ahead into a small bounded queue so decoding
  overlaps inference. Corrupt images in folders are skipped and counted.

GStreamer pipelines (``csi://N`` and raw pipeline strings) run through OpenCV when it has
GStreamer, else through ``gst-launch-1.0`` (:mod:`edgecrack.gstreamer`).
"""

from __future__ import annotations

import glob as _glob
import os
import queue
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np

from .errors import ImageDecodeError, SourceError
from .geo import geotag_from_image, telemetry_for_video
from .gstreamer import Y4MReader, appsink_pipeline, csi_pipeline, opencv_has_gstreamer, y4m_pipeline  # noqa: F401 - re-exported
from .preprocess import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, decode_image

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".ts", ".mts", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                  ".h264", ".h265", ".mjpeg", ".mjpg")
#: Longest wait for a source's thread when stopping. A capture blocked in a driver call is left
#: behind (daemon thread, freed at exit): stopping must not wait for a stream's timeout.
STOP_JOIN_S = 2.0
SOURCE_FORMS = ("camera index (0), /dev/videoN, csi://N, rtsp://..., http(s)://..., a video file, "
                "an image folder, a glob ('shots/*.jpg') or a GStreamer pipeline ('... ! appsink')")


@dataclass
class Frame:
    """One frame and where it came from.

    Attributes:
        image: ``uint8 [H, W, 3]`` BGR.
        index: Position in the sequence this source delivered (0, 1, 2, ...).
        name: Display name: the file name for images, ``frame N`` for video.
        timestamp: Wall-clock time (``time.time()``) at capture.
        source_frame: Frame number in the source (live: counts dropped frames too).
        position_ms: Media time for video files (``None`` elsewhere).
        path: Image file for folder/glob sources.
        capture_ms: Time spent reading and decoding this frame.
        captured: ``time.perf_counter()`` at capture (for end-to-end latency).
        geo: Position, capture time and attitude from EXIF or DJI telemetry
            (:class:`edgecrack.geo.GeoTag`), or None.
    """

    image: np.ndarray
    index: int
    name: str
    timestamp: float
    source_frame: int
    position_ms: float | None = None
    path: str | None = None
    capture_ms: float = 0.0
    captured: float = 0.0
    geo: Any = None

    def position(self) -> dict[str, Any]:
        """Where in the source this frame is (for logs)."""
        d: dict[str, Any] = {"frame": self.source_frame}
        if self.position_ms is not None:
            d["ms"] = round(self.position_ms, 3)
        if self.path is not None:
            d["path"] = self.path
        return d


@dataclass
class SourceEvent:
    """Something that happened to a source: ``connected``, ``lost``, ``stalled``,
    ``reconnecting``, ``reconnected``, ``gave_up``, ``skipped``, ``error`` (also an output that
    cannot be written), ``recovered`` (that output writes again)."""

    kind: str
    message: str
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "time": self.time}


@dataclass
class SourceOptions:
    """How to open a source.

    Attributes:
        width: Requested capture width (cameras, ``csi://``).
        height: Requested capture height (cameras, ``csi://``).
        fps: Requested capture rate (cameras, ``csi://``).
        flip: ``nvvidconv flip-method`` for ``csi://`` (0-7).
        watchdog_s: Live sources: no frame for this long means the capture is stalled and
            is restarted.
        backoff_s: First reconnect delay; doubles per failed attempt.
        backoff_max_s: Longest reconnect delay.
        give_up_s: Live sources end after this long without a frame (``None``: never, the
            right choice on a drone: the link comes back).
        wait_s: How long the first connection may take (retrying with backoff) before
            the source fails with :class:`SourceError`. ``0``: one attempt, fail fast.
        prefetch: Recorded sources: frames decoded ahead of the consumer (at most).
        prefetch_bytes: Recorded sources: decoded bytes held ahead of the consumer (at
            most; one frame always passes, however large).
        max_pixels: Largest image or video frame decoded (0: no limit); see
            :data:`edgecrack.preprocess.DEFAULT_MAX_PIXELS`.
        gstreamer: ``auto`` (OpenCV if built with GStreamer, else ``gst-launch-1.0``),
            ``opencv`` or ``gst-launch``.
        telemetry: DJI ``.SRT`` of a video file (None: ``VIDEO.SRT`` next to it, if any).
        max_abandoned: Live sources: captures stuck inside a driver or network call that the
            watchdog gave up on and that have not returned yet. Python cannot free such a
            thread and the decoder behind it; one more than this ends the source with an
            error, so the process exits non-zero and its supervisor (systemd) restarts it clean.
        shard: Folders and globs: only the images of shard ``(K, N)`` (see :mod:`edgecrack.shard`).
    """

    width: int | None = None
    height: int | None = None
    fps: float | None = None
    flip: int = 0
    watchdog_s: float = 5.0
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0
    give_up_s: float | None = None
    wait_s: float = 0.0
    prefetch: int = 16
    prefetch_bytes: int = 256 << 20
    max_pixels: int = DEFAULT_MAX_PIXELS
    gstreamer: str = "auto"
    telemetry: str | None = None
    max_abandoned: int = 3
    shard: tuple[int, int] | None = None


class Source:
    """Base class: a thread produces frames, the consumer calls :meth:`next_frame`.

    Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    live = False
    kind = "source"

    def __init__(self, description: str):
        self.description = description
        self.frames = 0
        self.dropped = 0
        self.skipped = 0
        self.reconnects = 0
        self.fps: float | None = None
        self.end_reason: str | None = None
        #: Set when the source ended because it failed (the run then exits non-zero).
        self.error: SourceError | None = None
        self._events: queue.SimpleQueue[SourceEvent] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- consumer side -----------------------------------------------------------------
    def start(self, cancel: threading.Event | None = None) -> "Source":
        """Open the source (raising :class:`SourceError` when it cannot) and start reading.

        Args:
            cancel: Set by another thread (or a signal handler) to abandon a slow first
                connection; the source then starts ended, with ``end_reason`` "stopped".
        """
        raise NotImplementedError

    def next_frame(self, timeout: float = 0.5) -> Frame | None:
        """The next frame, or ``None`` when none arrived within ``timeout`` (see :attr:`ended`)."""
        raise NotImplementedError

    @property
    def ended(self) -> bool:
        """True once no more frames will come (end of file, or a live source gave up)."""
        raise NotImplementedError

    def events(self) -> list[SourceEvent]:
        """Events since the last call (connection changes, skipped files)."""
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def stop(self) -> None:
        """Stop reading and release the device / file. Safe to call twice."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=STOP_JOIN_S)

    def stats(self) -> dict[str, Any]:
        return {"source": self.description, "kind": self.kind, "live": self.live, "frames": self.frames,
                "captured": getattr(self, "captured", self.frames),
                "dropped": self.dropped, "skipped": self.skipped, "reconnects": self.reconnects,
                "end_reason": self.end_reason}

    def __enter__(self) -> "Source":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _event(self, kind: str, message: str) -> None:
        self._events.put(SourceEvent(kind, message))


class BoundedQueue:
    """A FIFO bounded by item count and by bytes (the sum of what its items hold).

    One item is always admitted into an empty queue, however large, so a huge frame still
    passes, alone. Read-ahead queues hold decoded frames: a count alone lets 16 frames of a
    100-megapixel camera take 4.8 GB.

    Args:
        maxsize: Most items.
        max_bytes: Most bytes.
    """

    def __init__(self, maxsize: int, max_bytes: int):
        self.maxsize = max(1, maxsize)
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: deque[tuple[Any, int]] = deque()
        self._cond = threading.Condition()

    def put(self, item: Any, nbytes: int = 0, timeout: float | None = None) -> None:
        """Add an item of ``nbytes``; raises :class:`queue.Full` after ``timeout`` seconds."""
        with self._cond:
            ok = self._cond.wait_for(lambda: not self._items or (len(self._items) < self.maxsize
                                                                  and self.bytes + nbytes <= self.max_bytes), timeout)
            if not ok:
                raise queue.Full
            self._items.append((item, nbytes))
            self.bytes += nbytes
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        """The oldest item; raises :class:`queue.Empty` after ``timeout`` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._items), timeout):
                raise queue.Empty
            item, nbytes = self._items.popleft()
            self.bytes -= nbytes
            self._cond.notify_all()
            return item

    def get_nowait(self) -> Any:
        return self.get(timeout=0)

    def qsize(self) -> int:
        return len(self._items)


def nbytes_of(item: Any) -> int:
    """Bytes of pixel data an item holds (frames, or anything with an ``image``)."""
    img = getattr(item, "image", None)
    return int(img.nbytes) if isinstance(img, np.ndarray) else 0


# -- recorded sources ---------------------------------------------------------------------
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
                    from .preprocess import to_bgr8

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


# -- live sources -------------------------------------------------------------------------
def _is_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def open_source(spec: str | int, options: SourceOptions | None = None) -> Source:
    """Make the right :class:`Source` for what the user typed (not started yet).

    Args:
        spec: Camera index (``0``), ``/dev/videoN``, ``csi://N[?width=&height=&fps=&flip=]``,
            ``rtsp://``/``http(s)://``/... URL, video file, image file, folder, glob, or a
            GStreamer pipeline (contains ``!``).
        options: Capture, reconnect and prefetch settings.

    Returns:
        A source; call :meth:`Source.start` (or use it as a context manager).

    Raises:
        SourceError: Nothing usable at ``spec``.
    """
    from . import live  # imports this module: loaded on first use, not at import time
    from .shard import glob_root, select_shard

    opts = options or SourceOptions()
    if opts.telemetry and not (isinstance(spec, str) and Path(spec.strip()).is_file()
                               and Path(spec.strip()).suffix.lower() not in IMAGE_SUFFIXES):
        raise SourceError(f"--telemetry {opts.telemetry}: telemetry files go with a video file source, not {spec}",
                          "stills carry their position in EXIF; drop --telemetry")
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        idx = int(spec)
        return live.camera_source(idx, opts)
    s = spec.strip()
    if not s:
        raise SourceError("empty source", f"pass one of: {SOURCE_FORMS}")
    m = re.fullmatch(r"/dev/video(\d+)", s)
    if m:
        idx = int(m.group(1))
        return live.camera_source(idx, opts)
    scheme = urlsplit(s).scheme.lower() if "://" in s else ""
    if scheme == "csi":
        return live.csi_source(s, opts)
    if "!" in s and scheme not in STREAM_SCHEMES:
        return live.gstreamer_source(s, opts)
    if scheme in STREAM_SCHEMES:
        return live.stream_source(s, opts)
    if scheme:
        raise SourceError(f"unsupported source scheme {scheme}://", f"pass one of: {SOURCE_FORMS}")
    p = Path(s).expanduser()
    if p.is_dir():
        from .data import list_images

        files = list_images(p)
        if not files:
            raise SourceError(f"no images in folder {p}", f"image types: {', '.join(IMAGE_SUFFIXES)}")
        files = select_shard(files, p, opts.shard)
        return ImageFilesSource(files, str(p), opts.prefetch, opts.prefetch_bytes, opts.max_pixels)
    if p.is_file():
        if p.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFilesSource([p], str(p), opts.prefetch, opts.prefetch_bytes, opts.max_pixels)
        return VideoFileSource(p, opts.prefetch, opts.prefetch_bytes, opts.max_pixels, opts.telemetry)
    if _is_glob(s):
        files = sorted(Path(f) for f in _glob.glob(os.path.expanduser(s), recursive=True)
                       if Path(f).is_file() and Path(f).suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"no images match {s}", "quote the pattern so the shell does not expand it")
        files = select_shard(files, glob_root(s), opts.shard)
        return ImageFilesSource(files, s, opts.prefetch, opts.prefetch_bytes, opts.max_pixels)
    raise SourceError(f"source not found: {s}", f"pass one of: {SOURCE_FORMS}")


def __getattr__(name: str) -> Any:
    # LiveSource lives in edgecrack.live, which builds on this module's classes.
    if name == "LiveSource":
        from .live import LiveSource

        return LiveSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
