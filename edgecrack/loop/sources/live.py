"""Live sources: a capture thread with reconnect, watchdog and drop counting.

A capture thread reads continuously and keeps only the newest frame; frames the consumer did
not take in time are counted as drops. A dead or unplugged camera or stream is reconnected
with exponential backoff, a watchdog restarts a capture that stops delivering frames (and
counts the ones stuck in a driver call it has to leave behind), and every step is reported
as a :class:`~edgecrack.loop.types.SourceEvent`. What one connection is (an OpenCV capture,
a ``gst-launch-1.0`` pipe) comes from an opener: :mod:`.opencv`, :mod:`.gstreamer`.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np

from ...errors import SourceError
from ...preprocess import to_bgr8
from ..config import SourceOptions
from ..types import Frame
from .base import STOP_JOIN_S, Source


class _Capture:
    """One connection to a live source; ``read`` returns an image or ``None`` (lost)."""

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def interrupt(self) -> None:
        """Make a blocked ``read`` return (called from the watchdog thread)."""

    def release(self) -> None:
        pass


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
