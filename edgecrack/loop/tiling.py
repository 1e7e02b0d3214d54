"""Tiles of frames larger than the model input.

SDNET2018 images are 256x256 crops of 4068x3456 photos, and the default model is trained on
them at that size (256x256 input). A drone frame therefore is cut into tiles of the same
physical scale (default 256 px) that are resized to the model input, exactly like the training
crops. Their probabilities become a crack map and a verdict in :mod:`edgecrack.loop.postprocess`.

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

from ..errors import ConfigError
from .config import EDGE_MODES, check_edge, check_tiling

__all__ = ["EDGE_MODES", "TileGrid", "axis_starts", "tile_grid", "tiles_from_frame"]


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
        else:
            check_edge(edge)
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
    check_edge(edge)
    if tile == 0:
        return TileGrid(height, width, height, width, (0,), (0,), edge)
    check_tiling(tile, stride, edge)
    stride = tile if stride is None else stride
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
