"""Outputs of the inspection loop: console, JSONL/CSV logs, annotated video and images, a window.

All sinks run on the pipeline's sink thread, in frame order. Logs are written one line per
frame and flushed at once, so a killed process loses at most the frame in flight; they are
opened in append mode so a restarted service (systemd after a crash) never erases the log of
the flight that crashed; every run begins with a ``start`` record. Video and images are
written through temporary files and renamed, like every other artifact.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
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

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


def _check_writable_parent(path: Path, what: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot create folder {parent} ({e.strerror or e})") from None
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{what} {path}: folder {parent} is not writable")


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
        colour = {"skipped": "yellow", "connected": "green", "reconnected": "green"}.get(ev.kind, "red")
        self.err.print(f"[{colour}]{ev.kind}:[/] {escape(ev.message)}", highlight=False, soft_wrap=True)

    def close(self, summary: RunSummary | None) -> None:
        if self.mode == "status" and self._last is not None and self._tty:
            self._status(self.status_text(self._last))
        if self._status_shown:
            self.console.file.write("\n")
            self.console.file.flush()
            self._status_shown = False


class JsonlLog(Sink):
    """One JSON object per line: ``start``, ``frame`` (one per frame), ``event``, ``summary``.

    Args:
        path: Log file (appended to).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        _check_writable_parent(self.path, "--log")
        self._f: io.TextIOBase | None = None
        self.lines = 0

    def _emit(self, obj: dict[str, Any]) -> None:
        # One write call per record, flushed at once: after a kill the file ends on a whole line.
        self._f.write(json.dumps(obj, default=_json_default, separators=(",", ":")) + "\n")
        self._f.flush()
        self.lines += 1

    def open(self, info: RunInfo) -> None:
        self._f = open(self.path, "a", encoding="utf-8")
        self._emit(info.to_record())

    def write(self, r: FrameResult) -> None:
        self._emit(r.to_record())

    def event(self, ev: SourceEvent) -> None:
        self._emit({"type": "event", **ev.to_dict()})

    def close(self, summary: RunSummary | None) -> None:
        if self._f is None:
            return
        if summary is not None:
            self._emit(summary.to_record())
        self._f.close()
        self._f = None

    def outputs(self) -> dict[str, Any]:
        return {"log_jsonl": str(self.path)}


CSV_COLUMNS = ("time", "utc", "index", "name", "source_frame", "position_ms", "path", "label", "cracked", "p", "score",
               "cracked_tiles", "tiles", "latency_ms", "dropped")


class CsvLog(Sink):
    """One CSV row per frame (columns :data:`CSV_COLUMNS`), header once per file, flushed per row."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        _check_writable_parent(self.path, "--log")
        self._f = None
        self._w = None

    def open(self, info: RunInfo) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._f = open(self.path, "a", encoding="utf-8", newline="")
        self._w = csv.writer(self._f)
        if new:
            self._w.writerow(CSV_COLUMNS)
            self._f.flush()

    def write(self, r: FrameResult) -> None:
        rec = r.to_record()
        pos = rec["position"]
        self._w.writerow([rec["time"], rec["utc"], rec["index"], rec["name"], pos.get("frame"), pos.get("ms", ""),
                          pos.get("path", ""), rec["label"], int(rec["cracked"]), rec["p"], rec["score"],
                          rec["cracked_tiles"], rec["tiles"], rec["latency_ms"], rec["dropped"]])
        self._f.flush()

    def close(self, summary: RunSummary | None) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def outputs(self) -> dict[str, Any]:
        return {"log_csv": str(self.path)}


class VideoSink(Sink):
    """Annotated frames to a video file, renamed into place when the run ends.

    Args:
        path: ``.mp4`` (mp4v) or ``.avi``/``.mkv`` (MJPG).
        fps: Frame rate (None: the source's, else 10).
    """

    needs_overlay = True

    def __init__(self, path: str | Path, fps: float | None = None):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_FOURCC:
            raise ConfigError(f"--save-video {self.path}: unsupported container {suffix or '(none)'}",
                              f"use one of: {', '.join(VIDEO_FOURCC)}")
        _check_writable_parent(self.path, "--save-video")
        self.fps = fps
        self._writer: cv2.VideoWriter | None = None
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def open(self, info: RunInfo) -> None:
        self.fps = self.fps or info.fps or 10.0

    def write(self, r: FrameResult) -> None:
        img = r.overlay
        h, w = img.shape[:2]
        if self._writer is None:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=self.path.suffix, dir=self.path.parent)
            os.close(fd)
            self._tmp = Path(tmp)
            self._size = (w, h)
            fourcc = cv2.VideoWriter_fourcc(*VIDEO_FOURCC[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self._tmp), fourcc, float(self.fps), self._size)
            if not self._writer.isOpened():
                self._tmp.unlink(missing_ok=True)
                self._writer = None
                raise ConfigError(f"--save-video {self.path}: OpenCV cannot write {self.path.suffix} here",
                                  "try an .avi file (MJPG)")
        if (w, h) != self._size:
            # A stream that reconnected at another resolution: keep one size per file.
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(img)
        self.frames += 1

    def close(self, summary: RunSummary | None) -> None:
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        os.replace(self._tmp, self.path)

    def outputs(self) -> dict[str, Any]:
        return {"video": str(self.path), "video_frames": self.frames} if self.frames else {}


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
        self.quality = quality
        self.saved = 0

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
        out.append(VideoSink(config.save_video, config.save_video_fps))
    if config.save_flagged:
        out.append(FlaggedSink(config.save_flagged))
    if config.show:
        out.append(WindowSink())
    return out
