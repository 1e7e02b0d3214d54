"""Frame sources: cameras, CSI cameras, network streams, video files, folders, globs, GStreamer.

Two kinds of source behave differently on purpose:

- **Live** sources (camera index, ``csi://N``, ``rtsp://``, ``http(s)://``, GStreamer
  pipelines) never fall behind: a capture thread reads continuously and keeps only the newest
  frame; frames the consumer did not take in time are counted as drops. A dead or unplugged
  camera or stream is reconnected with exponential backoff, a watchdog restarts a capture that
  stops delivering frames, and every step is reported as a :class:`SourceEvent`.
- **Recorded** sources (video files, folders, globs, single images) deliver every frame, in
  order, reproducibly. A reader thread decodes ahead into a small bounded queue so decoding
  overlaps inference. Corrupt images in folders are skipped and counted.

OpenCV wheels from PyPI are built without GStreamer, also on Jetson. GStreamer pipelines
(``csi://N`` and raw pipeline strings) therefore run through OpenCV when it has GStreamer, and
otherwise through ``gst-launch-1.0`` in a subprocess that writes YUV4MPEG2 to a pipe.
"""

from __future__ import annotations

import glob as _glob
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from .errors import ImageDecodeError, SourceError
from .preprocess import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, decode_image
from .redact import redact

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
        max_abandoned: Live sources: captures stuck inside a driver or network call that the
            watchdog gave up on and that have not returned yet. Python cannot free such a
            thread and the decoder behind it; one more than this ends the source with an
            error, so the process exits non-zero and its supervisor (systemd) restarts it clean.
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
    max_abandoned: int = 3


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
            f = Frame(img, n, p.name, time.time(), i, path=str(p), capture_ms=(t1 - t0) * 1e3, captured=t1)
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
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        super().__init__(str(path), prefetch, prefetch_bytes)
        self.max_pixels = max_pixels
        self.path = Path(path)
        self._cap: cv2.VideoCapture | None = None
        self.frame_count: int | None = None

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
                          capture_ms=(t1 - t0) * 1e3, captured=t1)
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
class _Capture:
    """One connection to a live source; ``read`` returns an image or ``None`` (lost)."""

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def interrupt(self) -> None:
        """Make a blocked ``read`` return (called from the watchdog thread)."""

    def release(self) -> None:
        pass


class _CvCapture(_Capture):
    def __init__(self, cap: cv2.VideoCapture):
        self.cap = cap

    def read(self) -> np.ndarray | None:
        ok, img = self.cap.read()
        return img if ok and img is not None and img.size else None

    def release(self) -> None:
        self.cap.release()


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


