"""Field inspection report: from ``edgecrack run --log`` files to a page people look at and GIS layers.

``edgecrack report LOG.jsonl [LOG2.jsonl ...] --out DIR`` (or ``--run-dir`` of a finished
run) reads the per-frame records of one or several logs (sharded runs write one each; a frame
that appears twice, by file path or by video and frame number, is taken from the later log)
and writes:

- ``DIR/index.html``: one self-contained file (CSS, JS and thumbnails inline, nothing fetched
  unless ``tiles`` names a map tile server): summary, the flight track with flagged points, a
  gallery of flagged frames with the crack-map overlay, a score histogram and a timeline.
- ``DIR/findings.geojson``: RFC 7946 FeatureCollection, one Point per flagged frame.
- ``DIR/findings.csv``: the same as a table; ``DIR/findings.kml`` on request (Google Earth).
- ``DIR/frames/``: annotated full-size copies of flagged video frames (stills link to their
  own file), and of stills too with ``copy_frames``.

Thumbnails are made one at a time and written straight into the page, so memory stays flat
however long the flight was.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.request import pathname2url

import numpy as np

from .errors import ConfigError, EdgecrackError
from .io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, check_writable_folder

FINDINGS_COLUMNS = ("file", "name", "source", "frame", "time", "lat", "lon", "alt", "rel_alt", "p", "cracked_tiles",
                    "tiles", "label", "model")


@dataclass
class ReportConfig:
    """What ``edgecrack report`` does.

    Attributes:
        logs: JSONL logs of ``edgecrack run --log`` (merged, in this order).
        out: Output folder.
        run_dirs: Folders of finished runs: every ``*.jsonl`` below them is added to ``logs``.
        title: Page title (default: from the sources).
        tiles: Map tile URL template (``https://.../{z}/{x}/{y}.png``) for a background map;
            None draws the track on a plain grid and the page needs no network.
        kml: Also write ``findings.kml``.
        gallery_limit: Most flagged frames shown as thumbnails (the highest scores); all of
            them are in the map, GeoJSON and CSV.
        thumb_px: Longest thumbnail side in pixels.
        thumb_quality: Thumbnail JPEG quality.
        copy_frames: Save annotated full-size copies of flagged stills too (a portable
            folder), not only of video frames.
    """

    logs: list[str] = field(default_factory=list)
    out: str = "report"
    run_dirs: list[str] = field(default_factory=list)
    title: str | None = None
    tiles: str | None = None
    kml: bool = False
    gallery_limit: int = 500
    thumb_px: int = 320
    thumb_quality: int = 70
    copy_frames: bool = False

    def validate(self) -> None:
        """Raise :class:`ConfigError` on impossible values, before anything is read."""
        if not self.logs and not self.run_dirs:
            raise ConfigError("no log given", "pass LOG.jsonl files (edgecrack run --log) or --run-dir FOLDER")
        if self.gallery_limit < 0:
            raise ConfigError(f"--gallery-limit must be >= 0, got {self.gallery_limit}")
        if not 32 <= self.thumb_px <= 2048:
            raise ConfigError(f"--thumb-size must be within 32..2048 px, got {self.thumb_px}")
        if not 1 <= self.thumb_quality <= 100:
            raise ConfigError(f"thumbnail JPEG quality must be within 1..100, got {self.thumb_quality}")
        if self.tiles is not None:
            if not all(k in self.tiles for k in ("{z}", "{x}", "{y}")):
                raise ConfigError(f"--tiles {self.tiles}: a tile URL needs {{z}}, {{x}} and {{y}}",
                                  "e.g. --tiles 'https://tile.openstreetmap.org/{z}/{x}/{y}.png'")
            if not self.tiles.startswith(("http://", "https://")):
                raise ConfigError(f"--tiles {self.tiles}: not an http(s) URL template")


@dataclass
class RunMeta:
    """One ``start`` record: how the frames after it were inspected."""

    log: str
    source: str
    source_kind: str
    live: bool
    model: str
    backend: str
    threshold: float | None
    min_tiles: int
    tile: int
    stride: int | None
    edge: str
    overlay: str
    save_flagged: str | None
    started: float | None


@dataclass(slots=True)
class FrameRow:
    """One inspected frame, as the report needs it."""

    seq: int
    run: RunMeta
    index: int
    name: str
    path: str | None
    source_frame: int | None
    lat: float | None
    lon: float | None
    alt: float | None
    rel_alt: float | None
    capture_time: str | None
    t: float | None
    cracked: bool
    score: float
    cracked_tiles: int
    tiles: int
    label: str
    grid: tuple[int, int] | None
    frame_size: tuple[int, int] | None
    tile_probs: list | None
    wall_utc: str | None

    @property
    def located(self) -> bool:
        return self.lat is not None and self.lon is not None

    @property
    def file(self) -> str:
        """The frame's file: the image for stills, the video (or stream) otherwise."""
        return self.path or self.run.source

    @property
    def time(self) -> str | None:
        """When the frame was taken: its metadata time, or the wall clock for live sources."""
        return self.capture_time or (self.wall_utc if self.run.live else None)


@dataclass
class Findings:
    """The merged logs."""

    frames: list[FrameRow]
    runs: list[RunMeta]
    logs: list[str]
    duplicates: int = 0
    truncated_lines: int = 0

    @property
    def flagged(self) -> list[FrameRow]:
        return [f for f in self.frames if f.cracked]

    def tracks(self) -> list[tuple[RunMeta, list[tuple[float, float]]]]:
        """Each run's located frames as ``(lon, lat)``, in capture order (frames without time: log order)."""
        out = []
        for run in self.runs:
            rows = [f for f in self.frames if f.run is run and f.located]
            rows.sort(key=lambda f: (f.t is None, f.t if f.t is not None else 0.0, f.seq))
            if rows:
                out.append((run, [(f.lon, f.lat) for f in rows]))
        return out


@dataclass
class ReportSummary:
    """What :func:`report_from_logs` wrote."""

    frames: int
    flagged: int
    located: int
    flagged_located: int
    gallery: int
    thumbnails: int
    missing_images: int
    duplicates: int
    outputs: dict[str, str]
    seconds: float


# -- reading logs ---------------------------------------------------------------------------------
def _parse_time(s: str | None) -> float | None:
    """Seconds since the epoch of an ISO 8601 time (naive times are taken as UTC, for ordering)."""
    if not s:
        return None
    try:
        d = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d.timestamp()


def _run_meta(rec: dict[str, Any], log: str) -> RunMeta:
    cfg = rec.get("config") or {}
    be = rec.get("backend") or {}
    backend = be.get("backend", "?")
    extra = [str(be[k]) for k in ("device", "precision") if be.get(k)]
    return RunMeta(log=log, source=str(rec.get("source", "?")), source_kind=str(rec.get("source_kind", "?")),
                   live=bool(rec.get("live")), model=str(be.get("artifact") or cfg.get("model") or "?"),
                   backend=backend + (f" ({', '.join(extra)})" if extra else ""), threshold=rec.get("threshold"),
                   min_tiles=int(cfg.get("min_tiles", 1)), tile=int(cfg.get("tile", 256)), stride=cfg.get("stride"),
                   edge=str(cfg.get("edge", "shift")), overlay=str(cfg.get("overlay", "boxes")),
                   save_flagged=cfg.get("save_flagged"), started=rec.get("time"))


def _records(log: Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """``(line number, record)``; a truncated last line (power cut mid-write) yields None."""
    with open(log, "rb") as f:
        prev: tuple[int, bytes] | None = None
        for n, line in enumerate(f, 1):
            if prev is not None:
                yield prev[0], _decode(log, *prev, last=False)
            prev = (n, line)
        if prev is not None:
            yield prev[0], _decode(log, *prev, last=not prev[1].endswith(b"\n"))


def _decode(log: Path, n: int, line: bytes, last: bool) -> dict[str, Any] | None:
    if not line.strip():
        return {}
    try:
        rec = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        if last:
            return None
        raise ConfigError(f"{log}:{n}: not a JSON record", "pass the .jsonl written by edgecrack run --log") from None
    return rec if isinstance(rec, dict) else {}


def findings_from_logs(logs: list[str | Path]) -> Findings:
    """Read and merge ``edgecrack run`` JSONL logs.

    A frame seen more than once (the same image file, or the same frame of the same video)
    is kept from its last appearance: a re-run or a later shard wins.

    Args:
        logs: JSONL files, in merge order.

    Returns:
        The merged frames and the runs they came from.

    Raises:
        ConfigError: A file is missing, not JSONL, or holds no frame record.
    """
    frames: dict[tuple, FrameRow] = {}
    runs: list[RunMeta] = []
    seq = duplicates = truncated = 0
    for log in logs:
        p = Path(log)
        if not p.is_file():
            raise ConfigError(f"log not found: {p}", "pass the --log file of edgecrack run (*.jsonl)")
        if p.suffix.lower() == ".csv":
            raise ConfigError(f"{p}: the report reads JSONL logs (they carry the tile maps), not CSV",
                              "run edgecrack run with --log NAME.jsonl")
        run: RunMeta | None = None
        log_dir = p.resolve().parent
        for n, rec in _records(p):
            if rec is None:
                truncated += 1
                continue
            kind = rec.get("type")
            if kind == "start":
                run = _run_meta(rec, str(p))
                runs.append(run)
            elif kind == "frame":
                if run is None:  # a log cut at the front (rotated): frames of an unknown run
                    run = _run_meta({}, str(p))
                    runs.append(run)
                row = _frame_row(rec, run, seq, log_dir)
                seq += 1
                if row.path is not None:
                    key: tuple = ("file", os.path.normcase(os.path.abspath(row.path)))
                elif not run.live and row.source_frame is not None:
                    key = ("video", os.path.abspath(run.source), row.source_frame)
                else:
                    key = ("live", str(p), run.started, row.index)
                if key in frames:
                    duplicates += 1
                    del frames[key]  # re-insert: the later record also takes the later place
                frames[key] = row
    if not frames:
        raise ConfigError(f"no frame records in {', '.join(str(x) for x in logs)}",
                          "the log of a run that inspected no frame has nothing to report")
    used = {id(f.run) for f in frames.values()}
    return Findings(list(frames.values()), [r for r in runs if id(r) in used], [str(x) for x in logs], duplicates,
                    truncated)


def _frame_row(rec: dict[str, Any], run: RunMeta, seq: int, log_dir: Path) -> FrameRow:
    pos = rec.get("position") or {}
    path = pos.get("path")
    if path and not os.path.isabs(path) and not os.path.exists(path) and (log_dir / path).exists():
        path = str(log_dir / path)  # the log written next to the images, run from elsewhere
    capture = rec.get("capture_time")
    cracked = bool(rec.get("cracked"))
    gps = rec.get("gps") or {}
    lat, lon = _float(gps.get("lat")), _float(gps.get("lon"))
    if lat is None or lon is None:
        lat = lon = None
    grid = rec.get("grid")
    size = rec.get("frame_size")
    return FrameRow(seq=seq, run=run, index=int(rec.get("index", seq)), name=str(rec.get("name", "")), path=path,
                    source_frame=pos.get("frame"), lat=lat, lon=lon, alt=_float(gps.get("alt")),
                    rel_alt=_float((rec.get("pose") or {}).get("rel_alt")), capture_time=capture,
                    t=_parse_time(capture) or (rec.get("time") if run.live else None), cracked=cracked,
                    score=float(rec.get("score", 0.0)), cracked_tiles=int(rec.get("cracked_tiles", 0)),
                    tiles=int(rec.get("tiles", 1)), label=str(rec.get("label", "")),
                    grid=tuple(grid) if grid else None, frame_size=tuple(size) if size else None,
                    tile_probs=rec.get("tile_probs") if cracked else None,  # only flagged frames get thumbnails
                    wall_utc=rec.get("utc") if run.live else None)  # only live frames are timed by it


def _float(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def logs_from_run_dirs(run_dirs: list[str | Path]) -> list[Path]:
    """Every ``*.jsonl`` below the given run folders, sorted.

    Raises:
        ConfigError: A folder is missing or holds no JSONL log.
    """
    out: list[Path] = []
    for d in run_dirs:
        p = Path(d)
        if not p.is_dir():
            raise ConfigError(f"--run-dir {p}: not a folder")
        found = sorted(x for x in p.rglob("*.jsonl") if x.is_file())
        if not found:
            raise ConfigError(f"--run-dir {p}: no *.jsonl log in it", "edgecrack run writes one with --log NAME.jsonl")
        out.extend(found)
    return out


# -- GIS exports ---------------------------------------------------------------------------------
def _props(f: FrameRow) -> dict[str, Any]:
    return {"file": f.file, "name": f.name, "source": f.run.source,
            "frame": f.source_frame if f.path is None else None, "time": f.time, "alt": f.alt,
            "rel_alt": f.rel_alt, "p": round(f.score, 5), "cracked_tiles": f.cracked_tiles,
            "tiles": f.tiles, "label": f.label, "model": f.run.model}


def geojson_from_findings(findings: Findings) -> dict[str, Any]:
    """RFC 7946 FeatureCollection of the flagged frames.

    Coordinates are WGS84 ``[lon, lat]``. The altitude the drone recorded (EXIF: above sea
    level) is a property, not a third coordinate: RFC 7946 defines that one as height above
    the WGS84 ellipsoid, which differs from sea level by up to ~100 m. A flagged frame
    without a position is an unlocated Feature (``"geometry": null``, RFC 7946 section 3.2).
    """
    feats = []
    lons, lats = [], []
    for f in findings.flagged:
        geom = None
        if f.located:
            lon, lat = f.lon, f.lat
            geom = {"type": "Point", "coordinates": [lon, lat]}
            lons.append(lon)
            lats.append(lat)
        feats.append({"type": "Feature", "geometry": geom, "properties": _props(f)})
    out: dict[str, Any] = {"type": "FeatureCollection"}
    if lons:
        out["bbox"] = [min(lons), min(lats), max(lons), max(lats)]
    out["features"] = feats
    return out


def csv_from_findings(findings: Findings) -> str:
    """One row per flagged frame (columns :data:`FINDINGS_COLUMNS`), positions empty when unknown."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(FINDINGS_COLUMNS)
    for f in findings.flagged:
        d = _props(f)
        d.update(lat=f.lat, lon=f.lon)
        w.writerow(["" if d.get(c) is None else d[c] for c in FINDINGS_COLUMNS])
    return buf.getvalue()


def _xml(s: Any) -> str:
    from html import escape

    return escape(str(s), quote=True)


def kml_from_findings(findings: Findings, title: str) -> str:
    """KML 2.2 for Google Earth: a red placemark per located flagged frame and each run's track."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', '<kml xmlns="http://www.opengis.net/kml/2.2"><Document>',
             f"<name>{_xml(title)}</name>",
             '<Style id="crack"><IconStyle><color>ff0000ff</color><scale>1.1</scale><Icon><href>'
             "http://maps.google.com/mapfiles/kml/shapes/placemark_circle.png</href></Icon></IconStyle></Style>",
             '<Style id="track"><LineStyle><color>ffb4771f</color><width>2</width></LineStyle></Style>']
    for run, pts in findings.tracks():
        coords = " ".join(f"{lon:.8f},{lat:.8f}" for lon, lat in pts)
        parts.append(f"<Placemark><name>{_xml('track: ' + run.source)}</name><styleUrl>#track</styleUrl>"
                     f"<LineString><tessellate>1</tessellate><coordinates>{coords}</coordinates></LineString></Placemark>")
    for f in findings.flagged:
        if not f.located:
            continue
        desc = (f"p={f.score:.3f}, cracked tiles {f.cracked_tiles}/{f.tiles}" + (f", {f.time}" if f.time else "")
                + f"\n{f.file}")
        when = f"<TimeStamp><when>{_xml(f.time)}</when></TimeStamp>" if f.time else ""
        parts.append(f"<Placemark><name>{_xml(f.name)} p={f.score:.2f}</name><description>{_xml(desc)}</description>"
                     f"{when}<styleUrl>#crack</styleUrl><Point><coordinates>{f.lon:.8f},{f.lat:.8f}</coordinates></Point></Placemark>")
    parts.append("</Document></kml>\n")
    return "\n".join(parts)


# -- thumbnails --------------------------------------------------------------------------------
@dataclass
class Card:
    """A gallery entry: the frame, its thumbnail (data URI or None) and the link to its full image."""

    frame: FrameRow
    thumb: str | None
    href: str | None
    note: str | None = None


def _overlaid(img: np.ndarray, f: FrameRow) -> tuple[np.ndarray, str | None]:
    from .loop.render import overlay
    from .loop.tiling import tile_grid

    h, w = img.shape[:2]
    run = f.run
    try:
        grid = tile_grid(h, w, run.tile, run.stride, run.edge)
    except EdgecrackError:
        return img, "no crack map: the run's tiling settings are unreadable"
    if f.tile_probs is None or (f.frame_size and tuple(f.frame_size) != (w, h)) or \
            (f.grid and tuple(f.grid) != (grid.rows, grid.cols)):
        return img, "no crack map: the image is not the one inspected (size or tiling differs)"
    cmap = np.asarray(f.tile_probs, np.float32).reshape(grid.rows, grid.cols)
    mode = run.overlay if run.overlay != "none" else "boxes"
    thr = run.threshold if run.threshold is not None else 0.5
    return overlay(img, grid, cmap, thr, mode), None


def _jpeg(img: np.ndarray, quality: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding of a thumbnail failed")
    return buf.tobytes()


def _thumb(img: np.ndarray, px: int, quality: int) -> str:
    import cv2

    h, w = img.shape[:2]
    s = px / max(h, w)
    if s < 1.0:
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return "data:image/jpeg;base64," + base64.b64encode(_jpeg(img, quality)).decode("ascii")


def _href(target: Path, out: Path) -> str:
    return pathname2url(os.path.relpath(os.path.abspath(target), os.path.abspath(out)))


def _saved_flagged(f: FrameRow) -> Path | None:
    """The annotated JPEG ``edgecrack run --save-flagged`` wrote for this frame, if it is there."""
    if not f.run.save_flagged:
        return None
    p = Path(f.run.save_flagged) / f"{f.index:06d}_{Path(f.name).stem.replace(' ', '_')}.jpg"
    return p if p.is_file() else None


def _video_frames(video: str, wanted: list[FrameRow]) -> Iterator[tuple[FrameRow, np.ndarray | None]]:
    """Decode the wanted frames of a video in one sequential pass (seeking is inexact in many codecs)."""
    import cv2

    cap = cv2.VideoCapture(video, cv2.CAP_FFMPEG) if Path(video).is_file() else None
    if cap is None or not cap.isOpened():
        for f in wanted:
            yield f, None
        return
    try:
        pos = 0
        for f in sorted(wanted, key=lambda r: r.source_frame):
            img = None
            while pos <= f.source_frame:
                if pos == f.source_frame:
                    ok, img = cap.read()
                    img = img if ok else None
                elif not cap.grab():
                    break
                pos += 1
            yield f, img
    finally:
        cap.release()


def cards_from_findings(findings: Findings, cfg: ReportConfig, out: Path) -> Iterator[Card]:
    """Gallery cards of the highest-scoring flagged frames, one image in memory at a time.

    Stills link to their own file (or, with ``copy_frames``, to an annotated copy in
    ``out/frames``); video frames get an annotated copy. Frames whose image is gone (live
    sources) use the annotated JPEG of ``--save-flagged`` when the run wrote one.
    """
    from .preprocess import decode_image
    from .report_html import gallery_choice

    chosen = gallery_choice(findings, cfg.gallery_limit)
    rows = [f for f in findings.frames if f.seq in chosen]
    videos: dict[str, list[FrameRow]] = {}
    stills: list[FrameRow] = []
    for f in rows:
        if f.path is None and f.run.source_kind == "video" and f.source_frame is not None:
            videos.setdefault(f.run.source, []).append(f)
        else:
            stills.append(f)

    def images() -> Iterator[tuple[FrameRow, np.ndarray | None]]:
        for f in stills:
            if f.path and Path(f.path).is_file():
                try:
                    yield f, decode_image(f.path)
                except EdgecrackError:
                    yield f, None
            else:
                yield f, None
        for video, vrows in videos.items():
            yield from _video_frames(video, vrows)

    for f, img in images():
        if img is None:
            saved = _saved_flagged(f)
            if saved is not None:  # already annotated by the run
                yield Card(f, _thumb(decode_image(saved), cfg.thumb_px, cfg.thumb_quality), _href(saved, out),
                           "picture from the run's --save-flagged folder")
            else:
                yield Card(f, None, None, f"image not found: {f.path or f.run.source}")
            continue
        img, note = _overlaid(img, f)
        if f.path and not cfg.copy_frames:
            href = _href(Path(f.path), out)
        else:
            name = f"{f.seq:06d}_{Path(f.name).stem.replace(' ', '_')}.jpg"
            _write(out / "frames" / name, _jpeg(img, 90))
            href = "frames/" + pathname2url(name)
        yield Card(f, _thumb(img, cfg.thumb_px, cfg.thumb_quality), href, note)
        del img


def _write(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from None


# -- the whole report ----------------------------------------------------------------------------
def report_from_logs(cfg: ReportConfig) -> ReportSummary:
    """Write the HTML report, GeoJSON, CSV (and KML) of one or several ``edgecrack run`` logs.

    Args:
        cfg: What to read and write (validated here).

    Returns:
        What was written, with counts.

    Raises:
        ConfigError: No or unreadable logs, bad options, an unwritable output folder.
    """
    from .report_html import write_html

    t0 = time.perf_counter()
    cfg.validate()
    logs = [Path(p) for p in cfg.logs] + logs_from_run_dirs(cfg.run_dirs)
    findings = findings_from_logs(logs)
    out = check_writable_folder(cfg.out, f"--out {cfg.out}")
    title = cfg.title or default_title(findings)
    outputs = {"html": str(out / "index.html"), "geojson": str(out / "findings.geojson"),
               "csv": str(out / "findings.csv")}
    atomic_write_json(out / "findings.geojson", geojson_from_findings(findings))
    atomic_write_text(out / "findings.csv", csv_from_findings(findings))
    if cfg.kml:
        atomic_write_text(out / "findings.kml", kml_from_findings(findings, title))
        outputs["kml"] = str(out / "findings.kml")
    with atomic_path(out / "index.html") as tmp:
        stats = write_html(tmp, findings, cards_from_findings(findings, cfg, out), cfg, title)
    flagged = findings.flagged
    return ReportSummary(frames=len(findings.frames), flagged=len(flagged),
                         located=sum(f.located for f in findings.frames), flagged_located=sum(f.located for f in flagged),
                         gallery=stats["cards"], thumbnails=stats["thumbnails"], missing_images=stats["missing"],
                         duplicates=findings.duplicates, outputs=outputs, seconds=round(time.perf_counter() - t0, 3))


def default_title(findings: Findings) -> str:
    sources = sorted({Path(r.source).name or r.source for r in findings.runs})
    head = ", ".join(sources[:3]) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")
    return f"Inspection report: {head}"
