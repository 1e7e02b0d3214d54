"""What flows through the inspection loop: frames, source events, per-frame results, run info
and summary, and the :class:`Sink` protocol every output implements.

Sources make :class:`Frame` and :class:`SourceEvent`; the inspector turns frames into
:class:`FrameResult`; sinks receive :class:`RunInfo` at start, results and events in order,
and the :class:`RunSummary` at the end. This module imports no other part of the loop but
its configuration and tile geometry, so sources, sinks and the runner can all import it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from ..geo import record_fields
from ..redact import redact, redact_record
from .config import RunConfig
from .tiling import TileGrid

STAGES = ("capture", "preprocess", "inference", "postprocess", "sinks")


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
class FrameResult:
    """One inspected frame.

    Attributes:
        frame: The frame (image and source position).
        grid: Its tile grid.
        crack_map: ``[rows, cols]`` crack probabilities after temporal smoothing.
        raw_map: The same before smoothing.
        threshold: Threshold applied to tiles.
        labels: Model labels; ``positive``/``negative`` index the crack / no-crack ones.
        cracked: Frame verdict.
        cracked_tiles: Tiles at or above the threshold.
        score: Highest tile crack probability.
        stages: This frame's wall time per stage (ms); inference is the batch it was part of.
        latency_ms: Capture to verdict.
        dropped: Frames the live source dropped so far.
        overlay: Annotated image, made by the sink thread when a sink needs it.
    """

    frame: Frame
    grid: TileGrid
    crack_map: np.ndarray
    raw_map: np.ndarray
    threshold: float
    labels: list[str]
    positive: int
    cracked: bool
    cracked_tiles: int
    score: float
    stages: dict[str, float]
    latency_ms: float
    dropped: int = 0
    overlay: np.ndarray | None = None

    @property
    def label(self) -> str:
        """The frame's predicted label (the positive one when cracked)."""
        return self.labels[self.positive] if self.cracked else self.labels[1 - self.positive]

    @property
    def probability(self) -> float:
        """Probability of :attr:`label`: the top tile's crack probability, or its complement."""
        return self.score if self.cracked else 1.0 - self.score

    def banner(self) -> str:
        if self.grid.n == 1:
            return f"{self.label} p={self.probability:.2f}"
        return f"{self.label}: {self.cracked_tiles}/{self.grid.n} tiles, max p={self.score:.2f}"

    def to_record(self) -> dict[str, Any]:
        """The JSONL record of this frame."""
        f = self.frame
        return {"type": "frame", "time": round(f.timestamp, 6),
                "utc": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(f.timestamp)) + f".{int(f.timestamp % 1 * 1000):03d}Z",
                "index": f.index, "name": f.name, "position": f.position(), **record_fields(f.geo), "label": self.label,
                "cracked": self.cracked, "p": round(self.probability, 5), "score": round(self.score, 5),
                "cracked_tiles": self.cracked_tiles, "tiles": self.grid.n, "grid": [self.grid.rows, self.grid.cols],
                "frame_size": [self.grid.width, self.grid.height],
                "tile_probs": np.round(self.crack_map.astype(np.float64), 4).tolist(),
                "latency_ms": round(self.latency_ms, 3), "stages": {k: round(v, 3) for k, v in self.stages.items()},
                "dropped": self.dropped}


@dataclass
class RunInfo:
    """What sinks learn at start.

    Attributes:
        backend_text: How the backend was chosen, for people (first line: the choice; the
            others: candidates skipped and why).
    """

    config: RunConfig
    backend: dict[str, Any]
    backend_skipped: list[tuple[str, str]]
    source: str
    source_kind: str
    live: bool
    fps: float | None
    labels: list[str]
    positive_label: str
    threshold: float
    started: float
    request_stop: Callable[[str], None]
    backend_text: str = ""

    def to_record(self) -> dict[str, Any]:
        return {"type": "start", "time": round(self.started, 6), "source": redact(self.source),
                "source_kind": self.source_kind, "live": self.live, "fps": self.fps, "backend": redact_record(self.backend),
                "backend_skipped": redact_record([list(s) for s in self.backend_skipped]), "labels": self.labels,
                "positive_label": self.positive_label, "threshold": self.threshold, "config": self.config.to_dict()}


@dataclass
class RunSummary:
    """What a run did; printed on exit and written as the log's last record."""

    source: dict[str, Any]
    backend: dict[str, Any]
    frames: int
    cracked_frames: int
    tiles: int
    seconds: float
    fps: float
    tiles_per_s: float
    stages: dict[str, dict[str, float]]
    stop_reason: str
    events: int
    outputs: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return {"type": "summary", **redact_record(asdict(self))}


class Sink:
    """Base class of outputs, and the loop's only progress protocol.

    In order: ``connecting`` (live sources, before the first connection, which can take up
    to ``wait_s``), ``open`` (backend and source ready), then ``write`` per result and ``event``
    per source event, in order, on the sink thread, ``idle`` while no frame arrives, and
    ``close`` with the summary.

    An :class:`OSError` from ``open``, ``write`` or ``event`` (a full disk, an I/O error) does
    not end the run: it is reported to the other sinks as an ``error`` event (once, until the
    sink writes again) and the inspection goes on. Any other exception ends the run.
    """

    needs_overlay = False

    def describe(self) -> str:
        """How this output is named in messages (e.g. ``--log run.jsonl``)."""
        return type(self).__name__

    def connecting(self, description: str, wait_s: float) -> None:
        """Called for a live source just before connecting to it (on the loop's thread)."""

    def open(self, info: RunInfo) -> None:
        pass

    def wants_overlay(self, result: FrameResult) -> bool:
        return self.needs_overlay

    def write(self, result: FrameResult) -> None:
        pass

    def event(self, ev: SourceEvent) -> None:
        pass

    def idle(self, info: RunInfo) -> None:
        """Called about every 0.25 s while no frame arrives (status lines, window events)."""

    def close(self, summary: RunSummary | None) -> None:
        pass

    def outputs(self) -> dict[str, Any]:
        return {}
