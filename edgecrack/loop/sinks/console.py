"""Human output of the loop: what runs where, tutorial lines for images, a status line for video and live."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

from rich.markup import escape

from ...evaluate import Prediction
from ..types import FrameResult, RunInfo, RunSummary, Sink, SourceEvent

class ConsoleSink(Sink):
    """Human output: what runs where, tutorial lines for images, an in-place status line for video and live.

    Paths and names are printed literally: a file called ``[bold]a.jpg`` is not markup.

    Args:
        console: A rich console (stdout) for results.
        err_console: A rich console (stderr) for the start line, connection progress and
            source events (default: ``console``).
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

    def connecting(self, description: str, wait_s: float) -> None:
        within = f" (retrying for up to {wait_s:g} s)" if wait_s > 0 else ""
        self.err.print(f"connecting to {escape(description)}{within}", highlight=False, soft_wrap=True)

    def open(self, info: RunInfo) -> None:
        self._info = info
        backend = info.backend_text.splitlines() or [str(info.backend.get("backend"))]
        self.err.print(f"[bold cyan]run[/] {escape(info.source)} ({info.source_kind}) with {escape(backend[0])}  "
                       f"threshold {info.threshold:.3f} on {escape(str(info.positive_label))}", highlight=False,
                       soft_wrap=True)
        for line in backend[1:]:
            self.err.print(f"[dim]{escape(line)}[/]", highlight=False, soft_wrap=True)
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
