"""Outputs of the inspection loop: console, JSONL/CSV logs, annotated video and images, a window.

All sinks run on the loop's sink thread, in frame order (:class:`~edgecrack.loop.types.Sink`).
Every file output is checked before the source and the model open.
"""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig
from ..types import Sink
from .common import MIN_FREE_BYTES
from .console import ConsoleSink
from .logs import CSV_COLUMNS, FSYNC_S, CsvLog, JsonlLog
from .video import CUT_SAFE_VIDEO, FlaggedSink, VideoSink
from .window import WindowSink, display_problem

__all__ = ["CSV_COLUMNS", "CUT_SAFE_VIDEO", "FSYNC_S", "MIN_FREE_BYTES", "ConsoleSink", "CsvLog", "FlaggedSink",
           "JsonlLog", "Sink", "VideoSink", "WindowSink", "display_problem", "sinks_from_config"]


def sinks_from_config(config: RunConfig) -> list[Sink]:
    """The file and window outputs a run config asks for (the console sink is the caller's).

    Raises:
        ConfigError: Unwritable paths, unsupported containers, ``--show`` without a display.
    """
    out: list[Sink] = []
    for log in config.logs:
        out.append(CsvLog(log) if Path(log).suffix.lower() == ".csv" else JsonlLog(log))
    if config.save_video:
        out.append(VideoSink(config.save_video, config.save_video_fps, config.save_video_segment_s))
    if config.save_flagged:
        out.append(FlaggedSink(config.save_flagged))
    if config.show:
        out.append(WindowSink())
    return out
