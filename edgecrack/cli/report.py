"""``edgecrack report``: the field inspection report of one or several ``edgecrack run`` logs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import console, err_console, user_errors


def report_cmd(
    logs: Optional[List[Path]] = typer.Argument(None, help="JSONL logs of edgecrack run --log (several: sharded runs "
                                                          "are merged, a frame seen twice is taken from the later log)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: index.html, findings.geojson, findings.csv."),
    run_dir: Optional[List[Path]] = typer.Option(None, "--run-dir", help="Folder of a finished run: every *.jsonl "
                                                                         "below it is read (repeatable)."),
    title: Optional[str] = typer.Option(None, help="Page title (default: from the sources)."),
    tiles: Optional[str] = typer.Option(None, help="Map tile URL template, e.g. 'https://tile.openstreetmap.org/{z}/{x}/"
                                                   "{y}.png', drawn under the track (the page then needs that server; "
                                                   "without it nothing is fetched)."),
    kml: bool = typer.Option(False, "--kml", help="Also write findings.kml (Google Earth)."),
    gallery_limit: int = typer.Option(500, help="Most flagged frames shown as thumbnails (the highest scores); all "
                                                "are in the map, GeoJSON and CSV."),
    thumb_size: int = typer.Option(320, help="Longest thumbnail side in pixels."),
    copy_frames: bool = typer.Option(False, help="Copy annotated full-size flagged stills into OUT/frames (a portable "
                                                 "folder) instead of linking to the originals."),
) -> None:
    """Write a field inspection report: map, gallery, histogram, timeline, GeoJSON/CSV/KML for GIS.

    Frames carry their position from EXIF GPS (stills) or DJI .SRT telemetry (video); frames
    without one are still counted, shown and listed, with an empty position.
    """
    from ..report import ReportConfig, report_from_logs

    cfg = ReportConfig(logs=[str(p) for p in logs or []], out=str(out), run_dirs=[str(p) for p in run_dir or []],
                       title=title, tiles=tiles, kml=kml, gallery_limit=gallery_limit, thumb_px=thumb_size,
                       copy_frames=copy_frames)
    s = report_from_logs(cfg)
    share = 100.0 * s.flagged / s.frames if s.frames else 0.0
    err_console.print(f"[bold]report[/] {s.frames} frames, {s.flagged} flagged ({share:.1f} %), "
                      f"{s.located} with a position ({s.flagged_located} flagged); gallery {s.gallery} "
                      f"({s.thumbnails} thumbnails{f', {s.missing_images} images not found' if s.missing_images else ''})"
                      f"{f'; {s.duplicates} duplicate frame records merged' if s.duplicates else ''} in {s.seconds:.1f} s",
                      highlight=False, soft_wrap=True)
    for k, v in s.outputs.items():
        console.print(f"  {k}: {v}", highlight=False, soft_wrap=True, markup=False)


def register(app: typer.Typer) -> None:
    app.command("report")(user_errors(report_cmd))
