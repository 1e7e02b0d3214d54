"""The inspection loop end to end with a real model, real files and a real HTTP stream that dies."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgecrack.errors import ConfigError
from edgecrack.loop.config import RunConfig, SourceOptions
from edgecrack.loop.runner import run
from edgecrack.loop.types import STAGES, Sink

from streaming.helpers import HttpTsServer, ffmpeg_unavailable, mosaic, write_video


class Collect(Sink):
    def __init__(self):
        self.results = []
        self.events = []
        self.info = None
        self.closed_with = "not closed"

    def open(self, info):
        self.info = info

    def write(self, r):
        self.results.append(r)

    def event(self, ev):
        self.events.append(ev)

    def close(self, summary):
        self.closed_with = summary


def cfg(source, model, **kw) -> RunConfig:
    kw.setdefault("handle_signals", False)
    return RunConfig(source=str(source), model=str(model), **kw)


def test_folder_run_matches_predict(tiny_run, holdout_deck):
    """Same images, same model: the loop's verdicts and probabilities are predict's."""
    from edgecrack.data import list_images
    from edgecrack.evaluate import predict_files
    from edgecrack.runtime import open_backend

    c = Collect()
    s = run(cfg(holdout_deck, tiny_run, batch=8), sinks=[c])
    paths = list_images(holdout_deck)
    preds, skipped = predict_files(open_backend(tiny_run, "onnxruntime-cpu"), paths)
    assert not skipped and s.frames == len(paths) == 40 and s.tiles == 40
    assert [Path(r.frame.path) for r in c.results] == paths
    assert [r.label for r in c.results] == [p.predicted for p in preds]
    np.testing.assert_allclose([r.probability for r in c.results], [p.probability for p in preds], atol=1e-5)
    assert s.cracked_frames == sum(p.predicted == "CD" for p in preds)
    assert s.stop_reason == "all images read" and s.source["kind"] == "images"
    assert c.closed_with is s and c.info.threshold == pytest.approx(json.loads((tiny_run / "model.onnx.json").read_text())["threshold"])


def test_video_every_frame_batch_invariant_with_stage_times(tiny_run, tmp_path, holdout_deck):
    imgs = sorted(holdout_deck.glob("*/*.jpg"))[::2]
    video = write_video(tmp_path / "v.avi", imgs, fps=25.0)  # 20 frames
    runs = {}
    for b in (1, 8):
        c = Collect()
        s = run(cfg(video, tiny_run, batch=b), sinks=[c])
        runs[b] = (s, c)
    s, c = runs[8]
    assert s.frames == 20 and s.source["dropped"] == 0 and s.stop_reason == "end of video"
    assert [r.frame.index for r in c.results] == list(range(20))
    assert [r.frame.position_ms for r in c.results] == pytest.approx([40.0 * i for i in range(20)])
    np.testing.assert_allclose([r.score for r in c.results], [r.score for r in runs[1][1].results], atol=1e-5)
    for k in STAGES:
        assert s.stages[k]["total_s"] > 0, k
        assert s.stages[k]["max_ms"] >= s.stages[k]["p50_ms"] > 0, k
    assert s.stages["inference"]["total_s"] > s.stages["postprocess"]["total_s"]
    assert s.stages["latency"]["p50_ms"] > 0
    r = c.results[3]
    assert set(r.stages) == set(STAGES) and r.latency_ms >= r.stages["inference"]
    # seconds is rounded to 1 ms: a fast run (the tiny model takes ~30 ms) carries that rounding
    assert s.fps == pytest.approx(s.frames / s.seconds, rel=max(1e-2, 0.0006 / s.seconds))


@pytest.mark.slow  # trains the session model when no other test has
def test_tiled_frames_and_smoothing(trained_run, tmp_path, deck_dir):
    """Needs a trained model: crack-heavy mosaics must score above crack-free ones."""
    cd = sorted((deck_dir / "CD").glob("*.jpg"))
    ud = sorted((deck_dir / "UD").glob("*.jpg"))
    # 4 frames of 512x768 (2x3 tiles of real deck images), alternating crack-heavy / crack-free
    frames = [mosaic(cd[i * 6:(i + 1) * 6] if i % 2 == 0 else ud[i * 6:(i + 1) * 6], 2, 3) for i in range(4)]
    import cv2

    video = tmp_path / "big.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (768, 512))
    for f in frames:
        w.write(f)
    w.release()
    c = Collect()
    s = run(cfg(video, trained_run, tile=256, batch=4, smooth=2), sinks=[c])
    assert s.frames == 4 and s.tiles == 24 and s.tiles_per_s > 0
    assert all((r.grid.rows, r.grid.cols) == (2, 3) for r in c.results)
    raw = [r.raw_map for r in c.results]
    np.testing.assert_allclose(c.results[0].crack_map, raw[0], atol=1e-6)
    for i in (1, 2, 3):
        np.testing.assert_allclose(c.results[i].crack_map, (raw[i - 1] + raw[i]) / 2, atol=1e-6)
    for r in c.results:
        assert r.cracked_tiles == int((r.crack_map >= r.threshold).sum())
        assert r.score == pytest.approx(float(r.crack_map.max()))
    # The crack-heavy mosaics score higher than the crack-free ones before smoothing.
    assert raw[0].mean() > raw[1].mean() and raw[2].mean() > raw[3].mean()


def test_threshold_override_and_min_tiles(tiny_run, holdout_deck):
    c0, c1 = Collect(), Collect()
    s0 = run(cfg(holdout_deck / "UD", tiny_run, threshold=0.0, max_frames=6), sinks=[c0])
    s1 = run(cfg(holdout_deck / "UD", tiny_run, threshold=1.0, max_frames=6), sinks=[c1])
    assert s0.frames == 6 and s0.stop_reason == "max frames (6)"
    assert s0.cracked_frames == 6 and all(r.label == "CD" for r in c0.results)
    assert s1.cracked_frames == 0 and all(r.label == "UD" for r in c1.results)
    np.testing.assert_allclose([r.probability for r in c1.results], [1 - r.score for r in c1.results])


@pytest.mark.parametrize("kw,msg", [
    (dict(batch=0), "--batch must be >= 1"),
    (dict(tile=256, stride=512), "--stride must be in 1..256"),
    (dict(edge="wrap"), "unknown --edge"),
    (dict(threshold=1.5), "--threshold must be within 0..1"),
    (dict(logs=["out.txt"]), "name it"),
    (dict(overlay="glow"), "unknown --overlay"),
    (dict(max_tiles=-1), "--max-tiles must be >= 0"),
    (dict(source_options=SourceOptions(max_pixels=-5)), "--max-pixels must be >= 0"),
    (dict(source_options=SourceOptions(prefetch_bytes=0)), "--queue-mb must be > 0"),
    (dict(source_options=SourceOptions(max_abandoned=-1)), "--max-abandoned must be >= 0"),
])
def test_bad_options_fail_before_anything_opens(kw, msg, tmp_path):
    with pytest.raises(ConfigError, match=msg) as e:
        run(cfg(tmp_path / "nothing-here", tmp_path / "no-model", **kw))
    assert msg in str(e.value)


def test_smoothing_a_folder_is_refused(tiny_run, holdout_deck):
    with pytest.raises(ConfigError, match="--smooth averages consecutive video frames"):
        run(cfg(holdout_deck, tiny_run, smooth=3))


@pytest.mark.network
def test_http_stream_dies_mid_run_and_the_loop_reconnects(tiny_run, tmp_path, holdout_deck):
    """ffmpeg serves H.264/MPEG-TS over HTTP, is killed mid-stream, and restarted on the same port."""
    if (why := ffmpeg_unavailable()):
        pytest.skip(why)
    video = write_video(tmp_path / "src.avi", sorted(holdout_deck.glob("*/*.jpg")), fps=25.0, repeat=6)  # 9.6 s
    srv = HttpTsServer(video).start()
    log = tmp_path / "live.jsonl"
    restarted = threading.Event()

    def chaos():
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            n = log.read_text().count('"type":"frame"') if log.exists() else 0
            if n >= 10:
                srv.kill()
                time.sleep(0.8)
                srv.start()
                restarted.set()
                return
            time.sleep(0.05)

    th = threading.Thread(target=chaos, daemon=True)
    th.start()
    try:
        s = run(cfg(srv.url, tiny_run, logs=[str(log)], max_frames=30,
                    source_options=SourceOptions(watchdog_s=4.0, backoff_s=0.2, backoff_max_s=0.5)))
    finally:
        th.join(timeout=30)
        srv.kill()
    assert restarted.is_set()
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    kinds = [r["kind"] for r in recs if r["type"] == "event"]
    assert kinds[0] == "connected" and "lost" in kinds and "reconnected" in kinds[kinds.index("lost"):]
    frames = [r for r in recs if r["type"] == "frame"]
    assert s.frames == 30 == len(frames) and s.source["reconnects"] >= 1
    assert [f["index"] for f in frames] == list(range(30))
    lost_at = next(r["time"] for r in recs if r.get("kind") == "lost")
    assert sum(f["time"] > lost_at for f in frames) >= 5  # the loop kept going after the link came back
    assert recs[0]["type"] == "start" and recs[-1]["type"] == "summary"
    assert recs[-1]["stop_reason"] == "max frames (30)" and recs[-1]["source"]["live"] is True
