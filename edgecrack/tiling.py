"""Tiles of frames larger than the model input, the per-tile crack map, and its overlay.

SDNET2018 images are 256x256 crops of 4068x3456 photos, and the default model is trained on
them at that size (256x256 input). A drone frame therefore is cut into tiles of the same
physical scale (default 256 px) that are resized to the model input, exactly like the training
crops. The
tiles' crack probabilities form a crack map; the frame verdict is "cracked" when at least
``min_tiles`` tiles reach the threshold.

Edge handling when the frame is not a whole number of strides (``edge``):

- ``shift`` (default): the last tile of a row/column is moved back so it ends at the frame
  edge; every pixel is covered, every tile is real image, the last ones overlap more.
- ``pad``: the last tile starts on the stride grid and reaches past the edge; the missing
  pixels are mirrored (``BORDER_REFLECT_101``), never black, which the model never saw.
- ``drop``: the remainder strip narrower than a stride is not inspected.

A frame no larger than the tile along an axis gets one tile along it: the whole axis for
``shift``/``drop`` (a 256x256 image with a 256 tile is one tile, as in training), the tile
size mirrored past the edge for ``pad``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .errors import ConfigError

EDGE_MODES = ("shift", "pad", "drop")
OVERLAY_MODES = ("boxes", "heat", "both", "none")


def axis_starts(length: int, tile: int, stride: int, edge: str = "shift") -> list[int]:
    """Tile origins along one axis.

    Args:
        length: Frame size along the axis (pixels).
        tile: Tile size along the axis.
        stride: Step between tile origins (``stride < tile`` overlaps).
        edge: ``shift``, ``pad`` or ``drop`` (see the module docstring).

    Returns:
        Sorted, distinct origins.
    """
    if length <= 0 or tile <= 0 or stride <= 0:
        raise ConfigError(f"tiling needs positive sizes (length {length}, tile {tile}, stride {stride})")
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    end = starts[-1] + tile
    if end < length:
        if edge == "shift":
            starts.append(length - tile)
        elif edge == "pad":
            starts.append(starts[-1] + stride)
        elif edge != "drop":
            raise ConfigError(f"unknown edge mode {edge!r}", f"choose one of: {', '.join(EDGE_MODES)}")
    return starts


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one frame size are.

    Attributes:
        height: Frame height.
        width: Frame width.
        tile_h: Tile height (the tile size, or the frame height when smaller, except ``pad``).
        tile_w: Tile width.
        ys: Tile row origins.
        xs: Tile column origins.
        edge: Edge mode the grid was made with.
    """

    height: int
    width: int
    tile_h: int
    tile_w: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    edge: str = "shift"

    @property
    def rows(self) -> int:
        return len(self.ys)

    @property
    def cols(self) -> int:
        return len(self.xs)

    @property
    def n(self) -> int:
        return self.rows * self.cols

    @property
    def pad_bottom(self) -> int:
        return max(0, self.ys[-1] + self.tile_h - self.height)

    @property
    def pad_right(self) -> int:
        return max(0, self.xs[-1] + self.tile_w - self.width)

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """``(x0, y0, x1, y1)`` of every tile in row-major order, clipped to the frame."""
        return [(x, y, min(x + self.tile_w, self.width), min(y + self.tile_h, self.height))
                for y in self.ys for x in self.xs]


def tile_grid(height: int, width: int, tile: int, stride: int | None = None, edge: str = "shift") -> TileGrid:
    """The tile grid of a frame size.

    Args:
        height: Frame height.
        width: Frame width.
        tile: Square tile size in frame pixels; ``0`` means no tiling (one tile, the whole frame).
        stride: Step between tiles (default: ``tile``, no overlap).
        edge: ``shift``, ``pad`` or ``drop``.

    Raises:
        ConfigError: Non-positive stride, stride larger than the tile, unknown edge mode.
    """
    if edge not in EDGE_MODES:
        raise ConfigError(f"unknown edge mode {edge!r}", f"choose one of: {', '.join(EDGE_MODES)}")
    if tile == 0:
        return TileGrid(height, width, height, width, (0,), (0,), edge)
    if tile < 0:
        raise ConfigError(f"tile size must be positive or 0 (no tiling), got {tile}")
    stride = tile if stride is None else stride
    if stride <= 0 or stride > tile:
        raise ConfigError(f"stride must be in 1..{tile} (the tile size), got {stride}",
                          "a stride larger than the tile would leave uninspected gaps")
    ys = axis_starts(height, tile, stride, edge)
    xs = axis_starts(width, tile, stride, edge)
    th = tile if edge == "pad" else min(tile, height)
    tw = tile if edge == "pad" else min(tile, width)
    return TileGrid(height, width, th, tw, tuple(ys), tuple(xs), edge)


