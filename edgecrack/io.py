"""Atomic file writes (a killed process never leaves half an artifact behind), and the check
that an output folder can be written before any work starts."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import ConfigError, EdgecrackError


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file's bytes, read in chunks (artifacts can be hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def check_writable_folder(folder: str | Path, what: str, min_free_bytes: int = 0) -> Path:
    """Create an output folder when missing and make sure it can be written, before any work starts.

    Args:
        folder: The folder outputs go to (``""`` or ``"."``: the working directory).
        what: How the user named the output, for messages (``--out report``, ``--log run.jsonl``).
        min_free_bytes: Free space its disk must have (0: not checked).

    Returns:
        The folder.

    Raises:
        ConfigError: It is a file, cannot be created, is not writable, or its disk is full.
    """
    folder = Path(folder) if str(folder) else Path(".")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what}: {folder} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{what}: cannot create folder {folder} ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{what}: folder {folder} is not writable")
    if min_free_bytes:
        try:
            st = os.statvfs(folder)
        except OSError:
            return folder
        free = st.f_bavail * st.f_frsize
        if free < min_free_bytes:
            raise ConfigError(f"{what}: the disk holding it is full ({free >> 10} KiB free, {min_free_bytes >> 20} MiB "
                              "needed to start)", "free some space, or write this output to another disk")
    return folder


def read_json(path: str | Path, hint: str | None = None, error: type[EdgecrackError] = ConfigError) -> Any:
    """Parse a JSON file; not JSON (or not UTF-8) -> ``error("<path> is not valid JSON (...)", hint)``.

    Reading errors (a missing file) propagate as :class:`OSError`: callers name what was missing.
    """
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{p} is not valid JSON ({e})", hint) from None


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _public_mode(tmp)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return p


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


class atomic_path:
    """Context manager yielding a temporary path that is renamed onto ``path`` on success.

    For libraries that insist on writing to a path themselves (matplotlib, onnx, TensorRT).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=self.path.suffix or ".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            _public_mode(self.tmp)
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _public_mode(path: str | Path) -> None:
    """mkstemp creates 0600 files; give artifacts the umask's normal mode (a service user on a
    Jetson must be able to read a model written by root)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
