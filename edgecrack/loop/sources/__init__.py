"""Frame sources: cameras, CSI cameras, network streams, video files, folders, globs, GStreamer.

Two kinds of source behave differently on purpose:

- **Live** sources (camera index, ``csi://N``, ``rtsp://``, ``http(s)://``, GStreamer
  pipelines) never fall behind: a capture thread keeps only the newest frame, reconnects with
  backoff and is restarted by a watchdog (:mod:`.live`); connections are opened by
  :mod:`.opencv` (cameras, FFmpeg streams) or :mod:`.gstreamer` (pipelines, ``csi://``).
- **Recorded** sources (video files, folders, globs, single images) deliver every frame, in
  order, reproducibly (:mod:`.files`).

:func:`open_source` makes the right one from what the user typed.
"""

from __future__ import annotations

import glob as _glob
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from ...data import list_images
from ...errors import SourceError
from ...preprocess import IMAGE_SUFFIXES
from ...shard import glob_root, select_shard
from ..config import SourceOptions
from ..types import Frame, SourceEvent
from .base import STOP_JOIN_S, BoundedQueue, Source, nbytes_of
from .files import ImageFilesSource, VideoFileSource
from .gstreamer import (GstLaunchCapture, Y4MReader, appsink_pipeline, csi_pipeline, csi_source, gstreamer_source,
                        opencv_has_gstreamer, y4m_pipeline)
from .live import LiveSource
from .opencv import camera_source, stream_source

__all__ = ["STOP_JOIN_S", "SOURCE_FORMS", "BoundedQueue", "Frame", "GstLaunchCapture", "ImageFilesSource", "LiveSource",
           "Source", "SourceEvent", "SourceOptions", "VideoFileSource", "Y4MReader", "appsink_pipeline", "csi_pipeline",
           "nbytes_of", "open_source", "opencv_has_gstreamer", "y4m_pipeline"]

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")


VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".ts", ".mts", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                  ".h264", ".h265", ".mjpeg", ".mjpg")


SOURCE_FORMS = ("camera index (0), /dev/videoN, csi://N, rtsp://..., http(s)://..., a video file, "
                "an image folder, a glob ('shots/*.jpg') or a GStreamer pipeline ('... ! appsink')")


def _is_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def open_source(spec: str | int, options: SourceOptions | None = None) -> Source:
    """Make the right :class:`Source` for what the user typed (not started yet).

    Args:
        spec: Camera index (``0``), ``/dev/videoN``, ``csi://N[?width=&height=&fps=&flip=]``,
            ``rtsp://``/``http(s)://``/... URL, video file, image file, folder, glob, or a
            GStreamer pipeline (contains ``!``).
        options: Capture, reconnect and prefetch settings.

    Returns:
        A source; call :meth:`Source.start` (or use it as a context manager).

    Raises:
        SourceError: Nothing usable at ``spec``.
    """
    opts = options or SourceOptions()
    if opts.telemetry and not (isinstance(spec, str) and Path(spec.strip()).is_file()
                               and Path(spec.strip()).suffix.lower() not in IMAGE_SUFFIXES):
        raise SourceError(f"--telemetry {opts.telemetry}: telemetry files go with a video file source, not {spec}",
                          "stills carry their position in EXIF; drop --telemetry")
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        idx = int(spec)
        return camera_source(idx, opts)
    s = spec.strip()
    if not s:
        raise SourceError("empty source", f"pass one of: {SOURCE_FORMS}")
    m = re.fullmatch(r"/dev/video(\d+)", s)
    if m:
        idx = int(m.group(1))
        return camera_source(idx, opts)
    scheme = urlsplit(s).scheme.lower() if "://" in s else ""
    if scheme == "csi":
        return csi_source(s, opts)
    if "!" in s and scheme not in STREAM_SCHEMES:
        return gstreamer_source(s, opts)
    if scheme in STREAM_SCHEMES:
        return stream_source(s, opts)
    if scheme:
        raise SourceError(f"unsupported source scheme {scheme}://", f"pass one of: {SOURCE_FORMS}")
    p = Path(s).expanduser()
    if p.is_dir():
        files = list_images(p)
        if not files:
            raise SourceError(f"no images in folder {p}", f"image types: {', '.join(IMAGE_SUFFIXES)}")
        files = select_shard(files, p, opts.shard)
        return ImageFilesSource(files, str(p), opts.prefetch, opts.prefetch_bytes, opts.max_pixels)
    if p.is_file():
        if p.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFilesSource([p], str(p), opts.prefetch, opts.prefetch_bytes, opts.max_pixels)
        return VideoFileSource(p, opts.prefetch, opts.prefetch_bytes, opts.max_pixels, opts.telemetry)
    if _is_glob(s):
        files = sorted(Path(f) for f in _glob.glob(os.path.expanduser(s), recursive=True)
                       if Path(f).is_file() and Path(f).suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"no images match {s}", "quote the pattern so the shell does not expand it")
        files = select_shard(files, glob_root(s), opts.shard)
        return ImageFilesSource(files, s, opts.prefetch, opts.prefetch_bytes, opts.max_pixels)
    raise SourceError(f"source not found: {s}", f"pass one of: {SOURCE_FORMS}")