def tiles_from_frame(frame: np.ndarray, grid: TileGrid) -> list[np.ndarray]:
    """Crop the grid's tiles out of a frame (views, no copies, except padded frames).

    Returns:
        ``grid.n`` arrays ``[tile_h, tile_w, 3]`` in row-major order.
    """
    if frame.shape[:2] != (grid.height, grid.width):
        raise ValueError(f"frame {frame.shape[:2]} does not match grid {grid.height}x{grid.width}")
    src = frame
    if grid.pad_bottom or grid.pad_right:
        src = cv2.copyMakeBorder(frame, 0, grid.pad_bottom, 0, grid.pad_right, cv2.BORDER_REFLECT_101)
    return [src[y:y + grid.tile_h, x:x + grid.tile_w] for y in grid.ys for x in grid.xs]


def crack_map_from_probs(positive_probs: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Per-tile crack probabilities as a ``float32 [rows, cols]`` map."""
    p = np.asarray(positive_probs, np.float32)
    if p.size != grid.n:
        raise ValueError(f"{p.size} tile probabilities for a grid of {grid.n} tiles")
    return p.reshape(grid.rows, grid.cols)


def heat_from_map(crack_map: np.ndarray, grid: TileGrid, scale: int = 4) -> np.ndarray:
    """Pixel heat map ``float32 [H, W]`` in 0..1: overlapping tiles are averaged.

    Computed at ``1/scale`` resolution and enlarged, which is plenty for a display overlay.
    """
    h = -(-grid.height // scale)
    w = -(-grid.width // scale)
    acc = np.zeros((h, w), np.float32)
    cnt = np.zeros((h, w), np.float32)
    for (x0, y0, x1, y1), p in zip(grid.boxes(), crack_map.reshape(-1)):
        ys, ye = y0 // scale, -(-y1 // scale)
        xs, xe = x0 // scale, -(-x1 // scale)
        acc[ys:ye, xs:xe] += p
        cnt[ys:ye, xs:xe] += 1
    heat = np.divide(acc, cnt, out=np.zeros_like(acc), where=cnt > 0)
    if scale == 1:
        return heat
    return cv2.resize(heat, (grid.width, grid.height), interpolation=cv2.INTER_LINEAR)


def overlay(frame: np.ndarray, grid: TileGrid, crack_map: np.ndarray, threshold: float, mode: str = "boxes",
            banner: str | None = None, cracked: bool | None = None) -> np.ndarray:
    """Annotate a frame: heat map and/or boxes on cracked tiles, and a verdict banner.

    Args:
        frame: ``uint8 [H, W, 3]`` BGR (not modified).
        grid: The frame's tile grid.
        crack_map: ``[rows, cols]`` crack probabilities.
        threshold: Tiles at or above it get a box.
        mode: ``boxes``, ``heat``, ``both`` or ``none`` (banner only).
        banner: Text written top-left (e.g. the verdict).
        cracked: Colour of the banner (red when True, green when False).

    Returns:
        A new annotated ``uint8 [H, W, 3]`` image.
    """
    if mode not in OVERLAY_MODES:
        raise ConfigError(f"unknown overlay {mode!r}", f"choose one of: {', '.join(OVERLAY_MODES)}")
    out = frame.copy()
    if mode in ("heat", "both"):
        heat = heat_from_map(crack_map, grid)
        colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
        # Alpha grows with the probability so crack-free areas stay readable.
        alpha = (0.55 * heat)[..., None]
        out = (out * (1 - alpha) + colour * alpha).astype(np.uint8)
    scale = max(grid.height, grid.width) / 1000.0
    thick = max(2, int(round(2 * scale)))
    if mode in ("boxes", "both"):
        for (x0, y0, x1, y1), p in zip(grid.boxes(), crack_map.reshape(-1)):
            if p >= threshold:
                cv2.rectangle(out, (x0 + thick // 2, y0 + thick // 2), (x1 - 1 - thick // 2, y1 - 1 - thick // 2),
                              (0, 0, 255), thick)
                if x1 - x0 >= 60:
                    cv2.putText(out, f"{p:.2f}", (x0 + 4 * thick, y0 + int(22 * max(scale, 0.5))),
                                cv2.FONT_HERSHEY_SIMPLEX, 0.5 * max(scale, 0.6), (0, 0, 255), thick, cv2.LINE_AA)
    if banner:
        fs = 0.6 * max(scale, 0.5)
        (tw, th), base = cv2.getTextSize(banner, cv2.FONT_HERSHEY_SIMPLEX, fs, thick)
        cv2.rectangle(out, (0, 0), (tw + 10, th + base + 10), (0, 0, 0), -1)
        colour = (0, 0, 255) if cracked else (0, 200, 0)
        cv2.putText(out, banner, (5, th + 5), cv2.FONT_HERSHEY_SIMPLEX, fs, colour, thick, cv2.LINE_AA)
    return out


class TemporalSmoother:
    """Moving average of crack maps over the last ``n`` frames (video and live sources).

    Resets when the grid changes (a stream reconnected at another resolution).
    """

    def __init__(self, n: int):
        if n < 1:
            raise ConfigError(f"smoothing window must be >= 1 frame, got {n}")
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
