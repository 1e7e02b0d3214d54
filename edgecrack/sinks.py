"""Outputs of the inspection loop: console, JSONL/CSV logs, annotated video and images, a window.

All sinks run on the pipeline's sink thread, in frame order. Logs are written one line per
frame with one ``write`` call each (nothing waits in a buffer), so a killed process loses at
most the frame in flight, and ``fsync``ed every :data:`FSYNC_S` seconds and at the end, so a
power cut loses at most those seconds. They are opened in append mode so a restarted service
(systemd after a crash) never erases the log of the flight that crashed; a line left torn by a
crash is closed first, so every run begins with its ``start`` record on a line of its own.
A log that cannot be written at all is refused before the source and the model open; one that
fails during the run (a full disk) becomes an ``error`` event and the inspection goes on.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

import cv2
from rich.markup import escape

from .errors import ConfigError
from .io import _json_default, atomic_write_bytes
from .pipeline import FrameResult, RunConfig, RunInfo, RunSummary, Sink
from .sources import SourceEvent

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG", ".ts": "mp4v"}
#: Containers that play up to the last frame written when the process is killed mid-write.
CUT_SAFE_VIDEO = (".avi", ".mkv", ".ts")
#: Seconds between ``fsync`` calls of the logs (and one at the end of the run).
FSYNC_S = 2.0
#: Free space an output needs on its disk when the run starts.
MIN_FREE_BYTES = {"--log": 1 << 20, "--save-video": 64 << 20, "--save-flagged": 16 << 20}


def _check_writable_parent(path: Path, what: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot create folder {parent} ({e.strerror or e})") from None
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{what} {path}: folder {parent} is not writable")
    _check_free_space(parent, path, what)


def _check_free_space(folder: Path, path: Path, what: str) -> None:
    need = MIN_FREE_BYTES.get(what, 1 << 20)
    try:
        st = os.statvfs(folder)
    except OSError:
        return
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise ConfigError(f"{what} {path}: the disk holding it is full ({free >> 10} KiB free, {need >> 20} MiB "
                          "needed to start)", "free some space, or write this output to another disk")


def _check_appendable(path: Path, what: str) -> None:
    """Refuse, before anything else opens, a log that could not be appended to."""
    _check_writable_parent(path, what)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder", f"name a file in it, e.g. {path / 'run.jsonl'}")
    existed = path.exists()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot write it ({e.strerror or e})",
                          "check its permissions and that its disk is mounted read-write") from None
    os.close(fd)
    if not existed:
        path.unlink(missing_ok=True)  # created again when the run starts; nothing left if it never does


def _ends_on_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size == 0 or os.pread(fd, 1, size - 1) == b"\n"


class _AppendLog(Sink):
    """A line-per-record file opened for appending: one ``write`` per line, a torn last line
    closed before the first new one, ``fsync`` every :data:`FSYNC_S` seconds and at close.

    A failed write raises :class:`OSError` to the sink thread, which reports it as an event
    and goes on; the next line then starts on a fresh line again.
    """

    what = "--log"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        _check_appendable(self.path, self.what)
        self._fd: int | None = None
        self._check_tail = True
        self._last_sync = 0.0
        self.lines = 0
        self.lost = 0

    def describe(self) -> str:
        return f"{self.what} {self.path}"

    def _open_file(self) -> None:
        # Read access too: the last byte is read to close a torn line (pread).
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        self._last_sync = time.monotonic()

    def _write_line(self, line: str) -> None:
        data = line.encode("utf-8")
        try:
            if self._check_tail:
                if not _ends_on_newline(self._fd):
                    data = b"\n" + data
                self._check_tail = False
            view, done = memoryview(data), 0
            while done < len(data):
                done += os.write(self._fd, view[done:])
            now = time.monotonic()
            if now - self._last_sync >= FSYNC_S:
                os.fsync(self._fd)
                self._last_sync = now
        except OSError:
            self.lost += 1
            self._check_tail = True  # part of the line may have been written
            raise
        self.lines += 1

    def _close_file(self) -> None:
        if self._fd is None:
            return
        try:
            os.fsync(self._fd)
        except OSError:
            pass  # the records that did not make it are counted in `lost`
        os.close(self._fd)
        self._fd = None


class ConsoleSink(Sink):
    """Human output: tutorial lines for images, an in-place status line for video and live.

    Args:
        console: A rich console (stdout) for results.
        err_console: A rich console (stderr) for source events.
        mode: ``auto`` (lines for image sources, status otherwise), ``lines``, ``status`` or ``quiet``.
        interval_s: Status refresh period on a terminal (non-terminals get one line every 5 s).
    """

    def __init__(self, console: Any, err_console: Any | None = None, mode: str = "auto", interval_s: float = 0.25):
        self.console = console
        self.err = err_console or console
        self.mode = mode
        self.interval_s = interval_s
        self._times: deque[float] = deque(maxlen=120)
        self._last_print = 0.0
        self._status_shown = False
        self._last: FrameResult | None = None
        self._info: RunInfo | None = None
        self._frames = 0

    def open(self, info: RunInfo) -> None:
        self._info = info
        if self.mode == "auto":
            self.mode = "lines" if info.source_kind == "images" else "status"
        self._tty = bool(getattr(self.console, "is_terminal", False))
        if not self._tty:
            self.interval_s = max(self.interval_s, 5.0)

    def write(self, r: FrameResult) -> None:
        self._frames += 1
        if self.mode == "lines":
            self.console.print(self.line(r), markup=False, highlight=False, soft_wrap=True)
        elif self.mode == "status":
            now = time.perf_counter()
            self._times.append(now)
            self._last = r
            if now - self._last_print >= self.interval_s:
                self._status(self.status_text(r))
                self._last_print = now

    def line(self, r: FrameResult) -> str:
        """The tutorial line (``Image: NAME | Predicted: LABEL (p=0.97)``), with tiles when tiled."""
        from .evaluate import Prediction

        actual = None
        if r.frame.path is not None:
            parent = Path(r.frame.path).parent.name
            actual = parent if parent in r.labels else None
        line = Prediction(r.frame.path or r.frame.name, r.label, r.probability, {}, actual).line()
        if r.grid.n > 1:
            line += f" | cracked tiles: {r.cracked_tiles}/{r.grid.n}"
        return line

    def status_text(self, r: FrameResult | None, state: str | None = None) -> str:
        """``frame 120 | 24.8 fps | latency 41 ms | cracked tiles 3/135 | drops 12 | CRACK``."""
        fps = 0.0
        if len(self._times) >= 2 and self._times[-1] > self._times[0]:
            fps = (len(self._times) - 1) / (self._times[-1] - self._times[0])
        if r is None:
            return "waiting for the first frame"
        verdict = r.label.upper() if r.cracked else r.label
        text = (f"frame {r.frame.index} | {fps:.1f} fps | latency {r.latency_ms:.0f} ms | "
                f"cracked tiles {r.cracked_tiles}/{r.grid.n} | drops {r.dropped} | {verdict}")
        if state and state != "streaming":
            text += f" | {state}"
        return text

    def _status(self, text: str) -> None:
        if self._tty:
            f = self.console.file
            f.write("\r\x1b[2K" + text)
            f.flush()
            self._status_shown = True
        else:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _clear_status(self) -> None:
        if self._status_shown:
            self.console.file.write("\r\x1b[2K")
            self.console.file.flush()
            self._status_shown = False

    def idle(self, info: RunInfo) -> None:
        if self.mode != "status" or not self._tty:
            return
        now = time.perf_counter()
        if now - self._last_print >= 1.0:
            self._times.clear()
            self._status(self.status_text(self._last, "no new frame"))
            self._last_print = now

    def event(self, ev: SourceEvent) -> None:
        if self.mode == "quiet":
            return
        self._clear_status()
        colour = {"skipped": "yellow", "connected": "green", "reconnected": "green", "recovered": "green"}.get(ev.kind, "red")
        self.err.print(f"[{colour}]{ev.kind}:[/] {escape(ev.message)}", highlight=False, soft_wrap=True)

    def close(self, summary: RunSummary | None) -> None:
        if self.mode == "status" and self._last is not None and self._tty:
            self._status(self.status_text(self._last))
        if self._status_shown:
            self.console.file.write("\n")
            self.console.file.flush()
            self._status_shown = False


class JsonlLog(_AppendLog):
    """One JSON object per line: ``start``, ``frame`` (one per frame), ``event``, ``summary``.

    Args:
        path: Log file (appended to).
    """

    def _emit(self, obj: dict[str, Any]) -> None:
        self._write_line(json.dumps(obj, default=_json_default, separators=(",", ":")) + "\n")

    def open(self, info: RunInfo) -> None:
        self._open_file()
        self._emit(info.to_record())

    def write(self, r: FrameResult) -> None:
        self._emit(r.to_record())

    def event(self, ev: SourceEvent) -> None:
        self._emit({"type": "event", **ev.to_dict()})

    def close(self, summary: RunSummary | None) -> None:
        if self._fd is None:
            return
        if summary is not None:
            try:
                self._emit(summary.to_record())
            except OSError:
                pass  # counted in `lost`; the run's result does not depend on its log
        self._close_file()

    def outputs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"log_jsonl": str(self.path)}
        if self.lost:
            out["log_jsonl_lost_records"] = self.lost
        return out


CSV_COLUMNS = ("time", "utc", "index", "name", "source_frame", "position_ms", "path", "label", "cracked", "p", "score",
               "cracked_tiles", "tiles", "latency_ms", "dropped", "lat", "lon", "alt", "capture_time")


class CsvLog(_AppendLog):
    """One CSV row per frame (columns :data:`CSV_COLUMNS`), header once per file, one write per row."""

    @staticmethod
    def _row(values: list[Any]) -> str:
        buf = io.StringIO()
        csv.writer(buf).writerow(values)
        return buf.getvalue()

    def open(self, info: RunInfo) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._open_file()
        if new:
            self._write_line(self._row(list(CSV_COLUMNS)))

    def write(self, r: FrameResult) -> None:
        rec = r.to_record()
        pos = rec["position"]
        gps = rec["gps"] or {}
        self._write_line(self._row([rec["time"], rec["utc"], rec["index"], rec["name"], pos.get("frame"),
                                    pos.get("ms", ""), pos.get("path", ""), rec["label"], int(rec["cracked"]), rec["p"],
                                    rec["score"], rec["cracked_tiles"], rec["tiles"], rec["latency_ms"], rec["dropped"],
                                    *(("" if gps.get(k) is None else gps[k]) for k in ("lat", "lon", "alt")),
                                    rec["capture_time"] or ""]))

    def close(self, summary: RunSummary | None) -> None:
        self._close_file()

    def outputs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"log_csv": str(self.path)}
        if self.lost:
            out["log_csv_lost_records"] = self.lost
        return out


class VideoSink(Sink):
    """Annotated frames to a video file that survives a crash.

    ``.avi``/``.mkv`` (MJPG) and ``.ts`` (MPEG-4 in MPEG-TS) are playable when cut: the video is
    written straight into ``NAME.<start>.partial.EXT`` and renamed to NAME when the run ends, so
    after a kill the partial file plays up to the last frames written. An MP4 is unplayable
    until its index is written at the end, so ``.mp4``/``.m4v``/``.mov`` are written in
    segments of ``segment_s`` seconds (default 60): each finished segment is a complete file
    ``NAME.<start>-NNN.EXT``, and a kill loses at most the segment in progress. A run that fits
    in one segment still ends as one file, NAME.

    Args:
        path: Output file; the container comes from its suffix (:data:`VIDEO_FOURCC`).
        fps: Frame rate (None: the source's, else 10).
        segment_s: Seconds of video per file (None: 60 for MP4-like containers, one file for
            the others; 0: one file).
    """

    needs_overlay = True

    def __init__(self, path: str | Path, fps: float | None = None, segment_s: float | None = None):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_FOURCC:
            raise ConfigError(f"--save-video {self.path}: unsupported container {suffix or '(none)'}",
                              f"use one of: {', '.join(VIDEO_FOURCC)}")
        if segment_s is not None and segment_s < 0:
            raise ConfigError(f"--video-segment must be >= 0 seconds (0: one file), got {segment_s:g}")
        _check_writable_parent(self.path, "--save-video")
        self.fps = fps
        self.segment_s = segment_s if segment_s is not None else (0.0 if suffix in CUT_SAFE_VIDEO else 60.0)
        self._writer: cv2.VideoWriter | None = None
        self._partial: Path | None = None
        self._size: tuple[int, int] | None = None
        self._stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self._seg = 0
        self._seg_len = 0
        self._seg_frames = 0
        self.segments: list[Path] = []
        self.frames = 0

    def describe(self) -> str:
        return f"--save-video {self.path}"

    def open(self, info: RunInfo) -> None:
        self.fps = self.fps or info.fps or 10.0
        self._stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(info.started))
        self._seg_len = max(1, int(round(self.segment_s * self.fps))) if self.segment_s > 0 else 0

    def _segment_name(self, partial: bool) -> Path:
        seg = f"-{self._seg:03d}" if self._seg_len else ""
        return self.path.with_name(f"{self.path.stem}.{self._stamp}{seg}{'.partial' if partial else ''}{self.path.suffix}")

    def _start_segment(self, size: tuple[int, int]) -> None:
        self._partial = self._segment_name(partial=True)
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_FOURCC[self.path.suffix.lower()])
        self._writer = cv2.VideoWriter(str(self._partial), fourcc, float(self.fps), size)
        if not self._writer.isOpened():
            self._partial.unlink(missing_ok=True)
            self._writer = None
            raise ConfigError(f"--save-video {self.path}: OpenCV cannot write {self.path.suffix} here",
                              "try an .avi file (MJPG)")
        self._size = size
        self._seg_frames = 0

    def _end_segment(self, final: bool) -> None:
        self._writer.release()
        self._writer = None
        # The only segment of a run that ends cleanly becomes NAME itself.
        done = self.path if final and not self.segments else self._segment_name(partial=False)
        os.replace(self._partial, done)
        self.segments.append(done)
        self._seg += 1

    def write(self, r: FrameResult) -> None:
        img = r.overlay
        h, w = img.shape[:2]
        if self._writer is None:
            self._start_segment(self._size or (w, h))
        if (w, h) != self._size:
            # A stream that reconnected at another resolution: keep one size per file.
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(img)
        self.frames += 1
        self._seg_frames += 1
        if self._seg_len and self._seg_frames >= self._seg_len:
            self._end_segment(final=False)

    def close(self, summary: RunSummary | None) -> None:
        if self._writer is not None:
            self._end_segment(final=True)
        if len(self.segments) == 1 and self.segments[0] != self.path:
            # One full segment and nothing after it: still one file under the asked-for name.
            os.replace(self.segments[0], self.path)
            self.segments = [self.path]

    def outputs(self) -> dict[str, Any]:
        if not self.frames:
            return {}
        if len(self.segments) > 1:
            return {"video": [str(p) for p in self.segments], "video_frames": self.frames}
        return {"video": str(self.path), "video_frames": self.frames}


class FlaggedSink(Sink):
    """Annotated JPEGs of the frames where cracks were found: ``DIR/000042_NAME.jpg``."""

    def __init__(self, folder: str | Path, quality: int = 92):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--save-flagged {self.folder}: cannot create it ({e.strerror or e})") from None
        if not os.access(self.folder, os.W_OK):
            raise ConfigError(f"--save-flagged {self.folder}: folder is not writable")
        _check_free_space(self.folder, self.folder, "--save-flagged")
        self.quality = quality
        self.saved = 0

    def describe(self) -> str:
        return f"--save-flagged {self.folder}"

    def wants_overlay(self, result: FrameResult) -> bool:
        return result.cracked

    def write(self, r: FrameResult) -> None:
        if not r.cracked:
            return
        stem = Path(r.frame.name).stem.replace(" ", "_")
        ok, buf = cv2.imencode(".jpg", r.overlay, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError("JPEG encoding of an annotated frame failed")
        atomic_write_bytes(self.folder / f"{r.frame.index:06d}_{stem}.jpg", buf.tobytes())
        self.saved += 1

    def outputs(self) -> dict[str, Any]:
        return {"flagged_dir": str(self.folder), "flagged": self.saved}


def display_problem() -> str | None:
    """None when a window can be shown here, else why not."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:") and "NONE" in line:
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


def sinks_from_config(config: RunConfig) -> list[Sink]:
    """The file and window outputs a run config asks for (the console sink is the caller's).

    Raises:
        ConfigError: Unwritable paths, unsupported containers, ``--show`` without a display.
    """
    out: list[Sink] = []
    for log in config.logs:
        out.append(CsvLog(log) if Path(log).suffix.lower() == ".csv" else JsonlLog(log))
    if config.save_video:
        out.append(VideoSink(config.save_video, config.save_video_fps, config.save_video_segment_s))
    if config.save_flagged:
        out.append(FlaggedSink(config.save_flagged))
    if config.show:
        out.append(WindowSink())
    return out
