"""What every file output checks before the run starts: a writable folder on a disk with room."""

from __future__ import annotations

from pathlib import Path

from ...io import check_writable_folder

#: Free space an output needs on its disk when the run starts.
MIN_FREE_BYTES = {"--log": 1 << 20, "--save-video": 64 << 20, "--save-flagged": 16 << 20}


def check_output_file(path: Path, what: str) -> None:
    """Refuse, before anything opens, an output file whose folder cannot be written or is on a full disk."""
    check_writable_folder(path.parent, f"{what} {path}", MIN_FREE_BYTES.get(what, 1 << 20))


def check_output_folder(folder: Path, what: str) -> None:
    """The same for an output folder (``--save-flagged``)."""
    check_writable_folder(folder, f"{what} {folder}", MIN_FREE_BYTES.get(what, 1 << 20))
