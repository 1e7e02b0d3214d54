"""Training views: dihedral views, and photometric draws that are random per image yet reproducible."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from edgecrack.preprocess import InputContract, preprocess_files  # noqa: E402
from edgecrack.train.bottleneck import DIHEDRAL, VIEWS, photometric  # noqa: E402


@pytest.fixture(scope="module")
def tiles(deck_dir):
    paths = sorted((deck_dir / "CD").glob("*.jpg"))[:3] + sorted((deck_dir / "UD").glob("*.jpg"))[:3]
    return preprocess_files(paths, InputContract())


def test_order_dihedral_first_then_light():
    assert list(VIEWS)[:8] == list(DIHEDRAL) and list(VIEWS)[0] == "id"
    assert list(VIEWS)[8:] == ["light0", "light1", "light2", "light3"]


def test_photometric_draws_are_reproducible_and_distinct(tiles):
    a = [VIEWS["light0"](t) for t in tiles]
    assert all(np.array_equal(x, VIEWS["light0"](t)) for x, t in zip(a, tiles))  # the cache relies on it
    assert all(x.shape == t.shape and x.dtype == np.uint8 for x, t in zip(a, tiles))
    b = [VIEWS["light1"](t) for t in tiles]
    assert not any(np.array_equal(x, y) for x, y in zip(a, b))
    ratios = [x.mean() / t.mean() for x, t in zip(a, tiles)]
    assert len({round(r, 3) for r in ratios}) == len(tiles)  # each image gets its own light


def test_photometric_stays_within_its_ranges():
    flat = np.full((64, 64, 3), 100, np.uint8)  # no contrast to scale: the mean moves by brightness only
    means = [photometric(flat, d).mean() for d in range(40)]
    assert 49 < min(means) and max(means) < 131
    assert max(means) - min(means) > 40  # the draws span most of x0.5..x1.3
    noisy = [photometric(flat, d).std() for d in range(40)]
    assert max(noisy) < 13 and max(noisy) > 5


def test_light_views_reach_training(small_deck, tmp_path):
    from edgecrack.jobs import train_job
    from edgecrack.train.api import TrainConfig

    res = train_job(TrainConfig(data=str(small_deck), out=str(tmp_path / "run"), views=10, cache_dir=str(tmp_path / "c"),
                                plots=False, export=False))
    from edgecrack.data import content_hash
    from edgecrack.train.bottleneck import read_cached_features

    assert res.metrics["bottleneck"]["views"] == 10 and res.metrics["bottleneck"]["computed"] == 40
    (kdir,) = (tmp_path / "c" / "bottleneck").iterdir()
    img = sorted((small_deck / "CD").glob("*.jpg"))[0]
    f = read_cached_features(kdir, content_hash(img)).astype(np.float32)
    assert f.shape == (10, 192)  # the default 13 units of Lite0 end in 192 channels
    for light in f[8:]:  # a light view is no dihedral view: the trunk saw other pixels
        assert np.abs(f[:8] - light).max(axis=1).min() > 0.05
