"""Where each frame was taken: EXIF GPS and DJI XMP for stills, DJI ``.SRT`` telemetry for video.

Drones record position in two ways, and both are read here:

- **Stills** carry EXIF GPS (latitude, longitude, altitude, UTC time) in the GPS IFD and the
  capture time in the Exif IFD, which Pillow reads (``Image.getexif().get_ifd(0x8825)``).
  DJI cameras add an XMP packet (``drone-dji:GimbalYawDegree``, ``FlightPitchDegree``,
  ``RelativeAltitude``, ...) that Pillow parses with defusedxml (``Image.getxmp()``).
- **Videos** from DJI drones come with a subtitle file next to them (``DJI_0001.MP4`` +
  ``DJI_0001.SRT``) holding one cue per frame (per second on older models) with GPS,
  altitude and the date and time. Each video frame takes the position of the cue that covers
  its media time.

A frame without a position is still a frame: its ``gps`` is ``null``. DJI writes ``0, 0``
when the drone has no GPS fix; that is read as no position too.

The run loop's log carries the result per frame as ``gps`` (``{lat, lon, alt}``, WGS84
degrees and metres, or ``null``), ``capture_time`` (ISO 8601; with ``Z`` or an offset when
the source says which time zone, local camera time otherwise) and ``pose`` (height above
take-off and gimbal / aircraft attitude in degrees, when the drone recorded them).
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .errors import SourceError

GPS_IFD = 0x8825
EXIF_IFD = 0x8769
# EXIF tag numbers (CIPA DC-008): GPS IFD and Exif IFD.
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON, _GPS_ALT_REF, _GPS_ALT, _GPS_TIME, _GPS_DATE = 1, 2, 3, 4, 5, 6, 7, 29
_DATETIME_ORIGINAL, _OFFSET_TIME_ORIGINAL, _SUBSEC_TIME_ORIGINAL = 0x9003, 0x9011, 0x9291
_DATETIME = 0x0132

# DJI XMP (namespace http://www.dji.com/drone-dji/1.0/) -> pose keys.
_DJI_XMP_POSE = {
    "RelativeAltitude": "rel_alt",
    "GimbalYawDegree": "gimbal_yaw", "GimbalPitchDegree": "gimbal_pitch", "GimbalRollDegree": "gimbal_roll",
    "FlightYawDegree": "flight_yaw", "FlightPitchDegree": "flight_pitch", "FlightRollDegree": "flight_roll",
}
# DJI SRT keys -> pose keys (Matrice 30 / Mavic 3 Enterprise write the gimbal angles).
_DJI_SRT_POSE = {"rel_alt": "rel_alt", "gb_yaw": "gimbal_yaw", "gb_pitch": "gimbal_pitch", "gb_roll": "gimbal_roll"}


@dataclass
class GeoTag:
    """Position, time and attitude of one frame, as far as its source recorded them.

    Attributes:
        lat: WGS84 latitude in degrees (north positive), or None.
        lon: WGS84 longitude in degrees (east positive), or None.
        alt: Altitude in metres (EXIF: above sea level; DJI SRT: ``abs_alt``), or None.
        time: Capture time, ISO 8601, or None.
        pose: ``rel_alt`` (metres above take-off) and gimbal / flight yaw, pitch, roll
            (degrees), whichever were recorded.
        origin: ``exif`` or ``srt``.
    """

    lat: float | None = None
    lon: float | None = None
    alt: float | None = None
    time: str | None = None
    pose: dict[str, float] = field(default_factory=dict)
    origin: str = "exif"

    @property
    def located(self) -> bool:
        return self.lat is not None and self.lon is not None

    def gps(self) -> dict[str, float | None] | None:
        """``{lat, lon, alt}`` or None when there is no position."""
        if not self.located:
            return None
        return {"lat": self.lat, "lon": self.lon, "alt": self.alt}

    def to_record(self) -> dict[str, Any]:
        """The log fields: ``gps``, ``capture_time``, ``pose`` (each None when unknown)."""
        return {"gps": self.gps(), "capture_time": self.time, "pose": dict(self.pose) or None}


def track_length_m(points: list[tuple[float, float]]) -> float:
    """Great-circle length of a ``(lon, lat)`` polyline in metres (haversine, mean Earth radius)."""
    total = 0.0
    for (lo1, la1), (lo2, la2) in zip(points, points[1:]):
        p1, p2 = math.radians(la1), math.radians(la2)
        a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lo2 - lo1) / 2) ** 2
        total += 2 * 6371008.8 * math.asin(min(1.0, math.sqrt(a)))
    return total


def record_fields(tag: GeoTag | None) -> dict[str, Any]:
    """The log fields of a frame's tag; all ``None`` for a frame without one."""
    return tag.to_record() if tag is not None else {"gps": None, "capture_time": None, "pose": None}


