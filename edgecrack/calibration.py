"""INT8 calibration sample: a seeded, stratified set of real images and the one way to read it.

A calibration set is a folder of images plus ``calibration.json`` (what was drawn, from where,
with which seed, each file's sha1 and label, and the set's hash). It is built by
:func:`build_calibration_set` (``edgecrack calibration build``), never hand-copied, and read by
:func:`load_calibration`, whose :meth:`CalibrationSource.batches` runs every image through
:func:`edgecrack.preprocess.preprocess` -- the same function inference uses. Both the TensorRT
entropy calibrator and onnxruntime's static quantizer consume those batches, so calibration
images can never be preprocessed differently from inference images.

The calibration hash identifies the image *contents* (not file names) and is recorded in every
INT8 artifact's manifest and in TensorRT calibration-cache keys.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import numpy as np

from .data import DEFAULT_DATASET, content_hash, discover, list_images, stratified_split
from .errors import DatasetError
from .io import atomic_write_bytes, atomic_write_json, read_json
from .preprocess import InputContract, decode_image, preprocess

CALIBRATION_FILE = "calibration.json"
CALIBRATION_SCHEMA = 1
#: Where the project's default calibration set lives (built from the bundled deck sample).
DEFAULT_CALIBRATION = Path("calibration") / "deck"


def calibration_hash(file_hashes: list[str]) -> str:
    """Order-independent hash of a calibration set's image contents (16 hex digits)."""
    h = hashlib.sha256()
    for fh in sorted(file_hashes):
        h.update(fh.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


@dataclass
class CalibrationSource:
    """A calibration image set, read through the inference preprocessing.

    Attributes:
        root: The folder the images live in.
        paths: Image files, in a fixed (sorted) order.
        labels: Label of each file when known (for reporting the class mix), else None.
        hash: :func:`calibration_hash` of the image contents.
        meta: The ``calibration.json`` content when present.
    """

    root: Path
    paths: list[Path]
    labels: list[str | None]
    hash: str
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for lab in self.labels:
            key = lab if lab is not None else "?"
            out[key] = out.get(key, 0) + 1
        return out

    def batches(self, contract: InputContract, batch_size: int = 8, drop_last: bool = False) -> Iterator[np.ndarray]:
        """Yield ``uint8 [B, H, W, 3]`` BGR batches made by :func:`edgecrack.preprocess.preprocess`.

        Args:
            contract: The model's input contract (from its manifest).
            batch_size: Images per batch.
            drop_last: Skip a final short batch (TensorRT calibrators want a fixed batch size).

        Raises:
            DatasetError: An image of the set can no longer be decoded.
        """
        if batch_size < 1:
            raise DatasetError(f"calibration batch size must be positive, got {batch_size}")
        stop = len(self.paths) - (len(self.paths) % batch_size if drop_last else 0)
        for i in range(0, stop, batch_size):
            chunk = self.paths[i:i + batch_size]
            yield preprocess([self._decode(p) for p in chunk], contract)

    def array(self, contract: InputContract) -> np.ndarray:
        """All images as one ``uint8 [N, H, W, 3]`` batch."""
        return preprocess([self._decode(p) for p in self.paths], contract)

    def _decode(self, path: Path) -> np.ndarray:
        from .errors import ImageDecodeError

        try:
            return decode_image(path)
        except ImageDecodeError as e:
            raise DatasetError(f"calibration image unreadable: {e.message}",
                               f"rebuild the calibration set (edgecrack calibration build --out {self.root})") from None

    def describe(self) -> str:
        mix = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts().items()))
        return f"{len(self)} images from {self.root} ({mix}), hash {self.hash}"


