"""Frames in, :class:`~edgecrack.loop.types.FrameResult` out: tiling, preprocessing, batched inference.

:class:`Inspector` works on its own (benchmarks, notebooks) without sources or sinks; the
runner feeds it. Decisions are :mod:`edgecrack.loop.postprocess`'s.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..preprocess import preprocess
from .config import DEFAULT_MAX_TILES
from .postprocess import TemporalSmoother, crack_map_from_probs, frame_verdict, resolve_threshold
from .sources.base import nbytes_of
from .tiling import TileGrid, tile_grid, tiles_from_frame
from .types import STAGES, Frame, FrameResult

#: A frame's tiles are preprocessed ahead of inference (on the prepare thread) up to this many
#: bytes of model input; a bigger grid is preprocessed batch by batch during inference.
EAGER_PREPARE_BYTES = 64 << 20


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
        self.threshold = resolve_threshold(threshold, m.threshold)
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
            v = frame_verdict(cmap, self.threshold, self.min_tiles)
            t2 = time.perf_counter()
            post_ms = (t2 - t1) * 1e3
            self.timer.add("postprocess", post_ms)
            latency = (t2 - p.frame.captured) * 1e3 if p.frame.captured else 0.0
            self.timer.add("latency", latency)
            stages = {"capture": p.frame.capture_ms, "preprocess": p.prep_ms, "inference": inf_ms, "postprocess": post_ms}
            out.append(FrameResult(p.frame, p.grid, cmap, raw, self.threshold, list(self.manifest.labels), pos,
                                   v.cracked, v.cracked_tiles, v.score, stages, latency, dropped))
        return out

    def inspect(self, frames: list[Frame]) -> list[FrameResult]:
        """Prepare and infer frames in one call (all tiles share batches)."""
        return self.infer([self.prepare(f) for f in frames])
