"""``edgecrack report`` as people use it: geotagged JPEGs (EXIF written here) -> the real ``edgecrack run`` loop
with a real model -> the report, checked against the EXIF, merged across shards, and opened in headless Chromium."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from html import escape
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from edgecrack.cli import app

from streaming.helpers import write_video
from test_geo import dji_srt, write_geotagged

runner = CliRunner()
NO_GPS = ("DJI_0004.JPG", "DJI_0009.JPG")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


CHROMIUM = _chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian package "
                                                             "'chromium', in .ci/apt-packages.txt; CI installs it)")


def _browser(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--disable-extensions", *args], capture_output=True, text=True,
                          timeout=120)


def phone_wrapper(out: Path, width: int) -> Path:
    """A page showing ``out/index.html`` in a ``width`` px iframe (srcdoc: same origin, so it can measure it)."""
    page = (out / "index.html").read_text()
    wrapper = out / f"phone-{width}.html"
    wrapper.write_text(
        f'<!doctype html><html><body style="margin:0"><iframe id="f" style="width:{width}px;height:800px;border:0" '
        f'srcdoc="{escape(page, quote=True)}"></iframe><script>var f=document.getElementById("f");'
        'f.onload=function(){var d=f.contentDocument;document.body.setAttribute("data-probe",'
        'd.documentElement.scrollWidth+"x"+f.contentWindow.innerWidth);}</script></body></html>')
    return wrapper.resolve()


@pytest.fixture(scope="module")
def geo_flight(tmp_path_factory, holdout_deck) -> tuple[Path, dict[str, tuple[float, float, float] | None]]:
    """12 real deck images (6 cracked, 6 not) along a 44 m line, in two pass folders; two carry no EXIF."""
    root = tmp_path_factory.mktemp("geoflight") / "shots"
    cd = sorted((holdout_deck / "CD").glob("*.jpg"))[:6]
    ud = sorted((holdout_deck / "UD").glob("*.jpg"))[:6]
    imgs = [p for pair in zip(cd, ud) for p in pair]
    expected: dict[str, tuple[float, float, float] | None] = {}
    t0 = datetime(2024, 6, 12, 9, 41, 3)
    for n, src in enumerate(imgs):
        folder = root / ("pass1" if n < 6 else "pass2")
        folder.mkdir(parents=True, exist_ok=True)
        name = f"DJI_{n:04d}.JPG"
        if name in NO_GPS:
            shutil.copy(src, folder / name)
            expected[name] = None
            continue
        lat, lon, alt = 41.7370213 + n * 3.3e-5, -111.8338127 + n * 1.9e-5, 1392.5 + n / 10
        write_geotagged(src, folder / name, lat, lon, alt, t0 + timedelta(seconds=2 * n), "-06:00", yaw=28.0)
        expected[name] = (lat, lon, alt)
    return root, expected


def _run(model: Path, source: Path, log: Path, *extra: str) -> None:
    r = runner.invoke(app, ["run", "--model", str(model), "--source", str(source), "--log", str(log), "--quiet", *extra])
    assert r.exit_code == 0, r.output


def _frames(log: Path) -> list[dict]:
    return [json.loads(x) for x in log.read_text().splitlines() if '"type":"frame"' in x]


@pytest.fixture(scope="module")
def flight_report(trained_run, geo_flight, tmp_path_factory):
    root, expected = geo_flight
    work = tmp_path_factory.mktemp("report")
    log = work / "flight.jsonl"
    _run(trained_run, root, log)
    r = runner.invoke(app, ["report", str(log), "--out", str(work / "out"), "--kml"])
    assert r.exit_code == 0, r.output
    return log, work / "out", expected, r.output


def test_log_records_carry_the_exif_position(flight_report):
    log, _, expected, _ = flight_report
    frames = _frames(log)
    assert len(frames) == 12
    for rec in frames:
        exp = expected[rec["name"]]
        if exp is None:
            assert rec["gps"] is None and rec["capture_time"] is None and rec["pose"] is None
            assert rec["label"] in ("CD", "UD")  # a frame without position is still inspected
        else:
            assert abs(rec["gps"]["lat"] - exp[0]) < 1e-9 and abs(rec["gps"]["lon"] - exp[1]) < 1e-9
            assert rec["gps"]["alt"] == pytest.approx(exp[2], abs=1e-6)
            assert re.fullmatch(r"2024-06-12T09:4\d:\d\d-06:00", rec["capture_time"])
            assert rec["pose"]["gimbal_yaw"] == 28.0 and rec["pose"]["gimbal_pitch"] == -89.9


def test_geojson_csv_kml_match_the_exif(flight_report):
    log, out, expected, output = flight_report
    flagged = [r for r in _frames(log) if r["cracked"]]
    assert 0 < len(flagged) < 12, "the tiny model should flag some of the 12 frames, not all"
    gj = json.loads((out / "findings.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == len(flagged)
    located = 0
    for feat in gj["features"]:
        props = feat["properties"]
        name = Path(props["file"]).name
        exp = expected[name]
        rec = next(r for r in flagged if r["name"] == name)
        assert props["p"] == pytest.approx(rec["score"], abs=1e-5)
        assert props["cracked_tiles"] == rec["cracked_tiles"] and props["tiles"] == 1
        if exp is None:
            assert feat["geometry"] is None and props["time"] is None
            continue
        located += 1
        lon, lat = feat["geometry"]["coordinates"]  # RFC 7946: longitude first
        assert feat["geometry"]["type"] == "Point"
        assert abs(lon - exp[1]) < 1e-6 and abs(lat - exp[0]) < 1e-6
        assert props["alt"] == pytest.approx(exp[2], abs=1e-6) and props["time"].endswith("-06:00")
    if located:
        w, s, e, n = gj["bbox"]
        assert w <= e and s <= n and -112 < w < -111 and 41 < s < 42
    rows = list(csv.DictReader((out / "findings.csv").open()))
    assert sorted(r["name"] for r in rows) == sorted(r["name"] for r in flagged)
    for r in rows:
        exp = expected[r["name"]]
        assert (r["lat"] == "") if exp is None else abs(float(r["lat"]) - exp[0]) < 1e-6
    kml = ET.parse(out / "findings.kml").getroot()
    ns = {"k": "http://www.opengis.net/kml/2.2"}
    points = kml.findall(".//k:Placemark/k:Point/k:coordinates", ns)
    assert len(points) == located
    assert len(kml.findall(".//k:LineString", ns)) == 1  # the track
    assert f"12 frames, {len(flagged)} flagged" in output


def test_index_html_is_self_contained(flight_report):
    log, out, _, _ = flight_report
    html = (out / "index.html").read_text()
    n_flag = sum(r["cracked"] for r in _frames(log))
    assert html.count('src="data:image/jpeg;base64,') == n_flag
    # nothing fetched: no external scripts, styles, images or fonts
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<link" not in html and "@import" not in html
    assert html.count('<figure class="card"') == n_flag
    assert '<polyline points="' in html and 'id="hist-svg"' in html and 'id="timeline-svg"' in html
    # each card links to its full image, relative to the report
    for href in re.findall(r'<figure class="card"[^>]*><a href="([^"]+)"', html):
        assert (out / href).resolve().is_file() and not href.startswith("/")


@needs_chromium
@pytest.mark.slow
def test_report_renders_in_headless_chromium(flight_report, tmp_path):
    log, out, _, _ = flight_report
    scores = sorted((r["score"] for r in _frames(log) if r["cracked"]), reverse=True)
    page = (out / "index.html").resolve().as_uri()
    r = _browser("--dump-dom", page)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    assert 'data-sorted="score"' in dom  # the script ran
    shown = [float(x) for x in re.findall(r'<figure class="card"[^>]*data-score="([\d.]+)"', dom)]
    assert shown == pytest.approx(scores, abs=1e-5)  # every flagged frame, highest score first
    assert f"{len(scores)} flagged frame{'s' if len(scores) != 1 else ''} shown, highest score first" in dom
    for width, height in ((1280, 1600), (390, 2400)):
        png = tmp_path / f"report-{width}.png"
        r = _browser(f"--screenshot={png}", f"--window-size={width},{height}", page)
        assert r.returncode == 0 and png.is_file(), r.stderr[-2000:]
        img = cv2.imread(str(png))
        assert img.shape[:2] == (height, width)
        # the dark header, red flagged points/scores and thumbnails all render
        assert (img[:40].mean() < 80) and img.std() > 30
        red = (img[..., 2] > 180) & (img[..., 1] < 80) & (img[..., 0] < 80)
        assert red.sum() > 100
    # readable on a phone: headless Chromium's window is at least 500 px wide, so the page is laid out at 390 px
    # in an iframe; nothing in it may be wider than that (no sideways scrolling)
    r = _browser("--dump-dom", "--window-size=500,800", phone_wrapper(out, 390).as_uri())
    scroll_w, inner_w = map(int, re.search(r'data-probe="(\d+)x(\d+)"', r.stdout).groups())
    assert inner_w == 390 and scroll_w <= inner_w


def test_merged_shards_deduplicate_and_keep_frames_without_position(trained_run, geo_flight, tmp_path):
    root, expected = geo_flight
    a, b = tmp_path / "logs" / "a.jsonl", tmp_path / "logs" / "b.jsonl"
    _run(trained_run, root / "pass1", a)
    _run(trained_run, root / "pass2", b, "--threshold", "0")  # every frame of this shard flagged
    _run(trained_run, root / "pass1", a)  # a re-run appended to the same log: 6 duplicates
    out = tmp_path / "merged"
    r = runner.invoke(app, ["report", str(a), str(b), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "12 frames" in r.output and "6 duplicate frame records merged" in r.output
    gj = json.loads((out / "findings.geojson").read_text())
    by_name = {Path(f["properties"]["file"]).name: f for f in gj["features"]}
    for n in range(6, 12):
        assert f"DJI_{n:04d}.JPG" in by_name  # threshold 0: all of pass2 flagged
    assert by_name["DJI_0009.JPG"]["geometry"] is None  # unlocated Feature, RFC 7946 section 3.2
    lon, lat = by_name["DJI_0010.JPG"]["geometry"]["coordinates"]
    assert abs(lat - expected["DJI_0010.JPG"][0]) < 1e-6 and abs(lon - expected["DJI_0010.JPG"][1]) < 1e-6
    html = (out / "index.html").read_text()
    assert "no position" in html and "6 frame record(s) appeared in more than one log" in html
    # --run-dir of the finished runs reads both logs the same way
    out2 = tmp_path / "from-dir"
    r = runner.invoke(app, ["report", "--run-dir", str(tmp_path / "logs"), "--out", str(out2)])
    assert r.exit_code == 0, r.output
    assert json.loads((out2 / "findings.geojson").read_text())["features"] == gj["features"]


def test_video_with_srt_report_saves_frames_and_positions(trained_run, deck_dir, tmp_path):
    imgs = sorted((deck_dir / "CD").glob("*.jpg"))[:5]
    video = write_video(tmp_path / "DJI_0100.avi", imgs, fps=10.0)
    cues = [(47.3769 + i * 1e-5, 8.5417 - i * 1e-5) for i in range(5)]
    (tmp_path / "DJI_0100.SRT").write_text(dji_srt(cues, datetime(2024, 6, 12, 9, 41, 3)), encoding="utf-8")
    log = tmp_path / "v.jsonl"
    _run(trained_run, video, log, "--threshold", "0")
    out = tmp_path / "rep"
    r = runner.invoke(app, ["report", str(log), "--out", str(out), "--tiles",
                            "https://tiles.example.org/{z}/{x}/{y}.png"])
    assert r.exit_code == 0, r.output
    gj = json.loads((out / "findings.geojson").read_text())
    assert len(gj["features"]) == 5
    for feat in gj["features"]:
        i = feat["properties"]["frame"]
        assert feat["geometry"]["coordinates"] == pytest.approx([cues[i][1], cues[i][0]], abs=1e-9)
        assert feat["properties"]["file"] == str(video)
    saved = sorted((out / "frames").glob("*.jpg"))
    assert len(saved) == 5  # a video frame has no file of its own: an annotated copy is linked
    first = cv2.imread(str(saved[0]))
    assert first.shape == (256, 256, 3)
    # the crack-map overlay is drawn (threshold 0: a red box around the one tile)
    assert (first[1, :, 2] > 200).mean() > 0.8 and (first[1, :, 1] < 60).mean() > 0.8
    html = (out / "index.html").read_text()
    assert html.count('href="frames/') == 5
    assert re.search(r'<image href="https://tiles\.example\.org/\d+/\d+/\d+\.png"', html)  # only when asked
    # a long flight: the gallery keeps the highest scores, the GIS files keep everything
    r = runner.invoke(app, ["report", str(log), "--out", str(tmp_path / "top2"), "--gallery-limit", "2"])
    assert r.exit_code == 0, r.output
    html = (tmp_path / "top2" / "index.html").read_text()
    shown = sorted(float(x) for x in re.findall(r'<figure class="card"[^>]*data-score="([\d.]+)"', html))
    top = sorted(json.loads(x)["score"] for x in log.read_text().splitlines() if '"type":"frame"' in x)[-2:]
    assert shown == pytest.approx(top, abs=1e-5) and "shows the 2 highest-scoring of 5 flagged frames" in html
    assert len(json.loads((tmp_path / "top2" / "findings.geojson").read_text())["features"]) == 5
    assert "tiles.example.org" not in html  # no tile server unless asked


@pytest.mark.parametrize("args,msg", [
    ([], "no log given"),
    (["{tmp}/nope.jsonl"], "log not found"),
    (["{tmp}/bad.jsonl"], "bad.jsonl:2: not a JSON record"),
    (["{tmp}/x.csv"], "the report reads JSONL logs"),
    (["{tmp}/empty.jsonl"], "no frame records"),
    (["{tmp}/cut.jsonl", "--tiles", "https://t.example/{z}/{x}.png"], "needs {z}, {x} and {y}"),
    (["--run-dir", "{tmp}/nodir"], "not a folder"),
])
def test_user_errors_exit_1_without_traceback(args, msg, tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"type":"start"}\n{oops\n{"type":"summary"}\n')
    (tmp_path / "x.csv").write_text("time,utc\n")
    (tmp_path / "empty.jsonl").write_text('{"type":"start","source":"x"}\n')
    (tmp_path / "cut.jsonl").write_text('{"type":"start"}\n{"type":"frame","name":"a.jpg","score":0.1}\n{"type":"fr')
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = runner.invoke(app, ["report", *args, "--out", str(tmp_path / "o")])
    assert r.exit_code == 1, r.output
    text = " ".join(r.output.split())  # rich wraps long paths
    assert msg in text, r.output
    assert "Traceback" not in r.output


def test_truncated_last_line_is_skipped(tmp_path):
    (tmp_path / "cut.jsonl").write_text('{"type":"start","source":"live","live":true,"threshold":0.5}\n'
                                        '{"type":"frame","index":0,"name":"frame 0","score":0.9,"cracked":true,'
                                        '"cracked_tiles":1,"tiles":1,"gps":null,"utc":"2024-01-01T00:00:00.000Z"}\n'
                                        '{"type":"frame","ind')
    r = runner.invoke(app, ["report", str(tmp_path / "cut.jsonl"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "1 frames, 1 flagged" in r.output and "1 images not found" in r.output
    html = (tmp_path / "o" / "index.html").read_text()
    assert "1 truncated last line(s) skipped" in html and "No frame has a position" in html
