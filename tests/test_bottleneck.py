"""Bottleneck cache: content-addressed keys, hits and misses, --no-cache, bad images, parity with torch."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgecrack.data import content_hash  # noqa: E402
from edgecrack.preprocess import InputContract, preprocess_files  # noqa: E402
from edgecrack.train.backbones import load_backbone  # noqa: E402
from edgecrack.train.bottleneck import features_from_images, model_key  # noqa: E402
from edgecrack.train.model import CrackNet, Head  # noqa: E402
from torch import nn  # noqa: E402

VIEW = ["id"]
TRUNK_UNITS = 4  # stem + 3 blocks of the real EfficientNet-Lite0: a tiny real trunk, quick to export
CUT = 18 - TRUNK_UNITS  # EfficientNet-Lite0 has 18 units; the rest would be fine-tuned


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lite():
    """A real cut of EfficientNet-Lite0 (pretrained stem and first blocks), unpooled like a fine-tune cut."""
    bb = load_backbone("efficientnet_lite0")
    contract = InputContract(224, 224, mean=bb.spec.mean, std=bb.spec.std)
    trunk = nn.Sequential(*list(bb.units)[:TRUNK_UNITS])
    for prm in trunk.parameters():
        prm.requires_grad_(False)
    net = CrackNet(trunk, nn.Sequential(), Head(24, 2), contract).eval()
    assert len(bb.units) - TRUNK_UNITS == CUT
    key = model_key("efficientnet_lite0", bb.weights_id, contract, CUT, False, VIEW)
    return net, contract, key, bb.weights_id


@pytest.fixture(scope="module")
def warm(lite, tmp_path_factory, deck_dir):
    """Four real images and a cache already holding their features."""
    root = tmp_path_factory.mktemp("bottleneck")
    for cls in ("CD", "UD"):
        (root / "data" / cls).mkdir(parents=True)
        for p in sorted((deck_dir / cls).glob("*.jpg"))[:2]:
            shutil.copy(p, root / "data" / cls / p.name)
    fs = _run(lite, _images_in(root), root / "cache")
    assert (fs.computed, fs.hits) == (4, 0)
    return root, fs


def _images_in(root: Path) -> list[Path]:
    return sorted((root / "data").rglob("*.jpg"))


@pytest.fixture
def images(warm, tmp_path) -> list[Path]:
    """A private copy of the warm images and cache under ``tmp_path``."""
    shutil.copytree(warm[0] / "data", tmp_path / "data")
    shutil.copytree(warm[0] / "cache", tmp_path / "cache")
    return _images_in(tmp_path)


def _run(lite, paths, cache, views=VIEW, key=None, pooled=False):
    net, contract, base_key, _ = lite
    return features_from_images(paths, net, contract, key or base_key, views=views, pooled=pooled, cache_dir=cache)


def _cache_files(cache: Path) -> dict[str, bytes]:
    return {str(p.relative_to(cache)): p.read_bytes() for p in sorted(cache.rglob("*")) if p.is_file()}


def _flip_one_byte(path: Path) -> None:
    """Change one byte inside the JPEG scan data (still decodes; a few pixels change)."""
    b = bytearray(path.read_bytes())
    i = len(b) // 2
    while b[i] == 0xFF or b[i - 1] == 0xFF or b[i] ^ 1 == 0xFF:
        i += 1
    b[i] ^= 1
    path.write_bytes(bytes(b))


def test_first_run_computes_and_writes_one_entry_per_image(warm, lite):
    root, fs = warm
    images = _images_in(root)
    assert fs.skipped == [] and fs.paths == images
    assert fs.features.shape == (4, 1, 24, 56, 56) and fs.features.dtype == np.float16
    assert fs.hashes == [content_hash(p) for p in images]
    assert fs.engine.startswith("onnxruntime")
    files = _cache_files(root / "cache")
    assert sorted(files) == sorted(f"bottleneck/{lite[2]}/{h[:2]}/{h}.npy" for h in fs.hashes)


def test_rerun_hits_the_cache(lite, warm, images, tmp_path):
    files = _cache_files(tmp_path / "cache")
    again = _run(lite, images, tmp_path / "cache")
    assert (again.computed, again.hits, again.skipped) == (0, 4, [])
    assert again.engine == "cache"  # no trunk is even built
    np.testing.assert_array_equal(again.features, warm[1].features)
    assert _cache_files(tmp_path / "cache") == files


def test_a_changed_byte_invalidates_only_that_image(lite, warm, images, tmp_path):
    first = warm[1]
    _flip_one_byte(images[2])
    after = _run(lite, images, tmp_path / "cache")
    assert (after.computed, after.hits) == (1, 3)
    assert after.hashes[2] != first.hashes[2]
    assert after.hashes[:2] + after.hashes[3:] == first.hashes[:2] + first.hashes[3:]
    for i in (0, 1, 3):
        np.testing.assert_array_equal(after.features[i], first.features[i])
    assert not np.array_equal(after.features[2], first.features[2])
    assert len(_cache_files(tmp_path / "cache")) == 5  # the old entry stays valid for the old bytes


def test_renaming_a_file_still_hits(lite, warm, images, tmp_path):
    moved = images[0].rename(images[0].with_name("renamed-copy.jpg"))
    paths = [moved] + images[1:]
    again = _run(lite, paths, tmp_path / "cache")
    assert (again.computed, again.hits) == (0, 4)
    assert again.paths[0] == moved
    np.testing.assert_array_equal(again.features, warm[1].features)


def test_model_key_covers_backbone_weights_size_cut_pooling_and_views(lite):
    _, contract, base, weights_id = lite
    args = dict(backbone="efficientnet_lite0", weights_id=weights_id, contract=contract,
                fine_tune_blocks=CUT, pooled=False, views=VIEW)
    assert model_key(**args) == base
    variants = [
        {"backbone": "efficientnet_lite1"},
        {"weights_id": "other.pth:sha256:0123456789abcdef"},
        {"contract": InputContract(256, 256, mean=contract.mean, std=contract.std)},
        {"contract": InputContract(224, 224, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))},
        {"contract": InputContract(224, 224, color="RGB", mean=contract.mean, std=contract.std)},
        {"fine_tune_blocks": 2},
        {"pooled": True},
        {"views": ["id", "hflip"]},
        {"views": ["hflip"]},
    ]
    keys = {model_key(**{**args, **v}) for v in variants}
    assert len(keys) == len(variants) and base not in keys


def test_other_views_get_their_own_key_and_equal_the_torch_eval_path(lite, warm, images, tmp_path):
    """Training sees what inference sees: cached features == trunk(normalize(preprocess(decode(file))))."""
    net, contract, base, weights_id = lite
    views = ["id", "hflip"]
    key2 = model_key("efficientnet_lite0", weights_id, contract, CUT, False, views)
    assert key2 != base
    two = _run(lite, images, tmp_path / "cache", views=views, key=key2)
    assert (two.computed, two.hits) == (4, 0)  # a different key never reuses the other's entries
    assert two.features.shape == (4, 2, 24, 56, 56)
    assert len(list((tmp_path / "cache" / "bottleneck").iterdir())) == 2
    batch = preprocess_files(images, contract)
    flipped = np.ascontiguousarray(batch[:, :, ::-1])
    with torch.inference_mode():
        ref = net.trunk_features(torch.from_numpy(np.concatenate([batch, flipped]))).numpy()
    got = two.features.astype(np.float32)
    for v in (0, 1):
        err = np.abs(got[:, v] - ref[4 * v:4 * v + 4])
        assert err.max() < 0.05 and err.mean() < 2e-3, (v, err.max(), err.mean())
    np.testing.assert_allclose(got[:, 0], warm[1].features[:, 0].astype(np.float32), atol=2e-2)
    # the views are really different inputs
    assert np.abs(got[:, 0] - got[:, 1]).mean() > 0.05


def test_no_cache_bypasses_reads_and_writes(lite, warm, images, tmp_path):
    before = _cache_files(tmp_path / "cache")
    bypass = _run(lite, images, None)
    assert (bypass.computed, bypass.hits) == (4, 0)
    assert _cache_files(tmp_path / "cache") == before
    np.testing.assert_allclose(bypass.features.astype(np.float32), warm[1].features.astype(np.float32), atol=2e-2)


def test_corrupt_images_are_skipped_and_listed(lite, images, tmp_path):
    cache = tmp_path / "cache"
    good = images[:3]
    data = good[0].read_bytes()
    bad = {
        "truncated.jpg": data[: len(data) // 2],
        "empty.jpg": b"",
        "text.png": b"not an image at all",
    }
    bad_paths = []
    for name, content in bad.items():
        p = tmp_path / "data" / "CD" / name
        p.write_bytes(content)
        bad_paths.append(p)
    missing = tmp_path / "data" / "CD" / "gone.jpg"
    paths = [bad_paths[0], good[0], bad_paths[1], good[1], missing, bad_paths[2], good[2]]
    before = _cache_files(cache)
    fs = _run(lite, paths, cache)
    assert fs.paths == good
    assert fs.features.shape == (3, 1, 24, 56, 56)
    assert (fs.computed, fs.hits) == (0, 3)
    reasons = dict(fs.skipped)
    assert set(reasons) == {str(p) for p in bad_paths + [missing]}
    assert "empty file" in reasons[str(bad_paths[1])]
    assert "not a decodable image" in reasons[str(bad_paths[2])]
    assert "cannot read" in reasons[str(missing)]
    assert reasons[str(bad_paths[0])]  # truncated: rejected by the decoder with a reason
    assert _cache_files(cache) == before  # nothing is cached for bad files


def test_damaged_cache_entries_are_recomputed(lite, warm, images, tmp_path):
    cache = tmp_path / "cache"
    entries = sorted((cache / "bottleneck").rglob("*.npy"))
    entries[0].write_bytes(b"garbage, not npy")
    entries[1].write_bytes(entries[1].read_bytes()[:100])  # truncated by a crash or a full disk
    again = _run(lite, images, cache)
    assert (again.computed, again.hits) == (2, 2)
    np.testing.assert_allclose(again.features.astype(np.float32), warm[1].features.astype(np.float32), atol=2e-2)
    third = _run(lite, images, cache)
    assert (third.computed, third.hits) == (0, 4)


def test_entry_with_right_shape_but_wrong_content_is_recomputed_not_served(lite, warm, images, tmp_path):
    cache = tmp_path / "cache"
    entries = sorted((cache / "bottleneck").rglob("*.npy"))
    b = bytearray(entries[0].read_bytes())
    b[1000] ^= 0x40  # inside the float16 payload: still a valid array of the right shape and dtype
    entries[0].write_bytes(bytes(b))
    damaged = np.load(entries[0])
    assert damaged.shape == warm[1].features.shape[1:] and damaged.dtype == np.float16  # a plain reader accepts it
    entries[2].write_bytes(entries[3].read_bytes())  # an intact entry of another image copied over this one
    again = _run(lite, images, cache)
    assert (again.computed, again.hits) == (2, 2)
    np.testing.assert_allclose(again.features.astype(np.float32), warm[1].features.astype(np.float32), atol=2e-2)
    third = _run(lite, images, cache)  # the recomputed entries were written back, verified
    assert (third.computed, third.hits) == (0, 4)
    np.testing.assert_array_equal(third.features, again.features)


def test_bottleneck_memory_is_bounded_by_chunks_not_batch(small_deck, tmp_path):
    """8 views x 32 images went through the trunk in one call: 4.5 GB peak for the default train
    (measured); chunks of TRUNK_CHUNK views keep it near 1 GB. Real subprocess, real images."""
    import subprocess
    import sys

    code = ("import resource, sys\n"
            "from edgecrack.train.api import TrainConfig, train\n"
            f"train(TrainConfig(data={str(small_deck)!r}, out={str(tmp_path / 'run')!r}, "
            f"cache_dir={str(tmp_path / 'cache')!r}, plots=False, export=False))\n"
            # VmHWM is this process's own peak; ru_maxrss survives execve, so a child started
            # from a large pytest process would report the parent's peak (seen: 3.6 GB)
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')] if sys.platform == 'linux' else []\n"
            "kb = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "print('PEAK_MB', kb // 1024)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    peak = int(r.stdout.split("PEAK_MB")[1].split()[0])
    assert peak < 2500, f"train peaked at {peak} MB"
