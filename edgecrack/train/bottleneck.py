"""Bottleneck phase: frozen-trunk features computed once and cached by content.

The cache key of an image's features is the sha1 of its bytes plus a *model key* made of the
backbone, the weights hash, the preprocessing contract, the cut point and the augmentation
views. Renaming a file hits the cache; changing one byte of it misses (ML.NET's file-name
keyed cache silently goes stale). Features are stored as float16 ``[views, C, h, w]``.

Each entry is an ``.npy`` array followed by a checksum trailer (see :func:`write_cached_features`):
an entry whose bytes changed after it was written (disk error, a partial copy, an edit, another
entry copied over it) is recomputed, never served.

The frozen trunk runs on the fastest engine at hand: onnxruntime on CPU (measured about 4x
faster than eager PyTorch for EfficientNet-Lite0 on a 2-core machine), PyTorch on CUDA.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import ImageDecodeError
from ..io import atomic_write_bytes
from ..preprocess import InputContract, decode_image, preprocess
from .model import CrackNet, pool_features

#: Dihedral views of a square crop; cracks have no preferred orientation, so each is a valid
#: training sample. Order matters: view 0 is the identity used for validation and test.
VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "id": lambda x: x,
    "hflip": lambda x: x[:, ::-1],
    "vflip": lambda x: x[::-1, :],
    "rot180": lambda x: x[::-1, ::-1],
    "rot90": lambda x: np.rot90(x, 1),
    "rot270": lambda x: np.rot90(x, 3),
    "transpose": lambda x: np.transpose(x, (1, 0, 2)),
    "antitranspose": lambda x: np.rot90(x, 2).transpose(1, 0, 2),
}


#: Largest number of images (views) one trunk call sees; bounds the bottleneck phase's memory.
TRUNK_CHUNK = 16


def default_cache_dir() -> Path:
    env = os.environ.get("EDGECRACK_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgecrack"


@dataclass
class FeatureSet:
    """Cached trunk features of a list of images.

    Attributes:
        features: ``float16 [N, views, C, h, w]`` (or ``[N, views, C]`` when pooled).
        paths: The images that decoded, in input order.
        hashes: sha1 of each image's bytes.
        skipped: ``(path, reason)`` of images that could not be decoded.
        hits: Images served from the cache.
        computed: Images computed now.
        seconds: Wall time of the phase.
        engine: What ran the trunk.
    """

    features: np.ndarray
    paths: list[Path]
    hashes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    hits: int = 0
    computed: int = 0
    seconds: float = 0.0
    engine: str = ""

    @property
    def images_per_s(self) -> float:
        return (self.computed / self.seconds) if self.seconds > 0 and self.computed else 0.0


_ENTRY_MAGIC = b"ECKSUM01"  # 8 bytes, then the 32-byte sha256 digest
_TRAILER = len(_ENTRY_MAGIC) + 32


def _entry_path(kdir: Path, sha: str) -> Path:
    return kdir / sha[:2] / f"{sha}.npy"


def _entry_digest(kdir: Path, sha: str, payload: bytes) -> bytes:
    # The key is hashed with the bytes, so an intact entry copied over another one (right
    # shape, valid array) still fails verification.
    return hashlib.sha256(f"{kdir.name}/{sha}\n".encode() + payload).digest()


def write_cached_features(kdir: Path, sha: str, features: np.ndarray) -> Path:
    """Store one image's features atomically: ``.npy`` bytes + magic + sha256(key, bytes).

    Args:
        kdir: ``<cache>/bottleneck/<model key>``.
        sha: sha1 of the image's bytes.
        features: The image's ``[views, ...]`` float16 features.
    """
    buf = io.BytesIO()
    np.save(buf, features, allow_pickle=False)
    payload = buf.getvalue()
    return atomic_write_bytes(_entry_path(kdir, sha), payload + _ENTRY_MAGIC + _entry_digest(kdir, sha, payload))


def read_cached_features(kdir: Path, sha: str) -> np.ndarray | None:
    """One image's cached features, or None when absent, unreadable or failing its checksum.

    A miss is never an error: the caller recomputes the entry and writes it again.
    """
    f = _entry_path(kdir, sha)
    try:
        data = f.read_bytes()
    except OSError:
        return None
    payload, magic, digest = data[:-_TRAILER], data[-_TRAILER:-32], data[-32:]
    if len(data) <= _TRAILER or magic != _ENTRY_MAGIC or digest != _entry_digest(kdir, sha, payload):
        return None  # damaged, truncated, written by an older edgecrack, or not this image's entry
    try:
        return np.load(io.BytesIO(payload), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return None


def model_key(backbone: str, weights_id: str, contract: InputContract, fine_tune_blocks: int, pooled: bool,
              views: list[str], pool: str = "avg") -> str:
    d = {"backbone": backbone, "weights": weights_id, "contract": contract.to_dict(),
         "cut": fine_tune_blocks, "pooled": pooled, "views": views, "v": 1}
    if pooled and pool != "avg":  # average-pooled entries keep the key they always had
        d["pool"] = pool
    blob = json.dumps(d, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class _TrunkRunner:
    """Runs normalise + frozen trunk (+ optional pooling) on uint8 batches."""

    def __init__(self, net: CrackNet, pooled: bool, device: str, threads: int | None, contract: InputContract,
                 pool: str = "avg"):
        self.pooled = pooled
        mod = _TrunkModule(net, pooled, pool).eval()
        self.engine = "torch-" + device
        self.device = device
        self._torch = mod.to(device)
        self._sess = None
        if device == "cpu":
            try:
                import onnxruntime as ort

                buf = io.BytesIO()
                x = torch.zeros(1, contract.height, contract.width, 3, dtype=torch.uint8)
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(mod, (x,), buf, input_names=["images"], output_names=["features"],
                                      dynamic_axes={"images": {0: "n"}, "features": {0: "n"}}, opset_version=17,
                                      dynamo=False)
                so = ort.SessionOptions()
                if threads:
                    so.intra_op_num_threads = threads
                self._sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
                self.engine = f"onnxruntime-{ort.__version__}-cpu"
            except Exception:  # noqa: BLE001 - any export/ORT failure falls back to eager torch
                self._sess = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self._sess is not None:
            return self._sess.run(None, {"images": batch})[0]
        with torch.inference_mode():
            return self._torch(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()


class _TrunkModule(torch.nn.Module):
    def __init__(self, net: CrackNet, pooled: bool, pool: str = "avg"):
        super().__init__()
        self.normalize = net.normalize
        self.trunk = net.trunk
        self.pooled = pooled
        self.pool = pool

    def forward(self, x):
        y = self.trunk(self.normalize(x))
        return pool_features(y, self.pool) if self.pooled else y


def _decode_one(path: Path, contract: InputContract) -> tuple[np.ndarray | None, str | None, str | None]:
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, None, f"cannot read: {e.strerror or e}"
    sha = hashlib.sha1(data).hexdigest()
    try:
        from ..preprocess import decode_bytes

        img = decode_bytes(np.frombuffer(data, np.uint8), str(path))
    except ImageDecodeError as e:
        return None, sha, e.message.split(": ", 1)[-1]
    return preprocess(img, contract)[0], sha, None


def features_from_images(paths: list[Path], net: CrackNet, contract: InputContract, key: str, *,
                         views: list[str], pooled: bool, cache_dir: Path | None, device: str = "cpu",
                         batch_size: int = 32, threads: int | None = None, pool: str = "avg",
                         progress: Callable[[int, int], None] | None = None) -> FeatureSet:
    """Compute (or fetch from cache) frozen-trunk features of images.

    Args:
        paths: Image files.
        net: The model; its ``normalize`` and ``trunk`` are used.
        contract: Preprocessing contract.
        key: :func:`model_key` of this trunk configuration.
        views: Names from :data:`VIEWS`; features are computed for each.
        pooled: Store globally pooled vectors instead of feature maps.
        pool: Pooling of those vectors (``avg``, ``max``, ``avgmax``; see :func:`pool_features`).
        cache_dir: Cache root, or None to bypass the cache (``--no-cache``).
        device: ``cpu`` or ``cuda``.
        batch_size: Images per trunk call.
        threads: onnxruntime intra-op threads (None: library default).
        progress: Called with (done, total) after each batch.

    Returns:
        A :class:`FeatureSet`; undecodable images are listed in ``skipped``, not raised.
    """
    t0 = time.perf_counter()
    pool_mode = pool  # the name ``pool`` is the decode thread pool below
    kdir = cache_dir / "bottleneck" / key if cache_dir is not None else None
    results: dict[int, np.ndarray] = {}
    hashes: dict[int, str] = {}
    skipped: list[tuple[str, str]] = []
    todo: list[int] = []
    # Cheap pass: hash bytes, look up the cache.
    for i, p in enumerate(paths):
        try:
            data = Path(p).read_bytes()
        except OSError as e:
            skipped.append((str(p), f"cannot read: {e.strerror or e}"))
            continue
        sha = hashlib.sha1(data).hexdigest()
        hashes[i] = sha
        if kdir is not None:
            cached = read_cached_features(kdir, sha)
            if cached is not None:
                results[i] = cached
                continue
        todo.append(i)
    hits = len(results)
    runner: _TrunkRunner | None = None  # built on the first decodable uncached image (export costs seconds)
    done = hits
    if progress:
        progress(done, len(paths))
    view_fns = [VIEWS[v] for v in views]
    with ThreadPoolExecutor(max_workers=2) as pool:
        batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
        futures = [pool.map(lambda j: _decode_one(Path(paths[j]), contract), b) for b in batches[:1]]
        for bi, b in enumerate(batches):
            decoded = list(futures[bi])
            if bi + 1 < len(batches):  # decode the next batch while this one runs
                futures.append(pool.map(lambda j: _decode_one(Path(paths[j]), contract), batches[bi + 1]))
            good, imgs = [], []
            for j, (img, sha, err) in zip(b, decoded):
                if err is not None:
                    skipped.append((str(paths[j]), err))
                    hashes.pop(j, None)
                    continue
                good.append(j)
                imgs.append(img)
            if imgs:
                if runner is None:
                    runner = _TrunkRunner(net, pooled, device, threads, contract, pool_mode)
                stack = np.stack([np.ascontiguousarray(fn(im)) for im in imgs for fn in view_fns])
                # The trunk runs at most TRUNK_CHUNK views at a time: activations of a whole batch of
                # images x 8 views (256 Lite0 inputs) held ~4 GB of onnxruntime arena.
                feats = np.concatenate([runner(stack[k:k + TRUNK_CHUNK]).astype(np.float16)
                                        for k in range(0, len(stack), TRUNK_CHUNK)])
                feats = feats.reshape(len(imgs), len(views), *feats.shape[1:])
                for j, fe in zip(good, feats):
                    results[j] = fe
                    if kdir is not None:
                        write_cached_features(kdir, hashes[j], fe)
            done += len(b)
            if progress:
                progress(done, len(paths))
    order = sorted(results)
    feats = np.stack([results[i] for i in order]) if order else np.zeros((0,), np.float16)
    return FeatureSet(feats, [Path(paths[i]) for i in order], [hashes[i] for i in order], skipped, hits,
                      len(order) - hits, time.perf_counter() - t0, runner.engine if runner else "cache")
