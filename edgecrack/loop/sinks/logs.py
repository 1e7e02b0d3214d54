"""Per-frame logs, JSONL and CSV, that survive a crash, a power cut and a restart.

Logs are written one line per frame with one ``write`` call each (nothing waits in a buffer),
so a killed process loses at most the frame in flight, and ``fsync``ed every :data:`FSYNC_S`
seconds and at the end, so a power cut loses at most those seconds. They are opened in append
mode so a restarted service (systemd after a crash) never erases the log of the flight that
crashed; a line left torn by a crash is closed first, so every run begins with its ``start``
record on a line of its own. A log that cannot be written at all is refused before the source
and the model open; one that fails during the run (a full disk) becomes an ``error`` event and
the inspection goes on.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...io import _json_default
from ..types import FrameResult, RunInfo, RunSummary, Sink, SourceEvent
from .common import check_output_file

#: Seconds between ``fsync`` calls of the logs (and one at the end of the run).
FSYNC_S = 2.0


def _check_appendable(path: Path, what: str) -> None:
    """Refuse, before anything else opens, a log that could not be appended to."""
    check_output_file(path, what)
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
