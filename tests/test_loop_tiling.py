"""Tiling geometry against hand-computed grids, crack maps, overlays, smoothing, and tiled inference."""

from __future__ import annotations

import numpy as np
import pytest

from edgecrack.errors import ConfigError
from edgecrack.loop.postprocess import TemporalSmoother, crack_map_from_probs
from edgecrack.loop.render import heat_from_map, overlay
from edgecrack.loop.tiling import axis_starts, tile_grid, tiles_from_frame

from streaming.helpers import mosaic


# -- geometry -----------------------------------------------------------------------------
@pytest.mark.parametrize("length,tile,stride,edge,want", [
    (1024, 256, 256, "shift", [0, 256, 512, 768]),          # exact fit: no extra tile
    (1000, 256, 256, "shift", [0, 256, 512, 744]),          # last tile moved back to end at 1000
    (1000, 256, 256, "pad", [0, 256, 512, 768]),            # last tile reaches 1024, 24 px mirrored
    (1000, 256, 256, "drop", [0, 256, 512]),                # 232 px strip not inspected
    (1000, 256, 128, "shift", [0, 128, 256, 384, 512, 640, 744]),
    (1000, 256, 128, "pad", [0, 128, 256, 384, 512, 640, 768]),
    (1000, 256, 128, "drop", [0, 128, 256, 384, 512, 640]),
    (2160, 256, 256, "shift", [0, 256, 512, 768, 1024, 1280, 1536, 1792, 1904]),
    (256, 256, 128, "shift", [0]),                          # frame == tile: one tile
    (200, 256, 256, "shift", [0]),                          # frame smaller than the tile
    (300, 256, 100, "shift", [0, 44]),
])
def test_axis_starts_hand_computed(length, tile, stride, edge, want):
    assert axis_starts(length, tile, stride, edge) == want


def test_4k_grid_shift():
    g = tile_grid(2160, 3840, 256)
    assert (g.rows, g.cols, g.n) == (9, 15, 135)
    assert g.xs == tuple(range(0, 3840, 256))
    assert g.ys[-1] == 2160 - 256 and g.ys[-2] == 1792
    boxes = g.boxes()
    assert boxes[0] == (0, 0, 256, 256)
    assert boxes[-1] == (3584, 1904, 3840, 2160)
    assert all(x1 - x0 == 256 and y1 - y0 == 256 for x0, y0, x1, y1 in boxes)
    covered = np.zeros((2160, 3840), bool)
    for x0, y0, x1, y1 in boxes:
        covered[y0:y1, x0:x1] = True
    assert covered.all()


def test_pad_grid_boxes_are_clipped_and_padding_is_mirrored():
    g = tile_grid(300, 500, 256, edge="pad")
    assert (g.ys, g.xs) == ((0, 256), (0, 256))
    assert (g.pad_bottom, g.pad_right) == (212, 12)
    assert g.boxes() == [(0, 0, 256, 256), (256, 0, 500, 256), (0, 256, 256, 300), (256, 256, 500, 300)]
    frame = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    t = tiles_from_frame(frame, g)
    assert all(x.shape == (256, 256, 3) for x in t)
    # right tile: columns 256..499 are real, 500..511 mirror 498..487 (BORDER_REFLECT_101)
    np.testing.assert_array_equal(t[1][:, :244], frame[:256, 256:500])
    np.testing.assert_array_equal(t[1][:, 244], frame[:256, 498])
    np.testing.assert_array_equal(t[1][:, 255], frame[:256, 487])


def test_small_frame_is_one_tile_of_itself_and_tile_zero_disables_tiling():
    g = tile_grid(200, 180, 256)
    assert (g.n, g.tile_h, g.tile_w) == (1, 200, 180)
    g0 = tile_grid(2160, 3840, 0)
    assert (g0.n, g0.tile_h, g0.tile_w) == (1, 2160, 3840)
    frame = np.zeros((2160, 3840, 3), np.uint8)
    assert tiles_from_frame(frame, g0)[0].shape == (2160, 3840, 3)


def test_tiles_are_the_right_crops_in_row_major_order():
    frame = np.arange(600 * 520 * 3, dtype=np.uint32).reshape(600, 520, 3).astype(np.uint8)
    g = tile_grid(600, 520, 256, stride=200)
    assert g.ys == (0, 200, 344) and g.xs == (0, 200, 264)
    tiles = tiles_from_frame(frame, g)
    assert len(tiles) == 9
    np.testing.assert_array_equal(tiles[4], frame[200:456, 200:456])
    np.testing.assert_array_equal(tiles[8], frame[344:600, 264:520])


