"""THE host-side preprocessing function (torch-free).

Everything that feeds pixels to a model calls this module: training, evaluation, bottleneck
extraction, INT8 calibration, benchmarking and the camera loop. The host only decodes and
resizes; normalisation (scale, mean/std, colour order, layout) lives inside the exported
graph. The model input contract is ``uint8 [N, H, W, 3]`` in BGR order, exactly what
``cv2.imread`` and ``cv2.VideoCapture`` return.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageDecodeError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Largest image decoded at full size, in pixels (``--max-pixels``; 0: no limit). 100 MP is a
#: 12000x8000 photo (about 300 MB decoded as BGR). A bigger image is decoded reduced where
#: that changes nothing (the whole image is resized to the model input anyway, and it is a
#: JPEG: libjpeg decodes at 1/2, 1/4 or 1/8 scale directly), else refused with a clear message.
DEFAULT_MAX_PIXELS = 100_000_000
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


@dataclass(frozen=True)
class InputContract:
    """What the host must hand the model, and what the graph does with it.

    Attributes:
        height: Input height in pixels.
        width: Input width in pixels.
        color: Channel order the graph expects (always ``BGR`` for edgecrack artifacts).
        dtype: Host-side dtype (``uint8``).
        layout: Host-side layout (``NHWC``).
        resize: Resize policy: ``stretch`` resizes the whole image to (height, width),
            ``INTER_AREA`` when shrinking and ``INTER_LINEAR`` when enlarging.
        mean: Per-channel mean in RGB order on the 0..255 scale, applied inside the graph.
        std: Per-channel std in RGB order on the 0..255 scale, applied inside the graph.
    """

    height: int = 224
    width: int = 224
    color: str = "BGR"
    dtype: str = "uint8"
    layout: str = "NHWC"
    resize: str = "stretch"
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InputContract":
        d = dict(d)
        d["mean"] = tuple(d.get("mean", cls.mean))
        d["std"] = tuple(d.get("std", cls.std))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def decode_image(path: str | Path, max_pixels: int | None = None,
                 min_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as ``uint8 [H, W, 3]`` BGR.

    Grey images are expanded to three channels, alpha is dropped, 16-bit images are scaled
    to 8 bits. Raises instead of returning ``None`` (OpenCV's silent failure). The pixel
    count is read from the file's header before anything is decoded (see
    :func:`decode_bytes`).

    Args:
        path: Image file.
        max_pixels: Largest image decoded at full size (None: :data:`DEFAULT_MAX_PIXELS`,
            0: no limit).
        min_size: ``(height, width)`` the caller needs at least; set when the image is only
            resized down to it (whole-image inference), which lets a JPEG over the limit be
            decoded reduced instead of refused.

    Returns:
        The decoded BGR image.

    Raises:
        ImageDecodeError: The file is empty, truncated, corrupt, not an image, or over the
            pixel limit.
    """
    p = Path(path)
    try:
        data = np.fromfile(str(p), dtype=np.uint8)
    except OSError as e:
        raise ImageDecodeError(f"cannot read {p}: {e.strerror or e}") from None
    return decode_bytes(data, source=str(p), max_pixels=max_pixels, min_size=min_size)


