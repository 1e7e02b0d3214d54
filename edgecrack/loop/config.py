"""The inspection loop's options: what ``edgecrack run`` does, resolved, and the one place they are checked.

Every option check of the loop lives here. :meth:`RunConfig.validate` runs them all before
anything opens; the library pieces that can be used on their own (:func:`~edgecrack.loop.tiling.tile_grid`,
:func:`~edgecrack.loop.render.overlay`, :class:`~edgecrack.loop.postprocess.TemporalSmoother`,
the GStreamer opener, the video sink) call the same ``check_*`` functions, so a bad value
gets the same message wherever it enters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..preprocess import DEFAULT_MAX_PIXELS
from ..redact import redact

EDGE_MODES = ("shift", "pad", "drop")
OVERLAY_MODES = ("boxes", "heat", "both", "none")
GSTREAMER_MODES = ("auto", "opencv", "gst-launch")
LOG_SUFFIXES = (".jsonl", ".csv")
#: ``--save-video`` containers and the codec each is written with.
VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG", ".ts": "mp4v"}


#: Most tiles one frame may be cut into (``--max-tiles``): ``--stride 1`` on a 512 px frame
#: makes 66049 tiles, 12 GiB of model input.
DEFAULT_MAX_TILES = 4096


def check_edge(edge: str) -> None:
    """Raise :class:`ConfigError` unless ``edge`` is one of :data:`EDGE_MODES`."""
    if edge not in EDGE_MODES:
        raise ConfigError(f"unknown --edge {edge!r}", f"choose one of: {', '.join(EDGE_MODES)}")


def check_tiling(tile: int, stride: int | None, edge: str) -> None:
    """Raise :class:`ConfigError` on a negative tile, a stride outside ``1..tile`` or an unknown edge mode."""
    if tile < 0:
        raise ConfigError(f"--tile must be >= 0 (0: no tiling), got {tile}")
    if stride is not None and (tile == 0 or not 1 <= stride <= tile):
        raise ConfigError(f"--stride must be in 1..{tile} (the tile size), got {stride}",
                          "a stride larger than the tile would leave uninspected gaps")
    check_edge(edge)


def check_overlay(mode: str) -> None:
    """Raise :class:`ConfigError` unless ``mode`` is one of :data:`OVERLAY_MODES`."""
    if mode not in OVERLAY_MODES:
        raise ConfigError(f"unknown --overlay {mode!r}", f"choose one of: {', '.join(OVERLAY_MODES)}")


def check_smooth(frames: int) -> None:
    """Raise :class:`ConfigError` unless the smoothing window is at least one frame."""
    if frames < 1:
        raise ConfigError(f"--smooth must be >= 1 frame, got {frames}")


def check_gstreamer_mode(mode: str) -> None:
    """Raise :class:`ConfigError` unless ``mode`` is one of :data:`GSTREAMER_MODES`."""
    if mode not in GSTREAMER_MODES:
        raise ConfigError(f"unknown --gstreamer mode {mode!r}", f"use one of: {', '.join(GSTREAMER_MODES)}")


def check_video_output(path: str | Path, segment_s: float | None) -> None:
    """Raise :class:`ConfigError` on a ``--save-video`` container OpenCV is not asked to write, or a negative segment."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_FOURCC:
        raise ConfigError(f"--save-video {path}: unsupported container {suffix or '(none)'}",
                          f"use one of: {', '.join(VIDEO_FOURCC)}")
    if segment_s is not None and segment_s < 0:
        raise ConfigError(f"--video-segment must be >= 0 seconds (0: one file), got {segment_s:g}")


