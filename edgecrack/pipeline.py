"""The inspection loop: source -> preprocess -> infer -> postprocess -> sinks.

Three threads overlap the work: the source's reader thread captures and decodes, this
module's loop tiles, preprocesses (:func:`edgecrack.preprocess.preprocess`) and runs the
backend, and a sink thread writes logs, video and images. Every stage is timed per frame,
and :func:`run` returns a :class:`RunSummary`. SIGINT/SIGTERM stop the loop cleanly: the
frame in flight finishes, sinks flush and close, and the summary is still produced.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ConfigError, SourceError
from .geo import record_fields
from .preprocess import preprocess
from .redact import redact, redact_record
from .sources import STOP_JOIN_S, Frame, ImageFilesSource, Source, SourceEvent, SourceOptions, nbytes_of, open_source
from .tiling import EDGE_MODES, OVERLAY_MODES, TemporalSmoother, TileGrid, crack_map_from_probs, tile_grid, tiles_from_frame
from .workers import SINK_FINISH_S, OutputFailed, PreparedFrames, SinkThread, Stopper

STAGES = ("capture", "preprocess", "inference", "postprocess", "sinks")
#: Upper bound of a clean stop after SIGTERM, the frame in flight aside: the source's thread,
#: the sink thread, and a margin for closing files and the backend. The systemd unit's
#: TimeoutStopSec must exceed it (tests/test_robustness.py checks).
STOP_TIMEOUT_S = STOP_JOIN_S + SINK_FINISH_S + 5.0
#: Most tiles one frame may be cut into (``--max-tiles``): ``--stride 1`` on a 512 px frame
#: makes 66049 tiles, 12 GiB of model input.
DEFAULT_MAX_TILES = 4096
#: A frame's tiles are preprocessed ahead of inference (on the prepare thread) up to this many
#: bytes of model input; a bigger grid is preprocessed batch by batch during inference.
EAGER_PREPARE_BYTES = 64 << 20


@dataclass
class RunConfig:
    """Everything ``edgecrack run`` does, resolved (written to the log's start record).

    Attributes:
        source: What to inspect (see :func:`edgecrack.sources.open_source`).
        model: Run folder, ``.onnx`` or engine.
        backend: Backend preference (``auto``: TensorRT -> ORT CUDA -> ORT CPU).
        strict: Fail instead of falling back when ``backend`` cannot run.
        url: Server address for ``backend="triton"``.
        threads: CPU threads for onnxruntime (None: its default).
        tile: Tile size in frame pixels; 0: no tiling (the whole frame is resized).
        stride: Step between tiles (None: ``tile``).
        edge: ``shift``, ``pad`` or ``drop`` (see :mod:`edgecrack.tiling`).
        batch: Most tiles per inference call.
        max_tiles: Most tiles per frame (0: no limit); a denser grid stops the run with a
            clear error instead of exhausting memory.
        threshold: Crack threshold on the positive class (None: the manifest's).
        min_tiles: Cracked tiles needed to call a frame cracked.
        smooth: Moving average of tile maps over this many frames (video and live only).
        logs: ``.jsonl`` and/or ``.csv`` log files, written and flushed per frame.
        save_video: Annotated video output (``.mp4`` or ``.avi``).
        save_video_fps: Its frame rate (None: the source's, else 10).
        save_video_segment_s: Seconds of video per file (None: 60 for ``.mp4``, which is
            unplayable when cut, one file for ``.avi``/``.mkv``/``.ts``, which are not).
        save_flagged: Folder for annotated frames where cracks were found.
        show: Show a window (needs a display and an OpenCV with GUI support).
        overlay: ``boxes``, ``heat``, ``both`` or ``none``.
        max_frames: Stop after this many frames.
        source_options: Capture / reconnect / read-ahead settings; its ``prefetch_bytes`` also
            bounds the loop's own two queues (prepared frames, frames waiting for the sinks).
        handle_signals: Install SIGINT/SIGTERM handlers (main thread only).
    """

    source: str
    model: str
    backend: str = "auto"
    strict: bool = False
    url: str | None = None
    threads: int | None = None
    tile: int = 256
    stride: int | None = None
    edge: str = "shift"
    batch: int = 8
    max_tiles: int = DEFAULT_MAX_TILES
    threshold: float | None = None
    min_tiles: int = 1
    smooth: int = 1
    logs: list[str] = field(default_factory=list)
    save_video: str | None = None
    save_video_fps: float | None = None
    save_video_segment_s: float | None = None
    save_flagged: str | None = None
    show: bool = False
    overlay: str = "boxes"
    max_frames: int | None = None
    source_options: SourceOptions = field(default_factory=SourceOptions)
    handle_signals: bool = True

    def validate(self) -> None:
        """Raise :class:`ConfigError` on impossible option values, before anything opens."""
        if self.batch < 1:
            raise ConfigError(f"--batch must be >= 1, got {self.batch}")
        if self.max_tiles < 0:
            raise ConfigError(f"--max-tiles must be >= 0 (0: no limit), got {self.max_tiles}")
        if self.source_options.max_pixels < 0:
            raise ConfigError(f"--max-pixels must be >= 0 (0: no limit), got {self.source_options.max_pixels}")
        if self.source_options.prefetch_bytes < 1:
            raise ConfigError("--queue-mb must be > 0")
        if self.source_options.max_abandoned < 0:
            raise ConfigError(f"--max-abandoned must be >= 0, got {self.source_options.max_abandoned}")
        if self.tile < 0:
            raise ConfigError(f"--tile must be >= 0 (0: no tiling), got {self.tile}")
        if self.stride is not None and (self.tile == 0 or not 1 <= self.stride <= self.tile):
            raise ConfigError(f"--stride must be in 1..{self.tile} (the tile size), got {self.stride}",
                              "a stride larger than the tile would leave uninspected gaps")
        if self.edge not in EDGE_MODES:
            raise ConfigError(f"unknown --edge {self.edge!r}", f"choose one of: {', '.join(EDGE_MODES)}")
        if self.overlay not in OVERLAY_MODES:
            raise ConfigError(f"unknown --overlay {self.overlay!r}", f"choose one of: {', '.join(OVERLAY_MODES)}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"--threshold must be within 0..1, got {self.threshold}")
        if self.min_tiles < 1:
            raise ConfigError(f"--min-tiles must be >= 1, got {self.min_tiles}")
        if self.smooth < 1:
            raise ConfigError(f"--smooth must be >= 1 frame, got {self.smooth}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"--max-frames must be >= 1, got {self.max_frames}")
        for log in self.logs:
            if Path(log).suffix.lower() not in (".jsonl", ".csv"):
                raise ConfigError(f"--log {log}: the file type is taken from the suffix", "name it *.jsonl or *.csv")

    def to_dict(self) -> dict[str, Any]:
        """The config as recorded in logs: credentials in ``source`` and ``url`` are masked."""
        d = asdict(self)
        d["source_options"] = asdict(self.source_options)
        d["source"] = redact(self.source)
        if self.url:
            d["url"] = redact(self.url)
        return d


class StageTimer:
    """Per-stage time totals and per-frame distributions (bounded memory for long flights)."""

    def __init__(self, keep: int = 20000):
        self.total_s = {s: 0.0 for s in STAGES}
        self.samples: dict[str, deque] = {s: deque(maxlen=keep) for s in (*STAGES, "latency")}
        self._lock = threading.Lock()

    def add(self, stage: str, ms: float, frame_sample: float | None = None) -> None:
        """Add ``ms`` of work to a stage's total; ``frame_sample`` (default ``ms``) to its per-frame samples."""
        with self._lock:
            if stage in self.total_s:
                self.total_s[stage] += ms / 1e3
            self.samples[stage].append(ms if frame_sample is None else frame_sample)

    def summary(self, frames: int) -> dict[str, dict[str, float]]:
        out = {}
        with self._lock:
            for s in (*STAGES, "latency"):
                v = np.asarray(self.samples[s], np.float64)
                d: dict[str, float] = {}
                if s in self.total_s:
                    d["total_s"] = round(self.total_s[s], 6)
                    d["ms_per_frame"] = round(self.total_s[s] * 1e3 / frames, 4) if frames else 0.0
                if v.size:
                    d.update(mean_ms=round(float(v.mean()), 3), p50_ms=round(float(np.percentile(v, 50)), 3),
                             p95_ms=round(float(np.percentile(v, 95)), 3), max_ms=round(float(v.max()), 3))
                out[s] = d
        return out


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
    """What sinks learn at start."""

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
    """Base class of outputs. ``write`` runs on the sink thread, in frame order.

    An :class:`OSError` from ``open``, ``write`` or ``event`` (a full disk, an I/O error) does
    not end the run: it is reported to the other sinks as an ``error`` event (once, until the
    sink writes again) and the inspection goes on. Any other exception ends the run.
    """

    needs_overlay = False

    def describe(self) -> str:
        """How this output is named in messages (e.g. ``--log run.jsonl``)."""
        return type(self).__name__

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


@dataclass
class _Pending:
    frame: Frame
    grid: TileGrid
    batch: np.ndarray | None  # None: preprocessed batch by batch in Inspector.infer
    prep_ms: float

    @property
    def nbytes(self) -> int:
        return nbytes_of(self.frame) + (self.batch.nbytes if self.batch is not None else 0)


class Inspector:
    """Frames in, :class:`FrameResult` out: tiling, preprocessing, batched inference, verdicts.

    Usable on its own (benchmarks, notebooks) without sources or sinks.

    Args:
        backend: A loaded :class:`edgecrack.runtime.Backend`.
        tile: Tile size (0: whole frame).
        stride: Tile stride (None: ``tile``).
        edge: Edge mode.
        batch: Most tiles per inference call.
        threshold: Crack threshold (None: the manifest's, else 0.5).
        min_tiles: Cracked tiles for a cracked frame.
        smooth: Temporal smoothing window (frames).
        timer: Where stage times go.
        max_tiles: Most tiles per frame (0: no limit).
    """

    def __init__(self, backend: Any, tile: int = 256, stride: int | None = None, edge: str = "shift", batch: int = 8,
                 threshold: float | None = None, min_tiles: int = 1, smooth: int = 1, timer: StageTimer | None = None,
                 max_tiles: int = DEFAULT_MAX_TILES):
        m = backend.manifest
        if m.positive_index is None or len(m.labels) != 2:
            raise ConfigError(f"{backend.artifact} is not a binary crack model (labels {m.labels}, positive "
                              f"{m.positive_label})", "run needs a model with a positive (crack) label, as trained by "
                              "edgecrack train")
        self.backend = backend
        self.manifest = m
        self.tile, self.stride, self.edge, self.batch = tile, stride, edge, batch
        self.threshold = float(threshold if threshold is not None else (m.threshold if m.threshold is not None else 0.5))
        self.min_tiles = min_tiles
        self.smoother = TemporalSmoother(smooth)
        self.timer = timer or StageTimer()
        self.max_tiles = max_tiles
        self._grids: dict[tuple[int, int], TileGrid] = {}

    def grid_for(self, h: int, w: int) -> TileGrid:
        """The tile grid of a frame size.

        Raises:
            ConfigError: More tiles than ``max_tiles``.
        """
        g = self._grids.get((h, w))
        if g is None:
            g = tile_grid(h, w, self.tile, self.stride, self.edge)
            if self.max_tiles and g.n > self.max_tiles:
                raise ConfigError(f"a {w}x{h} frame makes {g.n} tiles of {self.tile} px (stride "
                                  f"{self.stride or self.tile}), over --max-tiles {self.max_tiles}",
                                  "raise --stride or --tile, or --max-tiles if the frame must be covered this densely")
            self._grids[(h, w)] = g
        return g

    def prepare(self, frame: Frame) -> _Pending:
        """Tile and preprocess one frame (a very large grid only later, batch by batch)."""
        t0 = time.perf_counter()
        h, w = frame.image.shape[:2]
        grid = self.grid_for(h, w)
        c = self.manifest.input
        batch = None
        if grid.n * c.height * c.width * 3 <= EAGER_PREPARE_BYTES:
            batch = preprocess(tiles_from_frame(frame.image, grid), c)
        ms = (time.perf_counter() - t0) * 1e3
        self.timer.add("preprocess", ms)
        return _Pending(frame, grid, batch, ms)

    def _pieces(self, p: _Pending):
        """Model input of one frame: its prepared batch, or its tiles preprocessed ``batch`` at a time."""
        if p.batch is not None:
            yield p.batch
            return
        tiles = tiles_from_frame(p.frame.image, p.grid)
        for i in range(0, len(tiles), self.batch):
            t0 = time.perf_counter()
            x = preprocess(tiles[i:i + self.batch], self.manifest.input)
            ms = (time.perf_counter() - t0) * 1e3
            self.timer.add("preprocess", ms)
            p.prep_ms += ms
            yield x

    def infer(self, pending: list[_Pending], dropped: int = 0) -> list[FrameResult]:
        """Run the tiles of several prepared frames in batches of at most ``batch``, then postprocess."""
        if not pending:
            return []
        pos = self.manifest.positive_index
        parts: list[np.ndarray] = []
        buf: list[np.ndarray] = []
        have = 0
        inf_ms = 0.0

        def run_batch() -> None:
            nonlocal buf, have, inf_ms
            x = buf[0] if len(buf) == 1 else np.concatenate(buf)
            t0 = time.perf_counter()
            parts.append(self.backend.probs(x)[:, pos])
            inf_ms += (time.perf_counter() - t0) * 1e3
            buf, have = [], 0

        for p in pending:
            for piece in self._pieces(p):
                start = 0
                while start < len(piece):
                    take = min(self.batch - have, len(piece) - start)
                    buf.append(piece[start:start + take])
                    have += take
                    start += take
                    if have == self.batch:
                        run_batch()
        if buf:
            run_batch()
        probs = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self.timer.add("inference", inf_ms, inf_ms)
        out = []
        k = 0
        for p in pending:
            t1 = time.perf_counter()
            n = p.grid.n
            raw = crack_map_from_probs(probs[k:k + n], p.grid)
            k += n
            cmap = self.smoother(raw)
            hits = int((cmap >= self.threshold).sum())
            score = float(cmap.max())
            t2 = time.perf_counter()
            post_ms = (t2 - t1) * 1e3
            self.timer.add("postprocess", post_ms)
            latency = (t2 - p.frame.captured) * 1e3 if p.frame.captured else 0.0
            self.timer.add("latency", latency)
            stages = {"capture": p.frame.capture_ms, "preprocess": p.prep_ms, "inference": inf_ms, "postprocess": post_ms}
            out.append(FrameResult(p.frame, p.grid, cmap, raw, self.threshold, list(self.manifest.labels), pos,
                                   hits >= self.min_tiles, hits, score, stages, latency, dropped))
        return out

    def inspect(self, frames: list[Frame]) -> list[FrameResult]:
        """Prepare and infer frames in one call (all tiles share batches)."""
        return self.infer([self.prepare(f) for f in frames])


def run(config: RunConfig, sinks: list[Sink] | None = None,
        on_start: Callable[[RunInfo, str], None] | None = None,
        on_connect: Callable[[Source], None] | None = None) -> RunSummary:
    """Inspect a source with a model until it ends, ``max_frames``, or a stop signal.

    Args:
        config: What to run (validated here).
        sinks: Outputs besides those named in ``config`` (e.g. the console sink of the CLI).
        on_start: Called once the backend and source are open, with the run info and the
            backend selection's description (the CLI prints it).
        on_connect: Called with a live source just before connecting to it (which can take
            up to ``source_options.wait_s``).

    Returns:
        The run's summary (also written to the logs).

    Raises:
        ConfigError: Invalid options.
        ArtifactError, BackendUnavailable: The model cannot run here.
        SourceError: The source cannot be opened, or failed for good during the run (the
            logs are closed with their summary first).
    """
    from .runtime import open_backend
    from .sinks import sinks_from_config

    config.validate()
    own_sinks = sinks_from_config(config)  # checks outputs (display, writable paths) before anything opens
    src = open_source(config.source, config.source_options)
    if config.smooth > 1 and src.kind == "images":
        raise ConfigError("--smooth averages consecutive video frames; an image folder has none",
                          "drop --smooth for folders and globs")
    sel = open_backend(config.model, config.backend, strict=config.strict, threads=config.threads, url=config.url)
    timer = StageTimer()
    stopper = Stopper(config.handle_signals)
    sink_thread: SinkThread | None = None
    all_sinks: list[Sink] = []
    opened: list[Sink] = []
    frames = cracked = tiles = events = 0
    t_start = time.perf_counter()
    summary: RunSummary | None = None
    prepared: PreparedFrames | None = None
    try:
        insp = Inspector(sel.backend, config.tile, config.stride, config.edge, config.batch, config.threshold,
                         config.min_tiles, config.smooth, timer, config.max_tiles)
        if config.tile == 0 and isinstance(src, ImageFilesSource):
            # Whole images are only resized down to the model input: an over-limit JPEG may be
            # decoded reduced (to no less than that input) instead of being skipped.
            src.min_size = (sel.backend.manifest.input.height, sel.backend.manifest.input.width)
        if on_connect is not None and src.live:
            on_connect(src)
        src.start(cancel=stopper.event)
        m = sel.backend.manifest
        info = RunInfo(config, sel.backend.info(), list(sel.skipped), src.description, src.kind, src.live, src.fps,
                       list(m.labels), m.positive_label, insp.threshold, time.time(), stopper.request)
        all_sinks = list(sinks or []) + own_sinks
        early: list[OutputFailed] = []
        for s in all_sinks:
            try:
                s.open(info)
            except OSError as e:  # e.g. the start record on a disk that filled up: reported, not fatal
                early.append(OutputFailed(s, e))
            opened.append(s)
        if on_start:
            on_start(info, sel.describe())
        qbytes = config.source_options.prefetch_bytes
        sink_thread = SinkThread(all_sinks, info, timer, config.overlay, max_bytes=qbytes)
        for f in early:
            sink_thread.put(f)
        t_start = time.perf_counter()
        prepared = PreparedFrames(src, insp, max_bytes=qbytes)
        pending: list[_Pending] = []
        pending_tiles = 0
        stop_reason = "source ended"
        failure: SourceError | None = None

        def flush() -> None:
            nonlocal pending, pending_tiles, frames, cracked, tiles
            for r in insp.infer(pending, src.dropped):
                frames += 1
                cracked += r.cracked
                tiles += r.grid.n
                timer.add("capture", r.frame.capture_ms)
                sink_thread.put(r)
            pending, pending_tiles = [], 0

        while True:
            for ev in src.events():
                events += 1
                sink_thread.put(ev)
            if stopper.event.is_set():
                stop_reason = stopper.reason or "stopped"
                break
            if config.max_frames is not None and frames + len(pending) >= config.max_frames:
                stop_reason = f"max frames ({config.max_frames})"
                break
            try:
                p = prepared.get(timeout=0.25)
            except SourceError as e:
                failure = e
                stop_reason = f"source failed: {e.message}"
                break
            if p is None:
                if prepared.ended:
                    stop_reason = src.end_reason or "source ended"
                    break
                continue
            pending.append(p)
            pending_tiles += p.grid.n
            # Live sources answer each frame at once (latency); recorded ones fill batches (throughput).
            if src.live or pending_tiles >= config.batch:
                flush()
        flush()
        elapsed = time.perf_counter() - t_start
        prepared.stop()
        src.stop()
        for ev in src.events():
            events += 1
            sink_thread.put(ev)
        sink_thread.finish()
        if sink_thread.error is not None:
            raise sink_thread.error
        events += sink_thread.events
        sink_thread = None
        outputs: dict[str, Any] = {}
        for s in all_sinks:
            outputs.update(s.outputs())
        summary = RunSummary(src.stats(), sel.backend.info(), frames, cracked, tiles, round(elapsed, 3),
                             round(frames / elapsed, 3) if elapsed > 0 else 0.0,
                             round(tiles / elapsed, 3) if elapsed > 0 else 0.0, timer.summary(frames), stop_reason,
                             events, outputs)
        if failure is not None:
            raise failure  # after the summary exists, so the logs end with it
        return summary
    finally:
        stopper.restore()
        if prepared is not None:
            prepared.stop()
        src.stop()
        if sink_thread is not None:
            sink_thread.finish()
        for s in opened:
            s.close(summary)
        sel.backend.close()
