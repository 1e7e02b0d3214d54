"""Dataset discovery, labels, robust decoding and stratified seeded splits."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .preprocess import IMAGE_SUFFIXES

DEFAULT_DATASET = Path(__file__).parent / "data" / "sdnet2018-deck"


@dataclass(frozen=True)
class Sample:
    """One labelled (or unlabelled) image file."""

    path: Path
    label: str | None


@dataclass
class Dataset:
    """Images found under a root folder.

    Attributes:
        root: The folder that was searched.
        samples: Image files with their labels, sorted by path.
        classes: Sorted class names.
        skipped: ``(path, reason)`` for files that were not used.
    """

    root: Path
    samples: list[Sample]
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.samples]

    def counts(self) -> dict[str, int]:
        out = {c: 0 for c in self.classes}
        for s in self.samples:
            out[s.label] += 1
        return out

    def subset(self, idx: list[int] | np.ndarray) -> "Dataset":
        return Dataset(self.root, [self.samples[i] for i in idx], self.classes, [])


_PREFIX = re.compile(r"^([A-Za-z]+)")


def label_from_name(name: str) -> str | None:
    """The tutorial's ``useFolderNameAsLabel=false`` rule: leading letters of the file name."""
    m = _PREFIX.match(name)
    return m.group(1) if m else None


def list_images(root: str | Path) -> list[Path]:
    """Image files below ``root`` (recursive, sorted, hidden entries ignored)."""
    root = Path(root)
    out = []
    for p in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            out.append(p)
    return out


def discover(root: str | Path, label_mode: str = "folder", require_labels: bool = True,
             min_classes: int = 2) -> Dataset:
    """Find labelled images below ``root``.

    Args:
        root: Dataset folder. Nested layouts work: with ``label_mode="folder"`` the label is
            the image's parent folder name, so ``D/CD/x.jpg`` and ``W/CW/y.jpg`` give
            ``CD`` and ``CW``.
        label_mode: ``folder`` (parent folder name) or ``prefix`` (leading letters of the file
            name, as ML.NET's ``useFolderNameAsLabel=false``).
        require_labels: Raise when fewer than ``min_classes`` classes are found.
        min_classes: Classes a training set needs.

    Raises:
        DatasetError: Missing folder, no images, or too few classes.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset folder not found: {root}", "check the path; run `edgecrack train` without a path "
                           "to use the bundled SDNET2018 deck sample")
    if not root.is_dir():
        raise DatasetError(f"not a folder: {root}", "pass the folder that holds one sub-folder per class")
    if label_mode not in ("folder", "prefix"):
        raise DatasetError(f"unknown label mode {label_mode!r}", "use 'folder' or 'prefix'")
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    for p in list_images(root):
        if label_mode == "folder":
            label = p.parent.name if p.parent != root else None
        else:
            label = label_from_name(p.name)
        if label is None and require_labels:
            why = "image at the dataset root has no class folder" if label_mode == "folder" else "file name has no letter prefix"
            skipped.append((str(p), why))
            continue
        samples.append(Sample(p, label))
    others = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES
              and not any(part.startswith(".") for part in p.relative_to(root).parts) and p.name.lower() not in ("readme.md", "readme.txt", "license", "license.txt")]
    skipped += [(str(p), "not an image file type") for p in sorted(others)]
    if not samples:
        raise DatasetError(f"no images found in {root}",
                           f"expected one sub-folder per class holding {', '.join(IMAGE_SUFFIXES)} files")
    classes = sorted({s.label for s in samples if s.label is not None})
    if require_labels and len(classes) < min_classes:
        raise DatasetError(
            f"only {len(classes)} class found in {root} ({', '.join(classes) or 'none'}); training needs at least {min_classes}",
            "put each class in its own sub-folder (e.g. CD/ and UD/), or use --label-from prefix",
        )
    return Dataset(root, samples, classes, skipped)


def stratified_split(labels: list[str], fractions: tuple[float, ...], seed: int = 0) -> list[np.ndarray]:
    """Split indices into parts with the same class mix, deterministically.

    Args:
        labels: One label per sample.
        fractions: Part sizes summing to 1 (e.g. ``(0.7, 0.27, 0.03)``).
        seed: RNG seed; the same labels and seed always give the same split.

    Returns:
        One sorted index array per part.
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    parts: list[list[int]] = [[] for _ in fractions]
    cum = np.cumsum(fractions)
    for c in sorted(set(labels)):
        idx = np.flatnonzero(labels_arr == c)
        rng.shuffle(idx)
        n = len(idx)
        bounds = [0] + [int(round(x * n)) for x in cum[:-1]] + [n]
        for k in range(len(fractions)):
            parts[k].extend(idx[bounds[k]:bounds[k + 1]].tolist())
    return [np.array(sorted(p), dtype=np.int64) for p in parts]


def tutorial_split(labels: list[str], seed: int = 0, train: float = 0.7, val_of_rest: float = 0.9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ML.NET tutorial split: ``train`` for training; the rest split ``val_of_rest`` validation / test."""
    rest = 1.0 - train
    return tuple(stratified_split(labels, (train, rest * val_of_rest, rest * (1 - val_of_rest)), seed))  # type: ignore[return-value]


def kfold_indices(labels: list[str], k: int, seed: int = 0) -> list[np.ndarray]:
    """Stratified k folds (each a sorted index array)."""
    return stratified_split(labels, tuple([1.0 / k] * k), seed)


def content_hash(path: str | Path) -> str:
    """sha1 of a file's bytes (the identity of an image in caches and fingerprints)."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def fingerprint(hashes: list[str], labels: list[str | None]) -> str:
    """Order-independent fingerprint of a labelled image set."""
    h = hashlib.sha256()
    for item in sorted(f"{a}:{b}" for a, b in zip(hashes, labels)):
        h.update(item.encode())
    return h.hexdigest()[:16]


def default_positive(classes: list[str]) -> str | None:
    """The 'cracked' class of a binary problem: SDNET2018's C-prefixed label, else the first class."""
    if len(classes) != 2:
        return None
    cracked = [c for c in classes if c.upper().startswith("C") or "crack" in c.lower()]
    uncracked = [c for c in classes if c.upper().startswith("U") or "uncrack" in c.lower() or "no" in c.lower()]
    if len(cracked) == 1:
        return cracked[0]
    if len(uncracked) == 1:
        return [c for c in classes if c != uncracked[0]][0]
    return classes[0]
