"""Annotated outputs: a video that survives a crash, and JPEGs of the frames where cracks were found."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import cv2

from ...errors import ConfigError
from ...io import atomic_write_bytes
from ..config import VIDEO_FOURCC, check_video_output
from ..types import FrameResult, RunInfo, RunSummary, Sink
from .common import check_output_file, check_output_folder

#: Containers that play up to the last frame written when the process is killed mid-write.
CUT_SAFE_VIDEO = (".avi", ".mkv", ".ts")


class VideoSink(Sink):
    """Annotated frames to a video file that survives a crash.

    ``.avi``/``.mkv`` (MJPG) and ``.ts`` (MPEG-4 in MPEG-TS) are playable when cut: the video is
    written straight into ``NAME.<start>.partial.EXT`` and renamed to NAME when the run ends, so
    after a kill the partial file plays up to the last frames written. An MP4 is unplayable
    until its index is written at the end, so ``.mp4``/``.m4v``/``.mov`` are written in
    segments of ``segment_s`` seconds (default 60): each finished segment is a complete file
    ``NAME.<start>-NNN.EXT``, and a kill loses at most the segment in progress. A run that fits
    in one segment still ends as one file, NAME.

    Args:
        path: Output file; the container comes from its suffix (:data:`VIDEO_FOURCC`).
        fps: Frame rate (None: the source's, else 10).
        segment_s: Seconds of video per file (None: 60 for MP4-like containers, one file for
            the others; 0: one file).
    """

    needs_overlay = True

    def __init__(self, path: str | Path, fps: float | None = None, segment_s: float | None = None):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        check_video_output(self.path, segment_s)
        check_output_file(self.path, "--save-video")
        self.fps = fps
        self.segment_s = segment_s if segment_s is not None else (0.0 if suffix in CUT_SAFE_VIDEO else 60.0)
        self._writer: cv2.VideoWriter | None = None
        self._partial: Path | None = None
        self._size: tuple[int, int] | None = None
        self._stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self._seg = 0
        self._seg_len = 0
        self._seg_frames = 0
        self.segments: list[Path] = []
        self.frames = 0

    def describe(self) -> str:
        return f"--save-video {self.path}"

    def open(self, info: RunInfo) -> None:
        self.fps = self.fps or info.fps or 10.0
        self._stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(info.started))
        self._seg_len = max(1, int(round(self.segment_s * self.fps))) if self.segment_s > 0 else 0

    def _segment_name(self, partial: bool) -> Path:
        seg = f"-{self._seg:03d}" if self._seg_len else ""
        return self.path.with_name(f"{self.path.stem}.{self._stamp}{seg}{'.partial' if partial else ''}{self.path.suffix}")

    def _start_segment(self, size: tuple[int, int]) -> None:
        self._partial = self._segment_name(partial=True)
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_FOURCC[self.path.suffix.lower()])
        self._writer = cv2.VideoWriter(str(self._partial), fourcc, float(self.fps), size)
        if not self._writer.isOpened():
            self._partial.unlink(missing_ok=True)
            self._writer = None
            raise ConfigError(f"--save-video {self.path}: OpenCV cannot write {self.path.suffix} here",
                              "try an .avi file (MJPG)")
        self._size = size
        self._seg_frames = 0

    def _end_segment(self, final: bool) -> None:
        self._writer.release()
        self._writer = None
        # The only segment of a run that ends cleanly becomes NAME itself.
        done = self.path if final and not self.segments else self._segment_name(partial=False)
        os.replace(self._partial, done)
        self.segments.append(done)
        self._seg += 1

    def write(self, r: FrameResult) -> None:
        img = r.overlay
        h, w = img.shape[:2]
        if self._writer is None:
            self._start_segment(self._size or (w, h))
        if (w, h) != self._size:
            # A stream that reconnected at another resolution: keep one size per file.
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(img)
        self.frames += 1
        self._seg_frames += 1
        if self._seg_len and self._seg_frames >= self._seg_len:
            self._end_segment(final=False)

    def close(self, summary: RunSummary | None) -> None:
        if self._writer is not None:
            self._end_segment(final=True)
        if len(self.segments) == 1 and self.segments[0] != self.path:
            # One full segment and nothing after it: still one file under the asked-for name.
            os.replace(self.segments[0], self.path)
            self.segments = [self.path]

    def outputs(self) -> dict[str, Any]:
        if not self.frames:
            return {}
        if len(self.segments) > 1:
            return {"video": [str(p) for p in self.segments], "video_frames": self.frames}
        return {"video": str(self.path), "video_frames": self.frames}


class FlaggedSink(Sink):
    """Annotated JPEGs of the frames where cracks were found: ``DIR/000042_NAME.jpg``."""

    def __init__(self, folder: str | Path, quality: int = 92):
        self.folder = Path(folder)
        check_output_folder(self.folder, "--save-flagged")
        self.quality = quality
        self.saved = 0

    def describe(self) -> str:
        return f"--save-flagged {self.folder}"

    def wants_overlay(self, result: FrameResult) -> bool:
        return result.cracked

    def write(self, r: FrameResult) -> None:
        if not r.cracked:
            return
        stem = Path(r.frame.name).stem.replace(" ", "_")
        ok, buf = cv2.imencode(".jpg", r.overlay, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError("JPEG encoding of an annotated frame failed")
        atomic_write_bytes(self.folder / f"{r.frame.index:06d}_{stem}.jpg", buf.tobytes())
        self.saved += 1

    def outputs(self) -> dict[str, Any]:
        return {"flagged_dir": str(self.folder), "flagged": self.saved}
