"""End to end: a real tiny training run (session fixture) and its run folder, artifact by artifact."""

from __future__ import annotations

import csv
import json
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgecrack.data import content_hash, discover, fingerprint, tutorial_split  # noqa: E402
from edgecrack.errors import ArtifactError, DatasetError  # noqa: E402
from edgecrack.manifest import manifest_from_onnx, read_manifest  # noqa: E402
from edgecrack.preprocess import preprocess_files  # noqa: E402

ARTIFACTS = ["checkpoint.safetensors", "manifest.json", "config.json", "metrics.json", "history.csv", "skipped.txt",
             "model.onnx", "model.onnx.json", "plots/training_curves.png", "plots/confusion_validation.png",
             "plots/roc_pr_validation.png", "plots/confusion_test.png", "plots/roc_pr_test.png"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def metrics(trained_run) -> dict:
    return json.loads((trained_run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def config(trained_run) -> dict:
    return json.loads((trained_run / "config.json").read_text())


def _split_of(data: Path, seed: int = 0):
    ds = discover(data)
    tr, va, te = tutorial_split(ds.labels, seed)
    return ds, tr, va, te


def test_run_folder_has_every_artifact_and_no_temp_files(trained_run):
    for name in ARTIFACTS:
        p = trained_run / name
        assert p.is_file(), name
        assert p.stat().st_size > 0 or name == "skipped.txt", name
    leftovers = [p.name for p in trained_run.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert leftovers == []  # every write went through a temp file and a rename


def test_plots_are_real_pngs(trained_run):
    for name in ARTIFACTS:
        if name.endswith(".png"):
            img = cv2.imread(str(trained_run / name))
            assert img is not None and img.shape[0] > 100 and img.shape[1] > 100, name
            assert img.std() > 5, name  # not a blank canvas


def test_manifest_is_sane(trained_run, small_deck, metrics):
    m = read_manifest(trained_run)
    assert m.kind == "checkpoint"
    assert m.labels == ["CD", "UD"] and m.positive_label == "CD" and m.positive_index == 0
    assert 0.0 < m.threshold < 1.0
    assert m.threshold == pytest.approx(metrics["validation"]["threshold"])
    c = m.input
    assert (c.height, c.width, c.color, c.dtype, c.layout) == (224, 224, "BGR", "uint8", "NHWC")
    assert m.backbone == "efficientnet_lite0" and ":sha256:" in m.weights_id
    assert m.fine_tune_blocks == 0
    assert {"torch", "onnxruntime", "opencv", "numpy"} <= set(m.versions)
    # the fingerprint is that of the training split's bytes and labels, recomputable from the data
    ds, tr, _, _ = _split_of(small_deck)
    expect = fingerprint([content_hash(ds.samples[i].path) for i in tr], [ds.samples[i].label for i in tr])
    assert m.data_fingerprint == expect
    assert m.metrics["validation"]["accuracy"] == pytest.approx(metrics["validation"]["accuracy"])


def test_onnx_manifest_sidecar_and_metadata_agree(trained_run):
    ck = read_manifest(trained_run)
    side = read_manifest(trained_run / "model.onnx")
    embedded = manifest_from_onnx(trained_run / "model.onnx")
    assert side.kind == embedded.kind == "onnx"
    for m in (side, embedded):
        assert m.labels == ck.labels and m.threshold == ck.threshold and m.input == ck.input
        assert m.data_fingerprint == ck.data_fingerprint and m.backbone == ck.backbone
    assert side.to_dict() == embedded.to_dict()
    assert side.extra["parity_torch_vs_ort"]["max_abs_diff"] < 1e-3


def test_config_is_the_resolved_config(trained_run, small_deck, config):
    from edgecrack.train.api import TrainConfig

    assert config["data"] == str(small_deck) and config["out"] == str(trained_run)
    assert config["views"] == 2 and config["fine_tune_blocks"] == 0 and config["backbone"] == "efficientnet_lite0"
    assert config["loop"]["epochs"] == 5 and config["loop"]["seed"] == 0 and config["loop"]["device"] == "cpu"
    assert set(config) == set(TrainConfig.__dataclass_fields__)
    assert config["backbone_units"] == 13  # resolved: the default, written as a number


def test_configs_from_before_backbone_units_keep_the_whole_backbone(config):
    from edgecrack.train.api import config_from_dict

    old = {k: v for k, v in config.items() if k != "backbone_units"}
    assert config_from_dict(old).backbone_units == 0
    assert config_from_dict(config).backbone_units == 13


def test_metrics_are_sane(metrics):
    sizes = {"train": 28, "validation": 10, "test": 2}  # 20 + 20 images split 70 / 27 / 3 per class
    for split, n in sizes.items():
        m = metrics[split]
        assert m["n"] == n
        cm = np.array(m["confusion"]["matrix"])
        assert m["confusion"]["labels"] == ["CD", "UD"]
        assert cm.sum() == n and cm.sum(1).tolist() == [n // 2, n // 2]
        assert 0.0 <= m["accuracy"] <= 1.0 and m["accuracy"] == pytest.approx(np.trace(cm) / n)
        assert [m["per_class"][c]["support"] for c in ("CD", "UD")] == [n // 2, n // 2]
        for c in ("CD", "UD"):
            assert all(0.0 <= m["per_class"][c][k] <= 1.0 for k in ("precision", "recall", "f1"))
        assert 0.0 <= m["roc_auc"] <= 1.0
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= 5
    assert metrics["skipped"] == 0
    bn = metrics["bottleneck"]
    assert bn["computed"] + bn["cache_hits"] == 40 and bn["views"] == 2
    assert metrics["onnx_parity"]["top1_agreement"] == 1.0
    assert metrics["onnx_parity"]["n"] == 8  # the first held-out images: 2 test + 6 validation
    t = metrics["timings"]
    assert list(t)[-2:] == ["export_s", "total_s"] and t["export_s"] > 0
    assert t["total_s"] >= t["bottleneck_s"] + t["training_s"] + t["export_s"]
    # pretrained features separate cracked from uncracked decks even after 5 epochs on 28 images
    assert metrics["train"]["roc_auc"] > 0.75


def test_history_csv_has_one_row_per_epoch(trained_run, metrics):
    with open(trained_run / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == metrics["epochs_run"]
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    for r in rows:
        for k in ("train_loss", "val_loss"):
            assert 0.0 < float(r[k]) < 10.0
        for k in ("train_accuracy", "val_accuracy"):
            assert 0.0 <= float(r[k]) <= 1.0
        # the default exact solver logs one row per L2 grid point (lr unused)
        assert float(r["l2"]) > 0.0 and float(r["seconds"]) >= 0.0
    assert [float(r["l2"]) for r in rows] == [3e-2, 1e-2, 3e-3, 1e-3]  # strongest first (warm starts)


def test_checkpoint_is_safetensors_and_matches_onnx_on_real_images(trained_run, holdout_deck):
    import onnxruntime as ort
    from safetensors import safe_open

    from edgecrack.train.checkpoint import load_checkpoint

    raw = (trained_run / "checkpoint.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])  # plain JSON header + tensors: nothing to unpickle
    assert "__metadata__" in header and not raw.startswith(b"\x80")
    with safe_open(str(trained_run / "checkpoint.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["edgecrack"])
    assert meta["labels"] == ["CD", "UD"] and meta["threshold"] == read_manifest(trained_run).threshold

    net, m = load_checkpoint(trained_run)
    assert not net.training
    paths = sorted((holdout_deck / "CD").glob("*.jpg"))[:2] + sorted((holdout_deck / "UD").glob("*.jpg"))[:2]
    batch = preprocess_files(paths, m.input)
    with torch.inference_mode():
        p_ckpt = net(torch.from_numpy(batch)).numpy()
    sess = ort.InferenceSession(str(trained_run / "model.onnx"), providers=["CPUExecutionProvider"])
    p_onnx = sess.run(None, {"images": batch})[0]
    assert p_onnx.shape == (4, 2)
    assert np.abs(p_ckpt - p_onnx).max() < 1e-4


def test_refit_trains_on_train_and_validation(trained_run, metrics):
    n = metrics["train"]["n"] + metrics["validation"]["n"]
    assert metrics["refit_on_train_and_validation"] == n == 38


def test_validation_metrics_are_what_the_exported_model_gives(small_deck, config, tmp_path):
    # Without the refit the exported model is the one validation measured.
    from edgecrack.evaluate import evaluate
    from edgecrack.jobs import train_job
    from edgecrack.train.api import TrainConfig

    run = tmp_path / "norefit"
    res_t = train_job(TrainConfig(data=str(small_deck), out=str(run), views=2, tta=2, cache_dir=config["cache_dir"],
                              plots=False, refit=False))
    metrics = res_t.metrics
    assert metrics["refit_on_train_and_validation"] == 0
    ds, _, va, _ = _split_of(small_deck)
    val = tmp_path / "val"
    for i in va:
        s = ds.samples[i]
        (val / s.label).mkdir(parents=True, exist_ok=True)
        shutil.copy(s.path, val / s.label / s.path.name)
    res = evaluate(run, val, backend="onnxruntime-cpu")
    assert res.metrics["n"] == metrics["validation"]["n"] == 10
    assert res.metrics["confusion"] == metrics["validation"]["confusion"]
    assert res.metrics["roc_auc"] == pytest.approx(metrics["validation"]["roc_auc"], abs=0.02)


def test_load_checkpoint_errors(trained_run, tmp_path):
    from edgecrack.train.checkpoint import load_checkpoint

    with pytest.raises(ArtifactError, match="no checkpoint.safetensors"):
        load_checkpoint(tmp_path)
    shutil.copy(trained_run / "manifest.json", tmp_path / "manifest.json")
    data = (trained_run / "checkpoint.safetensors").read_bytes()
    (tmp_path / "checkpoint.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        load_checkpoint(tmp_path)


def _copy_images(paths: list[Path], dst: Path) -> None:
    for p in paths:
        (dst / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst / p.parent.name / p.name)


def test_explicit_val_and_test_dirs_reuse_the_cache_and_list_bad_files(trained_run, small_deck, config, tmp_path):
    """Different folders, names and epochs: the content-addressed cache still serves every image."""
    from edgecrack.train.api import TrainConfig, train
    from edgecrack.train.loop import LoopConfig

    imgs = {c: sorted((small_deck / c).glob("*.jpg")) for c in ("CD", "UD")}
    _copy_images(imgs["CD"][:10] + imgs["UD"][:10], tmp_path / "train")
    _copy_images(imgs["CD"][10:15] + imgs["UD"][10:15], tmp_path / "val")
    _copy_images(imgs["CD"][15:] + imgs["UD"][15:], tmp_path / "test")
    bad = tmp_path / "train" / "CD"
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "truncated.jpg").write_bytes(imgs["CD"][0].read_bytes()[:3000])
    (bad / "notes.txt").write_text("site notes")
    cfg = TrainConfig(data=str(tmp_path / "train"), val_dir=str(tmp_path / "val"), test_dir=str(tmp_path / "test"),
                      out=str(tmp_path / "run"), views=2, tta=2, cache_dir=config["cache_dir"], plots=False, export=False,
                      loop=LoopConfig(epochs=2, seed=1))
    res = train(cfg)
    assert res.counts == {"train": {"CD": 10, "UD": 10}, "validation": {"CD": 5, "UD": 5},
                          "test": {"CD": 5, "UD": 5}}
    assert res.metrics["validation"]["n"] == 10 and res.metrics["test"]["n"] == 10
    bn = res.metrics["bottleneck"]
    assert bn["cache_hits"] == 40 and bn["computed"] == 0
    assert len(res.history) == res.metrics["epochs_run"] == len(cfg.l2_grid)  # exact solver: one row per L2
    # bad files: skipped, counted and listed with a reason, never a crash
    listed = dict(line.split("\t") for line in (tmp_path / "run" / "skipped.txt").read_text().splitlines())
    assert set(listed) == {str(bad / "empty.jpg"), str(bad / "truncated.jpg"), str(bad / "notes.txt")}
    assert listed[str(bad / "empty.jpg")] == "empty file"
    assert listed[str(bad / "notes.txt")] == "not an image file type"
    assert res.metrics["skipped"] == 3
    m = read_manifest(tmp_path / "run")
    assert m.data_fingerprint != read_manifest(trained_run).data_fingerprint
    assert 0.0 < m.threshold < 1.0
    assert not (tmp_path / "run" / "model.onnx").exists()


def test_val_dir_with_an_unknown_class_is_a_dataset_error(small_deck, tmp_path):
    from edgecrack.train.api import TrainConfig, train

    _copy_images(sorted((small_deck / "CD").glob("*.jpg"))[:2], tmp_path / "val")
    (tmp_path / "val" / "CD").rename(tmp_path / "val" / "CW")
    cfg = TrainConfig(data=str(small_deck), val_dir=str(tmp_path / "val"), out=str(tmp_path / "run"),
                      cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DatasetError, match=r"validation folder .* has classes \['CW'\] not in training classes"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_prefix_labels_and_target_recall_threshold(trained_run, small_deck, config, tmp_path):
    """ML.NET's useFolderNameAsLabel=false layout, and a threshold that reaches a cracked-class recall."""
    from edgecrack.train.api import TrainConfig, train
    from edgecrack.train.loop import LoopConfig

    flat = tmp_path / "flat"
    flat.mkdir()
    for c in ("CD", "UD"):
        for p in sorted((small_deck / c).glob("*.jpg")):
            shutil.copy(p, flat / f"{c}{p.name}")
    cfg = TrainConfig(data=str(flat), label_from="prefix", out=str(tmp_path / "run"), views=2, tta=2,
                      cache_dir=config["cache_dir"], plots=False, export=False, threshold_mode="recall",
                      target_recall=1.0, loop=LoopConfig(epochs=2, seed=0))
    res = train(cfg)
    assert res.manifest.labels == ["CD", "UD"] and res.manifest.positive_label == "CD"
    assert res.metrics["bottleneck"]["computed"] == 0  # same bytes under other names: all cached
    val = res.metrics["validation"]
    assert val["per_class"]["CD"]["recall"] == 1.0
    assert 0.0 < res.manifest.threshold < 1.0
    assert val["threshold"] == res.manifest.threshold
    # the same split as the folder-labelled run, so the same training images
    assert res.manifest.data_fingerprint == read_manifest(trained_run).data_fingerprint