def _num(v: Any) -> float | None:
    """A finite float from an EXIF rational, int, float or numeric string, else None."""
    try:
        x = float(v)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return x if math.isfinite(x) else None


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        v = v.decode("ascii", "replace")
    return str(v).strip("\x00 ").strip()


def _degrees(dms: Any, ref: Any, negative: str) -> float | None:
    """Decimal degrees from EXIF ``(deg, min, sec)`` rationals and an ``N``/``S``/``E``/``W`` ref."""
    if dms is None:
        return None
    parts = dms if isinstance(dms, (tuple, list)) else (dms,)
    vals = [_num(p) for p in parts[:3]]
    if not vals or any(v is None for v in vals):
        return None
    deg = vals[0] + (vals[1] / 60.0 if len(vals) > 1 else 0.0) + (vals[2] / 3600.0 if len(vals) > 2 else 0.0)
    return -deg if _text(ref).upper() == negative else deg


def dms_from_degrees(deg: float) -> tuple[float, float, float]:
    """EXIF ``(degrees, minutes, seconds)`` of an angle's magnitude (its sign goes in the N/S/E/W ref)."""
    deg = abs(deg)
    d = math.floor(deg)
    m = math.floor((deg - d) * 60)
    return float(d), float(m), (deg - d - m / 60) * 3600


def exif_gps_ifd(lat: float, lon: float, alt: float | None = None) -> dict[int, Any]:
    """The EXIF GPS IFD of a position, keyed by tag number as Pillow writes it (``Image.Exif()[0x8825]``).

    The inverse of what :func:`geotag_from_image` reads: ``(deg, min, sec)`` with N/S/E/W refs, and
    the altitude with its above/below-sea-level ref.
    """
    gps: dict[int, Any] = {1: "N" if lat >= 0 else "S", 2: dms_from_degrees(lat), 3: "E" if lon >= 0 else "W",
                           4: dms_from_degrees(lon)}
    if alt is not None:
        gps.update({5: b"\x01" if alt < 0 else b"\x00", 6: abs(alt)})
    return gps


def _valid_position(lat: float | None, lon: float | None) -> bool:
    # DJI writes 0,0 without a GPS fix; nothing is inspected at Null Island.
    return (lat is not None and lon is not None and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0
            and not (lat == 0.0 and lon == 0.0))


def _exif_time(exif_ifd: dict, base: Any, gps: dict) -> str | None:
    """Capture time: DateTimeOriginal with its offset, else the GPS UTC stamp, else local camera time."""
    local = None
    raw = exif_ifd.get(_DATETIME_ORIGINAL) or base.get(_DATETIME)
    if raw:
        try:
            local = datetime.strptime(_text(raw)[:19], "%Y:%m:%d %H:%M:%S")
        except ValueError:
            local = None
    if local is not None:
        sub = _text(exif_ifd.get(_SUBSEC_TIME_ORIGINAL, ""))
        if sub.isdigit():
            local += timedelta(seconds=float("0." + sub))
        offset = _text(exif_ifd.get(_OFFSET_TIME_ORIGINAL, ""))
        if re.fullmatch(r"[+-]\d\d:\d\d", offset):
            return _iso(local) + offset
    date, hms = _text(gps.get(_GPS_DATE, "")), gps.get(_GPS_TIME)
    if date and isinstance(hms, (tuple, list)) and len(hms) == 3:
        h, m, s = (_num(x) for x in hms)
        try:
            day = datetime.strptime(date, "%Y:%m:%d")
        except ValueError:
            day = None
        if day is not None and None not in (h, m, s):
            return _iso(day + timedelta(hours=h, minutes=m, seconds=s)) + "Z"
    return _iso(local) if local is not None else None


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds") if t.microsecond else t.isoformat(timespec="seconds")