@pytest.mark.parametrize("kw,msg", [
    (dict(tile=256, stride=300), "stride must be in 1..256"),
    (dict(tile=256, stride=0), "stride must be in 1..256"),
    (dict(tile=-1), "--tile must be >= 0"),
    (dict(tile=256, edge="wrap"), "unknown --edge 'wrap'"),
])
def test_bad_tiling_options(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        tile_grid(512, 512, **kw)


# -- maps, heat, overlay ------------------------------------------------------------------
def test_crack_map_and_overlap_averaged_heat():
    g = tile_grid(4, 6, 4, stride=2)  # xs (0, 2), one row: tiles [0:4] and [2:6]
    cmap = crack_map_from_probs(np.array([0.2, 0.8]), g)
    assert cmap.shape == (1, 2)
    heat = heat_from_map(cmap, g, scale=1)
    np.testing.assert_allclose(heat[0], [0.2, 0.2, 0.5, 0.5, 0.8, 0.8], atol=1e-6)
    with pytest.raises(ValueError, match="3 tile probabilities for a grid of 2"):
        crack_map_from_probs(np.zeros(3), g)


def test_overlay_boxes_only_cracked_tiles():
    frame = np.full((512, 512, 3), 128, np.uint8)
    g = tile_grid(512, 512, 256)
    cmap = np.array([[0.9, 0.1], [0.2, 0.6]], np.float32)
    out = overlay(frame, g, cmap, threshold=0.5, mode="boxes")
    red = (out[..., 2] > 200) & (out[..., 0] < 50)
    assert red[128, 1] and red[128 + 256, 256 + 1]          # left edges of the two cracked tiles
    assert not red[128, 256 + 1] and not red[128 + 256, 1]  # uncracked tiles untouched there
    np.testing.assert_array_equal(frame, 128)               # input not modified
    heat = overlay(frame, g, cmap, threshold=0.5, mode="heat")
    # Alpha grows with p: the 0.9 tile is tinted much more than the 0.1 tile.
    d_hot = np.abs(heat[100:150, 100:150].astype(int) - 128).mean()
    d_cold = np.abs(heat[100:150, 356:406].astype(int) - 128).mean()
    assert d_hot > 3 * d_cold
    with pytest.raises(ConfigError, match="unknown --overlay"):
        overlay(frame, g, cmap, 0.5, mode="glow")


def test_temporal_smoother_moving_average_and_reset():
    s = TemporalSmoother(3)
    a, b, c, d = (np.full((1, 2), v, np.float32) for v in (0.0, 0.3, 0.9, 0.6))
    np.testing.assert_allclose(s(a), 0.0)
    np.testing.assert_allclose(s(b), 0.15)
    np.testing.assert_allclose(s(c), 0.4)
    np.testing.assert_allclose(s(d), 0.6)  # (0.3 + 0.9 + 0.6) / 3: oldest dropped
    np.testing.assert_allclose(s(np.ones((2, 2), np.float32)), 1.0)  # new grid shape: restart
    assert TemporalSmoother(1)(a) is a
    with pytest.raises(ConfigError):
        TemporalSmoother(0)


# -- tiled inference equals per-image inference -------------------------------------------
def test_tiled_mosaic_matches_per_image_predictions(tiny_onnx, deck_dir):
    """A 2x3 mosaic of real 256x256 deck images, tiled at 256, gives each image's own probability."""
    from edgecrack.loop.inspector import Inspector
    from edgecrack.loop.types import Frame
    from edgecrack.preprocess import preprocess
    from edgecrack.runtime import open_backend

    imgs = sorted((deck_dir / "CD").glob("*.jpg"))[40:43] + sorted((deck_dir / "UD").glob("*.jpg"))[40:43]
    big = mosaic(imgs, 2, 3)
    sel = open_backend(tiny_onnx, "onnxruntime-cpu")
    with sel.backend as be:
        insp = Inspector(be, tile=256, batch=4)
        (r,) = insp.inspect([Frame(big, 0, "mosaic", 0.0, 0)])
        tiles = [big[y:y + 256, x:x + 256] for y in (0, 256) for x in (0, 256, 512)]
        want = be.probs(preprocess(tiles, be.manifest.input))[:, be.manifest.positive_index]
    assert (r.grid.rows, r.grid.cols) == (2, 3)
    np.testing.assert_allclose(r.crack_map.reshape(-1), want, atol=1e-5)
    assert r.cracked_tiles == int((want >= r.threshold).sum())
    assert r.score == pytest.approx(float(want.max()), abs=1e-6)
    assert r.cracked == (r.cracked_tiles >= 1)
