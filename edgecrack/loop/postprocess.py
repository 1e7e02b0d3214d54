"""From class probabilities to decisions: the one decision policy of edgecrack.

A tile (or a whole image) is cracked when its positive-class probability reaches the
threshold (:func:`cracked_mask`); a frame is cracked when at least ``min_tiles`` of its tiles
are (:func:`frame_verdict`). File prediction (``edgecrack predict`` / ``eval``, benchmarks,
export checks) decides with :func:`predict_labels`, which applies the same comparison, so a
256x256 image gets the same label from ``predict`` as from ``run --tile 256``. Tile
probabilities form a crack map that :class:`TemporalSmoother` averages over video frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import check_smooth
from .tiling import TileGrid

#: Threshold when neither the user nor the model's manifest sets one.
DEFAULT_THRESHOLD = 0.5


def resolve_threshold(override: float | None, manifest_threshold: float | None) -> float:
    """The threshold in force: the user's, else the manifest's, else :data:`DEFAULT_THRESHOLD`."""
    if override is not None:
        return float(override)
    return float(manifest_threshold if manifest_threshold is not None else DEFAULT_THRESHOLD)


def cracked_mask(positive_probs: np.ndarray, threshold: float) -> np.ndarray:
    """Which tiles or images are cracked: positive probability at or above the threshold."""
    return np.asarray(positive_probs) >= threshold


def predict_labels(probs: np.ndarray, positive_index: int | None, threshold: float | None) -> np.ndarray:
    """Class indices: thresholded positive probability for binary models, argmax otherwise."""
    probs = np.asarray(probs)
    if positive_index is None or threshold is None or probs.shape[1] != 2:
        return probs.argmax(1)
    neg = 1 - positive_index
    return np.where(cracked_mask(probs[:, positive_index], threshold), positive_index, neg)


@dataclass(frozen=True)
class Verdict:
    """A frame's decision from its crack map.

    Attributes:
        cracked: At least ``min_tiles`` tiles at or above the threshold.
        cracked_tiles: Tiles at or above the threshold.
        score: Highest tile crack probability.
    """

    cracked: bool
    cracked_tiles: int
    score: float


def frame_verdict(crack_map: np.ndarray, threshold: float, min_tiles: int = 1) -> Verdict:
    """Decide a frame from its (smoothed) crack map."""
    hits = int(cracked_mask(crack_map, threshold).sum())
    return Verdict(hits >= min_tiles, hits, float(np.max(crack_map)))


def crack_map_from_probs(positive_probs: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Per-tile crack probabilities as a ``float32 [rows, cols]`` map."""
    p = np.asarray(positive_probs, np.float32)
    if p.size != grid.n:
        raise ValueError(f"{p.size} tile probabilities for a grid of {grid.n} tiles")
    return p.reshape(grid.rows, grid.cols)


class TemporalSmoother:
    """Moving average of crack maps over the last ``n`` frames (video and live sources).

    Resets when the grid changes (a stream reconnected at another resolution).
    """

    def __init__(self, n: int):
        check_smooth(n)
        self.n = n
        self._maps: list[np.ndarray] = []

    def __call__(self, crack_map: np.ndarray) -> np.ndarray:
        if self.n == 1:
            return crack_map
        if self._maps and self._maps[-1].shape != crack_map.shape:
            self._maps.clear()
        self._maps.append(crack_map)
        if len(self._maps) > self.n:
            self._maps.pop(0)
        return np.mean(self._maps, axis=0).astype(np.float32)

    def reset(self) -> None:
        self._maps.clear()