def _xmp_values(node: Any, out: dict[str, str]) -> None:
    """Flatten Pillow's nested XMP dict into ``{local name: value}`` (first occurrence wins)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, (dict, list)):
                _xmp_values(v, out)
            elif isinstance(v, str):
                out.setdefault(k, v)
    elif isinstance(node, list):
        for v in node:
            _xmp_values(v, out)


def geotag_from_image(path: str | Path) -> GeoTag | None:
    """Read an image's EXIF GPS, capture time and DJI XMP attitude.

    Only the file's header is read (Pillow opens lazily). Missing or damaged metadata gives
    None or a tag with the fields that could be read: metadata never makes a frame invalid.

    Args:
        path: Image file (JPEG, TIFF, PNG, WebP, HEIF where Pillow reads it).

    Returns:
        The tag, or None when the file has no GPS, time or attitude at all.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            exif = im.getexif()
            gps = dict(exif.get_ifd(GPS_IFD))
            exif_ifd = dict(exif.get_ifd(EXIF_IFD))
            xmp: dict[str, str] = {}
            if hasattr(im, "getxmp"):  # per format before Pillow 11, on Image since
                _xmp_values(im.getxmp(), xmp)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, KeyError, TypeError,
            Image.DecompressionBombError):
        # Pillow raises these for damaged EXIF/XMP blocks; the pixels may still be fine. Over
        # Pillow's pixel limit (~179 MP; drone stills are 12-48 MP) no tag is read; decoding
        # itself is bounded by edgecrack's own --max-pixels.
        return None
    lat = _degrees(gps.get(_GPS_LAT), gps.get(_GPS_LAT_REF), "S")
    lon = _degrees(gps.get(_GPS_LON), gps.get(_GPS_LON_REF), "W")
    if not _valid_position(lat, lon):
        lat = lon = None
    alt = _num(gps.get(_GPS_ALT))
    if alt is not None and gps.get(_GPS_ALT_REF) in (1, b"\x01"):
        alt = -alt
    if alt is None and lat is not None:
        alt = _num(xmp.get("AbsoluteAltitude"))
    pose = {}
    for key, name in _DJI_XMP_POSE.items():
        v = _num(xmp.get(key))
        if v is not None:
            pose[name] = v
    tag = GeoTag(lat, lon, alt if lat is not None else None, _exif_time(exif_ifd, exif, gps), pose, "exif")
    return tag if (tag.located or tag.time or tag.pose) else None


# -- DJI .SRT telemetry -------------------------------------------------------------------------
_CUE_TIME = re.compile(r"(\d+):(\d\d):(\d\d)[,.](\d{1,3})\s*-->\s*(\d+):(\d\d):(\d\d)[,.](\d{1,3})")
_SRT_DATETIME = re.compile(r"(\d{4})[-.](\d\d)[-.](\d\d)[ T](\d\d):(\d\d):(\d\d)(?:[.,:](\d{1,6}))?")
_SRT_KEYVAL = re.compile(r"([A-Za-z_]+)\s*:\s*([-+]?\d+(?:\.\d+)?)")
# Phantom 3/4, Mavic Pro, Inspire: ``GPS(lon,lat,16)`` or ``GPS (lon, lat, 19.5M)``.
_SRT_GPS_TUPLE = re.compile(r"GPS\s*\(\s*([-+]?\d+(?:\.\d+)?)\s*,\s*([-+]?\d+(?:\.\d+)?)\s*(?:,\s*([-+]?\d+(?:\.\d+)?)\s*([mM])?)?\s*\)")
_SRT_BAROMETER = re.compile(r"(?:BAROMETER\s*:?\s*|\bH\s+)([-+]?\d+(?:\.\d+)?)\s*[mM]")
_TAGS = re.compile(r"<[^>]*>")


@dataclass
class TelemetryCue:
    """One cue of a DJI subtitle file: a media time span and what the drone recorded for it."""

    start_ms: float
    end_ms: float
    lat: float | None
    lon: float | None
    alt: float | None
    time: datetime | None
    pose: dict[str, float]


def _cue_from_text(start_ms: float, end_ms: float, text: str) -> TelemetryCue:
    text = _TAGS.sub(" ", text)
    kv: dict[str, float] = {}
    for k, v in _SRT_KEYVAL.findall(text):
        kv.setdefault(k.lower(), float(v))
    lat = kv.get("latitude")
    lon = kv.get("longitude", kv.get("longtitude"))  # Mavic 2 firmware spells it "longtitude"
    alt = kv.get("abs_alt", kv.get("altitude"))
    pose = {name: kv[k] for k, name in _DJI_SRT_POSE.items() if k in kv}
    m = _SRT_GPS_TUPLE.search(text)
    if lat is None and m:
        lon, lat = float(m.group(1)), float(m.group(2))
        if m.group(3) and m.group(4):  # a bare third number is the satellite count, not altitude
            alt = float(m.group(3))
        b = _SRT_BAROMETER.search(text)
        if b:
            pose.setdefault("rel_alt", float(b.group(1)))
    if not _valid_position(lat, lon):
        lat = lon = alt = None
    when = None
    d = _SRT_DATETIME.search(text)
    if d:
        frac = d.group(7) or "0"
        try:
            when = datetime(*(int(x) for x in d.groups()[:6])) + timedelta(seconds=float("0." + frac))
        except ValueError:
            when = None
    return TelemetryCue(start_ms, end_ms, lat, lon, alt, when, pose)


