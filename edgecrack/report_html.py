"""The report page: one self-contained HTML file with inline CSS, JS, SVG charts and thumbnails.

Everything is drawn here as SVG (no map tiles, no chart library, nothing fetched), so the
page opens on site without a network and prints. The map uses Web Mercator, the projection
of web map tiles, so an optional tile layer (a URL template the user passes) lines up with
the track. Script is only needed to re-sort the gallery; without it the gallery is in flight
order and everything else is there.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

import numpy as np

from . import __version__
from .geo import track_length_m

CRACK = "#d62728"
TRACK = "#1f77b4"
OTHER = "#8c8c8c"
EARTH_M = 40075016.686  # equatorial circumference (Web Mercator world width in metres at the equator)

CSS = """
:root{--fg:#1d2329;--muted:#5f6b76;--bg:#f6f7f9;--card:#fff;--line:#dde1e6;--crack:#d62728;--track:#1f77b4}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);background:var(--bg)}
header{background:#1d2329;color:#fff;padding:16px 20px}
header h1{margin:0;font-size:1.35em;font-weight:600;overflow-wrap:anywhere}
header .sub{margin:4px 0 0;color:#b8c1ca;font-size:.85em}
main{max-width:1280px;margin:0 auto;padding:12px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 14px;margin:0 0 12px}
h2{font-size:1.05em;margin:0 0 8px}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:8px;margin-bottom:10px}
.kpi{border:1px solid var(--line);border-radius:6px;padding:8px 10px}
.kpi b{display:block;font-size:1.35em}
.kpi span{color:var(--muted);font-size:.82em}
.kpi.alert b{color:var(--crack)}
.tablewrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.85em}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
td.path{overflow-wrap:anywhere;min-width:12em}
svg{width:100%;height:auto;display:block}
svg text{font:12px system-ui,"DejaVu Sans",sans-serif;fill:var(--muted)}
#map-svg text{font-size:15px;fill:#1d2329;stroke:#fff;stroke-width:4px;paint-order:stroke;stroke-linejoin:round}
@media(max-width:600px){#map-svg text{font-size:34px;stroke-width:8px}svg.chart text{font-size:19px}}
.legend{display:flex;flex-wrap:wrap;gap:14px;font-size:.82em;color:var(--muted);margin-top:6px}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;vertical-align:-1px;margin-right:4px}
.two{display:grid;grid-template-columns:1fr;gap:12px}
.two section{margin:0}
@media(min-width:900px){.two{grid-template-columns:1fr 1fr}}
.two{margin-bottom:12px}
.controls{display:flex;flex-wrap:wrap;gap:10px;align-items:center;margin-bottom:10px;font-size:.9em}
select{font:inherit;padding:4px 6px}
#gallery-status{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
@media(min-width:700px){.cards{grid-template-columns:repeat(auto-fill,minmax(200px,1fr))}}
.card{margin:0;border:1px solid var(--line);border-radius:6px;overflow:hidden;background:#fff}
.card:target{outline:3px solid var(--crack)}
.card img{width:100%;aspect-ratio:1/1;object-fit:contain;display:block;background:#2b3036}
.card .noimg{aspect-ratio:1/1;display:flex;align-items:center;justify-content:center;text-align:center;padding:8px;
  background:#eceff2;color:var(--muted);font-size:.8em}
.card figcaption{padding:6px 8px;font-size:.8em;line-height:1.35}
.card .p{color:var(--crack);font-weight:700;font-size:1.1em}
.card .name{overflow-wrap:anywhere}
.card .meta{color:var(--muted)}
.note{color:var(--muted);font-size:.85em}
a{color:var(--track)}
footer{max-width:1280px;margin:0 auto;padding:0 12px 20px;color:var(--muted);font-size:.8em}
"""

JS = """
(function(){
  var cards=document.getElementById('cards'), sel=document.getElementById('sort'),
      status=document.getElementById('gallery-status');
  if(!cards||!sel){return;}
  var labels={score:'highest score first',time:'in capture order',name:'by name'};
  function key(el,by){
    if(by==='score'){return -parseFloat(el.dataset.score);}
    if(by==='time'){var t=el.dataset.t;return t===''?Infinity:parseFloat(t);}
    return el.dataset.name;
  }
  function sortBy(by){
    var items=Array.prototype.slice.call(cards.children);
    items.sort(function(a,b){var x=key(a,by),y=key(b,by);
      if(x<y){return -1;} if(x>y){return 1;} return parseInt(a.dataset.seq,10)-parseInt(b.dataset.seq,10);});
    items.forEach(function(el){cards.appendChild(el);});
    status.textContent=items.length+' flagged frame'+(items.length===1?'':'s')+' shown, '+labels[by];
    document.body.setAttribute('data-sorted',by);
  }
  sel.addEventListener('change',function(){sortBy(sel.value);});
  sortBy(sel.value);
  if(location.hash){var t=document.getElementById(location.hash.slice(1));if(t){t.scrollIntoView();}}
})();
"""


def _e(s: Any) -> str:
    return escape(str(s), quote=True)


def _nice(x: float) -> float:
    """The largest 1, 2 or 5 times a power of ten not above ``x``."""
    if x <= 0:
        return 1.0
    p = 10 ** math.floor(math.log10(x))
    for m in (5, 2, 1):
        if m * p <= x:
            return m * p
    return p


def _metres(m: float) -> str:
    return f"{m / 1000:.2f} km" if m >= 1000 else f"{m:.0f} m"


def _mercator(lon: float, lat: float) -> tuple[float, float]:
    lat = max(-85.05, min(85.05, lat))
    s = math.sin(math.radians(lat))
    return (lon + 180.0) / 360.0, 0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)


def _decimate(pts: list, n: int) -> list:
    if len(pts) <= n:
        return pts
    step = len(pts) / n
    return [pts[int(i * step)] for i in range(n)] + [pts[-1]]


def gallery_choice(findings: Any, limit: int) -> set[int]:
    """``seq`` of the flagged frames the gallery shows: the ``limit`` highest scores."""
    return {f.seq for f in sorted(findings.flagged, key=lambda f: (-f.score, f.seq))[:limit]}


def map_svg(findings: Any, tiles: str | None, linked: set[int], width: int = 1000) -> tuple[str, str | None]:
    """The flight track(s) and flagged frames in Web Mercator; a tile layer only if ``tiles`` is given.

    Returns:
        The SVG (or a note when no frame has a position) and the scale for the legend.
    """
    located = [f for f in findings.frames if f.located]
    if not located:
        return ('<p class="note">No frame has a position: the images carry no EXIF GPS and the videos no DJI '
                'telemetry (.SRT). The gallery, histogram and timeline below still cover every frame.</p>', None)
    xy = np.array([_mercator(f.lon, f.lat) for f in located])
    lat0 = float(np.mean([f.lat for f in located]))
    m_per_unit = EARTH_M * math.cos(math.radians(lat0))  # metres per world unit at this latitude
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    min_span = 60.0 / m_per_unit  # show at least ~60 m around a single point
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    sx, sy = max(x1 - x0, min_span), max(y1 - y0, min_span)
    pad = 40
    height = int(min(max(width * sy / sx, width * 0.38), width * 0.62))
    k = min((width - 2 * pad) / sx, (height - 2 * pad) / sy)
    vx0, vy0 = cx - (width / 2) / k, cy - (height / 2) / k

    def px(x: float, y: float) -> tuple[float, float]:
        return (x - vx0) * k, (y - vy0) * k

    out = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="flight track with flagged frames" id="map-svg">',
           f'<rect width="{width}" height="{height}" fill="#eef2f5"/>']
    if tiles:
        out.append(_tile_layer(tiles, vx0, vy0, width / k, height / k, k))
    # A metric grid at the scale bar's spacing stands in for a map.
    bar_m = _nice(width / k * m_per_unit / 5)
    step = bar_m / m_per_unit
    if not tiles:
        gx = math.floor(vx0 / step) * step
        while gx < vx0 + width / k:
            X = (gx - vx0) * k
            out.append(f'<line x1="{X:.1f}" y1="0" x2="{X:.1f}" y2="{height}" stroke="#dde3e8"/>')
            gx += step
        gy = math.floor(vy0 / step) * step
        while gy < vy0 + height / k:
            Y = (gy - vy0) * k
            out.append(f'<line x1="0" y1="{Y:.1f}" x2="{width}" y2="{Y:.1f}" stroke="#dde3e8"/>')
            gy += step
    for run, pts in findings.tracks():
        pp = [px(*_mercator(lon, lat)) for lon, lat in _decimate(pts, 4000)]
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b in pp)
        out.append(f'<polyline points="{path}" fill="none" stroke="{TRACK}" stroke-width="2" stroke-linejoin="round" '
                   f'stroke-opacity=".8"><title>{_e(run.source)}</title></polyline>')
        out.append(f'<circle cx="{pp[0][0]:.1f}" cy="{pp[0][1]:.1f}" r="6" fill="#fff" stroke="{TRACK}" stroke-width="2">'
                   f'<title>start: {_e(run.source)}</title></circle>')
    others = [f for f in located if not f.cracked]
    if len(others) <= 3000:
        for f in others:
            a, b = px(*_mercator(f.lon, f.lat))
            out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{OTHER}"><title>{_e(f.name)} '
                       f'p={f.score:.2f}</title></circle>')
    for f in sorted((f for f in located if f.cracked), key=lambda f: f.score):
        a, b = px(*_mercator(f.lon, f.lat))
        r = 4 + 5 * max(0.0, min(1.0, f.score))
        dot = (f'<circle class="flag" cx="{a:.1f}" cy="{b:.1f}" r="{r:.1f}" fill="{CRACK}" fill-opacity=".85" '
               f'stroke="#fff" stroke-width="1"><title>{_e(f.name)} p={f.score:.2f}'
               f'{" " + _e(f.time) if f.time else ""}</title></circle>')
        out.append(f'<a href="#f{f.seq}">{dot}</a>' if f.seq in linked else dot)
    bx, by = 16, height - 16
    out.append(f'<line x1="{bx}" y1="{by}" x2="{bx + step * k:.1f}" y2="{by}" stroke="#fff" stroke-width="7"/>'
               f'<line x1="{bx}" y1="{by}" x2="{bx + step * k:.1f}" y2="{by}" stroke="#1d2329" stroke-width="3"/>'
               f'<text x="{bx}" y="{by - 10}">{_metres(bar_m)}</text>')
    out.append(f'<g transform="translate({width - 40},{44})"><path d="M0,-30 L11,8 L0,2 L-11,8 Z" fill="#1d2329" '
               f'stroke="#fff" stroke-width="2"/><text x="0" y="40" text-anchor="middle">N</text></g>')
    if tiles:
        out.append(f'<text x="{width - 8}" y="{height - 6}" text-anchor="end">map tiles: '
                   f'{_e(urlsplit(tiles).hostname or tiles)}</text>')
    out.append("</svg>")
    return "".join(out), (f"scale bar {_metres(bar_m)}" if tiles else f"grid squares {_metres(bar_m)}")


def _tile_layer(url: str, vx0: float, vy0: float, vw: float, vh: float, k: float) -> str:
    """``<image>`` tiles covering the view, at the zoom whose 256 px tiles match the drawing scale."""
    z = int(max(0, min(20, math.floor(math.log2(max(k, 1.0) / 256.0)))))
    n = 2 ** z
    tx0, tx1 = int(math.floor(vx0 * n)), int(math.floor((vx0 + vw) * n))
    ty0, ty1 = int(math.floor(vy0 * n)), int(math.floor((vy0 + vh) * n))
    while (tx1 - tx0 + 1) * (ty1 - ty0 + 1) > 64 and z > 0:  # never ask a tile server for a mosaic
        z -= 1
        n = 2 ** z
        tx0, tx1 = int(math.floor(vx0 * n)), int(math.floor((vx0 + vw) * n))
        ty0, ty1 = int(math.floor(vy0 * n)), int(math.floor((vy0 + vh) * n))
    out = []
    size = k / n
    for ty in range(max(0, ty0), min(n - 1, ty1) + 1):
        for tx in range(tx0, tx1 + 1):
            href = url.replace("{z}", str(z)).replace("{x}", str(tx % n)).replace("{y}", str(ty)).replace("{s}", "a")
            out.append(f'<image href="{_e(href)}" x="{(tx / n - vx0) * k:.1f}" y="{(ty / n - vy0) * k:.1f}" '
                       f'width="{size + 0.5:.1f}" height="{size + 0.5:.1f}" preserveAspectRatio="none"/>')
    return "".join(out)


def histogram_svg(findings: Any, width: int = 600, height: int = 260, bins: int = 20) -> str:
    """Frames per crack-score bin, flagged frames stacked in red, with the threshold(s)."""
    score = np.array([f.score for f in findings.frames])
    crack = np.array([f.cracked for f in findings.frames])
    edges = np.linspace(0.0, 1.0, bins + 1)
    n_all, _ = np.histogram(np.clip(score, 0, 1), edges)
    n_flag, _ = np.histogram(np.clip(score[crack], 0, 1), edges)
    L, R, T, B = 44, 12, 12, 44
    w, h = width - L - R, height - T - B
    top = max(1, int(n_all.max()))
    out = [f'<svg viewBox="0 0 {width} {height}" class="chart" role="img" aria-label="histogram of crack scores" '
           'id="hist-svg">']
    for frac in (0, 0.5, 1):
        y = T + h - frac * h
        out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{L + w}" y2="{y:.1f}" stroke="#e3e6ea"/>'
                   f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{round(top * frac)}</text>')
    bw = w / bins
    for i in range(bins):
        hn = h * n_all[i] / top
        hf = h * n_flag[i] / top
        x = L + i * bw
        if n_all[i] - n_flag[i]:
            out.append(f'<rect x="{x + 1:.1f}" y="{T + h - hn:.1f}" width="{bw - 2:.1f}" height="{hn - hf:.1f}" '
                       f'fill="{OTHER}"><title>{edges[i]:.2f}-{edges[i + 1]:.2f}: {n_all[i] - n_flag[i]} not flagged'
                       f'</title></rect>')
        if n_flag[i]:
            out.append(f'<rect x="{x + 1:.1f}" y="{T + h - hf:.1f}" width="{bw - 2:.1f}" height="{hf:.1f}" '
                       f'fill="{CRACK}"><title>{edges[i]:.2f}-{edges[i + 1]:.2f}: {n_flag[i]} flagged</title></rect>')
    for v in (0, 0.25, 0.5, 0.75, 1.0):
        out.append(f'<text x="{L + v * w:.1f}" y="{T + h + 18}" text-anchor="middle">{v:g}</text>')
    out.append(f'<text x="{L + w / 2:.1f}" y="{height - 3}" text-anchor="middle">crack score (highest tile)</text>')
    for thr in sorted({r.threshold for r in findings.runs if r.threshold is not None}):
        x = L + thr * w
        out.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{T + h}" stroke="#1d2329" stroke-dasharray="4 3"/>'
                   f'<text x="{x + 4:.1f}" y="{T + 10}">threshold {thr:.3f}</text>')
    out.append("</svg>")
    return "".join(out)


def _time_label(t: float, span: float) -> str:
    d = datetime.fromtimestamp(t, timezone.utc)
    return d.strftime("%Y-%m-%d %H:%M" if span > 86400 else ("%H:%M" if span > 3600 else "%H:%M:%S"))


def _zone(iso: str | None) -> str | None:
    """``Z``, ``+hh:mm`` / ``-hh:mm``, or None for a naive time (camera clock) and the wall clock of live runs."""
    if not iso:
        return "Z"  # live frames: the inspection's UTC wall clock
    if iso.endswith("Z"):
        return "Z"
    if len(iso) > 6 and iso[-6] in "+-" and iso[-3] == ":":
        return iso[-6:]
    return None


def timeline_svg(findings: Any, width: int = 600, height: int = 260, columns: int = 300) -> tuple[str, str]:
    """Crack score over capture time (or frame order when no frame has a time): the highest score
    per column in grey, flagged frames as red dots. Returns the SVG and a caption."""
    timed = [f for f in findings.frames if f.t is not None]
    if timed:
        xs = np.array([f.t for f in timed], np.float64)
        rows = timed
        zones = {_zone(f.capture_time) for f in timed}
        shift = 0.0
        if None in zones:
            caption = "capture time (camera clock)"
        elif len(zones) == 1 and zones != {"Z"}:
            z = zones.pop()  # one flight, one time zone: label the axis in it, as the cards are
            shift = (1 if z[0] == "+" else -1) * (int(z[1:3]) * 3600 + int(z[4:6]) * 60)
            caption = f"capture time (UTC{z})"
        else:
            caption = "capture time (UTC)"
        missing = len(findings.frames) - len(timed)
        if missing:
            caption += f"; {missing} frame{'s' if missing != 1 else ''} without a time not shown"
    else:
        rows = sorted(findings.frames, key=lambda f: f.seq)
        xs = np.arange(len(rows), dtype=np.float64)
        caption = "frame order (no frame has a capture time)"
        shift = 0.0
    L, R, T, B = 36, 12, 12, 44
    w, h = width - L - R, height - T - B
    lo, hi = float(xs.min()), float(xs.max())
    span = hi - lo if hi > lo else 1.0

    def X(v: float) -> float:
        return L + (v - lo) / span * w if hi > lo else L + w / 2

    score = np.array([f.score for f in rows])
    out = [f'<svg viewBox="0 0 {width} {height}" class="chart" role="img" aria-label="crack score over time" '
           'id="timeline-svg">']
    for v in (0, 0.5, 1):
        y = T + h - v * h
        out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{L + w}" y2="{y:.1f}" stroke="#e3e6ea"/>'
                   f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
    col = np.minimum(((xs - lo) / span * columns).astype(int), columns - 1) if hi > lo else np.zeros(len(xs), int)
    top = np.full(columns, -1.0)
    np.maximum.at(top, col, score)
    cw = w / columns
    for c in np.nonzero(top >= 0)[0]:
        y = T + h - top[c] * h
        out.append(f'<rect x="{L + c * cw:.1f}" y="{y:.1f}" width="{max(cw, 1.2):.1f}" height="{T + h - y:.1f}" '
                   f'fill="#c5ccd3"/>')
    flagged = [(x, f) for x, f in zip(xs, rows) if f.cracked]
    if len(flagged) > 3000:
        flagged = flagged[:: math.ceil(len(flagged) / 3000)]
    for x, f in flagged:
        out.append(f'<circle cx="{X(x):.1f}" cy="{T + h - f.score * h:.1f}" r="3" fill="{CRACK}">'
                   f'<title>{_e(f.name)} p={f.score:.2f}{" " + _e(f.time) if f.time else ""}</title></circle>')
    for thr in sorted({r.threshold for r in findings.runs if r.threshold is not None}):
        y = T + h - thr * h
        out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{L + w}" y2="{y:.1f}" stroke="#1d2329" stroke-dasharray="4 3"/>')
    for i in range(5 if hi > lo else 1):
        v = lo + span * i / 4 if hi > lo else lo
        label = _time_label(v + shift, span) if timed else str(int(v))
        out.append(f'<text x="{X(v):.1f}" y="{T + h + 18}" text-anchor="{("start", "middle", "middle", "middle", "end")[i]}">'
                   f'{_e(label)}</text>')
    out.append(f'<text x="{L + w / 2:.1f}" y="{height - 3}" text-anchor="middle">{_e(caption)}</text></svg>')
    return "".join(out), caption


def _kpi(value: str, label: str, alert: bool = False) -> str:
    return f'<div class="kpi{" alert" if alert else ""}"><b>{_e(value)}</b><span>{_e(label)}</span></div>'


def summary_html(findings: Any) -> str:
    """The numbers a reader wants first, and one row per run (model, backend, thresholds)."""
    n = len(findings.frames)
    flagged = findings.flagged
    located = sum(f.located for f in findings.frames)
    length = sum(track_length_m(p) for _, p in findings.tracks())
    times = [f.t for f in findings.frames if f.t is not None]
    kpis = [_kpi(f"{n}", "frames inspected"), _kpi(f"{len(flagged)}", "flagged (cracked)", bool(flagged)),
            _kpi(f"{100 * len(flagged) / n:.1f} %", "share flagged"),
            _kpi(f"{located}", f"frames with a position (of {n})")]
    if length > 0:
        kpis.append(_kpi(_metres(length), "track length"))
    if times:
        kpis.append(_kpi(_duration(max(times) - min(times)), "time span"))
    rows = []
    for r in findings.runs:
        fr = [f for f in findings.frames if f.run is r]
        thr = f"{r.threshold:.3f}" if r.threshold is not None else "?"
        rows.append(f'<tr><td class="path">{_e(r.source)}<br><span class="note">{_e(r.source_kind)}</span></td>'
                    f'<td class="path" title="{_e(r.model)}">{_e(_short(r.model))}</td><td>{_e(r.backend)}</td><td>{thr}</td><td>{r.min_tiles}</td>'
                    f'<td>{r.tile or "whole frame"}</td><td>{len(fr)}</td><td>{sum(f.cracked for f in fr)}</td></tr>')
    notes = []
    if findings.duplicates:
        notes.append(f"{findings.duplicates} frame record(s) appeared in more than one log or run; the latest was kept.")
    if findings.truncated_lines:
        notes.append(f"{findings.truncated_lines} truncated last line(s) skipped (a run killed mid-write).")
    unloc = sum(not f.located for f in flagged)
    if unloc:
        notes.append(f"{unloc} flagged frame(s) have no position: they are in the gallery and the CSV, and in "
                     "the GeoJSON with a null geometry.")
    return (f'<div class="kpis">{"".join(kpis)}</div><div class="tablewrap"><table><thead><tr><th>source</th>'
            '<th>model</th><th>backend</th><th>threshold</th><th>min tiles</th><th>tile px</th><th>frames</th>'
            f'<th>flagged</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
            + "".join(f'<p class="note">{_e(x)}</p>' for x in notes))


def _short(path: str) -> str:
    """``runs/deck/model.onnx`` -> ``deck/model.onnx``: the run folder and file say which model it was."""
    p = Path(path)
    return str(Path(p.parent.name) / p.name) if p.parent.name else path


def display_time(s: str | None) -> str:
    """``2024-06-12T09:42:55-06:00`` -> ``2024-06-12 09:42:55 -06:00`` (``Z`` -> ``UTC``)."""
    if not s:
        return ""
    s = s.replace("T", " ", 1)
    if s.endswith("Z"):
        return s[:-1] + " UTC"
    if len(s) > 6 and s[-6] in "+-" and s[-3] == ":":
        return s[:-6] + " " + s[-6:]
    return s


def _duration(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def card_html(card: Any) -> str:
    """One gallery card; ``data-*`` attributes are what the sort script reads."""
    f = card.frame
    img = (f'<img src="{card.thumb}" alt="{_e(f.name)}">' if card.thumb
           else f'<div class="noimg">{_e(card.note or "no image")}</div>')
    if card.href:
        img = f'<a href="{_e(card.href)}" target="_blank" rel="noopener">{img}</a>'
    pos = f"{f.lat:.6f}, {f.lon:.6f}" if f.located else "no position"
    meta = [f"{f.cracked_tiles}/{f.tiles} tiles" + (f" · {_e(display_time(f.time))}" if f.time else ""), pos]
    note = f'<br><span class="meta">{_e(card.note)}</span>' if card.note and card.thumb else ""
    return (f'<figure class="card" id="f{f.seq}" data-seq="{f.seq}" data-score="{f.score:.5f}" '
            f'data-t="{"" if f.t is None else f"{f.t:.3f}"}" data-name="{_e(f.name)}">{img}'
            f'<figcaption><span class="p">p {f.score:.2f}</span> <span class="name">{_e(f.name)}</span><br>'
            f'<span class="meta">{"<br>".join(meta)}</span>{note}</figcaption></figure>\n')


def write_html(path: str | Path, findings: Any, cards: Iterable[Any], cfg: Any, title: str) -> dict[str, int]:
    """Write the page to ``path``, streaming the gallery cards as they are made.

    Returns:
        ``cards`` written, ``thumbnails`` among them, ``missing`` images.
    """
    linked = gallery_choice(findings, cfg.gallery_limit)
    timeline, _ = timeline_svg(findings)
    track_map, scale = map_svg(findings, cfg.tiles, linked)
    gen = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    n_flag = len(findings.flagged)
    shown = min(n_flag, cfg.gallery_limit)
    stats = {"cards": 0, "thumbnails": 0, "missing": 0}
    with open(path, "w", encoding="utf-8") as out:
        legend = [f'<span><i class="dot" style="background:{CRACK}"></i>flagged (size: score; click: its card)</span>',
                  f'<span><i class="dot" style="background:{OTHER}"></i>not flagged</span>',
                  f'<span><i class="dot" style="background:{TRACK}"></i>track (white circle: start)</span>']
        if scale:
            legend.append(f"<span>{_e(scale)}</span>")
        out.write(f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
                  f'<meta name="viewport" content="width=device-width,initial-scale=1">'
                  f'<title>{_e(title)}</title><style>{CSS}</style></head><body>\n'
                  f'<header><h1>{_e(title)}</h1><p class="sub">generated {gen} by edgecrack {__version__} from '
                  f'{len(findings.logs)} log{"s" if len(findings.logs) != 1 else ""}</p></header><main>\n'
                  f'<section id="summary"><h2>Summary</h2>{summary_html(findings)}</section>\n'
                  f'<section id="map"><h2>Flight track and flagged frames</h2>{track_map}'
                  f'<div class="legend">{"".join(legend)}</div></section>\n'
                  f'<div class="two"><section id="histogram"><h2>Crack scores</h2>{histogram_svg(findings)}</section>'
                  f'<section id="timeline"><h2>Timeline</h2>{timeline}</section></div>\n'
                  f'<section id="gallery"><h2>Flagged frames</h2><div class="controls">'
                  f'<label>sort <select id="sort"><option value="score">score, highest first</option>'
                  f'<option value="time">capture time</option><option value="name">name</option></select></label>'
                  f'<span id="gallery-status">{shown} flagged frame{"s" if shown != 1 else ""}</span></div>'
                  f'<div class="cards" id="cards">\n')
        for card in cards:
            out.write(card_html(card))
            stats["cards"] += 1
            stats["thumbnails"] += card.thumb is not None
            stats["missing"] += card.thumb is None
        notes = []
        if n_flag > shown:
            notes.append(f"The gallery shows the {shown} highest-scoring of {n_flag} flagged frames; all of them are "
                         "on the map and in findings.geojson / findings.csv.")
        if not n_flag:
            notes.append("No frame was flagged.")
        if stats["missing"]:
            notes.append(f"{stats['missing']} flagged frame(s) without a picture: the image or video was not found "
                         "where the log says (run the report where the run ran, or next to the images).")
        out.write("</div>" + "".join(f'<p class="note">{_e(x)}</p>' for x in notes) + "</section>\n</main>"
                  '<footer>Files next to this page: <a href="findings.geojson">findings.geojson</a> (GIS), '
                  '<a href="findings.csv">findings.csv</a>' + (' , <a href="findings.kml">findings.kml</a>'
                                                               if cfg.kml else "")
                  + f".</footer>\n<script>{JS}</script></body></html>\n")
    return stats