@dataclass
class SourceOptions:
    """How to open a source.

    Attributes:
        width: Requested capture width (cameras, ``csi://``).
        height: Requested capture height (cameras, ``csi://``).
        fps: Requested capture rate (cameras, ``csi://``).
        flip: ``nvvidconv flip-method`` for ``csi://`` (0-7).
        watchdog_s: Live sources: no frame for this long means the capture is stalled and
            is restarted.
        backoff_s: First reconnect delay; doubles per failed attempt.
        backoff_max_s: Longest reconnect delay.
        give_up_s: Live sources end after this long without a frame (``None``: never, the
            right choice on a drone: the link comes back).
        wait_s: How long the first connection may take (retrying with backoff) before
            the source fails with :class:`SourceError`. ``0``: one attempt, fail fast.
        prefetch: Recorded sources: frames decoded ahead of the consumer (at most).
        prefetch_bytes: Recorded sources: decoded bytes held ahead of the consumer (at
            most; one frame always passes, however large).
        max_pixels: Largest image or video frame decoded (0: no limit); see
            :data:`edgecrack.preprocess.DEFAULT_MAX_PIXELS`.
        gstreamer: ``auto`` (OpenCV if built with GStreamer, else ``gst-launch-1.0``),
            ``opencv`` or ``gst-launch``.
        telemetry: DJI ``.SRT`` of a video file (None: ``VIDEO.SRT`` next to it, if any).
        max_abandoned: Live sources: captures stuck inside a driver or network call that the
            watchdog gave up on and that have not returned yet. Python cannot free such a
            thread and the decoder behind it; one more than this ends the source with an
            error, so the process exits non-zero and its supervisor (systemd) restarts it clean.
        shard: Folders and globs: only the images of shard ``(K, N)`` (see :mod:`edgecrack.shard`).
    """

    width: int | None = None
    height: int | None = None
    fps: float | None = None
    flip: int = 0
    watchdog_s: float = 5.0
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0
    give_up_s: float | None = None
    wait_s: float = 0.0
    prefetch: int = 16
    prefetch_bytes: int = 256 << 20
    max_pixels: int = DEFAULT_MAX_PIXELS
    gstreamer: str = "auto"
    telemetry: str | None = None
    max_abandoned: int = 3
    shard: tuple[int, int] | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` on impossible values (:meth:`RunConfig.validate` calls it)."""
        if self.max_pixels < 0:
            raise ConfigError(f"--max-pixels must be >= 0 (0: no limit), got {self.max_pixels}")
        if self.prefetch_bytes < 1:
            raise ConfigError("--queue-mb must be > 0")
        if self.max_abandoned < 0:
            raise ConfigError(f"--max-abandoned must be >= 0, got {self.max_abandoned}")
        check_gstreamer_mode(self.gstreamer)


@dataclass
class RunConfig:
    """Everything ``edgecrack run`` does, resolved (written to the log's start record).

    Attributes:
        source: What to inspect (see :func:`edgecrack.loop.sources.open_source`).
        model: Run folder, ``.onnx`` or engine.
        backend: Backend preference (``auto``: TensorRT -> ORT CUDA -> ORT CPU).
        strict: Fail instead of falling back when ``backend`` cannot run.
        url: Server address for ``backend="triton"``.
        threads: CPU threads for onnxruntime (None: its default).
        tile: Tile size in frame pixels; 0: no tiling (the whole frame is resized).
        stride: Step between tiles (None: ``tile``).
        edge: ``shift``, ``pad`` or ``drop`` (see :mod:`edgecrack.loop.tiling`).
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
        self.source_options.validate()
        check_tiling(self.tile, self.stride, self.edge)
        check_overlay(self.overlay)
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"--threshold must be within 0..1, got {self.threshold}")
        if self.min_tiles < 1:
            raise ConfigError(f"--min-tiles must be >= 1, got {self.min_tiles}")
        check_smooth(self.smooth)
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"--max-frames must be >= 1, got {self.max_frames}")
        for log in self.logs:
            if Path(log).suffix.lower() not in LOG_SUFFIXES:
                raise ConfigError(f"--log {log}: the file type is taken from the suffix", "name it *.jsonl or *.csv")
        if self.save_video:
            check_video_output(self.save_video, self.save_video_segment_s)

    def to_dict(self) -> dict[str, Any]:
        """The config as recorded in logs: credentials in ``source`` and ``url`` are masked."""
        d = asdict(self)
        d["source_options"] = asdict(self.source_options)
        d["source"] = redact(self.source)
        if self.url:
            d["url"] = redact(self.url)
        return d
