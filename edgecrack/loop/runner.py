"""The inspection loop: source -> preprocess -> infer -> postprocess -> sinks.

Three threads overlap the work: the source's reader thread captures and decodes, this
module's loop tiles, preprocesses (:func:`edgecrack.preprocess.preprocess`) and runs the
backend (:class:`~edgecrack.loop.inspector.Inspector`), and a sink thread writes logs, video
and images. Every stage is timed per frame, and :func:`run` returns a
:class:`~edgecrack.loop.types.RunSummary`. SIGINT/SIGTERM stop the loop cleanly: the frame
in flight finishes, sinks flush and close, and the summary is still produced.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import ConfigError, SourceError
from ..runtime import open_backend
from .config import RunConfig
from .inspector import Inspector, StageTimer, _Pending
from .sinks import sinks_from_config
from .sources import ImageFilesSource, open_source
from .sources.base import STOP_JOIN_S
from .types import RunInfo, RunSummary, Sink
from .workers import SINK_FINISH_S, OutputFailed, PreparedFrames, SinkThread, Stopper

#: Upper bound of a clean stop after SIGTERM, the frame in flight aside: the source's thread,
#: the sink thread, and a margin for closing files and the backend. The systemd unit's
#: TimeoutStopSec must exceed it (tests/test_robustness.py checks).
STOP_TIMEOUT_S = STOP_JOIN_S + SINK_FINISH_S + 5.0


def run(config: RunConfig, sinks: list[Sink] | None = None) -> RunSummary:
    """Inspect a source with a model until it ends, ``max_frames``, or a stop signal.

    Args:
        config: What to run (validated here).
        sinks: Outputs besides those named in ``config`` (e.g. the console sink of the CLI);
            they hear of progress through the :class:`~edgecrack.loop.types.Sink` calls.

    Returns:
        The run's summary (also written to the logs).

    Raises:
        ConfigError: Invalid options.
        ArtifactError, BackendUnavailable: The model cannot run here.
        SourceError: The source cannot be opened, or failed for good during the run (the
            logs are closed with their summary first).
    """
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
        all_sinks = list(sinks or []) + own_sinks
        if src.live:
            for s in all_sinks:
                s.connecting(src.description, config.source_options.wait_s)
        src.start(cancel=stopper.event)
        m = sel.backend.manifest
        info = RunInfo(config, sel.backend.info(), list(sel.skipped), src.description, src.kind, src.live, src.fps,
                       list(m.labels), m.positive_label, insp.threshold, time.time(), stopper.request, sel.describe())
        early: list[OutputFailed] = []
        for s in all_sinks:
            try:
                s.open(info)
            except OSError as e:  # e.g. the start record on a disk that filled up: reported, not fatal
                early.append(OutputFailed(s, e))
            opened.append(s)
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
