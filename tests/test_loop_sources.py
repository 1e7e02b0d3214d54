"""Frame sources on real files, real GStreamer pipelines and a real RTSP server on loopback."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecrack.errors import SourceError
from edgecrack.preprocess import decode_image
from edgecrack.loop.config import SourceOptions
from edgecrack.loop.sources import (ImageFilesSource, LiveSource, VideoFileSource, Y4MReader, appsink_pipeline, csi_pipeline,
                                    open_source, y4m_pipeline)

from streaming.helpers import RtspServer, gst_launch_unavailable, rtsp_unavailable, write_video


def drain(src, limit: int = 10_000, timeout: float = 5.0):
    out = []
    t0 = time.monotonic()
    while len(out) < limit and time.monotonic() - t0 < timeout:
        f = src.next_frame(0.2)
        if f is not None:
            out.append(f)
        elif src.ended:
            break
    return out


@pytest.fixture()
def messy_folder(tmp_path, small_deck):
    """8 real images in two sub-folders plus an empty, a truncated, a non-image and a hidden file."""
    root = tmp_path / "shots"
    good = []
    for cls in ("CD", "UD"):
        (root / cls).mkdir(parents=True)
        for p in sorted((small_deck / cls).glob("*.jpg"))[:4]:
            shutil.copy(p, root / cls / p.name)
            good.append(root / cls / p.name)
    (root / "CD" / "empty.jpg").write_bytes(b"")
    data = (small_deck / "UD").glob("*.jpg").__next__().read_bytes()
    (root / "UD" / "cut.jpg").write_bytes(data[: len(data) // 2])
    (root / "UD" / "notes.txt").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(data)
    return root, sorted(good)


def test_folder_every_image_in_order_corrupt_skipped_and_counted(messy_folder):
    root, good = messy_folder
    src = open_source(str(root))
    assert isinstance(src, ImageFilesSource) and not src.live
    with src:
        frames = drain(src)
    assert [Path(f.path) for f in frames] == good
    assert [f.index for f in frames] == list(range(len(good)))
    np.testing.assert_array_equal(frames[3].image, decode_image(good[3]))
    assert src.skipped == 2 and src.frames == 8 and src.ended
    ev = src.events()
    assert sorted(e.kind for e in ev) == ["skipped", "skipped"]
    msgs = " ".join(e.message for e in ev)
    assert "empty.jpg: empty file" in msgs and "cut.jpg" in msgs


def test_glob_and_single_image(messy_folder):
    root, good = messy_folder
    with open_source(str(root / "*" / "7*.jpg")) as src:
        frames = drain(src)
    assert [Path(f.path) for f in frames] == sorted(p for p in good if p.name.startswith("7"))
    with open_source(str(good[0])) as src:
        (f,) = drain(src)
    assert f.name == good[0].name and src.ended


def test_video_file_every_frame_in_order_with_positions(tmp_path, small_deck):
    imgs = sorted((small_deck / "CD").glob("*.jpg"))[:12]
    video = write_video(tmp_path / "clip.avi", imgs, fps=20.0)
    ref = cv2.VideoCapture(str(video))
    want = [ref.read()[1] for _ in range(12)]
    src = open_source(str(video), SourceOptions(prefetch=3))
    assert isinstance(src, VideoFileSource)
    with src:
        assert src.fps == pytest.approx(20.0)
        frames = drain(src)
    assert len(frames) == 12 and src.ended and src.dropped == 0
    assert [f.source_frame for f in frames] == list(range(12))
    assert [f.position_ms for f in frames] == pytest.approx([i * 50.0 for i in range(12)])
    for f, w in zip(frames, want):
        np.testing.assert_array_equal(f.image, w)
    assert frames[5].position() == {"frame": 5, "ms": 250.0}


@pytest.mark.parametrize("spec,msg", [
    ("/nonexistent/flight.mp4", "source not found: /nonexistent/flight.mp4"),
    ("ftp://host/x", "unsupported source scheme ftp://"),
    ("", "empty source"),
    ("csi://zero", "bad CSI camera address"),
    ("/tmp/*.definitely-no-such-suffix-*.jpg", "no images match"),
])
def test_bad_sources_say_what_and_how(spec, msg):
    with pytest.raises(SourceError, match=msg.replace("*", r"\*").replace(".", r"\.")) as e:
        open_source(spec)
    if spec.startswith("/nonexistent"):
        assert "rtsp://" in e.value.hint  # lists the forms a source can take


def test_empty_folder_and_broken_video(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images in folder"):
        open_source(str(tmp_path / "empty"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    with pytest.raises(SourceError, match="cannot open video"):
        open_source(str(bad)).start()
    (tmp_path / "zero.avi").write_bytes(b"")
    with pytest.raises(SourceError, match="video file is empty"):
        open_source(str(tmp_path / "zero.avi")).start()


def test_missing_camera_fails_fast_with_a_hint():
    src = open_source("57")
    assert isinstance(src, LiveSource) and src.kind == "camera"
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="camera 57: /dev/video57 does not exist") as e:
        src.start()
    assert time.monotonic() - t0 < 2.0
    assert "v4l2-ctl" in e.value.hint
    assert open_source("/dev/video3").description == "camera 3"


def test_missing_camera_with_wait_retries_with_backoff_then_fails():
    src = open_source(0 if not Path("/dev/video0").exists() else 63, SourceOptions(wait_s=0.6, backoff_s=0.1))
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"kept trying for 0\.6 s"):
        src.start()
    assert 0.5 < time.monotonic() - t0 < 3.0
    kinds = [e.kind for e in src.events()]
    assert kinds.count("reconnecting") >= 2  # 0.1, 0.2, 0.3 (capped by the deadline)


def test_csi_pipeline_strings():
    want = ("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=60/1,format=NV12 ! "
            "nvvidconv flip-method=2 ! video/x-raw,width=1280,height=720,format=BGRx ! videoconvert ! "
            "video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false")
    assert csi_pipeline(1, 1280, 720, 60, 2) == want
    y4m = csi_pipeline(0, 1920, 1080, 29.97, sink="y4m")
    assert "framerate=29970/1000" in y4m
    assert y4m.endswith("nvvidconv flip-method=0 ! video/x-raw,width=1920,height=1080,format=I420 ! y4menc ! fdsink fd=1")
    src = open_source("csi://1?width=1280&height=720&fps=60&flip=2")
    assert src.kind == "csi" and src.live and src.description == "csi://1 1280x720@60"


def test_gstreamer_pipeline_tails():
    p = "videotestsrc ! video/x-raw,width=64,height=48 ! appsink drop=1"
    assert y4m_pipeline(p) == "videotestsrc ! video/x-raw,width=64,height=48 ! videoconvert ! video/x-raw,format=I420 ! y4menc ! fdsink fd=1"
    assert appsink_pipeline(p) == p
    assert appsink_pipeline("videotestsrc").endswith("! appsink drop=true max-buffers=1 sync=false")
    assert open_source(p).kind == "gstreamer"


def test_y4m_reader_decodes_i420(tmp_path):
    import io

    rng = np.random.default_rng(1)
    bgr = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (64, 48), interpolation=cv2.INTER_NEAREST)
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    stream = io.BytesIO(b"YUV4MPEG2 W64 H48 F25:1 Ip A1:1 C420jpeg\n" + (b"FRAME\n" + yuv.tobytes()) * 2 + b"FRAME\n" + b"\x00" * 10)
    r = Y4MReader(stream)
    assert (r.width, r.height, r.fps) == (64, 48, 25.0)
    a, b = r.read(), r.read()
    np.testing.assert_array_equal(a, cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420))
    assert np.abs(a.astype(int) - bgr).mean() < 8
    np.testing.assert_array_equal(a, b)
    assert r.read() is None  # truncated frame: the stream is over, not garbage
    with pytest.raises(SourceError, match="is odd"):
        Y4MReader(io.BytesIO(b"YUV4MPEG2 W63 H48 F25:1 C420jpeg\n"))


# -- live: real GStreamer (gst-launch) ----------------------------------------------------
LIVE_TEST = "videotestsrc is-live=true pattern=smpte ! video/x-raw,width=160,height=120,framerate=30/1 ! appsink"


@pytest.mark.network
def test_live_source_keeps_newest_frame_and_counts_drops():
    if (why := gst_launch_unavailable()):
        pytest.skip(why)
    src = open_source(LIVE_TEST, SourceOptions(gstreamer="gst-launch"))
    got = []
    with src:
        while len(got) < 6:
            f = src.next_frame(2.0)
            assert f is not None, "no frame from a live videotestsrc"
            got.append(f)
            time.sleep(0.15)  # a slow consumer: ~4 frames at 30 fps arrive meanwhile
    assert got[0].image.shape == (120, 160, 3)
    # smpte bars: the first bar (white/grey) is bright, the last bottom-right block is dark
    assert got[0].image[10, 5].mean() > 150
    assert [f.index for f in got] == list(range(6))
    gaps = np.diff([f.source_frame for f in got])
    assert (gaps >= 2).all()
    assert src.dropped >= 12
    # every captured frame was delivered, dropped, or is the newest one still waiting
    assert src.captured == len(got) + src.dropped + (src._latest is not None)


@pytest.mark.network
def test_watchdog_restarts_a_stalled_capture():
    """A hung capture (the gst-launch process frozen with SIGSTOP) is detected and replaced."""
    if (why := gst_launch_unavailable()):
        pytest.skip(why)
    import os
    import signal

    src = open_source(LIVE_TEST, SourceOptions(gstreamer="gst-launch", watchdog_s=0.8, backoff_s=0.1))
    with src:
        assert src.next_frame(3.0) is not None
        frozen = src._cap.proc
        os.kill(frozen.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        after = None
        while time.monotonic() - t0 < 6.0:
            f = src.next_frame(0.2)
            if f is not None and time.monotonic() - t0 > 0.5:
                after = f
                break
        kinds = [e.kind for e in src.events()]
    assert after is not None, f"no frame after the stall; events {kinds}"
    assert "stalled" in kinds and "reconnected" in kinds
    assert src.reconnects == 1
    assert frozen.poll() is not None  # the frozen process was killed, not leaked


@pytest.mark.network
def test_gstreamer_pipeline_is_split_as_a_shell_would():
    """A pipeline users test as ``gst-launch-1.0 PIPELINE`` in a shell: single-quoted caps with spaces."""
    if (why := gst_launch_unavailable()):
        pytest.skip(why)
    quoted = "videotestsrc is-live=true ! 'video/x-raw, width=96, height=64, framerate=30/1' ! appsink"
    with open_source(quoted, SourceOptions(gstreamer="gst-launch")) as src:
        f = src.next_frame(5.0)
    assert f is not None and f.image.shape == (64, 96, 3)
    with pytest.raises(SourceError, match="cannot be split into arguments"):
        open_source("videotestsrc ! 'video/x-raw ! appsink", SourceOptions(gstreamer="gst-launch")).start()


@pytest.mark.network
def test_bad_gstreamer_pipeline_is_a_clear_error():
    if (why := gst_launch_unavailable()):
        pytest.skip(why)
    src = open_source("nosuchelement0 ! appsink", SourceOptions(gstreamer="gst-launch"))
    with pytest.raises(SourceError, match="GStreamer pipeline failed to start.*nosuchelement0"):
        src.start()


# -- live: real RTSP server on loopback ---------------------------------------------------
@pytest.mark.network
def test_rtsp_stream_server_dies_and_comes_back(tmp_path, small_deck):
    if (why := rtsp_unavailable()):
        pytest.skip(why)
    imgs = sorted((small_deck / "CD").glob("*.jpg"))[:20] + sorted((small_deck / "UD").glob("*.jpg"))[:20]
    video = write_video(tmp_path / "live.avi", imgs, fps=25.0, repeat=5)  # 8 s of real deck images
    srv = RtspServer(video)
    opts = SourceOptions(watchdog_s=2.0, backoff_s=0.2, backoff_max_s=0.8)
    with srv:
        src = open_source(srv.url, opts)
        assert src.kind == "stream" and src.live
        with src:
            first = drain(src, limit=10, timeout=15)
            assert len(first) == 10 and first[0].image.shape == (256, 256, 3)
            # H.264 at zerolatency keeps the picture: frame content matches one of the deck images.
            refs = [cv2.resize(cv2.imread(str(p)), (256, 256)) for p in imgs]
            err = min(np.abs(first[-1].image.astype(int) - r).mean() for r in refs)
            assert err < 12
            srv.kill()
            t0 = time.monotonic()
            while src.state != "reconnecting" and time.monotonic() - t0 < 6:
                src.next_frame(0.1)
            assert src.state == "reconnecting"
            time.sleep(0.5)  # some refused reconnects
            srv.start()
            later = drain(src, limit=5, timeout=15)
            kinds = [e.kind for e in src.events()]
    assert len(later) == 5, f"no frames after the server came back; events {kinds}"
    assert kinds[0] == "connected" and "lost" in kinds and "reconnected" in kinds
    assert kinds.index("lost") < kinds.index("reconnected")
    assert "reconnecting" in kinds[kinds.index("lost"):kinds.index("reconnected")]
    assert src.reconnects == 1
    assert later[0].source_frame > first[-1].source_frame


@pytest.mark.network
def test_stream_give_up_ends_the_source(tmp_path, small_deck):
    if (why := rtsp_unavailable()):
        pytest.skip(why)
    video = write_video(tmp_path / "short.avi", sorted((small_deck / "CD").glob("*.jpg"))[:10], fps=25.0)
    with RtspServer(video) as srv:
        src = open_source(srv.url, SourceOptions(watchdog_s=1.0, backoff_s=0.1, backoff_max_s=0.2, give_up_s=1.5))
        with src:
            frames = drain(src, limit=5, timeout=15)
            srv.kill()
            t0 = time.monotonic()
            frames += drain(src, timeout=15)
            waited = time.monotonic() - t0
            kinds = [e.kind for e in src.events()]
    assert src.ended and frames
    assert kinds[-1] == "gave_up" and src.end_reason == "no frame for 1.5 s"
    assert 1.0 < waited < 6.0
