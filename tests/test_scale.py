"""Training at scale: features on disk behind a memory map, bounded reads, streaming solver, flat memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgecrack.preprocess import InputContract  # noqa: E402
from edgecrack.train import bottleneck  # noqa: E402
from edgecrack.train.backbones import load_backbone  # noqa: E402
from edgecrack.train.bottleneck import FeatureRows, FeatureStore, _StackWriter, features_from_images, model_key  # noqa: E402
from edgecrack.train.loop import fit_linear_head  # noqa: E402
from edgecrack.train.model import CrackNet, Head, build_cracknet  # noqa: E402
from torch import nn  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_trunk():
    """The real pretrained stem + first 3 blocks of EfficientNet-Lite0 (quick to run), unpooled."""
    bb = load_backbone("efficientnet_lite0")
    contract = InputContract(224, 224, mean=bb.spec.mean, std=bb.spec.std)
    trunk = nn.Sequential(*list(bb.units)[:4])
    for p in trunk.parameters():
        p.requires_grad_(False)
    net = CrackNet(trunk, nn.Sequential(), Head(24, 2), contract).eval()
    return net, contract, model_key("efficientnet_lite0", bb.weights_id, contract, 14, False, ["id", "hflip"])


def _images(deck_dir: Path, n: int) -> list[Path]:
    return sorted((deck_dir / "CD").glob("*.jpg"))[:n // 2] + sorted((deck_dir / "UD").glob("*.jpg"))[:n // 2]


def test_features_live_in_a_memory_mapped_file_not_in_ram(tiny_trunk, deck_dir, tmp_path):
    net, contract, key = tiny_trunk
    paths = _images(deck_dir, 6)
    fs = features_from_images(paths, net, contract, key, views=["id", "hflip"], pooled=False,
                              cache_dir=tmp_path / "cache")
    assert isinstance(fs.store, FeatureStore) and fs.store.shape == (6, 2, 24, 56, 56)
    assert fs.features.shape == fs.store.shape and not fs.features.flags.writeable
    assert fs.features.base is not None and not fs.features.flags.owndata  # a view of the mapping, no copy
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []  # the run's file is anonymous: nothing left behind
    # minibatch reads: any order, one view per row, equal to indexing the whole array
    rows = FeatureRows(fs.store, np.array([5, 0, 3]))
    views = np.array([1, 0, 1])
    np.testing.assert_array_equal(rows.take(np.arange(3), views), fs.features[[5, 0, 3], [1, 0, 1]])
    np.testing.assert_array_equal(rows.subset([2, 0]).take(np.arange(2)), fs.features[[3, 5]])
    chunks = list(rows.chunks(2, view=0))
    assert [a for a, _ in chunks] == [0, 2]
    np.testing.assert_array_equal(np.concatenate([x for _, x in chunks]), fs.features[[5, 0, 3], 0])


def test_undecodable_images_leave_no_hole_in_the_file(tiny_trunk, deck_dir, tmp_path):
    net, contract, key = tiny_trunk
    good = _images(deck_dir, 4)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    (tmp_path / "half.jpg").write_bytes(good[0].read_bytes()[:300])
    mixed = [tmp_path / "bad.jpg", good[0], good[1], tmp_path / "half.jpg", good[2], good[3]]
    clean = features_from_images(good, net, contract, key, views=["id", "hflip"], pooled=False, cache_dir=None)
    fs = features_from_images(mixed, net, contract, key, views=["id", "hflip"], pooled=False, cache_dir=None)
    assert fs.paths == good and len(fs.skipped) == 2 and fs.store.shape[0] == 4
    np.testing.assert_array_equal(fs.features, clean.features)  # rows moved up over the holes, in order


def test_decode_workers_give_the_same_features_as_threads(tiny_trunk, deck_dir):
    net, contract, key = tiny_trunk
    paths = _images(deck_dir, 6)
    threads = features_from_images(paths, net, contract, key, views=["id"], pooled=False, cache_dir=None, workers=0,
                                   batch_size=4)
    procs = features_from_images(paths, net, contract, key, views=["id"], pooled=False, cache_dir=None, workers=2,
                                 batch_size=4)
    assert procs.paths == threads.paths
    np.testing.assert_array_equal(procs.features, threads.features)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the resident set from /proc (Linux)")
def test_reading_the_whole_file_keeps_the_resident_set_bounded(tmp_path, monkeypatch):
    """Pages of a file mapping count in RSS until released: 64 MB read with a 4 MB budget stays small."""
    def rss_file_mb() -> float:
        status = Path("/proc/self/status").read_text()
        return int(status.split("RssFile:")[1].split()[0]) / 1024

    n, row = 512, (8, 4096)  # 512 rows x 64 KiB = 32 MiB of float16
    w = _StackWriter(n, tmp_path)
    for i in range(n):
        w.put(i, np.full(row, i % 7, np.float16))
    monkeypatch.setattr(bottleneck, "RESIDENT_BYTES", 4 << 20)
    store = w.finish(list(range(n)))
    r0 = rss_file_mb()
    got = FeatureRows(store).take(np.arange(n)[::-1])
    bounded = rss_file_mb() - r0
    assert got[0, 0, 0] == (n - 1) % 7 and got[-1, 0, 0] == 0
    monkeypatch.setattr(bottleneck, "RESIDENT_BYTES", 1 << 40)
    w = _StackWriter(n, tmp_path)
    for i in range(n):
        w.put(i, np.full(row, i % 7, np.float16))
    store2 = w.finish(list(range(n)))
    r1 = rss_file_mb()
    FeatureRows(store2).take(np.arange(n))
    unbounded = rss_file_mb() - r1
    assert bounded < 10 and unbounded > 25, (bounded, unbounded)


def test_streaming_head_solver_finds_the_in_memory_optimum(small_deck, tmp_path):
    bb = load_backbone("efficientnet_lite0")
    contract = InputContract(224, 224, mean=bb.spec.mean, std=bb.spec.std)
    net = build_cracknet(bb, 2, 0, contract)
    views = ["id", "hflip"]
    key = model_key("efficientnet_lite0", bb.weights_id, contract, 0, True, views)
    paths = sorted(small_deck.rglob("*.jpg"))
    fs = features_from_images(paths, net, contract, key, views=views, pooled=True,
                              cache_dir=Path(os.environ["EDGECRACK_CACHE"]))
    y = np.array([0 if p.parent.name == "CD" else 1 for p in fs.paths])
    rows = FeatureRows(fs.store, np.arange(len(y))[::-1].copy())  # an order unlike the file's
    y = y[::-1].copy()
    losses, weights = [], []
    for max_bytes in (None, 0):  # in memory (one batch), then streamed in chunks from the file
        torch.manual_seed(0)
        loss = fit_linear_head(net, rows, y, 1e-2, max_bytes=max_bytes, max_iter=200)
        losses.append(loss)
        weights.append((net.head.fc.weight.detach().clone(), net.head.fc.bias.detach().clone()))
    assert abs(losses[0] - losses[1]) < 1e-5, losses
    assert torch.allclose(weights[0][0], weights[1][0], atol=1e-4) and torch.allclose(weights[0][1], weights[1][1], atol=1e-4)
    # and the same as the array API the solver always had
    fit_linear_head(net, fs.features[::-1], y, 1e-2, max_iter=200)
    assert torch.allclose(net.head.fc.weight, weights[0][0], atol=1e-5)


_PEAK = ("import resource, sys\n"
         "from edgecrack.train.api import TrainConfig, train\n"
         "from edgecrack.train.loop import LoopConfig\n"
         "train(TrainConfig(data=sys.argv[1], out=sys.argv[2], cache_dir=sys.argv[3], fine_tune_blocks=1, plots=False,"
         " export=False, loop=LoopConfig(epochs=1)))\n"
         "print('PEAK_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n")


def _peak_mb(data: Path, out: Path, cache: Path) -> float:
    r = subprocess.run([sys.executable, "-c", _PEAK, str(data), str(out), str(cache)], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return float(r.stdout.split("PEAK_MB")[1].split()[0])


@pytest.mark.slow
def test_fine_tuning_memory_does_not_grow_with_images(small_deck, tmp_path):
    """Fine-tuning the top block with the default 8 views: 20x the images (the same 40 real images
    under 20 names each: as many feature rows, no extra trunk work) grows peak RSS by at most
    100 MB per 1,000 images. Features stacked in RAM grew +0.6 GB per 1,000
    (benchmarks/scale, before/after)."""
    big = tmp_path / "big"
    for p in small_deck.rglob("*.jpg"):
        (big / p.parent.name).mkdir(parents=True, exist_ok=True)
        for r in range(20):
            os.symlink(p, big / p.parent.name / f"r{r}-{p.name}")
    cache = Path(os.environ["EDGECRACK_CACHE"])
    _peak_mb(small_deck, tmp_path / "warmup", cache)  # fills the cache: both measured runs read it
    small = _peak_mb(small_deck, tmp_path / "small", cache)
    large = _peak_mb(big, tmp_path / "large", cache)
    per_1000 = (large - small) / ((800 - 40) / 1000)
    assert per_1000 <= 100, f"peak RSS {small:.0f} MB at 40 images, {large:.0f} MB at 800: {per_1000:+.0f} MB / 1,000"
