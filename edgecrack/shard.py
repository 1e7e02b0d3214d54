"""Deterministic shards of an image folder or glob: ``edgecrack run --shard K/N``.

N workers of any scheduler (a Kubernetes indexed Job, a SLURM array, GNU parallel) each run
``--shard K/N`` with their own K and together inspect every image exactly once, without talking
to each other. An image belongs to shard ``1 + H mod N``, where H is the sha256 of its path
relative to the source root (the folder, or the fixed part of the glob) with ``/`` separators:
the same on every machine and every run whatever the mount point, the listing order or the
operating system, and a new image joins one shard without moving any other.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import os
import re
from pathlib import Path, PurePath
from typing import Iterable

from .errors import ConfigError

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(spec: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``1 <= K <= N``.

    Raises:
        ConfigError: Not of the form K/N, or K outside 1..N.
    """
    m = _SPEC.match(spec or "")
    if not m:
        raise ConfigError(f"--shard {spec!r} is not of the form K/N",
                          "e.g. --shard 1/4 ... --shard 4/4 for four workers (K counts from 1)")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise ConfigError(f"--shard {spec}: K must be within 1..N and N >= 1, got K={k}, N={n}",
                          "shards count from 1: a SLURM array 1-N passes $SLURM_ARRAY_TASK_ID; a Kubernetes "
                          "indexed Job passes $((JOB_COMPLETION_INDEX + 1))")
    return k, n


def shard_of(relative: str | PurePath, n: int) -> int:
    """The shard (1..n) of an image, from its path relative to the source root."""
    key = PurePath(relative).as_posix() if isinstance(relative, PurePath) else str(relative).replace(os.sep, "/")
    h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return 1 + h % n


def glob_root(pattern: str) -> Path:
    """The fixed folder part of a glob (``survey/2024/**/*.jpg`` -> ``survey/2024``)."""
    parts = Path(os.path.expanduser(pattern)).parts
    fixed = []
    for part in parts:
        if _glob.has_magic(part):
            break
        fixed.append(part)
    else:  # no wildcard at all: the pattern names one file
        fixed = fixed[:-1]
    return Path(*fixed) if fixed else Path(".")


def select_shard(paths: Iterable[str | Path], root: str | Path, shard: tuple[int, int] | None) -> list[Path]:
    """The paths of shard ``(K, N)``, in their given order (all of them when ``shard`` is None).

    Args:
        paths: Image files below ``root``.
        root: The source root the stable key is relative to.
        shard: ``(K, N)`` from :func:`parse_shard`, or None.
    """
    paths = [Path(p) for p in paths]
    if shard is None:
        return paths
    k, n = shard
    base = Path(os.path.abspath(root))

    def key(p: Path) -> PurePath:
        a = Path(os.path.abspath(p))
        try:
            return a.relative_to(base)
        except ValueError:  # outside the root (a glob with ".."): the absolute path is still stable on this machine
            return a

    return [p for p in paths if shard_of(key(p), n) == k]


def check_shardable(source: str | None, camera: int | None) -> None:
    """Raise unless ``source`` is a folder or a glob, the two sources ``--shard`` splits.

    Raises:
        ConfigError: A camera, stream, video or single file with ``--shard``.
    """
    s = (source or "").strip()
    if camera is None and s and "://" not in s and (Path(os.path.expanduser(s)).is_dir() or _glob.has_magic(s)):
        return
    what = f"--camera {camera}" if camera is not None else f"--source {source}"
    raise ConfigError(f"--shard splits an image folder or a glob; {what} is neither",
                      "shard a survey archive: --source /data/survey --shard K/N (or a quoted glob)")