class Telemetry:
    """A DJI flight's per-cue telemetry, looked up by a video frame's media time.

    Args:
        cues: Cues sorted by start time.
        path: The file they came from (for messages).
    """

    def __init__(self, cues: list[TelemetryCue], path: str | Path | None = None):
        self.cues = sorted(cues, key=lambda c: c.start_ms)
        self.path = path
        self._starts = [c.start_ms for c in self.cues]

    def __len__(self) -> int:
        return len(self.cues)

    @property
    def located(self) -> int:
        """How many cues carry a position."""
        return sum(c.lat is not None for c in self.cues)

    def at(self, ms: float | None) -> GeoTag | None:
        """The tag of the frame shown at media time ``ms``: the cue that covers it.

        The time within a cue is added to the cue's clock time, so frames of the one-second
        cues of older drones still get distinct times. Frames before the first or after the
        last cue, and frames of video without a media time, get None.
        """
        if ms is None or not self.cues:
            return None
        # Cue times are rounded to the millisecond: cue i covers [start - 0.5, end - 0.5) ms.
        i = bisect.bisect_right(self._starts, ms + 0.5) - 1
        if i < 0:
            return None
        c = self.cues[i]
        if ms >= max(c.end_ms, c.start_ms + 1.0) - 0.5:
            return None
        when = _iso(c.time + timedelta(milliseconds=max(0.0, ms - c.start_ms))) if c.time else None
        if c.lat is None and when is None and not c.pose:
            return None
        return GeoTag(c.lat, c.lon, c.alt if c.lat is not None else None, when, dict(c.pose), "srt")


def telemetry_from_srt(path: str | Path) -> Telemetry:
    """Parse a DJI ``.SRT`` telemetry file.

    Reads the per-frame format of current DJI drones (``[latitude: ..] [longitude: ..]
    [rel_alt: .. abs_alt: ..]``, also Mavic 2's ``longtitude`` / ``altitude``) and the
    one-second format of older ones (``GPS(lon,lat,..)``, ``BAROMETER``, ``H 5.6m``).

    Args:
        path: The ``.SRT`` file.

    Returns:
        Its cues (possibly none with a position: plain subtitles have none).

    Raises:
        SourceError: The file is missing or unreadable.
    """
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8-sig", errors="replace")
    except FileNotFoundError:
        raise SourceError(f"telemetry file not found: {p}", "DJI writes it next to the video as NAME.SRT") from None
    except OSError as e:
        raise SourceError(f"cannot read telemetry file {p}: {e.strerror or e}") from None
    cues = []
    for block in re.split(r"\n\s*\n", raw.replace("\r\n", "\n").replace("\r", "\n")):
        m = _CUE_TIME.search(block)
        if not m:
            continue
        g = [int(x) for x in m.groups()]
        start = ((g[0] * 60 + g[1]) * 60 + g[2]) * 1e3 + int(m.group(4).ljust(3, "0"))
        end = ((g[4] * 60 + g[5]) * 60 + g[6]) * 1e3 + int(m.group(8).ljust(3, "0"))
        cues.append(_cue_from_text(start, end, block[m.end():]))
    return Telemetry(cues, p)


def telemetry_for_video(video: str | Path, explicit: str | Path | None = None) -> Telemetry | None:
    """The telemetry of a video: ``explicit`` if given, else ``VIDEO.SRT`` / ``VIDEO.srt`` next to it.

    Args:
        video: The video file.
        explicit: A telemetry file the user named (``--telemetry``).

    Returns:
        The telemetry, or None when no file was named and none lies next to the video, or
        when the file next to it holds no positions (plain subtitles).

    Raises:
        SourceError: The named file is missing, unreadable or holds no position at all.
    """
    if explicit is not None:
        t = telemetry_from_srt(explicit)
        if not t.located:
            raise SourceError(f"telemetry file {explicit} holds no GPS positions ({len(t)} cues)",
                              "pass the DJI .SRT written with the video (subtitles must be on in the DJI app)")
        return t
    v = Path(video)
    for cand in (v.with_suffix(".SRT"), v.with_suffix(".srt")):
        if cand.is_file():
            t = telemetry_from_srt(cand)
            return t if t.located else None
    return None
