"""Drawing: a frame annotated with its crack map (heat and/or boxes) and its verdict.

Used by the loop's video, flagged-frame and window outputs and by ``edgecrack report``'s
thumbnails, so a report shows exactly what the run saved.
"""

from __future__ import annotations

import cv2
import numpy as np

from .config import OVERLAY_MODES, check_overlay
from .tiling import TileGrid

__all__ = ["OVERLAY_MODES", "heat_from_map", "overlay"]


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
    check_overlay(mode)
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
