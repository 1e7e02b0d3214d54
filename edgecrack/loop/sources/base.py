"""What every frame source is: a thread produces frames, the consumer takes them.

:class:`Source` is the consumer-side contract (start, next frame, events, stop, stats);
:class:`BoundedQueue` bounds read-ahead by count and bytes. Recorded sources are in
:mod:`.files`, live ones in :mod:`.live`.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from typing import Any

import numpy as np

from ...errors import SourceError
from ..types import Frame, SourceEvent

#: Longest wait for a source's thread when stopping. A capture blocked in a driver call is left
#: behind (daemon thread, freed at exit): stopping must not wait for a stream's timeout.
STOP_JOIN_S = 2.0


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
