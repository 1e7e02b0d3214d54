"""User-facing errors.

Every error a user can cause (bad path, empty dataset, artifact for another machine) is an
:class:`EdgecrackError` carrying what happened and what to do. The CLI prints it and exits 1
without a traceback. Bugs are not wrapped: they propagate with their traceback.
"""

from __future__ import annotations


class EdgecrackError(Exception):
    """Base class for errors caused by input, configuration or environment.

    Args:
        message: What happened, and where.
        hint: What the user can do about it.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class DatasetError(EdgecrackError):
    """A dataset folder is missing, empty, single-class or unreadable."""


class ImageDecodeError(EdgecrackError):
    """An image file could not be decoded (corrupt, truncated, empty, not an image)."""


class ArtifactError(EdgecrackError):
    """An artifact (checkpoint, ONNX, engine, manifest) is missing, corrupt or incompatible."""


class BackendUnavailable(EdgecrackError):
    """A runtime backend cannot run on this machine (library or device missing)."""


class WeightsError(EdgecrackError):
    """Pretrained weights are missing or do not match the backbone."""


class SourceError(EdgecrackError):
    """A frame source (camera, stream, file, folder) cannot be opened or has died."""


class ConfigError(EdgecrackError):
    """An option or combination of options is invalid."""