def build_calibration_set(out: str | Path, source: str | Path | None = None, n: int = 64, seed: int = 0,
                          label_from: str = "folder", exclude: list[str | Path] | None = None) -> CalibrationSource:
    """Draw a seeded, class-stratified calibration sample and copy it into ``out``.

    Args:
        out: Folder to create (``<out>/<label>/<file>`` plus ``calibration.json``). Existing
            calibration content there is replaced.
        source: Labelled image folder to draw from (default: the bundled SDNET2018 deck sample).
        n: Number of images (split across classes in proportion to their frequency).
        seed: Seed of the draw; the same source, n and seed always give the same set.
        label_from: ``folder`` or ``prefix`` (see :func:`edgecrack.data.discover`).
        exclude: Image files that must not be drawn (e.g. an evaluation hold-out).

    Returns:
        The new set, ready for :meth:`CalibrationSource.batches`.

    Raises:
        DatasetError: Source missing/empty, or fewer usable images than ``n``.
    """
    src = Path(source) if source is not None else DEFAULT_DATASET
    ds = discover(src, label_from, min_classes=1)
    banned = {Path(p).resolve() for p in (exclude or [])}
    samples = [s for s in ds.samples if s.path.resolve() not in banned]
    # Only decodable images may enter a calibration set: a grey, truncated frame would skew
    # the activation ranges of every INT8 artifact built from it.
    usable = []
    skipped = []
    from .errors import ImageDecodeError

    for s in samples:
        try:
            decode_image(s.path)
            usable.append(s)
        except ImageDecodeError as e:
            skipped.append((str(s.path), e.message))
    if n < 1:
        raise DatasetError(f"--n must be positive, got {n}")
    if len(usable) < n:
        raise DatasetError(f"{src} has {len(usable)} usable images, fewer than the {n} asked for",
                           "lower --n or point --source at a larger labelled folder")
    frac = n / len(usable)
    picked_idx, _ = stratified_split([s.label for s in usable], (frac, 1.0 - frac), seed) if frac < 1 else (
        np.arange(len(usable)), None)
    picked = [usable[i] for i in picked_idx]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    files = []
    for s in picked:
        rel = Path(s.label or "unlabelled") / s.path.name
        atomic_write_bytes(out / rel, s.path.read_bytes())
        files.append({"file": rel.as_posix(), "label": s.label, "sha1": content_hash(s.path)})
    files.sort(key=lambda f: f["file"])
    h = calibration_hash([f["sha1"] for f in files])
    try:
        shown_src = str(src.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        shown_src = str(src)
    meta = {"schema": CALIBRATION_SCHEMA, "hash": h, "n": len(files), "seed": seed, "source": shown_src,
            "source_fingerprint": calibration_hash([content_hash(s.path) for s in usable]),
            "label_from": label_from, "skipped": skipped, "files": files,
            "contract": "images are stored as-is; every consumer preprocesses them with "
                        "edgecrack.preprocess.preprocess() and the model's input contract"}
    atomic_write_json(out / CALIBRATION_FILE, meta)
    return load_calibration(out)


def _listed_files(root: Path, meta: Any, meta_path: Path, hint: str) -> list[tuple[Path, dict]]:
    """The files a ``calibration.json`` lists, each proven to lie inside ``root``.

    ``calibration.json`` is data that may come from anywhere (a shared folder, an archive), and
    both ``build`` (which deletes the previous set's files) and ``load`` (which reads them) act
    on the paths it lists: an absolute path, a ``..`` step or a symlink leading out of the
    folder would make edgecrack delete or read files elsewhere.

    Raises:
        DatasetError: A malformed entry, or a path that is absolute, climbs out with ``..``,
            or resolves (through a symlink) outside the calibration folder.
    """
    files = meta.get("files", []) if isinstance(meta, dict) else None
    if not isinstance(files, list):
        raise DatasetError(f"{meta_path} is not a calibration description (no 'files' list)", hint)
    real_root = root.resolve()
    out = []
    for f in files:
        rel = f.get("file") if isinstance(f, dict) else None
        if not isinstance(rel, str) or not rel or not isinstance(f.get("sha1"), str):
            raise DatasetError(f"{meta_path} has a malformed entry {f!r} (needs 'file' and 'sha1' strings)", hint)
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or "\\" in rel:
            raise DatasetError(f"{meta_path} lists {rel!r}, a path outside the calibration folder {root}; "
                               "only relative paths below it are allowed", hint)
        p = root / pure
        try:
            p.resolve().relative_to(real_root)
        except ValueError:
            raise DatasetError(f"{meta_path} lists {rel!r}, which leads outside the calibration folder {root} "
                               f"(through a symlink, to {p.resolve()})", hint) from None
        out.append((p, f))
    return out


def _clear_previous(out: Path) -> None:
    meta = out / CALIBRATION_FILE
    if not meta.is_file():
        return
    try:
        old = json.loads(meta.read_text())
    except json.JSONDecodeError:
        return
    listed = _listed_files(out, old, meta, f"nothing was deleted; check {meta} and remove it by hand, "
                                             "or build into another --out folder")
    for p, _ in listed:
        p.unlink(missing_ok=True)
    for d in sorted({p.parent for p, _ in listed}, reverse=True):
        if d != out and d.is_dir() and not any(d.iterdir()):
            shutil.rmtree(d, ignore_errors=True)


def load_calibration(path: str | Path) -> CalibrationSource:
    """Open a calibration set: a folder built by :func:`build_calibration_set`, or any image folder.

    With ``calibration.json`` the listed files are used and their sha1 verified (a changed
    image changes the hash, so a stale TensorRT calibration cache is never reused). A plain
    folder is used as is (all images, sorted), hashed by content.

    Raises:
        DatasetError: Missing folder, no images, or files that no longer match ``calibration.json``.
    """
    root = Path(path)
    if not root.exists():
        raise DatasetError(f"calibration set not found: {root}",
                           f"build one: edgecrack calibration build --out {root}")
    if root.is_file():
        raise DatasetError(f"calibration set must be a folder, got the file {root}",
                           "pass the folder built by edgecrack calibration build")
    meta_path = root / CALIBRATION_FILE
    if meta_path.is_file():
        meta = read_json(meta_path, f"rebuild it: edgecrack calibration build --out {root}", DatasetError)
        if isinstance(meta, dict) and isinstance(meta.get("schema"), int) and meta["schema"] > CALIBRATION_SCHEMA:
            raise DatasetError(f"{meta_path} was written by a newer edgecrack (schema {meta.get('schema')})",
                               "upgrade edgecrack or rebuild the calibration set with this version")
        paths, labels, hashes = [], [], []
        for p, f in _listed_files(root, meta, meta_path, f"rebuild the set: edgecrack calibration build --out {root}"):
            if not p.is_file():
                raise DatasetError(f"calibration image listed in {meta_path} is missing: {p}",
                                   f"rebuild the set: edgecrack calibration build --out {root}")
            got = content_hash(p)
            if got != f["sha1"]:
                raise DatasetError(f"calibration image {p} changed since the set was built (sha1 {got[:12]} != "
                                   f"{f['sha1'][:12]})", f"rebuild the set: edgecrack calibration build --out {root}")
            paths.append(p)
            labels.append(f.get("label"))
            hashes.append(got)
        if not paths:
            raise DatasetError(f"{meta_path} lists no images", f"rebuild the set: edgecrack calibration build --out {root}")
        return CalibrationSource(root, paths, labels, calibration_hash(hashes), meta)
    paths = list_images(root)
    if not paths:
        raise DatasetError(f"no images in calibration folder {root}",
                           f"build a calibration set: edgecrack calibration build --out {root}")
    labels = [p.parent.name if p.parent != root else None for p in paths]
    return CalibrationSource(root, paths, labels, calibration_hash([content_hash(p) for p in paths]))
