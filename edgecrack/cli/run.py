"""``edgecrack run``: the inspection loop for cameras, streams, videos and folders (:func:`edgecrack.loop.runner.run`)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import console, err_console, user_errors


def run_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="Run folder, .onnx (FP32/INT8) or TensorRT engine."),
    source: Optional[str] = typer.Option(None, "--source", "-s", envvar="EDGECRACK_RUN_SOURCE", show_envvar=True,
                                         help="Video file, image folder, glob, rtsp://, http(s)://, csi://N[?width=&height=&fps=], "
                                              "/dev/videoN or a GStreamer pipeline ('... ! appsink'). From the environment, "
                                              "a stream password stays out of the process list."),
    camera: Optional[int] = typer.Option(None, "--camera", "-c", help="Camera index (USB/V4L2), e.g. 0."),
    backend: str = typer.Option("auto", help="auto (TensorRT -> ORT CUDA -> ORT CPU), tensorrt, onnxruntime-cuda, "
                                             "onnxruntime-cpu, torch, triton."),
    strict: bool = typer.Option(False, help="Fail instead of falling back when --backend cannot run here."),
    url: Optional[str] = typer.Option(None, help="Server address for --backend triton."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for onnxruntime (default: all cores)."),
    tile: int = typer.Option(256, help="Tile size in frame pixels, resized to the model input (SDNET2018 tiles are 256). "
                                       "0: no tiling, the whole frame is resized."),
    stride: Optional[int] = typer.Option(None, help="Step between tiles (default: the tile size; smaller overlaps)."),
    edge: str = typer.Option("shift", help="Frame edges: shift (last tile ends at the edge), pad (mirror), drop."),
    batch: int = typer.Option(8, help="Most tiles per inference call."),
    max_tiles: int = typer.Option(4096, help="Most tiles per frame (0: no limit); a denser grid is an error, not 12 GiB."),
    max_pixels: float = typer.Option(100.0, help="Largest image or frame decoded, in megapixels (0: no limit). With "
                                                 "--tile 0 a bigger JPEG is decoded reduced; otherwise it is skipped."),
    queue_mb: int = typer.Option(256, help="Decoded frames each read-ahead queue may hold, in MB (3 queues)."),
    threshold: Optional[float] = typer.Option(None, help="Crack threshold (default: the model manifest's)."),
    min_tiles: int = typer.Option(1, help="Cracked tiles needed to call a frame cracked."),
    smooth: int = typer.Option(1, help="Average tile maps over N frames (video/live) to steady the verdict."),
    log: Optional[List[Path]] = typer.Option(None, "--log", help="Per-frame log, *.jsonl or *.csv (repeatable; appended, "
                                                                 "flushed per frame)."),
    save_video: Optional[Path] = typer.Option(None, help="Write the annotated video (.avi/.mkv/.ts play when cut by a crash; "
                                                         ".mp4 is written in --video-segment parts)."),
    save_video_fps: Optional[float] = typer.Option(None, help="Frame rate of --save-video (default: the source's, else 10)."),
    video_segment: Optional[float] = typer.Option(None, help="Seconds of --save-video per file (default: 60 for .mp4, "
                                                             "one file for .avi/.mkv/.ts; 0: one file)."),
    save_flagged: Optional[Path] = typer.Option(None, help="Folder for annotated frames where cracks were found."),
    overlay: str = typer.Option("boxes", help="Annotation: boxes, heat, both, none."),
    show: bool = typer.Option(False, help="Show a window (needs a display and OpenCV with GUI support)."),
    max_frames: Optional[int] = typer.Option(None, help="Stop after N frames."),
    width: Optional[int] = typer.Option(None, help="Capture width (camera, csi://)."),
    height: Optional[int] = typer.Option(None, help="Capture height (camera, csi://)."),
    fps: Optional[float] = typer.Option(None, help="Capture rate (camera, csi://)."),
    flip: int = typer.Option(0, help="csi:// nvvidconv flip-method (2: rotate 180)."),
    watchdog: float = typer.Option(5.0, help="Live sources: seconds without a frame before the capture is restarted."),
    wait: float = typer.Option(0.0, help="Live sources: keep trying to connect this long at start (0: fail at once)."),
    give_up: Optional[float] = typer.Option(None, help="Live sources: end after this long without a frame "
                                                       "(default: never, keep reconnecting)."),
    gstreamer: str = typer.Option("auto", help="GStreamer pipelines via: auto, opencv, gst-launch."),
    telemetry: Optional[Path] = typer.Option(None, help="DJI .SRT flight telemetry of a video file (default: "
                                                        "VIDEO.SRT next to it, if any): GPS per frame in the log."),
    max_abandoned: int = typer.Option(3, help="Live sources: captures stuck in a read that never returns before the run "
                                              "fails (exit 1) so its supervisor restarts it."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-frame console output (logs and summary only)."),
    shard: Optional[str] = typer.Option(None, help="K/N: inspect only shard K of N of a folder or glob (a stable hash of "
                                                   "each image's relative path), so N workers cover every image once; "
                                                   "merge their --log files with edgecrack report."),
) -> None:
    """Inspect a camera, stream, video or image folder for cracks, frame by frame.

    Folders print one line per image; video and live sources show a status line. Ctrl-C or
    SIGTERM stops cleanly with a summary; --log files are complete up to the last frame.
    """
    import os

    import cv2

    from ..errors import ConfigError
    from ..loop.config import RunConfig, SourceOptions
    from ..loop.runner import run
    from ..loop.sinks import ConsoleSink

    if (source is None) == (camera is None):
        raise ConfigError("give exactly one of --source and --camera", "e.g. --camera 0, or --source flight.mp4")
    if shard is not None:
        from ..shard import check_shardable, parse_shard

        shard_kn = parse_shard(shard)
        check_shardable(source, camera)
    # Every connection problem is reported as an event with what happened; FFmpeg's and OpenCV's
    # own warnings (refused connections, corrupt macroblocks on lossy links) would bury it.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    opts = SourceOptions(width=width, height=height, fps=fps, flip=flip, watchdog_s=watchdog, wait_s=wait,
                         give_up_s=give_up, gstreamer=gstreamer, max_abandoned=max_abandoned,
                         max_pixels=int(max_pixels * 1e6), prefetch_bytes=queue_mb << 20,
                         telemetry=str(telemetry) if telemetry else None,
                         shard=shard_kn if shard is not None else None)
    cfg = RunConfig(source=str(camera) if camera is not None else source, model=str(model), backend=backend,
                    strict=strict, url=url, threads=threads, tile=tile, stride=stride, edge=edge, batch=batch, max_tiles=max_tiles,
                    threshold=threshold, min_tiles=min_tiles, smooth=smooth, logs=[str(p) for p in log or []],
                    save_video=str(save_video) if save_video else None, save_video_fps=save_video_fps,
                    save_video_segment_s=video_segment,
                    save_flagged=str(save_flagged) if save_flagged else None, show=show, overlay=overlay,
                    max_frames=max_frames, source_options=opts)

    summary = run(cfg, sinks=[ConsoleSink(console, err_console, "quiet" if quiet else "auto")])
    err_console.print(summary_text(summary), highlight=False, soft_wrap=True)


def summary_text(s) -> str:
    """The five-second summary: what ran, how fast, what was found, where it went (rich markup;
    every value in it escaped)."""
    from rich.markup import escape

    src = s.source
    st = s.stages
    lines = [f"[bold]summary[/] {s.frames} frames in {s.seconds:.1f} s ({s.fps:.1f} fps, {s.tiles_per_s:.1f} tiles/s) "
             f"on {escape(str(s.backend.get('backend')))}; stopped: {escape(s.stop_reason)}",
             f"  cracked frames {s.cracked_frames}/{s.frames}; dropped {src['dropped']}, skipped {src['skipped']}, "
             f"reconnects {src['reconnects']}, events {s.events}"]
    parts = [f"{k} {st[k].get('ms_per_frame', 0):.1f}" for k in ("capture", "preprocess", "inference", "postprocess", "sinks")]
    lat = st.get("latency", {})
    lines.append("  ms/frame: " + ", ".join(parts) + (f"; latency p50 {lat['p50_ms']:.0f} ms, p95 {lat['p95_ms']:.0f} ms"
                                                       if "p50_ms" in lat else ""))
    for k, v in s.outputs.items():
        lines.append(f"  {k}: {escape(str(v))}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("run")(user_errors(run_cmd))