class _GstLaunchCapture(_Capture):
    def __init__(self, pipeline: str):
        exe = shutil.which("gst-launch-1.0")
        if exe is None:
            raise SourceError("GStreamer pipelines need OpenCV built with GStreamer or gst-launch-1.0, and "
                              "neither is available", "apt install gstreamer1.0-tools (Jetson: it ships with JetPack)")
        launch = y4m_pipeline(pipeline)
        self.proc = subprocess.Popen([exe, "-q", "-e", *_split_launch(launch)], stdout=subprocess.PIPE,
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


def _split_launch(launch: str) -> list[str]:
    # gst-launch-1.0 joins its argv with spaces and parses the result, so quoting only needs
    # to survive the shell-less exec: split on whitespace outside double quotes.
    return [t.strip('"') if t.count('"') == 2 and t.startswith('"') else t
            for t in re.findall(r'(?:[^\s"]+|"[^"]*")+', launch)]


class LiveSource(Source):
    """A camera or stream read by a capture thread that keeps only the newest frame.

    Args:
        description: What the user asked for (``rtsp://...``, ``camera 0``).
        opener: Opens one connection; raises :class:`SourceError` when it cannot.
        options: Watchdog, backoff and give-up settings.
        kind: ``camera``, ``csi``, ``stream`` or ``gstreamer``.
    """

    live = True

    def __init__(self, description: str, opener: Callable[[], _Capture], options: SourceOptions | None = None,
                 kind: str = "stream"):
        super().__init__(description)
        self.kind = kind
        self.options = options or SourceOptions()
        self._opener = opener
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._ended = False
        self._gen = 0
        self._cap: _Capture | None = None
        self._last_frame = time.monotonic()
        self._down_since: float | None = None
        self.captured = 0
        self._delivered = 0
        self._abandoned: list[threading.Thread] = []
        self.state = "starting"

    def start(self, cancel: threading.Event | None = None) -> "Source":
        cap = self._connect_first(cancel)
        if cap is None:
            with self._cond:
                self._ended = True
            self.state = "ended"
            self.end_reason = "stopped while connecting"
            return self
        self._event("connected", f"connected to {self.description}")
        self.state = "streaming"
        self._last_frame = time.monotonic()
        self._spawn(cap)
        threading.Thread(target=self._watchdog, name="edgecrack-watchdog", daemon=True).start()
        return self

    def _cancelled(self, cancel: threading.Event | None) -> bool:
        return self._stop.is_set() or (cancel is not None and cancel.is_set())

    def _connect_first(self, cancel: threading.Event | None) -> _Capture | None:
        deadline = time.monotonic() + max(0.0, self.options.wait_s)
        delay = self.options.backoff_s
        while True:
            try:
                return self._open_cancellable(cancel)
            except SourceError as e:
                if self._cancelled(cancel):
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    if self.options.wait_s > 0:
                        raise SourceError(f"{e.message} (kept trying for {self.options.wait_s:g} s)", e.hint) from None
                    raise
                self._event("reconnecting", f"{e.message}; retrying in {min(delay, left):.1f} s")
                end = time.monotonic() + min(delay, left)
                while not self._cancelled(cancel) and time.monotonic() < end:
                    self._stop.wait(min(0.05, max(0.0, end - time.monotonic())))
                if self._cancelled(cancel):
                    return None
                delay = min(delay * 2, self.options.backoff_max_s)

    def _open_cancellable(self, cancel: threading.Event | None) -> _Capture | None:
        """One connection attempt on a helper thread; None when cancelled meanwhile.

        An attempt can block for its whole timeout inside FFmpeg or a driver; a stop request
        (SIGTERM from systemd) must not wait for it. An abandoned attempt releases whatever
        it opened when it returns.
        """
        box: dict[str, Any] = {}
        lock = threading.Lock()
        done = threading.Event()

        def attempt() -> None:
            try:
                cap = self._opener()
            except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread
                box["error"] = e
            else:
                with lock:
                    if box.get("abandoned"):
                        cap.release()
                    else:
                        box["cap"] = cap
            finally:
                done.set()

        threading.Thread(target=attempt, name="edgecrack-connect", daemon=True).start()
        while not done.wait(0.05):
            if self._cancelled(cancel):
                with lock:
                    if "cap" not in box:
                        box["abandoned"] = True
                        return None
                break
        if "error" in box:
            raise box["error"]
        cap = box["cap"]
        if self._cancelled(cancel):
            cap.release()
            return None
        return cap

    def _spawn(self, cap: _Capture | None) -> None:
        with self._cond:
            self._gen += 1
            gen = self._gen
        self._thread = threading.Thread(target=self._capture_loop, args=(gen, cap), name="edgecrack-capture",
                                        daemon=True)
        self._thread.start()

    def _current(self, gen: int) -> bool:
        return gen == self._gen and not self._stop.is_set() and not self._ended

    def _capture_loop(self, gen: int, cap: _Capture | None) -> None:
        delay = self.options.backoff_s
        while self._current(gen):
            if cap is None:
                try:
                    cap = self._opener()
                except SourceError as e:
                    if self._check_give_up():
                        return
                    self._event("reconnecting", f"{e.message}; retrying in {delay:.1f} s")
                    self._stop.wait(delay)
                    delay = min(delay * 2, self.options.backoff_max_s)
                    continue
                if not self._current(gen):
                    cap.release()
                    return
                down = time.monotonic() - self._down_since if self._down_since else 0.0
                self.reconnects += 1
                self._down_since = None
                self._last_frame = time.monotonic()
                self.state = "streaming"
                self._event("reconnected", f"reconnected to {self.description} after {down:.1f} s")
                delay = self.options.backoff_s
            self._cap = cap
            while self._current(gen):
                t0 = time.perf_counter()
                img = cap.read()
                t1 = time.perf_counter()
                if not self._current(gen):
                    break
                if img is None:
                    self._mark_down("lost", f"{self.description}: no frame (stream ended, camera unplugged or "
                                            "link down); reconnecting")
                    break
                self._publish(img, (t1 - t0) * 1e3, t1)
            cap.release()
            cap = None
            if self._current(gen) and self._check_give_up():
                return

    def _mark_down(self, kind: str, message: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.state = "reconnecting"
            self._event(kind, message)

    def _check_give_up(self) -> bool:
        g = self.options.give_up_s
        if g is not None and time.monotonic() - self._last_frame > g:
            with self._cond:
                if not self._ended:
                    self._ended = True
                    self.state = "ended"
                    self.end_reason = f"no frame for {g:g} s"
                    self._event("gave_up", f"{self.description}: no frame for {g:g} s; giving up")
                self._cond.notify_all()
            return True
        return False

    def _publish(self, img: np.ndarray, capture_ms: float, t: float) -> None:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            from .preprocess import to_bgr8

            img = to_bgr8(img, self.description)
        with self._cond:
            n = self.captured
            self.captured += 1
            if self._latest is not None:
                self.dropped += 1
            self._latest = Frame(img, -1, f"frame {n}", time.time(), n, capture_ms=capture_ms, captured=t)
            self._last_frame = time.monotonic()
            self._cond.notify_all()

    def _watchdog(self) -> None:
        period = max(0.05, min(1.0, self.options.watchdog_s / 4))
        while not self._stop.wait(period) and not self._ended:
            silent = time.monotonic() - self._last_frame
            if self.state == "streaming" and silent > self.options.watchdog_s:
                self._mark_down("stalled", f"{self.description}: no frame for {silent:.1f} s (watchdog); "
                                           "restarting the capture")
                cap = self._cap
                if cap is not None:
                    cap.interrupt()
                # The old capture thread may stay blocked inside a driver call; it is abandoned
                # (it exits when that call returns) and a fresh one reconnects. Abandoned threads
                # that never return are counted: past the limit the process must be restarted.
                old = self._thread
                if old is not None:
                    old.join(timeout=0.2)  # an interrupted capture (gst-launch killed) returns at once
                    if old.is_alive():
                        self._abandoned.append(old)
                self._abandoned = [t for t in self._abandoned if t.is_alive()]
                if len(self._abandoned) > self.options.max_abandoned:
                    self._fail(SourceError(
                        f"{self.description}: {len(self._abandoned)} captures are stuck in a read that never "
                        f"returns (more than {self.options.max_abandoned}); each holds a thread and a decoder "
                        "that cannot be freed from inside the process",
                        "restart the process (the systemd unit does it: Restart=on-failure); check the camera, "
                        "its driver or the link; --max-abandoned sets the limit"))
                    return
                self._spawn(None)
            elif self.state == "reconnecting":
                self._check_give_up()

    def _fail(self, error: SourceError) -> None:
        with self._cond:
            if self._ended:
                return
            self.error = error
            self._ended = True
            self.state = "failed"
            self.end_reason = error.message
            self._event("error", error.message)
            self._cond.notify_all()

    def stats(self) -> dict[str, Any]:
        d = super().stats()
        d["stuck_captures"] = sum(t.is_alive() for t in self._abandoned)
        return d

    def next_frame(self, timeout: float = 0.5) -> Frame | None:
        with self._cond:
            if self._latest is None and not self._ended:
                self._cond.wait(timeout)
            f = self._latest
            self._latest = None
        if f is None:
            if self._ended and self.error is not None:
                raise self.error
            return None
        f.index = self._delivered
        self._delivered += 1
        self.frames += 1
        return f

    @property
    def ended(self) -> bool:
        return self._ended and self._latest is None

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        cap = self._cap
        if cap is not None:
            cap.interrupt()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=STOP_JOIN_S)
        if self.end_reason is None:
            self.end_reason = "stopped"


# -- opening -----------------------------------------------------------------------------
def opencv_has_gstreamer() -> bool:
    """Whether this OpenCV build can open GStreamer pipelines itself."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


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


def _gst_opener(pipeline: str, launch_pipeline: str | None, opts: SourceOptions) -> Callable[[], _Capture]:
    mode = opts.gstreamer
    if mode not in ("auto", "opencv", "gst-launch"):
        raise SourceError(f"unknown GStreamer mode {mode!r}", "use auto, opencv or gst-launch")
    use_cv = mode == "opencv" or (mode == "auto" and opencv_has_gstreamer())
    if mode == "opencv" and not opencv_has_gstreamer():
        raise SourceError("this OpenCV build has no GStreamer support",
                          "use the gst-launch mode, or an OpenCV built with -DWITH_GSTREAMER=ON")

    def open_gst() -> _Capture:
        if use_cv:
            return _cv_open(appsink_pipeline(pipeline), cv2.CAP_GSTREAMER, [], "GStreamer pipeline",
                            f"test it with: gst-launch-1.0 {redact(pipeline)}")
        return _GstLaunchCapture(launch_pipeline or pipeline)

    return open_gst


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
    opts = options or SourceOptions()
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        idx = int(spec)
        return LiveSource(f"camera {idx}", _camera_opener(idx, opts), opts, kind="camera")
    s = spec.strip()
    if not s:
        raise SourceError("empty source", f"pass one of: {SOURCE_FORMS}")
    m = re.fullmatch(r"/dev/video(\d+)", s)
    if m:
        idx = int(m.group(1))
        return LiveSource(f"camera {idx}", _camera_opener(idx, opts), opts, kind="camera")
    scheme = urlsplit(s).scheme.lower() if "://" in s else ""
    if scheme == "csi":
        return _csi_source(s, opts)
    if "!" in s and scheme not in STREAM_SCHEMES:
        return LiveSource("GStreamer pipeline", _gst_opener(s, None, opts), opts, kind="gstreamer")
    if scheme in STREAM_SCHEMES:
        return LiveSource(redact(s), _stream_opener(s, opts), opts, kind="stream")
    if scheme:
        raise SourceError(f"unsupported source scheme {scheme}://", f"pass one of: {SOURCE_FORMS}")
    p = Path(s).expanduser()
    if p.is_dir():
        from .data import list_images

        files = list_images(p)
        if not files:
            raise SourceError(f"no images in folder {p}", f"image types: {', '.join(IMAGE_SUFFIXES)}")
        return ImageFilesSource(files, str(p), opts.prefetch, opts.prefetch_bytes, opts.max_pixels)
    if p.is_file():
        if p.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFilesSource([p], str(p), opts.prefetch, opts.prefetch_bytes, opts.max_pixels)
        return VideoFileSource(p, opts.prefetch, opts.prefetch_bytes, opts.max_pixels)
    if _is_glob(s):
        files = sorted(Path(f) for f in _glob.glob(os.path.expanduser(s), recursive=True)
                       if Path(f).is_file() and Path(f).suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"no images match {s}", "quote the pattern so the shell does not expand it")
        return ImageFilesSource(files, s, opts.prefetch, opts.prefetch_bytes, opts.max_pixels)
    raise SourceError(f"source not found: {s}", f"pass one of: {SOURCE_FORMS}")


def _csi_source(spec: str, opts: SourceOptions) -> LiveSource:
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
