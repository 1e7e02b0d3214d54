"""Dataset discovery, labels, robust decoding and stratified seeded splits."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError, DatasetError
from .preprocess import IMAGE_SUFFIXES

DEFAULT_DATASET = Path(__file__).parent / "data" / "sdnet2018-deck"

#: Labels of a binary model trained on several SDNET2018 surfaces at once.
CRACKED, UNCRACKED = "cracked", "uncracked"
#: ``--classes``: ``binary`` merges a multi-surface SDNET2018 root into cracked/uncracked,
#: ``all`` keeps every class folder as its own class.
CLASS_MODES = ("binary", "all")


@dataclass(frozen=True)
class Sample:
    """One labelled (or unlabelled) image file.

    Attributes:
        path: The image file.
        label: Its class (None when unlabelled).
        origin: The class folder name before labels were merged (SDNET2018 ``CW`` for a
            ``cracked`` wall image); None when the label is the folder name itself.
    """

    path: Path
    label: str | None
    origin: str | None = None


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

    def surface_counts(self) -> dict[str, dict[str, int]]:
        """Images per SDNET2018 surface and class after merging (``{"D": {"cracked": 2025, ...}}``);
        empty when labels were not merged."""
        out: dict[str, dict[str, int]] = {}
        for s in self.samples:
            if s.origin is None or s.label is None:
                continue
            row = out.setdefault(s.origin[1:], {c: 0 for c in self.classes})
            row[s.label] += 1
        return dict(sorted(out.items()))

    def describe_surfaces(self) -> str:
        """``D: 200 cracked, 200 uncracked; W: ...`` (empty when labels were not merged)."""
        return "; ".join(f"{surf}: " + ", ".join(f"{n} {c}" for c, n in row.items())
                         for surf, row in self.surface_counts().items())


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
             min_classes: int = 2, classes: str = "all", surfaces: list[str] | str | None = None) -> Dataset:
    """Find labelled images below ``root``.

    Args:
        root: Dataset folder. Nested layouts work: with ``label_mode="folder"`` the label is
            the image's parent folder name, so ``D/CD/x.jpg`` and ``W/CW/y.jpg`` give
            ``CD`` and ``CW``.
        label_mode: ``folder`` (parent folder name) or ``prefix`` (leading letters of the file
            name, as ML.NET's ``useFolderNameAsLabel=false``).
        require_labels: Raise when fewer than ``min_classes`` classes are found.
        min_classes: Classes a training set needs.
        classes: ``all`` keeps every class folder as a class; ``binary`` merges an SDNET2018
            root with several surfaces (``D/CD D/UD W/CW W/UW P/CP P/UP``) into
            ``cracked``/``uncracked`` (see :func:`merge_sdnet`). One surface stays as it is
            (``CD``/``UD`` is already binary).
        surfaces: SDNET2018 surfaces to keep (``["D", "W"]`` or ``"D,W"``); None keeps all.

    Raises:
        DatasetError: Missing folder, no images, too few classes, or ``surfaces`` on a folder
            that is not an SDNET2018 layout / names a surface it does not have.
        ConfigError: Unknown ``classes`` mode.
    """
    if classes not in CLASS_MODES:
        raise ConfigError(f"unknown --classes {classes!r}", f"use one of: {', '.join(CLASS_MODES)}")
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
    if surfaces:
        samples, skipped = _select_surfaces(root, samples, skipped, surfaces, label_mode)
    names = sorted({s.label for s in samples if s.label is not None})
    if require_labels and len(names) < min_classes:
        raise DatasetError(
            f"only {len(names)} class found in {root} ({', '.join(names) or 'none'}); training needs at least {min_classes}",
            "put each class in its own sub-folder (e.g. CD/ and UD/), or use --label-from prefix",
        )
    ds = Dataset(root, samples, names, skipped)
    if classes == "binary" and len(sdnet_surfaces(names) or []) > 1:
        ds = merge_sdnet(ds)
    return ds


_SDNET_CLASS = re.compile(r"^[CU][A-Z]$")


def sdnet_surfaces(labels: list[str]) -> list[str] | None:
    """Surfaces of an SDNET2018 layout (``["D", "P", "W"]``), or None when ``labels`` are not one.

    SDNET2018 names each class folder ``C<surface>`` (cracked) or ``U<surface>`` (uncracked):
    ``CD``/``UD`` decks, ``CW``/``UW`` walls, ``CP``/``UP`` pavements.
    """
    if not labels or not all(_SDNET_CLASS.match(lab) for lab in labels):
        return None
    return sorted({lab[1] for lab in labels})


def merge_sdnet(ds: Dataset) -> Dataset:
    """SDNET2018 labels merged into ``cracked`` (``C*``) / ``uncracked`` (``U*``).

    Each sample keeps its folder name in :attr:`Sample.origin`, so counts per surface can be
    reported. A dataset that is not an SDNET2018 layout is returned unchanged.
    """
    if sdnet_surfaces(ds.classes) is None:
        return ds
    merged = [Sample(s.path, None if s.label is None else CRACKED if s.label[0] == "C" else UNCRACKED, s.label)
              for s in ds.samples]
    return Dataset(ds.root, merged, sorted({s.label for s in merged if s.label is not None}), list(ds.skipped))


def _select_surfaces(root: Path, samples: list[Sample], skipped: list[tuple[str, str]], surfaces: list[str] | str,
                     label_mode: str) -> tuple[list[Sample], list[tuple[str, str]]]:
    want = [x.strip().upper() for x in (surfaces.split(",") if isinstance(surfaces, str) else surfaces) if x.strip()]
    names = sorted({s.label for s in samples if s.label is not None})
    have = sdnet_surfaces(names) if label_mode == "folder" else None
    if have is None:
        raise DatasetError(f"--surfaces needs an SDNET2018 layout (class folders CD/UD, CW/UW, CP/UP); "
                           f"{root} has class folders {', '.join(names) or 'none'}",
                           "drop --surfaces, or point at the SDNET2018 root")
    unknown = sorted(set(want) - set(have))
    if unknown:
        raise DatasetError(f"surface {', '.join(unknown)} not found in {root} (it has {', '.join(have)})",
                           f"choose from: --surfaces {','.join(have)}")
    dropped = {lab for lab in names if lab[1] not in want}
    keep = [s for s in samples if s.label is None or s.label not in dropped]
    return keep, [(p, why) for p, why in skipped if Path(p).parent.name not in dropped]


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


# Folder names of the cracked / sound class in public crack datasets, compared in lower case
# with separators removed ("No Crack", "no-crack" and "no_crack" are all "nocrack").
_POSITIVE_NAMES = frozenset({"positive", "pos", "crack", "cracks", "cracked", "defect", "defects", "defective", "1"})
_NEGATIVE_NAMES = frozenset({"negative", "neg", "nocrack", "nocracks", "noncrack", "noncracked", "uncracked",
                             "notcracked", "intact", "sound", "ok", "good", "normal", "nodefect", "nodefects",
                             "nondefective", "0"})
_SDNET_PAIR = re.compile(r"^([cu])([a-z]{0,2})$")
CONVENTIONS = ("Positive/Negative, crack/no_crack, cracks/no_cracks, cracked/uncracked, defect/ok, "
               "defect/no_defect, 1/0 (any case), SDNET2018's C*/U* (CD/UD, CW/UW, CP/UP)")


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-.]+", "", name.lower())


def default_positive(classes: list[str]) -> str | None:
    """The cracked class of a binary problem, recognised from the class names; None when it cannot tell.

    Recognised: :data:`CONVENTIONS`. Two names that are both (or neither) a known cracked /
    sound name are ambiguous, and so is any problem with other than two classes.
    """
    if len(classes) != 2:
        return None
    a, b = classes
    na, nb = _norm(a), _norm(b)
    for x, y, nx, ny in ((a, b, na, nb), (b, a, nb, na)):
        if nx in _POSITIVE_NAMES and ny in _NEGATIVE_NAMES:
            return x
        mx, my = _SDNET_PAIR.match(nx), _SDNET_PAIR.match(ny)
        if mx and my and mx.group(1) == "c" and my.group(1) == "u" and mx.group(2) == my.group(2):
            return x
    return None


def resolve_positive(classes: list[str], given: str | None = None) -> str | None:
    """The cracked class a model's threshold applies to: ``given``, else recognised from the names.

    Args:
        classes: Class names of the training set.
        given: ``--positive-label`` (None: recognise it with :func:`default_positive`).

    Returns:
        The cracked class; None for a problem with more than two classes and no ``given``.

    Raises:
        ConfigError: ``given`` is not one of ``classes``.
        DatasetError: Two classes whose names do not say which one is cracked.
    """
    if given is not None:
        if given not in classes:
            near = [c for c in classes if c.lower() == given.lower()]
            raise ConfigError(f"--positive-label {given!r} is not a class ({', '.join(classes)})",
                              f"did you mean --positive-label {near[0]}?" if near else
                              "pass one of the class folder names exactly")
        return given
    if len(classes) != 2:
        return None
    found = default_positive(classes)
    if found is None:
        a, b = classes
        raise DatasetError(f"cannot tell which class is the cracked one from the names {a!r} and {b!r}",
                           f"say it: --positive-label {a} (or {b}); recognised names are {CONVENTIONS}")
    return found
