"""Dataset discovery (both label modes, nested layouts, every readable format, bad files) and splits."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecrack.data import (
    content_hash,
    default_positive,
    discover,
    fingerprint,
    kfold_indices,
    label_from_name,
    list_images,
    stratified_split,
    tutorial_split,
)
from edgecrack.errors import DatasetError, ImageDecodeError
from edgecrack.preprocess import decode_image


def _deck_images(deck_dir: Path, cls: str, n: int, start: int = 0) -> list[Path]:
    return sorted((deck_dir / cls).glob("*.jpg"))[start:start + n]


def _copy(srcs: list[Path], dst: Path, rename=None) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for s in srcs:
        t = dst / (rename(s) if rename else s.name)
        shutil.copy(s, t)
        out.append(t)
    return out


# -- discovery ------------------------------------------------------------------------


def test_folder_labels_on_bundled_deck(deck_dir):
    ds = discover(deck_dir)
    assert ds.classes == ["CD", "UD"]
    assert ds.counts() == {"CD": 200, "UD": 200}
    assert all(s.label == s.path.parent.name for s in ds.samples)
    assert [s.path for s in ds.samples] == sorted(s.path for s in ds.samples)
    # the attribution README next to the images is not reported as a skipped file
    assert ds.skipped == []
    assert default_positive(ds.classes) == "CD"


def test_prefix_labels_like_mlnet_use_folder_name_as_label_false(tmp_path, deck_dir):
    flat = tmp_path / "flat"
    _copy(_deck_images(deck_dir, "CD", 3), flat, lambda s: f"CD{s.stem}.jpg")
    _copy(_deck_images(deck_dir, "UD", 4), flat, lambda s: f"UD_{s.stem}.jpg")
    shutil.copy(_deck_images(deck_dir, "UD", 1, 10)[0], flat / "0042.jpg")  # no letter prefix
    ds = discover(flat, label_mode="prefix")
    assert ds.classes == ["CD", "UD"]
    assert ds.counts() == {"CD": 3, "UD": 4}
    assert ds.skipped == [(str(flat / "0042.jpg"), "file name has no letter prefix")]
    # in folder mode the same flat folder has no class folders at all
    with pytest.raises(DatasetError, match="no images found"):
        discover(flat, label_mode="folder")


@pytest.mark.parametrize("name,label", [("CD7001-115.jpg", "CD"), ("ud_3.png", "ud"), ("W12.bmp", "W"),
                                        ("7001-115.jpg", None), ("_x.jpg", None)])
def test_label_from_name(name, label):
    assert label_from_name(name) == label


def test_nested_sdnet_layout_labels_come_from_parent_folder(tmp_path, deck_dir):
    root = tmp_path / "SDNET2018"
    _copy(_deck_images(deck_dir, "CD", 2), root / "D" / "CD")
    _copy(_deck_images(deck_dir, "UD", 3), root / "D" / "UD")
    _copy(_deck_images(deck_dir, "CD", 2, 5), root / "W" / "CW")
    _copy(_deck_images(deck_dir, "UD", 1, 5), root / "W" / "UW")
    ds = discover(root)
    assert ds.classes == ["CD", "CW", "UD", "UW"]
    assert ds.counts() == {"CD": 2, "CW": 2, "UD": 3, "UW": 1}
    # the deck sub-tree alone is a binary problem
    d = discover(root / "D")
    assert d.classes == ["CD", "UD"] and len(d.samples) == 5


def test_image_at_root_in_folder_mode_is_skipped_with_reason(tmp_path, deck_dir):
    _copy(_deck_images(deck_dir, "CD", 2), tmp_path / "CD")
    _copy(_deck_images(deck_dir, "UD", 2), tmp_path / "UD")
    stray = _copy(_deck_images(deck_dir, "UD", 1, 9), tmp_path)[0]
    ds = discover(tmp_path)
    assert len(ds.samples) == 4
    assert ds.skipped == [(str(stray), "image at the dataset root has no class folder")]


def test_every_format_opencv_writes_is_found_and_decodes(tmp_path, deck_dir):
    src = decode_image(_deck_images(deck_dir, "CD", 1)[0])
    exts = [".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".JPG", ".PNG"]
    (tmp_path / "CD").mkdir()
    for ext in exts:
        assert cv2.imwrite(str(tmp_path / "CD" / f"img{ext}"), src), ext
    _copy(_deck_images(deck_dir, "UD", 1), tmp_path / "UD")
    ds = discover(tmp_path)
    assert ds.counts() == {"CD": len(exts), "UD": 1}
    assert sorted(p.suffix for p in list_images(tmp_path / "CD")) == sorted(exts)
    for s in ds.samples:
        img = decode_image(s.path)
        assert img.shape == (256, 256, 3) and img.dtype == np.uint8
        if s.path.suffix.lower() in (".png", ".bmp", ".tif", ".tiff"):
            np.testing.assert_array_equal(img, src)  # lossless formats round-trip exactly
        elif s.label == "CD":
            assert np.abs(img.astype(int) - src).mean() < 6  # lossy: close to the source


def test_bad_files_are_listed_never_a_crash(tmp_path, deck_dir):
    good_cd = _copy(_deck_images(deck_dir, "CD", 3), tmp_path / "CD")
    _copy(_deck_images(deck_dir, "UD", 3), tmp_path / "UD")
    jpeg = good_cd[0].read_bytes()
    (tmp_path / "CD" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "CD" / "empty.jpg").write_bytes(b"")
    (tmp_path / "UD" / "text.png").write_text("this is not a PNG")
    (tmp_path / "UD" / "notes.txt").write_text("inspection notes")
    (tmp_path / "UD" / "labels.csv").write_text("a,b\n")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "scratch.txt").write_text("hidden")
    (tmp_path / "UD" / ".DS_Store").write_bytes(b"\0\0")
    ds = discover(tmp_path)
    # non-image types are skipped with a reason; hidden files and folders are ignored
    assert sorted(ds.skipped) == [(str(tmp_path / "UD" / "labels.csv"), "not an image file type"),
                                  (str(tmp_path / "UD" / "notes.txt"), "not an image file type")]
    # image-named files are candidates: decoding (bottleneck, predict) rejects the bad ones
    names = sorted(s.path.name for s in ds.samples)
    assert {"truncated.jpg", "empty.jpg", "text.png"} <= set(names) and len(names) == 9
    bad = {"truncated.jpg": "truncated", "empty.jpg": "empty file", "text.png": "not a decodable image"}
    for s in ds.samples:
        if s.path.name in bad:
            with pytest.raises(ImageDecodeError, match=bad[s.path.name]) as e:
                decode_image(s.path)
            assert str(s.path) in e.value.message
        else:
            assert decode_image(s.path).shape == (256, 256, 3)


def test_missing_folder_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="dataset folder not found") as e:
        discover(tmp_path / "nope")
    assert str(tmp_path / "nope") in e.value.message
    assert "bundled SDNET2018" in e.value.hint


def test_file_instead_of_folder_is_a_dataset_error(tmp_path):
    f = tmp_path / "x.jpg"
    f.write_bytes(b"")
    with pytest.raises(DatasetError, match="not a folder"):
        discover(f)


def test_empty_dataset_is_a_dataset_error(tmp_path):
    (tmp_path / "CD").mkdir()
    (tmp_path / "UD").mkdir()
    (tmp_path / "UD" / "readme.txt").write_text("nothing here")
    with pytest.raises(DatasetError, match="no images found") as e:
        discover(tmp_path)
    assert ".jpg" in e.value.hint and "sub-folder per class" in e.value.hint


def test_one_class_only_is_a_dataset_error(tmp_path, deck_dir):
    _copy(_deck_images(deck_dir, "CD", 3), tmp_path / "CD")
    (tmp_path / "UD").mkdir()
    with pytest.raises(DatasetError, match=r"only 1 class found .*\(CD\); training needs at least 2") as e:
        discover(tmp_path)
    assert "own sub-folder" in e.value.hint
    # evaluation accepts a single-class folder
    assert discover(tmp_path, min_classes=1).classes == ["CD"]


def test_unknown_label_mode(tmp_path, deck_dir):
    _copy(_deck_images(deck_dir, "CD", 1), tmp_path / "CD")
    with pytest.raises(DatasetError, match="unknown label mode 'suffix'"):
        discover(tmp_path, label_mode="suffix")


def test_fingerprint_is_content_and_label_based_and_order_free(tmp_path, deck_dir):
    a, b = _deck_images(deck_dir, "CD", 2)
    ha, hb = content_hash(a), content_hash(b)
    assert fingerprint([ha, hb], ["CD", "CD"]) == fingerprint([hb, ha], ["CD", "CD"])
    assert fingerprint([ha, hb], ["CD", "CD"]) != fingerprint([ha, hb], ["CD", "UD"])
    renamed = _copy([a], tmp_path, lambda s: "renamed.jpg")[0]
    assert content_hash(renamed) == ha


# -- splits ---------------------------------------------------------------------------


def _imbalanced_labels() -> list[str]:
    # the real SDNET2018 deck proportions: about 15 % cracked
    rng = np.random.default_rng(7)
    labels = np.array(["CD"] * 60 + ["UD"] * 340)
    rng.shuffle(labels)
    return labels.tolist()


def test_stratified_split_preserves_class_proportions():
    labels = _imbalanced_labels()
    parts = stratified_split(labels, (0.6, 0.25, 0.15), seed=0)
    arr = np.array(labels)
    for part, frac in zip(parts, (0.6, 0.25, 0.15)):
        c = Counter(arr[part].tolist())
        assert abs(c["CD"] - 60 * frac) <= 1 and abs(c["UD"] - 340 * frac) <= 1
        assert abs(c["CD"] / len(part) - 0.15) < 0.02


def test_stratified_split_is_disjoint_covering_and_sorted():
    labels = _imbalanced_labels()
    parts = stratified_split(labels, (0.7, 0.2, 0.1), seed=3)
    allidx = np.concatenate(parts)
    assert len(allidx) == len(labels) and len(set(allidx.tolist())) == len(labels)
    assert set(allidx.tolist()) == set(range(len(labels)))
    assert all(np.array_equal(p, np.sort(p)) and p.dtype == np.int64 for p in parts)


def test_stratified_split_is_deterministic_per_seed():
    labels = _imbalanced_labels()
    a = stratified_split(labels, (0.7, 0.3), seed=11)
    b = stratified_split(labels, (0.7, 0.3), seed=11)
    c = stratified_split(labels, (0.7, 0.3), seed=12)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    # another seed keeps the same sizes and the same class mix
    assert [len(p) for p in a] == [len(p) for p in c]
    arr = np.array(labels)
    assert Counter(arr[a[1]].tolist()) == Counter(arr[c[1]].tolist())


def test_stratified_split_rejects_fractions_not_summing_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(["a", "b"], (0.5, 0.4))


def test_tutorial_split_is_70_27_3_on_the_400_bundled_images(deck_dir):
    labels = discover(deck_dir).labels
    tr, va, te = tutorial_split(labels, seed=0)
    assert (len(tr), len(va), len(te)) == (280, 108, 12)
    arr = np.array(labels)
    assert Counter(arr[tr].tolist()) == {"CD": 140, "UD": 140}
    assert Counter(arr[va].tolist()) == {"CD": 54, "UD": 54}
    assert Counter(arr[te].tolist()) == {"CD": 6, "UD": 6}
    assert len(set(tr) | set(va) | set(te)) == 400


def test_tutorial_split_custom_fractions():
    labels = ["CD"] * 50 + ["UD"] * 50
    tr, va, te = tutorial_split(labels, seed=1, train=0.8, val_of_rest=0.5)
    assert (len(tr), len(va), len(te)) == (80, 10, 10)


@pytest.mark.parametrize("k", [3, 5])
def test_kfold_is_a_stratified_partition(k):
    labels = _imbalanced_labels()
    folds = kfold_indices(labels, k, seed=0)
    assert len(folds) == k
    allidx = np.concatenate(folds)
    assert sorted(allidx.tolist()) == list(range(len(labels)))
    arr = np.array(labels)
    for f in folds:
        c = Counter(arr[f].tolist())
        assert abs(c["CD"] - 60 / k) <= 1 and abs(c["UD"] - 340 / k) <= 1
    again = kfold_indices(labels, k, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip(folds, again))
    assert not all(np.array_equal(x, y) for x, y in zip(folds, kfold_indices(labels, k, seed=1)))


def test_default_positive_label():
    assert default_positive(["CD", "UD"]) == "CD"
    assert default_positive(["CW", "UW"]) == "CW"
    assert default_positive(["crack", "intact"]) == "crack"
    assert default_positive(["A", "B", "C"]) is None
