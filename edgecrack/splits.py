"""A run's own images: which ones trained, validated and tested it (``splits.json``).

The FP16/INT8 builders default to these instead of any bundled set: calibration is a seeded,
stratified draw from the run's *training* split (the domain the model will see) and the
accuracy / agreement check uses its *validation + test* splits, so a model trained on walls is
never calibrated on bridge decks. The file lists absolute paths with each image's sha1; a path
that moved or changed is refused with a message, never silently replaced.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DatasetError
from .io import read_json

SPLITS_FILE = "splits.json"


def _read(run: Path) -> dict:
    f = run / SPLITS_FILE
    if not f.is_file():
        raise DatasetError(f"{run} has no {SPLITS_FILE} (runs trained before edgecrack recorded its splits, or an "
                           "ONNX file outside its run folder)",
                           "pass --calib FOLDER and --eval-data FOLDER, or retrain: edgecrack train --out " + str(run))
    d = read_json(f, "retrain the run, or pass --calib and --eval-data", DatasetError)
    if not isinstance(d, dict) or d.get("schema") != 1:
        raise DatasetError(f"{f} has an unknown schema", "retrain the run, or pass --calib and --eval-data")
    return d


def run_split(run: str | Path, *names: str) -> list[tuple[Path, str, str]]:
    """``(path, label, sha1)`` of the images of the given splits of a run.

    Raises:
        DatasetError: No or malformed ``splits.json``.
    """
    d = _read(Path(run))
    out = []
    for name in names:
        for e in d.get(name) or []:
            if not (isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(e.get("label"), str)
                    and isinstance(e.get("sha1"), str)):
                raise DatasetError(f"{Path(run) / SPLITS_FILE}: malformed entry in {name!r}",
                                   "retrain the run, or pass --calib and --eval-data")
            out.append((Path(e["path"]), e["label"], e["sha1"]))
    return out


def run_dir_of(artifact: str | Path) -> Path | None:
    """The run folder an artifact lives in (the folder holding ``splits.json``), or None."""
    p = Path(artifact)
    d = p if p.is_dir() else p.parent
    return d if (d / SPLITS_FILE).is_file() else None


def stratified_draw(items: list[tuple[Path, str, str]], n: int, seed: int = 0) -> list[tuple[Path, str, str]]:
    """A seeded draw of ``n`` items with the class mix of ``items`` (all of them when fewer)."""
    from .data import stratified_split

    if len(items) <= n:
        return list(items)
    idx, _ = stratified_split([lab for _, lab, _ in items], (n / len(items), 1 - n / len(items)), seed)
    return [items[i] for i in sorted(np.asarray(idx).tolist())]


def verified(items: list[tuple[Path, str, str]], what: str) -> list[tuple[Path, str, str]]:
    """Keep the items whose file still exists with the recorded content; refuse when most are gone."""
    from .data import content_hash

    ok, bad = [], []
    for p, lab, sha in items:
        try:
            (ok if content_hash(p) == sha else bad).append((p, lab, sha))
        except OSError:
            bad.append((p, lab, sha))
    if bad and len(bad) * 10 > len(items):
        raise DatasetError(f"{len(bad)} of {len(items)} {what} images of the run moved or changed (e.g. {bad[0][0]})",
                           "pass --calib FOLDER and --eval-data FOLDER")
    return ok
