"""Make the report screenshot of the README from the bundled data.

Run: ``.venv/bin/python docs/report_demo.py --model runs/deck`` (about a minute on a 2-core CPU).

1. Writes geotagged copies of 90 bundled SDNET2018 deck images (30 cracked, 60 uncracked,
   shuffled with a fixed seed) into ``runs/report-demo/flight``. The positions are
   **synthetic**: a drone flying three 120 m passes along a 12 m wide deck near Logan, Utah
   (where SDNET2018 was photographed), one photo every 4 m, 10 m above the deck, with EXIF
   GPS, capture times 2 s apart and DJI-style XMP gimbal angles, written with Pillow.
2. Runs ``edgecrack run --log`` on the folder and ``edgecrack report`` on the log.
3. Screenshots ``index.html`` with headless Chromium at a desktop and a phone width into
   ``docs/report.png`` and ``docs/report-phone.png``.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from html import escape
from pathlib import Path

import cv2
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgecrack.geo import exif_gps_ifd  # noqa: E402

DECK = ROOT / "edgecrack" / "data" / "sdnet2018-deck"
START = (41.737020, -111.833810)  # lat, lon of the deck's south end (synthetic)
BEARING = 28.0  # degrees from north
GROUND_M = 1382.0
XMP = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       '<rdf:Description rdf:about="" xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/" '
       'drone-dji:RelativeAltitude="+{rel:.2f}" drone-dji:GimbalPitchDegree="-90.00" '
       'drone-dji:GimbalYawDegree="{yaw:+.2f}" drone-dji:FlightYawDegree="{yaw:+.2f}"/></rdf:RDF></x:xmpmeta>')


def positions(n_per_pass: int = 30, passes: int = 3, step_m: float = 4.0, lane_m: float = 4.0):
    """Lawn-mower passes along the deck: (lat, lon, yaw) per photo."""
    b = math.radians(BEARING)
    along = (math.cos(b), math.sin(b))  # (north, east) unit vector
    across = (-math.sin(b), math.cos(b))
    out = []
    for k in range(passes):
        idx = range(n_per_pass) if k % 2 == 0 else reversed(range(n_per_pass))
        for i in idx:
            s, c = i * step_m, (k - 1) * lane_m
            north = s * along[0] + c * across[0]
            east = s * along[1] + c * across[1]
            lat = START[0] + north / 111320.0
            lon = START[1] + east / (111320.0 * math.cos(math.radians(START[0])))
            out.append((lat, lon, BEARING if k % 2 == 0 else BEARING - 180))
    return out


def write_flight(folder: Path) -> int:
    rng = random.Random(12)
    cd = sorted((DECK / "CD").glob("*.jpg"))
    ud = sorted((DECK / "UD").glob("*.jpg"))
    imgs = rng.sample(cd, 30) + rng.sample(ud, 60)
    rng.shuffle(imgs)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = datetime(2024, 6, 12, 9, 41, 3)
    for n, ((lat, lon, yaw), src) in enumerate(zip(positions(), imgs)):
        t = t0 + timedelta(seconds=2 * n)
        exif = Image.Exif()
        exif[0x8825] = {**exif_gps_ifd(lat, lon, GROUND_M + 10.0),
                        7: (float(t.hour + 6), float(t.minute), float(t.second)), 29: t.strftime("%Y:%m:%d")}
        exif[0x8769] = {0x9003: t.strftime("%Y:%m:%d %H:%M:%S"), 0x9011: "-06:00"}
        with Image.open(src) as im:
            im.save(folder / f"DJI_{n + 1:04d}.JPG", exif=exif, xmp=XMP.format(rel=10.0, yaw=yaw).encode(), quality=95)
    return len(imgs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "runs" / "deck"))
    ap.add_argument("--work", default=str(ROOT / "runs" / "report-demo"))
    args = ap.parse_args()
    work = Path(args.work)
    n = write_flight(work / "flight")
    log = work / "flight.jsonl"
    log.unlink(missing_ok=True)
    exe = [sys.executable, "-m", "edgecrack.cli"]
    subprocess.run([*exe, "run", "--model", args.model, "--source", str(work / "flight"), "--log", str(log), "--quiet"],
                   check=True, cwd=ROOT)
    subprocess.run([*exe, "report", str(log), "--out", str(work / "report"), "--kml",
                    "--title", f"Deck inspection (synthetic flight, {n} bundled SDNET2018 images)"], check=True, cwd=ROOT)
    page = work / "report" / "index.html"
    shoot(page.resolve().as_uri(), ROOT / "docs" / "report.png", 1280, 2300)
    # Headless Chromium's window is at least 500 px wide: a phone is shown as a 390 px iframe, cropped.
    phone = work / "report" / "phone.html"
    phone.write_text('<!doctype html><html><body style="margin:0"><iframe style="width:390px;height:2600px;border:0" '
                     f'srcdoc="{escape(page.read_text(), quote=True)}"></iframe></body></html>')
    shoot(phone.resolve().as_uri(), ROOT / "docs" / "report-phone.png", 500, 2600, crop_w=390)


def shoot(url: str, png: Path, w: int, h: int, crop_w: int | None = None) -> None:
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={png}", f"--window-size={w},{h}", url], check=True, capture_output=True)
    if crop_w:
        img = cv2.imread(str(png))
        cv2.imwrite(str(png), img[:, :crop_w])
    print("wrote", png)

if __name__ == "__main__":
    main()