def image_size(data: bytes | np.ndarray) -> tuple[int, int] | None:
    """``(width, height)`` from the header of a JPEG, PNG, BMP, WebP or TIFF, without decoding.

    Returns:
        The size, or None when the format or the header is not recognised.
    """
    b = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    try:
        if b[:2] == b"\xff\xd8":
            return _jpeg_size(b)
        if b[:8] == b"\x89PNG\r\n\x1a\n":
            return struct.unpack(">II", b[16:24])
        if b[:2] == b"BM":
            if struct.unpack("<I", b[14:18])[0] == 12:
                return struct.unpack("<HH", b[18:22])
            w, h = struct.unpack("<ii", b[18:26])
            return abs(w), abs(h)
        if b[:4] == b"RIFF" and b[8:12] == b"WEBP":
            return _webp_size(b)
        if b[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(b)
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _jpeg_size(b: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(b):
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):
            i += 2
            continue
        length = struct.unpack(">H", b[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h, w = struct.unpack(">HH", b[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None


def _webp_size(b: bytes) -> tuple[int, int] | None:
    chunk = b[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", b[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        bits = struct.unpack("<I", b[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(b[24:27], "little") + 1, int.from_bytes(b[27:30], "little") + 1
    return None


def _tiff_size(b: bytes) -> tuple[int, int] | None:
    end = "<" if b[:2] == b"II" else ">"
    ifd = struct.unpack(end + "I", b[4:8])[0]
    n = struct.unpack(end + "H", b[ifd:ifd + 2])[0]
    found: dict[int, int] = {}
    for k in range(n):
        e = ifd + 2 + 12 * k
        tag, typ = struct.unpack(end + "HH", b[e:e + 4])
        if tag in (256, 257):
            found[tag] = struct.unpack(end + ("H" if typ == 3 else "I"), b[e + 8:e + (10 if typ == 3 else 12)])[0]
    return (found[256], found[257]) if len(found) == 2 else None


def decode_bytes(data: bytes | np.ndarray, source: str = "<bytes>", max_pixels: int | None = None,
                 min_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, ...) to ``uint8 [H, W, 3]`` BGR.

    Memory stays bounded: the size is read from the header first, and an image over
    ``max_pixels`` is either decoded reduced (a JPEG, when ``min_size`` says the caller only
    needs that much) or refused before a byte of it is decoded.

    Args:
        data: Encoded bytes.
        source: Name used in error messages.
        max_pixels: See :func:`decode_image`.
        min_size: See :func:`decode_image`.

    Raises:
        ImageDecodeError: Empty, truncated, undecodable data, or over the pixel limit.
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    if buf.size == 0:
        raise ImageDecodeError(f"{source}: empty file")
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    # ANYCOLOR|ANYDEPTH (not UNCHANGED) so EXIF orientation is applied, as cv2.imread does.
    flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
    size = image_size(buf) if limit else None
    if size is not None and size[0] * size[1] > limit:
        flags = _reduced_flags(size, limit, min_size, buf)
        if flags is None:
            w, h = size
            raise ImageDecodeError(f"{source}: {w}x{h} is {w * h / 1e6:.0f} megapixels, over the limit of "
                                   f"{limit / 1e6:g} (--max-pixels); decoding it would take about "
                                   f"{w * h * 3 / 2**30:.1f} GiB. Raise --max-pixels on a machine with the memory, "
                                   "downscale the image, or (edgecrack run) use --tile 0 to decode a JPEG reduced")
    img = cv2.imdecode(buf, flags)
    if img is None or img.size == 0:
        raise ImageDecodeError(f"{source}: not a decodable image (corrupt, truncated or unsupported)")
    if _is_truncated_jpeg(buf):
        # libjpeg pads a truncated JPEG with grey and only warns; a partly grey crop would
        # silently poison training, so it is treated as corrupt.
        raise ImageDecodeError(f"{source}: truncated JPEG (no end-of-image marker)")
    return to_bgr8(img, source)


def _is_truncated_jpeg(buf: np.ndarray) -> bool:
    if buf.size < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        return False
    # The end-of-image marker must follow the last start-of-scan. Looking only at the file's
    # tail would reject valid JPEGs that carry trailer bytes after EOI (some cameras and
    # phones append data there); scan data cannot contain FF D9 (0xFF is byte-stuffed).
    data = buf.tobytes()
    return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")


def _reduced_flags(size: tuple[int, int], limit: int, min_size: tuple[int, int] | None, buf: np.ndarray) -> int | None:
    """imdecode flags for the strongest reduction that still leaves ``min_size`` (the image is
    resized down to it anyway) and fits ``limit``, or None when there is none."""
    if min_size is None or not (buf[0] == 0xFF and buf[1] == 0xD8):
        return None  # only libjpeg decodes reduced directly; others decode in full first
    w, h = size
    for factor, flag in _REDUCED:
        rw, rh = -(-w // factor), -(-h // factor)
        if rw * rh <= limit and rh >= min_size[0] and rw >= min_size[1]:
            return flag
    return None


def to_bgr8(img: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Normalise an OpenCV image of any depth/channel count to ``uint8 [H, W, 3]`` BGR."""
    if img.dtype == np.uint16:
        # round(x / 257) in one pass, without a float64 copy (8 bytes a sample: 20 GB for a
        # 20000x20000 16-bit RGB image).
        img = cv2.convertScaleAbs(img, alpha=1.0 / 257.0)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(img * 255.0 if img.max() <= 1.0 else img, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageDecodeError(f"{source}: unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif not (img.ndim == 3 and img.shape[2] == 3):
        raise ImageDecodeError(f"{source}: unsupported image shape {img.shape}")
    return img


def resize_to_contract(img: np.ndarray, contract: InputContract) -> np.ndarray:
    """Resize one BGR image to the contract's input size (the only geometric host step)."""
    h, w = img.shape[:2]
    if (h, w) == (contract.height, contract.width):
        return img
    shrinking = h * w > contract.height * contract.width
    if shrinking:
        maps = _area_as_linear_maps(h, w, contract.height, contract.width)
        if maps is not None:
            return cv2.remap(img, maps, None, cv2.INTER_LINEAR)
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(img, (contract.width, contract.height), interpolation=interp)


def _area_taps(src: int, dst: int) -> np.ndarray | None:
    """Where ``INTER_AREA`` samples one axis, as linear-interpolation positions, if it can.

    OpenCV's area resize gives destination pixel ``d`` the source interval ``[d*s, (d+1)*s)``
    (``s = src / dst``), each overlapped source pixel weighted by its share. Where no interval
    touches more than two source pixels (``s <= 1 + 1/k`` shapes such as 256 -> 224, the tile
    size to the model input), that is linear interpolation at ``i + w``: the first pixel and
    the second one's weight. The weights must also be multiples of 1/256, so that float
    arithmetic on them is exact and the two resizes round alike. ``None`` otherwise.
    """
    scale = src / dst
    pos = np.empty(dst, np.float32)
    for d in range(dst):
        f1 = d * scale
        cell = min(scale, src - f1)
        s1, s2 = int(np.ceil(f1 - 1e-9)), int(np.floor(f1 + scale + 1e-9))
        taps = []
        if s1 - f1 > 1e-3:
            taps.append((s1 - 1, (s1 - f1) / cell))
        taps += [(i, 1.0 / cell) for i in range(s1, min(s2, src))]
        if s2 < src and f1 + scale - s2 > 1e-3:
            taps.append((s2, min(f1 + scale - s2, 1.0, cell) / cell))
        if len(taps) > 2 or any(abs(wt * 256 - round(wt * 256)) > 1e-6 for _, wt in taps):
            return None
        pos[d] = taps[0][0] + (taps[1][1] if len(taps) == 2 else 0.0)
    return pos


@functools.lru_cache(maxsize=8)
def _area_as_linear_maps(src_h: int, src_w: int, dst_h: int, dst_w: int) -> np.ndarray | None:
    """A ``cv2.remap`` map that reproduces ``INTER_AREA`` exactly, in less time, or ``None``.

    The run loop resizes every 256 px tile to the 224 px model input, and OpenCV's general
    area resize is slow at that 8/7 ratio (``benchmarks/run_loop`` times both). Used only
    where :func:`_area_taps` holds on both axes and the remap gives the same bytes as
    ``cv2.resize(..., INTER_AREA)`` on a random image of this geometry here (OpenCV builds
    differ in how they round a remap; where they differ, the area resize stays). At most 8
    geometries are kept (a 224x224 map is 400 KB).
    """
    ys, xs = _area_taps(src_h, dst_h), _area_taps(src_w, dst_w)
    if ys is None or xs is None:
        return None
    maps = np.empty((dst_h, dst_w, 2), np.float32)
    maps[..., 0] = xs[None, :]
    maps[..., 1] = ys[:, None]
    probe = np.random.default_rng(0).integers(0, 256, (src_h, src_w, 3), dtype=np.uint8)
    area = cv2.resize(probe, (dst_w, dst_h), interpolation=cv2.INTER_AREA)
    if not np.array_equal(cv2.remap(probe, maps, None, cv2.INTER_LINEAR), area):
        return None
    return maps


def preprocess(images: np.ndarray | list[np.ndarray], contract: InputContract) -> np.ndarray:
    """Turn decoded BGR images into the model input batch.

    This is the single preprocessing function of edgecrack.

    Args:
        images: One ``[H, W, 3]`` image, or a list / ``[N, H, W, 3]`` array of them, uint8 BGR.
        contract: The artifact's input contract.

    Returns:
        A C-contiguous ``uint8 [N, contract.height, contract.width, 3]`` BGR array.
    """
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    n = len(images)
    out = np.empty((n, contract.height, contract.width, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            img = to_bgr8(img)
        out[i] = resize_to_contract(img, contract)
    return out


def preprocess_files(paths: list[str | Path], contract: InputContract) -> np.ndarray:
    """Decode and preprocess files; raises :class:`ImageDecodeError` on the first bad one."""
    return preprocess([decode_image(p) for p in paths], contract)


def normalize_reference(batch: np.ndarray, contract: InputContract) -> np.ndarray:
    """What the exported graph does to a host batch, in numpy (``float32 NCHW RGB``).

    Used by tests and by runtimes that cannot embed normalisation (none today) to check
    the in-graph normalisation against a plain implementation.
    """
    x = batch.astype(np.float32)
    if contract.color == "BGR":
        x = x[..., ::-1]
    mean = np.asarray(contract.mean, np.float32)
    std = np.asarray(contract.std, np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
