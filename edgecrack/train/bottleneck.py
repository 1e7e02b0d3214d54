"""Bottleneck phase: frozen-trunk features computed once and cached by content.

The cache key of an image's features is the sha1 of its bytes plus a *model key* made of the
backbone, the weights hash, the preprocessing contract, the cut point and the augmentation
views. Renaming a file hits the cache; changing one byte of it misses (ML.NET's file-name
keyed cache silently goes stale). Features are stored as float16 ``[views, C, h, w]``.

Each entry is an ``.npy`` array followed by a checksum trailer (see :func:`write_cached_features`):
an entry whose bytes changed after it was written (disk error, a partial copy, an edit, another
entry copied over it) is recomputed, never served.

The frozen trunk runs on the fastest engine at hand: onnxruntime on CPU (measured about 4x
faster than eager PyTorch for EfficientNet-Lite0 on a 2-core machine), PyTorch on CUDA (under
fp16 autocast). Images are decoded by two threads, or by ``workers`` DataLoader processes.

Memory stays flat in the number of images: each image's features go to a temporary file on
disk as soon as they are computed or read from the cache (see :class:`FeatureStore`), and the
training phase reads them back through a memory map, a minibatch at a time
(:class:`FeatureRows`). Nothing stacks all features in RAM.
"""

from __future__ import annotations

import hashlib
import io
import json
import mmap
import os
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..errors import ImageDecodeError
from ..io import atomic_write_bytes
from ..preprocess import InputContract, preprocess
from .model import CrackNet, pool_features

#: Dihedral views of a square crop; cracks have no preferred orientation, so each is a valid
#: training sample. Order matters: view 0 is the identity used for validation and test.
DIHEDRAL: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "id": lambda x: x,
    "hflip": lambda x: x[:, ::-1],
    "vflip": lambda x: x[::-1, :],
    "rot180": lambda x: x[::-1, ::-1],
    "rot90": lambda x: np.rot90(x, 1),
    "rot270": lambda x: np.rot90(x, 3),
    "transpose": lambda x: np.transpose(x, (1, 0, 2)),
    "antitranspose": lambda x: np.rot90(x, 2).transpose(1, 0, 2),
}


def photometric(x: np.ndarray, draw: int) -> np.ndarray:
    """A random dihedral view of ``x`` (uint8 HWC) under other light: brightness x0.5-1.3,
    contrast about the image mean x0.5-1.2, Gaussian noise of std 0-12 grey levels.

    The draw is seeded by the image's pixels and ``draw``, so the same image always gives the
    same view (the bottleneck cache stays valid) and no two images share their jitter. A drone
    under a deck sees darker, flatter, noisier tiles than a survey camera: trained on dihedral
    views only, the whole-Lite0 model went from 0.850 to 0.735 accuracy on tiles at 0.6x
    brightness (``benchmarks/shift/shift.md``).
    """
    rng = np.random.default_rng([zlib.crc32(np.ascontiguousarray(x).tobytes()), draw])
    f = list(DIHEDRAL.values())[int(rng.integers(len(DIHEDRAL)))](x).astype(np.float32)
    f *= rng.uniform(0.5, 1.3)
    m = f.mean((0, 1), keepdims=True)
    f = m + (f - m) * rng.uniform(0.5, 1.2)
    f += rng.normal(0.0, rng.uniform(0.0, 12.0), f.shape).astype(np.float32)
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


