"""Frame positions from what drones record: EXIF GPS + DJI XMP (written here with Pillow), DJI .SRT telemetry
aligned to the frames of a real video, and both carried into the ``edgecrack run --log`` records."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from edgecrack.cli import app
from edgecrack.errors import SourceError
from edgecrack.geo import exif_gps_ifd, geotag_from_image, telemetry_for_video, telemetry_from_srt, track_length_m
from edgecrack.loop.config import SourceOptions
from edgecrack.loop.sources import open_source

from streaming.helpers import write_video

runner = CliRunner()

DJI_XMP = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           '<rdf:Description rdf:about="DJI Meta Data" xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/" '
           'drone-dji:AbsoluteAltitude="+{alt:.2f}" drone-dji:RelativeAltitude="+10.20" '
           'drone-dji:GimbalRollDegree="+0.00" drone-dji:GimbalYawDegree="{yaw:+.2f}" '
           'drone-dji:GimbalPitchDegree="-89.90" drone-dji:FlightRollDegree="+1.30" '
           'drone-dji:FlightYawDegree="{yaw:+.2f}" drone-dji:FlightPitchDegree="-2.10"/></rdf:RDF></x:xmpmeta>')


def write_geotagged(src: Path, dst: Path, lat: float, lon: float, alt: float | None = None,
                    when: datetime | None = None, offset: str | None = None, yaw: float | None = None) -> Path:
    """A copy of a real image with EXIF GPS (degrees/minutes/seconds rationals, N/S/E/W refs), altitude,
    DateTimeOriginal (+ OffsetTimeOriginal) and, with ``yaw``, a DJI XMP packet, all written by Pillow."""
    exif = Image.Exif()
    exif[0x8825] = exif_gps_ifd(lat, lon, alt)
    if when is not None:
        exif[0x8769] = {0x9003: when.strftime("%Y:%m:%d %H:%M:%S"), **({0x9011: offset} if offset else {})}
    kw = {"xmp": DJI_XMP.format(alt=alt or 0.0, yaw=yaw).encode()} if yaw is not None else {}
    with Image.open(src) as im:
        im.save(dst, exif=exif, quality=92, **kw)
    return dst


def test_exif_gps_time_and_dji_xmp_are_read(deck_dir, tmp_path):
    src = sorted((deck_dir / "CD").glob("*.jpg"))[0]
    p = write_geotagged(src, tmp_path / "a.jpg", -33.8567844, 151.2152967, 31.5, datetime(2024, 3, 9, 10, 15, 42),
                        "+11:00", yaw=-123.4)
    g = geotag_from_image(p)
    assert abs(g.lat - -33.8567844) < 1e-9 and abs(g.lon - 151.2152967) < 1e-9  # S and E signs
    assert g.alt == pytest.approx(31.5)
    assert g.time == "2024-03-09T10:15:42+11:00"
    assert g.pose == {"rel_alt": 10.2, "gimbal_yaw": -123.4, "gimbal_pitch": -89.9, "gimbal_roll": 0.0,
                      "flight_yaw": -123.4, "flight_pitch": -2.1, "flight_roll": 1.3}
    assert g.to_record()["gps"] == {"lat": g.lat, "lon": g.lon, "alt": g.alt}


def test_gps_utc_stamp_when_no_offset_and_below_sea_level(deck_dir, tmp_path):
    src = sorted((deck_dir / "UD").glob("*.jpg"))[0]
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (31.0, 30.0, 0.0), 3: "E", 4: (35.0, 30.0, 0.0), 5: 1, 6: 430.0,
                    7: (23.0, 59.0, 59.5), 29: "2023:12:31"}
    with Image.open(src) as im:
        im.save(tmp_path / "deadsea.jpg", exif=exif)
    g = geotag_from_image(tmp_path / "deadsea.jpg")
    assert (g.lat, g.lon, g.alt) == (31.5, 35.5, -430.0)
    assert g.time == "2023-12-31T23:59:59.500Z"


def test_no_exif_and_no_fix_give_no_position(deck_dir, tmp_path):
    plain = sorted((deck_dir / "UD").glob("*.jpg"))[1]
    assert geotag_from_image(plain) is None  # the bundled images carry no EXIF
    nofix = write_geotagged(plain, tmp_path / "nofix.jpg", 0.0, 0.0, when=datetime(2024, 1, 1, 12, 0, 0))
    g = geotag_from_image(nofix)
    assert g.gps() is None and g.time == "2024-01-01T12:00:00"  # DJI writes 0,0 without a fix; the time stays


SRT_CURRENT = """1
00:00:00,000 --> 00:00:00,100
<font size="28">FrameCnt: 1, DiffTime: 100ms
2024-06-12 09:41:03.100
[iso: 100] [shutter: 1/1000.0] [fnum: 2.8] [ev: 0] [color_md : default] [focal_len: 24.00] [latitude: {lat0}] [longitude: {lon0}] [rel_alt: 10.000 abs_alt: 1392.120] [ct: 5500] </font>
"""


def dji_srt(cues: list[tuple[float, float]], start: datetime, step_ms: int = 100) -> str:
    """A DJI .SRT (Mini 3 / Air 2S / Mavic 3 layout): one cue per frame of ``step_ms``."""
    out = []
    for i, (lat, lon) in enumerate(cues):
        a, b = i * step_ms, (i + 1) * step_ms

        def ts(ms: int) -> str:
            return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

        t = start.timestamp() + a / 1000
        stamp = datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]
        out.append(f"{i + 1}\n{ts(a)} --> {ts(b)}\n<font size=\"28\">FrameCnt: {i + 1}, DiffTime: {step_ms}ms\n"
                   f"{stamp}\n[iso: 100] [shutter: 1/1000.0] [fnum: 2.8] [ev: 0] [color_md : default] "
                   f"[focal_len: 24.00] [latitude: {lat:.6f}] [longitude: {lon:.6f}] "
                   f"[rel_alt: 10.000 abs_alt: {1392.0 + i:.3f}] [ct: 5500] </font>\n")
    return "\n".join(out)


def test_srt_formats_of_three_drone_generations(tmp_path):
    (tmp_path / "new.SRT").write_text(dji_srt([(41.7370, -111.8338), (41.73705, -111.83375)],
                                              datetime(2024, 6, 12, 9, 41, 3)), encoding="utf-8")
    t = telemetry_from_srt(tmp_path / "new.SRT")
    assert len(t) == 2 and t.located == 2
    g = t.at(150.0)
    assert (g.lat, g.lon, g.alt, g.pose["rel_alt"]) == (41.73705, -111.83375, 1393.0, 10.0)
    assert g.time == "2024-06-12T09:41:03.150"  # the cue's clock plus 50 ms into it
    mavic2 = ("1\r\n00:00:00,000 --> 00:00:00,033\r\n<font size=\"36\">SrtCnt : 1, DiffTime : 33ms\r\n"
              "2020-01-25 14:30:01,123,456\r\n[iso : 100] [shutter : 1/200.0] [fnum : 2.8] [ev : 0] [ct : 5000] "
              "[color_md : default] [focal_len : 280] [latitude : 52.373056] [longtitude : 4.892222] "
              "[altitude: 3.900000] </font>\r\n")
    (tmp_path / "mavic2.srt").write_text(mavic2, encoding="utf-8")
    g = telemetry_from_srt(tmp_path / "mavic2.srt").at(10.0)
    assert (g.lat, g.lon, g.alt) == (52.373056, 4.892222, 3.9) and g.time.startswith("2020-01-25T14:30:01.1")
    phantom = ("1\n00:00:00,000 --> 00:00:01,000\nHOME(149.0251,-20.2532) 2017.08.05 14:11:51\n"
               "GPS(149.0253,-20.2533,16) BAROMETER:1.9M\nISO:100 Shutter:60 EV:0 Fnum:2.2\n")
    (tmp_path / "p4.srt").write_text(phantom, encoding="utf-8")
    t = telemetry_from_srt(tmp_path / "p4.srt")
    g = t.at(999.0)
    assert (g.lat, g.lon, g.alt) == (-20.2533, 149.0253, None)  # the bare 16 is satellites, not metres
    assert g.pose == {"rel_alt": 1.9} and g.time == "2017-08-05T14:11:51.999"
    assert t.at(1000.0) is None and t.at(-1.0) is None


@pytest.fixture(scope="module")
def flight_video(tmp_path_factory, deck_dir) -> tuple[Path, list[tuple[float, float]]]:
    """A real 10 fps MJPEG video of 12 bundled deck images with a DJI .SRT next to it covering the first 8
    frames; frame 3 was recorded without a GPS fix (0, 0)."""
    root = tmp_path_factory.mktemp("flight")
    imgs = sorted((deck_dir / "CD").glob("*.jpg"))[:6] + sorted((deck_dir / "UD").glob("*.jpg"))[:6]
    video = write_video(root / "DJI_0042.avi", imgs, fps=10.0)
    cues = [(41.737 + i * 3.6e-5, -111.8338 + i * 2.5e-5) for i in range(8)]
    cues[3] = (0.0, 0.0)
    (root / "DJI_0042.SRT").write_text(dji_srt(cues, datetime(2024, 6, 12, 9, 41, 3)), encoding="utf-8")
    return video, cues


def test_video_frames_take_the_position_of_their_cue(flight_video):
    video, cues = flight_video
    src = open_source(str(video)).start()
    got = []
    try:
        while (f := src.next_frame(2.0)) is not None:
            got.append(f)
    finally:
        src.stop()
    assert len(got) == 12
    for f in got:
        i = f.index
        gps = f.geo.gps() if f.geo else None
        if i < 8 and i != 3:
            assert gps["lat"] == pytest.approx(cues[i][0], abs=1e-9) and gps["lon"] == pytest.approx(cues[i][1], abs=1e-9)
            assert f.geo.time == (f"2024-06-12T09:41:03.{i}00" if i else "2024-06-12T09:41:03")
        elif i == 3:
            assert gps is None and f.geo.time == "2024-06-12T09:41:03.300"  # no fix: time, no position
        else:
            assert f.geo is None  # after the telemetry ends


def test_run_log_records_carry_gps_and_capture_time(tiny_run, flight_video, tmp_path):
    video, cues = flight_video
    log = tmp_path / "v.jsonl"
    r = runner.invoke(app, ["run", "--model", str(tiny_run), "--source", str(video), "--log", str(log), "--quiet"])
    assert r.exit_code == 0, r.output
    frames = [json.loads(x) for x in log.read_text().splitlines() if '"type":"frame"' in x]
    assert len(frames) == 12
    for rec in frames:
        i = rec["position"]["frame"]
        if i < 8 and i != 3:
            assert rec["gps"] == pytest.approx({"lat": cues[i][0], "lon": cues[i][1], "alt": 1392.0 + i}, abs=1e-9)
            assert rec["capture_time"].startswith("2024-06-12T09:41:03") and rec["pose"] == {"rel_alt": 10.0}
        else:
            assert rec["gps"] is None  # still a valid frame record with its verdict
            assert isinstance(rec["cracked"], bool) and 0.0 <= rec["score"] <= 1.0


def test_explicit_telemetry_and_its_errors(tiny_run, flight_video, deck_dir, tmp_path):
    video, cues = flight_video
    other = tmp_path / "elsewhere.srt"
    other.write_text(dji_srt([(10.0, 20.0)] * 12, datetime(2024, 1, 1)), encoding="utf-8")
    t = telemetry_for_video(video, other)
    assert t.at(500.0).gps() == {"lat": 10.0, "lon": 20.0, "alt": 1397.0}
    plain = tmp_path / "subs.srt"
    plain.write_text("1\n00:00:00,000 --> 00:00:02,000\nHello there\n", encoding="utf-8")
    with pytest.raises(SourceError, match="holds no GPS positions"):
        telemetry_for_video(video, plain)
    with pytest.raises(SourceError, match="telemetry file not found"):
        open_source(str(video), SourceOptions(telemetry=str(tmp_path / "nope.SRT"))).start()
    r = runner.invoke(app, ["run", "--model", str(tiny_run), "--source", str(deck_dir / "CD"),
                            "--telemetry", str(other)])
    assert r.exit_code == 1 and "telemetry files go with a video file source" in r.output


def test_track_length_is_the_great_circle_distance():
    """One degree of latitude is 111.195 km on the mean-radius sphere; at 60 N a degree of
    longitude is half as long; a single point or none is no track."""
    assert track_length_m([(10.0, 0.0), (10.0, 1.0)]) == pytest.approx(111195.08, abs=0.1)
    assert track_length_m([(10.0, 0.0), (10.0, 1.0), (10.0, 0.0)]) == pytest.approx(2 * 111195.08, abs=0.2)
    assert track_length_m([(0.0, 60.0), (0.001, 60.0)]) == pytest.approx(111195.08 * 0.001 * 0.5, rel=1e-6)
    assert track_length_m([(1.0, 2.0)]) == 0.0 and track_length_m([]) == 0.0
