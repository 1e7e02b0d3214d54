"""The inspection loop's helper threads: frames prepared ahead, sinks written behind, signals.

Used by :func:`edgecrack.loop.runner.run`; nothing here is public API.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from .inspector import Inspector, StageTimer, _Pending
from .render import overlay
from .sources.base import BoundedQueue, Source, nbytes_of
from .types import FrameResult, RunInfo, Sink, SourceEvent

#: Longest wait for the sink thread to write what is queued when the run stops.
SINK_FINISH_S = 10.0


@dataclass
class OutputFailed:
    sink: Sink
    error: OSError


class SinkThread:
    """Runs sinks on their own thread so writing overlaps inference."""

    def __init__(self, sinks: list[Sink], info: RunInfo, timer: StageTimer, overlay_mode: str, maxsize: int = 8,
                 max_bytes: int = 256 << 20):
        self.sinks = sinks
        self.info = info
        self.timer = timer
        self.overlay_mode = overlay_mode
        self.q = BoundedQueue(maxsize, max_bytes)
        self.error: BaseException | None = None
        self.events = 0
        self._failing: dict[int, int] = {}  # id(sink) -> calls lost since it failed
        self.thread = threading.Thread(target=self._run, name="edgecrack-sinks", daemon=True)
        self.thread.start()

    def _call(self, s: Sink, method: str, arg: Any) -> None:
        try:
            getattr(s, method)(arg)
        except OSError as e:
            self._failed(s, e)
            return
        lost = self._failing.pop(id(s), None)
        if lost is not None:
            self._report(SourceEvent("recovered", f"{s.describe()}: writing again ({lost} records lost)"), s)

    def _failed(self, s: Sink, e: OSError) -> None:
        if id(s) in self._failing:
            self._failing[id(s)] += 1
            return
        self._failing[id(s)] = 1
        self._report(SourceEvent("error", f"{s.describe()}: cannot write ({e.strerror or e}); the inspection goes "
                                          "on, this output is paused"), s)

    def _report(self, ev: SourceEvent, about: Sink) -> None:
        self.events += 1
        for other in self.sinks:
            if other is not about:
                self._call(other, "event", ev)

    def put(self, item: Any) -> None:
        if self.error is not None:
            raise self.error
        # A frame result holds its frame and, once annotated, an overlay of the same size.
        frame = getattr(item, "frame", None)
        self.q.put(item, 2 * nbytes_of(frame))

    def _run(self) -> None:
        while True:
            try:
                item = self.q.get(timeout=0.25)
            except queue.Empty:
                if self.error is None:
                    try:
                        for s in self.sinks:
                            s.idle(self.info)
                    except BaseException as e:  # noqa: BLE001 - re-raised on the loop thread
                        self.error = e
                continue
            if item is None:
                return
            if self.error is not None:
                continue
            try:
                if isinstance(item, OutputFailed):
                    self._failed(item.sink, item.error)
                    continue
                if isinstance(item, SourceEvent):
                    for s in self.sinks:
                        self._call(s, "event", item)
                    continue
                t0 = time.perf_counter()
                r: FrameResult = item
                if any(s.wants_overlay(r) for s in self.sinks):
                    r.overlay = overlay(r.frame.image, r.grid, r.crack_map, r.threshold, self.overlay_mode,
                                        banner=r.banner(), cracked=r.cracked)
                for s in self.sinks:
                    self._call(s, "write", r)
                ms = (time.perf_counter() - t0) * 1e3
                r.stages["sinks"] = ms
                self.timer.add("sinks", ms)
            except BaseException as e:  # noqa: BLE001 - re-raised on the loop thread
                self.error = e

    def finish(self, timeout: float = SINK_FINISH_S) -> None:
        """Let the sinks write what is queued, waiting at most ``timeout`` (a hung disk must not
        hold a stopping service past its stop timeout)."""
        end = time.monotonic() + timeout
        try:
            self.q.put(None, timeout=timeout)
        except queue.Full:
            return
        self.thread.join(max(0.0, end - time.monotonic()))


class Stopper:
    """SIGINT/SIGTERM -> a clean stop; a second SIGINT interrupts at once."""

    def __init__(self, enabled: bool):
        self.event = threading.Event()
        self.reason: str | None = None
        self._old: dict[int, Any] = {}
        if enabled and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.request(f"stopped by {name}")

    def request(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


class PreparedFrames:
    """Frames of a source, tiled and preprocessed.

    Recorded sources are prepared on a worker thread a few frames ahead, so tiling and
    resizing overlap inference instead of adding to it. Live sources are prepared on demand:
    a queue in front of inference would hold stale frames.
    """

    def __init__(self, src: Source, insp: Inspector, ahead: int = 4, max_bytes: int = 256 << 20):
        self.src = src
        self.insp = insp
        self.ended = False
        self._q: BoundedQueue | None = None
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not src.live:
            self._q = BoundedQueue(max(2, ahead), max_bytes)
            self._thread = threading.Thread(target=self._work, name="edgecrack-prepare", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                f = self.src.next_frame(timeout=0.25)
                if f is None:
                    if self.src.ended:
                        break
                    continue
                p = self.insp.prepare(f)
                while not self._stop.is_set():
                    try:
                        self._q.put(p, p.nbytes, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # noqa: BLE001 - re-raised on the loop thread
            self._error = e
        finally:
            self._q.put(None)

    def get(self, timeout: float) -> _Pending | None:
        """The next prepared frame, or None (then :attr:`ended` says whether more will come)."""
        if self._q is None:
            f = self.src.next_frame(timeout)
            if f is None:
                self.ended = self.src.ended
                return None
            return self.insp.prepare(f)
        if self.ended:
            return None
        try:
            p = self._q.get(timeout=timeout)
        except queue.Empty:
            return None
        if p is None:
            self.ended = True
            if self._error is not None:
                raise self._error
        return p

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # Unblock a worker waiting on a full queue, then wait for it.
            while self._thread.is_alive():
                try:
                    self._q.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.05)
            self._thread = None