#: Every training view, in the order ``--views N`` takes them: the 8 dihedral views, then
#: photometric draws (:func:`photometric`). The bottleneck cache key holds these names: a change to
#: what a view computes needs a new name, or cached features of the old one would be reused.
VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    **DIHEDRAL, **{f"light{i}": (lambda x, i=i: photometric(x, i)) for i in range(4)}}


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
        features: ``float16 [N, views, C, h, w]`` (or ``[N, views, C]`` when pooled), a read-only
            view of :attr:`store`'s memory map (no copy in RAM; reading all of it maps all of it:
            use :class:`FeatureRows` to read in bounded pieces).
        paths: The images that decoded, in input order.
        hashes: sha1 of each image's bytes.
        skipped: ``(path, reason)`` of images that could not be decoded.
        hits: Images served from the cache.
        computed: Images computed now.
        seconds: Wall time of the phase.
        engine: What ran the trunk.
        store: The file the features live in (None when no image decoded).
    """

    features: np.ndarray
    paths: list[Path]
    hashes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    hits: int = 0
    computed: int = 0
    seconds: float = 0.0
    engine: str = ""
    store: "FeatureStore | None" = None

    def rows(self) -> "FeatureRows":
        """All features as :class:`FeatureRows` (reads in bounded pieces)."""
        return FeatureRows(self.store if self.store is not None else self.features)

    @property
    def images_per_s(self) -> float:
        return (self.computed / self.seconds) if self.seconds > 0 and self.computed else 0.0


#: Bytes of the feature file a process may keep mapped before handing the pages back to the
#: kernel. Pages of a file mapping count in the resident set (RssFile) until released: without
#: this, one epoch over a 14 GB feature file would show as 14 GB of RSS.
RESIDENT_BYTES = 16 << 20

#: Most rows read per piece when a whole subset is walked (validation, metrics, the exact solver).
READ_CHUNK_ROWS = 1024
#: Most float16 feature bytes per piece that goes through the network at once: the fine-tuned
#: top block widens a 320 x 7 x 7 map to 1280 x 7 x 7 in float32, 8x the bytes read.
FORWARD_CHUNK_BYTES = 2 << 20


class FeatureStore:
    """``float16 [N, views, ...]`` features in a file on disk, read through a memory map.

    The file is an anonymous temporary file (:func:`tempfile.TemporaryFile`: gone when the
    last reference is, even if the process is killed). Rows are copied out by :meth:`take`
    in bounded pieces; once :data:`RESIDENT_BYTES` have been read the mapped pages are
    released (``madvise(MADV_DONTNEED)``: the data stay in the page cache, the process's
    resident set shrinks), so peak RSS does not grow with the file.

    Args:
        file: Open binary file holding exactly ``prod(shape) * 2`` bytes of features.
        shape: ``(N, views, ...)``.
    """

    def __init__(self, file, shape: tuple[int, ...]):
        self.shape = tuple(int(x) for x in shape)
        self.dtype = np.dtype(np.float16)
        self.row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        self._touched = 0
        self._mm: mmap.mmap | None = None
        if self.shape[0] == 0 or self.row_bytes == 0:
            self.array = np.zeros(self.shape, self.dtype)
        else:
            self._mm = mmap.mmap(file.fileno(), self.shape[0] * self.row_bytes, access=mmap.ACCESS_READ)
            self.array = np.frombuffer(self._mm, self.dtype).reshape(self.shape)
        file.close()  # the mapping keeps the (already unlinked) file alive

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def take(self, rows: np.ndarray, views: int | np.ndarray | None = None) -> np.ndarray:
        """A float16 copy of ``rows`` (any order), all views or one view per row.

        Args:
            rows: Row numbers.
            views: None (every view), one view for all rows, or one view per row.

        Returns:
            ``[len(rows), views, ...]`` or ``[len(rows), ...]`` (one view).
        """
        rows = np.asarray(rows, np.int64)
        per_row = views is not None and np.ndim(views) > 0
        tail = self.shape[1:] if views is None else self.shape[2:]
        out = np.empty((len(rows),) + tail, self.dtype)
        # Sorted reads walk the file forward; the result is put back in the caller's order.
        order = np.argsort(rows, kind="stable")
        step = max(1, min(READ_CHUNK_ROWS, RESIDENT_BYTES // max(self.row_bytes, 1)))
        for a in range(0, len(rows), step):
            o = order[a:a + step]
            r = rows[o]
            if views is None:
                out[o] = self.array[r]
            elif per_row:
                out[o] = self.array[r, np.asarray(views)[o]]
            else:
                out[o] = self.array[r, int(views)]
            self._touched += len(o) * self.row_bytes
            if self._touched >= RESIDENT_BYTES:
                self.release()
        return out

    def release(self) -> None:
        """Hand the mapped pages back to the kernel (they are read again from the page cache or disk)."""
        self._touched = 0
        if self._mm is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._mm.madvise(mmap.MADV_DONTNEED)


class FeatureRows:
    """Some rows of a feature store or array, in a given order: a lazy ``F[rows]``.

    The training phase reads features only through this: a minibatch (:meth:`take`) or a
    walk in bounded pieces (:meth:`chunks`), never a copy of the whole subset.

    Args:
        source: A :class:`FeatureStore`, or an in-memory ``[N, views, ...]`` array.
        rows: Row numbers of ``source`` (None: all, in order).
    """

    def __init__(self, source: "FeatureStore | np.ndarray", rows: np.ndarray | None = None):
        self.source = source
        self.rows = np.arange(len(source), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def n_views(self) -> int:
        return int(self.source.shape[1])

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one view of one image."""
        return tuple(self.source.shape[2:])

    def forward_rows(self, most: int = READ_CHUNK_ROWS) -> int:
        """Rows per piece for a forward pass: at most ``most``, and :data:`FORWARD_CHUNK_BYTES` of one view."""
        view_bytes = int(np.prod(self.feature_shape)) * 2
        return max(1, min(most, FORWARD_CHUNK_BYTES // max(view_bytes, 1)))

    def subset(self, idx: np.ndarray) -> "FeatureRows":
        """Rows ``self.rows[idx]`` of the same source."""
        return FeatureRows(self.source, self.rows[np.asarray(idx, np.int64)])

    def take(self, idx: np.ndarray, views: int | np.ndarray | None = None) -> np.ndarray:
        """float16 copy of positions ``idx`` (all views, one view, or one view per position)."""
        rows = self.rows[np.asarray(idx, np.int64)]
        if isinstance(self.source, FeatureStore):
            return self.source.take(rows, views)
        if views is None:
            return self.source[rows]
        return self.source[rows, views if np.ndim(views) == 0 else np.asarray(views)]

    def chunks(self, size: int = READ_CHUNK_ROWS, view: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(start position, features)`` pieces of at most ``size`` rows, in order."""
        for a in range(0, len(self.rows), size):
            yield a, self.take(np.arange(a, min(a + size, len(self.rows))), view)


class _StackWriter:
    """Writes one image's features at a time into the row of a temporary file it belongs to."""

    def __init__(self, n_rows: int, directory: Path | None):
        self.n_rows = n_rows
        self.directory = directory
        self._f = None
        self.row_shape: tuple[int, ...] | None = None
        self.row_bytes = 0

    def put(self, i: int, feats: np.ndarray) -> None:
        feats = np.ascontiguousarray(feats, np.float16)
        if self._f is None:
            if self.directory is not None:
                self.directory.mkdir(parents=True, exist_ok=True)
            self._f = tempfile.TemporaryFile(prefix="edgecrack-features-", dir=self.directory)
            self.row_shape, self.row_bytes = feats.shape, feats.nbytes
        elif feats.shape != self.row_shape:
            raise RuntimeError(f"features of shape {feats.shape} among rows of shape {self.row_shape}")
        self._f.seek(i * self.row_bytes)
        self._f.write(feats.tobytes())

    def finish(self, keep: list[int]) -> FeatureStore | None:
        """Rows ``keep`` (sorted) moved to the front, in order, as a :class:`FeatureStore`."""
        if self._f is None:
            return None
        f, rb = self._f, self.row_bytes
        for j, r in enumerate(keep):  # holes left by undecodable images are closed up
            if r != j:
                f.seek(r * rb)
                data = f.read(rb)
                f.seek(j * rb)
                f.write(data)
        f.truncate(len(keep) * rb)
        f.flush()
        return FeatureStore(f, (len(keep),) + tuple(self.row_shape))


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
              views: list[str], pool: str = "avg", units: int | None = None) -> str:
    d = {"backbone": backbone, "weights": weights_id, "contract": contract.to_dict(),
         "cut": fine_tune_blocks, "pooled": pooled, "views": views, "v": 1}
    if units is not None:  # a backbone cut after ``units`` units; whole backbones keep their old keys
        d["units"] = units
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
        self.engine = "torch-" + device + ("-fp16-autocast" if device.startswith("cuda") else "")
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
        cuda = self.device.startswith("cuda")
        # fp16 autocast on the GPU: the features are stored as float16 anyway.
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
            return self._torch(torch.from_numpy(batch).to(self.device, non_blocking=cuda)).float().cpu().numpy()


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


class _DecodeDataset(torch.utils.data.Dataset):
    """Images at ``todo`` positions of ``paths``, decoded and resized in DataLoader workers."""

    def __init__(self, paths: list[Path], todo: list[int], contract: InputContract):
        self.paths, self.todo, self.contract = paths, todo, contract

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, k: int):
        j = self.todo[k]
        return (j,) + _decode_one(Path(self.paths[j]), self.contract)


def _as_list(batch):
    return list(batch)


def default_workers(device: str) -> int:
    """Decode processes when ``--workers`` is not given: none on CPU (two threads there, the
    trunk needs the cores), up to 8 on CUDA where decoding is what the GPU waits for."""
    return min(8, os.cpu_count() or 1) if device.startswith("cuda") else 0


def _decoded_batches(paths: list[Path], todo: list[int], contract: InputContract, batch_size: int,
                     workers: int) -> Iterator[list[tuple[int, np.ndarray | None, str | None, str | None]]]:
    """``[(position, image, sha1, error)]`` per batch of ``todo``, in order, decoded ahead."""
    if workers > 0:
        loader = torch.utils.data.DataLoader(_DecodeDataset(paths, todo, contract), batch_size=batch_size,
                                             shuffle=False, num_workers=workers, collate_fn=_as_list,
                                             prefetch_factor=2)
        yield from loader
        return
    with ThreadPoolExecutor(max_workers=2) as pool:
        def submit(b):
            return pool.map(lambda j: (j,) + _decode_one(Path(paths[j]), contract), b)

        batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
        ahead = submit(batches[0]) if batches else None
        for bi in range(len(batches)):
            current = ahead
            if bi + 1 < len(batches):  # decode the next batch while this one runs
                ahead = submit(batches[bi + 1])
            yield list(current)


def features_from_images(paths: list[Path], net: CrackNet, contract: InputContract, key: str, *,
                         views: list[str], pooled: bool, cache_dir: Path | None, device: str = "cpu",
                         batch_size: int = 32, threads: int | None = None, pool: str = "avg",
                         workers: int | None = None, store_dir: Path | None = None,
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
        workers: DataLoader processes that decode images (0: two threads in this process;
            None: :func:`default_workers`).
        store_dir: Folder of the temporary feature file (None: ``<cache_dir>/tmp``, or the
            system's temporary folder without a cache). It needs as much free disk as the
            features take (``N x views x feature size x 2`` bytes).
        progress: Called with (done, total) after each batch.

    Returns:
        A :class:`FeatureSet` backed by a :class:`FeatureStore`; undecodable images are listed
        in ``skipped``, not raised.
    """
    t0 = time.perf_counter()
    kdir = cache_dir / "bottleneck" / key if cache_dir is not None else None
    if store_dir is None and cache_dir is not None:
        store_dir = cache_dir / "tmp"
    writer = _StackWriter(len(paths), store_dir)
    good: set[int] = set()
    hashes: dict[int, str] = {}
    skipped: list[tuple[str, str]] = []
    todo: list[int] = []
    # Cheap pass: hash bytes, look up the cache; a hit goes straight to the feature file.
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
                writer.put(i, cached)
                good.add(i)
                continue
        todo.append(i)
    hits = len(good)
    runner: _TrunkRunner | None = None  # built on the first decodable uncached image (export costs seconds)
    done = hits
    if progress:
        progress(done, len(paths))
    view_fns = [VIEWS[v] for v in views]
    n_workers = default_workers(device) if workers is None else workers
    for decoded in _decoded_batches(list(paths), todo, contract, batch_size, n_workers):
        ok, imgs = [], []
        for j, img, sha, err in decoded:
            if err is not None:
                skipped.append((str(paths[j]), err))
                hashes.pop(j, None)
                continue
            ok.append(j)
            imgs.append(img)
        if imgs:
            if runner is None:
                runner = _TrunkRunner(net, pooled, device, threads, contract, pool)
            stack = np.stack([np.ascontiguousarray(fn(im)) for im in imgs for fn in view_fns])
            # The trunk runs at most TRUNK_CHUNK views at a time: activations of a whole batch of
            # images x 8 views (256 Lite0 inputs) held ~4 GB of onnxruntime arena.
            feats = np.concatenate([runner(stack[k:k + TRUNK_CHUNK]).astype(np.float16)
                                    for k in range(0, len(stack), TRUNK_CHUNK)])
            feats = feats.reshape(len(imgs), len(views), *feats.shape[1:])
            for j, fe in zip(ok, feats):
                writer.put(j, fe)
                good.add(j)
                if kdir is not None:
                    write_cached_features(kdir, hashes[j], fe)
        done += len(decoded)
        if progress:
            progress(done, len(paths))
    order = sorted(good)
    store = writer.finish(order)
    feats = store.array if store is not None else np.zeros((0,), np.float16)
    return FeatureSet(feats, [Path(paths[i]) for i in order], [hashes[i] for i in order], skipped, hits,
                      len(order) - hits, time.perf_counter() - t0, runner.engine if runner else "cache", store)
