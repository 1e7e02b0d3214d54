"""THE host-side preprocessing function (torch-free).

Everything that feeds pixels to a model calls this module: training, evaluation, bottleneck
extraction, INT8 calibration, benchmarking and the camera loop. The host only decodes and
resizes; normalisation (scale, mean/std, colour order, layout) lives inside the exported
graph. The model input contract is ``uint8 [N, H, W, 3]`` in BGR order, exactly what
``cv2.imread`` and ``cv2.VideoCapture`` return.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageDecodeError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


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


def decode_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``uint8 [H, W, 3]`` BGR.

    Grey images are expanded to three channels, alpha is dropped, 16-bit images are scaled
    to 8 bits. Raises instead of returning ``None`` (OpenCV's silent failure).

    Args:
        path: Image file.

    Returns:
        The decoded BGR image.

    Raises:
        ImageDecodeError: The file is empty, truncated, corrupt or not an image.
    """
    p = Path(path)
    try:
        data = np.fromfile(str(p), dtype=np.uint8)
    except OSError as e:
        raise ImageDecodeError(f"cannot read {p}: {e.strerror or e}") from None
    return decode_bytes(data, source=str(p))


def decode_bytes(data: bytes | np.ndarray, source: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, ...) to ``uint8 [H, W, 3]`` BGR.

    Args:
        data: Encoded bytes.
        source: Name used in error messages.

    Raises:
        ImageDecodeError: Empty, truncated or undecodable data.
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    if buf.size == 0:
        raise ImageDecodeError(f"{source}: empty file")
    # ANYCOLOR|ANYDEPTH (not UNCHANGED) so EXIF orientation is applied, as cv2.imread does.
    img = cv2.imdecode(buf, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
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


def to_bgr8(img: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Normalise an OpenCV image of any depth/channel count to ``uint8 [H, W, 3]`` BGR."""
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
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
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(img, (contract.width, contract.height), interpolation=interp)


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
