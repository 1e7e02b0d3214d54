"""Real test media and real loopback stream servers (127.0.0.1 only, always stopped by the tests).

- Video files are written with OpenCV from the bundled SDNET2018 images.
- RTSP: GStreamer's RTSP server (``rtsp_server.py``, run by the system Python that has the
  GObject bindings), because ffmpeg cannot serve RTSP by itself.
- HTTP: ``ffmpeg -listen 1`` serving H.264 in MPEG-TS (OpenCV cannot read MJPEG in MPEG-TS).
- HTTP MJPEG (``mjpeg_server.py``): multipart JPEG like an IP camera, with OpenCV only; it can
  go silent mid-stream with the connection held open (a hung camera).
"""

from __future__ import annotations

import functools
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).parent
SYSTEM_PYTHON = "/usr/bin/python3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_video(path: Path, images: list[Path], fps: float = 25.0, size: tuple[int, int] = (256, 256),
                fourcc: str = "MJPG", repeat: int = 1) -> Path:
    """A real video file whose frames are the given images (resized to ``size`` = (w, h))."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert w.isOpened(), f"OpenCV cannot write {path}"
    frames = [cv2.resize(cv2.imread(str(p)), size, interpolation=cv2.INTER_AREA) for p in images]
    for _ in range(repeat):
        for f in frames:
            w.write(f)
    w.release()
    return path


def mosaic(images: list[Path], rows: int, cols: int, tile: int = 256) -> np.ndarray:
    """A large frame made of real 256x256 crops (row-major), like the photos SDNET2018 was cut from."""
    out = np.zeros((rows * tile, cols * tile, 3), np.uint8)
    for i, p in enumerate(images[: rows * cols]):
        r, c = divmod(i, cols)
        out[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = cv2.resize(cv2.imread(str(p)), (tile, tile))
    return out


@functools.lru_cache(maxsize=None)
def rtsp_unavailable() -> str | None:
    """None when the GStreamer RTSP server can run here, else what is missing."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = ("import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "import sys; sys.exit(0 if all(Gst.ElementFactory.find(e) for e in "
             "('x264enc','rtph264pay','avidemux','jpegdec')) else 3)")
    r = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=60)
    if r.returncode == 3:
        return "GStreamer plugins missing (gstreamer1.0-plugins-good/-ugly)"
    if r.returncode:
        return "GStreamer RTSP server bindings missing (python3-gi gir1.2-gst-rtsp-server-1.0)"
    return None


@functools.lru_cache(maxsize=None)
def ffmpeg_unavailable() -> str | None:
    exe = shutil.which("ffmpeg")
    if exe is None:
        return "ffmpeg not installed (apt install ffmpeg)"
    r = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=60)
    if "libx264" not in r.stdout:
        return "this ffmpeg has no libx264 encoder"
    return None


def gst_launch_unavailable() -> str | None:
    if shutil.which("gst-launch-1.0") is None:
        return "gst-launch-1.0 not installed (apt install gstreamer1.0-tools)"
    r = subprocess.run(["gst-inspect-1.0", "y4menc"], capture_output=True, timeout=60)
    if r.returncode:
        return "GStreamer y4menc missing (gstreamer1.0-plugins-good)"
    return None


def _listening(port: int) -> bool:
    # Read the kernel's socket table instead of connecting: ``ffmpeg -listen 1`` serves exactly
    # one client, and a probe connection would be that client.
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            f = ln.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early: {proc.stderr.read().decode(errors='replace') if proc.stderr else ''}")
        if _listening(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout} s")


class _Server:
    proc: subprocess.Popen | None = None

    def kill(self) -> None:
        """Die mid-stream, like a drone link that drops (SIGKILL: no goodbye)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.kill()


class RtspServer(_Server):
    """``rtsp://127.0.0.1:PORT/live`` serving a video file (GStreamer RTSP server)."""

    def __init__(self, video: Path, port: int | None = None):
        self.video = Path(video)
        self.port = port or free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/live"

    def start(self) -> "RtspServer":
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(HERE / "rtsp_server.py"), str(self.port), str(self.video)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if b"READY" not in line:
            err = self.proc.stderr.read().decode(errors="replace")
            self.kill()
            raise RuntimeError(f"RTSP server did not start: {err[-500:]}")
        _wait_port(self.port, self.proc)
        return self


class HttpTsServer(_Server):
    """``http://127.0.0.1:PORT/live.ts``: ffmpeg plays a file in real time as H.264 MPEG-TS to one client."""

    def __init__(self, video: Path, port: int | None = None):
        self.video = Path(video)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/live.ts"

    def start(self) -> "HttpTsServer":
        self.proc = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", str(self.video), "-c:v", "libx264",
             "-preset", "ultrafast", "-tune", "zerolatency", "-g", "10", "-f", "mpegts", "-listen", "1", self.url],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_port(self.port, self.proc)
        return self


class MjpegServer(_Server):
    """``http://127.0.0.1:PORT/cam.mjpg``: real JPEG frames as multipart HTTP (``mjpeg_server.py``).

    Args:
        images: Frames to cycle through.
        fps: Frame rate.
        stall_after: Frames per connection before it goes silent but stays open (0: never).
    """

    def __init__(self, images: list[Path], fps: float = 25.0, stall_after: int = 0, port: int | None = None):
        self.images = [str(p) for p in images]
        self.fps = fps
        self.stall_after = stall_after
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/cam.mjpg"

    def url_with(self, userinfo: str = "", query: str = "") -> str:
        """The address with credentials typed in (``user:pass@``) and/or a query string."""
        at = f"{userinfo}@" if userinfo else ""
        return f"http://{at}127.0.0.1:{self.port}/cam.mjpg" + (f"?{query}" if query else "")

    def start(self) -> "MjpegServer":
        import sys

        self.proc = subprocess.Popen([sys.executable, str(HERE / "mjpeg_server.py"), str(self.port), str(self.fps),
                                      str(self.stall_after), *self.images],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if b"READY" not in self.proc.stdout.readline():
            err = self.proc.stderr.read().decode(errors="replace")
            self.kill()
            raise RuntimeError(f"MJPEG server did not start: {err[-500:]}")
        _wait_port(self.port, self.proc)
        return self
