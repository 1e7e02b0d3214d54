"""Outputs of the loop: console lines, JSONL/CSV logs, annotated video and flagged frames."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil

import cv2
import pytest
from rich.console import Console

from edgecrack.errors import ConfigError
from edgecrack.loop.config import RunConfig
from edgecrack.loop.runner import run
from edgecrack.loop.sinks import CSV_COLUMNS, ConsoleSink, display_problem, sinks_from_config

from streaming.helpers import mosaic, write_video


def cfg(source, model, **kw) -> RunConfig:
    kw.setdefault("handle_signals", False)
    return RunConfig(source=str(source), model=str(model), **kw)


def text_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=200, force_terminal=False, color_system=None), buf


@pytest.fixture(scope="module")
def clip(tmp_path_factory, holdout_deck):
    """12 frames: 6 crack images then 6 crack-free ones, 25 fps."""
    imgs = sorted((holdout_deck / "CD").glob("*.jpg"))[:6] + sorted((holdout_deck / "UD").glob("*.jpg"))[:6]
    return write_video(tmp_path_factory.mktemp("clip") / "clip.avi", imgs, fps=25.0)


def test_jsonl_and_csv_logs_complete_and_appended(tiny_run, clip, tmp_path):
    jl, cv = tmp_path / "logs" / "run.jsonl", tmp_path / "logs" / "run.csv"
    s = run(cfg(clip, tiny_run, logs=[str(jl), str(cv)]))
    recs = [json.loads(x) for x in jl.read_text().splitlines()]
    assert [r["type"] for r in recs] == ["start"] + ["frame"] * 12 + ["summary"]
    start, frames, summary = recs[0], recs[1:-1], recs[-1]
    assert start["backend"]["backend"] == "onnxruntime-cpu" and start["labels"] == ["CD", "UD"]
    assert start["config"]["source"] == str(clip) and start["source_kind"] == "video" and start["fps"] == 25.0
    for i, f in enumerate(frames):
        assert f["index"] == i and f["position"] == {"frame": i, "ms": pytest.approx(40.0 * i)}
        assert f["tiles"] == 1 and f["grid"] == [1, 1] and f["frame_size"] == [256, 256]
        assert f["cracked"] == (f["score"] >= start["threshold"]) and f["label"] == ("CD" if f["cracked"] else "UD")
        assert set(f["stages"]) == {"capture", "preprocess", "inference", "postprocess"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", f["utc"])
    assert summary["frames"] == 12 and summary["cracked_frames"] == s.cracked_frames
    assert summary["outputs"]["log_csv"] == str(cv)
    rows = list(csv.reader(cv.open()))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 13
    for row, f in zip(rows[1:], frames):
        d = dict(zip(CSV_COLUMNS, row))
        assert int(d["index"]) == f["index"] and d["label"] == f["label"] and float(d["p"]) == pytest.approx(f["p"])
        assert float(d["position_ms"]) == pytest.approx(f["position"]["ms"])
    # A second run (a restarted service) appends: nothing of the first flight is lost.
    run(cfg(clip, tiny_run, logs=[str(jl), str(cv)], max_frames=3))
    recs2 = [json.loads(x) for x in jl.read_text().splitlines()]
    assert recs2[:14] == recs and [r["type"] for r in recs2[14:]] == ["start"] + ["frame"] * 3 + ["summary"]
    rows2 = list(csv.reader(cv.open()))
    assert len(rows2) == 16 and rows2[13][0] != "time"  # one header per file


def test_console_lines_match_the_tutorial_format(tiny_run, holdout_deck, tmp_path):
    from edgecrack.data import list_images
    from edgecrack.evaluate import predict_files
    from edgecrack.runtime import open_backend

    folder = tmp_path / "f"
    shutil.copytree(holdout_deck / "CD", folder / "CD")
    (folder / "CD" / "zz-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    con, buf = text_console()
    errc, errbuf = text_console()
    run(cfg(folder, tiny_run, max_frames=5), sinks=[ConsoleSink(con, errc)])
    preds, _ = predict_files(open_backend(tiny_run, "onnxruntime-cpu"), list_images(folder)[:5])
    assert buf.getvalue().splitlines() == [p.line() for p in preds]
    assert buf.getvalue().splitlines()[0].startswith("Image: ") and "| Actual: CD | Predicted: " in buf.getvalue()
    # max_frames stops before the broken file; a full run reports it as an event, not a crash
    con2, buf2 = text_console()
    s = run(cfg(folder, tiny_run), sinks=[ConsoleSink(con2, errc)])
    assert s.frames == 20 and s.source["skipped"] == 1
    assert "skipped: " in errbuf.getvalue() and "zz-broken.jpg" in errbuf.getvalue()


def test_console_tiled_image_line_and_video_status(tiny_run, deck_dir, clip, tmp_path):
    big = mosaic(sorted((deck_dir / "CD").glob("*.jpg"))[100:104], 2, 2)
    cv2.imwrite(str(tmp_path / "photo.png"), big)
    con, buf = text_console()
    errc, errbuf = text_console()
    run(cfg(tmp_path / "photo.png", tiny_run), sinks=[ConsoleSink(con, errc)])
    assert re.fullmatch(r"Image: photo\.png \| Predicted: (CD|UD) \(p=\d\.\d\d\) \| cracked tiles: [0-4]/4\n", buf.getvalue())
    # What runs where goes to the other console: results stay clean to pipe.
    assert re.match(rf"run {re.escape(str(tmp_path / 'photo.png'))} \(images\) with backend: onnxruntime-cpu .*"
                    r"threshold 0\.\d{3} on CD\n", errbuf.getvalue())
    con, buf = text_console()
    run(cfg(clip, tiny_run), sinks=[ConsoleSink(con, errc)])
    # not a terminal: a status line at the first frame, then every 5 s (never one per frame)
    lines = buf.getvalue().splitlines()
    assert 1 <= len(lines) <= 3
    assert re.fullmatch(r"frame 0 \| \d+\.\d fps \| latency \d+ ms \| cracked tiles [01]/1 \| drops 0 \| (CD|ud|UD)", lines[0])


def test_save_video_and_flagged_frames(tiny_run, clip, tmp_path):
    out = tmp_path / "out" / "annotated.mp4"
    flagged = tmp_path / "flagged"
    s = run(cfg(clip, tiny_run, save_video=str(out), save_flagged=str(flagged), overlay="both"))
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    assert len(frames) == 12 and frames[0].shape == (256, 256, 3)
    assert [p.name for p in out.parent.iterdir()] == ["annotated.mp4"]  # temp file renamed, none left
    files = sorted(flagged.iterdir())
    assert len(files) == s.cracked_frames == s.outputs["flagged"] >= 1
    assert all(re.fullmatch(r"\d{6}_frame_\d+\.jpg", p.name) for p in files)
    img = cv2.imread(str(files[0]))
    red = (img[..., 2] > 180) & (img[..., 1] < 80) & (img[..., 0] < 80)
    assert red[60:250, 0:2].mean() > 0.9  # the cracked tile's box runs down the left edge (under the banner)
    assert s.outputs["video"] == str(out) and s.outputs["video_frames"] == 12


def test_output_options_are_checked_up_front(tmp_path):
    with pytest.raises(ConfigError, match="unsupported container .gif"):
        sinks_from_config(RunConfig(source="x", model="y", save_video=str(tmp_path / "a.gif")))
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot create"):
        sinks_from_config(RunConfig(source="x", model="y", save_flagged=str(tmp_path / "file" / "sub")))
    why = display_problem()
    if why is not None:
        with pytest.raises(ConfigError, match="--show cannot open a window: " + re.escape(why)):
            sinks_from_config(RunConfig(source="x", model="y", show=True))
