"""FP16 and TensorRT Q/DQ INT8 ONNX made and checked on CPU; calibration and checks from the run's own images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from edgecrack.cli import app
from edgecrack.errors import ArtifactError, ConfigError, DatasetError
from edgecrack.export.graph import tensorrt_readiness
from edgecrack.export.precision import precision_onnx_from_onnx
from edgecrack.export.run_images import calibration_for, eval_images_for
from edgecrack.manifest import read_manifest
from edgecrack.runtime import open_backend
from edgecrack.splits import SPLITS_FILE


def test_run_records_its_splits(trained_run, small_deck):
    d = json.loads((trained_run / SPLITS_FILE).read_text())
    names = {n: {e["path"] for e in d[n]} for n in ("train", "validation", "test")}
    assert sum(len(v) for v in names.values()) == 40
    assert not (names["train"] & names["validation"]) and not (names["train"] & names["test"])
    assert all(p.startswith(str(small_deck.resolve())) for p in names["train"])


def test_calibration_and_eval_default_to_the_runs_own_splits(trained_run, trained_onnx):
    d = json.loads((trained_run / SPLITS_FILE).read_text())
    train = {e["path"] for e in d["train"]}
    cal = calibration_for(trained_onnx, None)
    assert len(cal) == len(train) and {str(p) for p in cal.paths} <= train  # fewer than 64: all of them
    m = read_manifest(trained_onnx)
    with pytest.raises(DatasetError, match="at least 20"):  # 12 held-out images in a 40-image run
        eval_images_for(trained_onnx, None, m, cal)


def test_search_images_are_training_images_outside_the_calibration_set(trained_onnx, deck_dir, tmp_path):
    """The mixed-precision search scores on a seeded, stratified draw of the run's training images
    that did not set the ranges; scored on the calibration set it flattered the model."""
    from edgecrack.calibration import load_calibration
    from edgecrack.data import content_hash
    from edgecrack.export.run_images import SEARCH_IMAGES, search_images_for

    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.onnx", "model.onnx.json"):
        shutil.copy(trained_onnx.with_name(name), run / name)
    images = {cls: sorted((deck_dir / cls).glob("*.jpg"))[:120] for cls in ("CD", "UD")}
    train = [{"path": str(p), "label": cls, "sha1": content_hash(p)} for cls, ps in images.items() for p in ps]
    (run / SPLITS_FILE).write_text(json.dumps({"schema": 1, "train": train, "validation": [], "test": []}))
    calib = tmp_path / "cal"
    for cls, ps in images.items():
        (calib / cls).mkdir(parents=True)
        for p in ps[:32]:
            shutil.copy(p, calib / cls / p.name)
    m = read_manifest(run / "model.onnx")
    x = search_images_for(run / "model.onnx", load_calibration(calib), m)
    assert x.shape == (SEARCH_IMAGES, *x.shape[1:]) and SEARCH_IMAGES <= 240 - 64
    from edgecrack.preprocess import decode_image, preprocess

    cal_x = preprocess([decode_image(p) for ps in images.values() for p in ps[:32]], m.input)
    flat = {a.tobytes() for a in cal_x}
    assert not any(a.tobytes() in flat for a in x)  # none of them set the ranges


def test_no_run_folder_means_explicit_data(trained_onnx, tmp_path):
    lone = tmp_path / "model.onnx"
    shutil.copy(trained_onnx, lone)
    shutil.copy(trained_onnx.with_name("model.onnx.json"), tmp_path / "model.onnx.json")
    with pytest.raises(DatasetError, match="--calib"):
        calibration_for(lone, None)


def test_fp16_onnx_keeps_the_contract_and_agrees(trained_onnx, holdout_deck, tmp_path):
    r = precision_onnx_from_onnx(trained_onnx, "fp16", tmp_path / "model.fp16.onnx", eval_data=holdout_deck)
    model = onnx.load(str(r.path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    conv_w = [numpy_helper.to_array(i) for i in model.graph.initializer if i.dims and len(i.dims) == 4]
    assert conv_w and all(w.dtype == np.float16 for w in conv_w)
    assert tensorrt_readiness(model).ok
    f = r.fidelity
    assert f.n == 40 and f.top1_agreement >= 0.95 and f.max_abs_diff < 0.05
    assert f.accuracy >= f.fp32_accuracy - 0.005
    m = read_manifest(r.path)
    assert m.kind == "onnx" and m.extra["precision"] == "fp16" and m.extra["fidelity_vs_fp32"]["n"] == 40


def test_qdq_int8_is_tensorrt_style(trained_onnx, holdout_deck, deck_dir, tmp_path):
    calib = tmp_path / "cal"
    for cls in ("CD", "UD"):
        (calib / cls).mkdir(parents=True)
        for p in sorted((deck_dir / cls).glob("*.jpg"))[40:56]:
            shutil.copy(p, calib / cls / p.name)
    r = precision_onnx_from_onnx(trained_onnx, "int8", tmp_path / "model.qdq.onnx", calib=calib,
                                 eval_data=holdout_deck, budget=0.99, min_agreement=0.0, max_float=0)
    model = onnx.load(str(r.path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for n in qdq:  # symmetric int8 everywhere, no int32 bias
        z = inits[n.input[2]]
        assert z.dtype == np.int8 and not z.any(), n.name
    per_channel = [n for n in qdq if inits[n.input[1]].size > 1]
    assert per_channel and all(n.input[0] in inits for n in per_channel)  # per-channel only on weights
    assert tensorrt_readiness(model).ok
    m = read_manifest(r.path)
    assert m.extra["format"] == "qdq-tensorrt" and m.extra["calibration_images"] == 32
    bc = m.extra["bias_correction"]  # every quantized convolution of the Lite0 trunk, all 32 images
    n_conv = sum(n.op_type == "Conv" for n in onnx.load(str(trained_onnx)).graph.node)
    assert bc["convolutions"] == n_conv >= 30 and bc["images"] == 32 and bc["mean_abs_shift"] > 0
    assert 0.5 <= r.fidelity.top1_agreement <= 1.0
    # the runtime runs it on a CPU as the export checked it: Q/DQ as written, not fused INT8 kernels
    from edgecrack.export.ortquant import session
    from edgecrack.preprocess import preprocess_files

    x = preprocess_files(sorted(holdout_deck.glob("*/*.jpg"))[::4], m.input)
    want = session(r.path.read_bytes(), 1, reference=True).run(None, {m.input_name: x})[0]
    with open_backend(r.path, prefer="onnxruntime-cpu", strict=True).backend as be:
        np.testing.assert_allclose(be.probs(x), want, atol=1e-6)
        assert be.info()["arithmetic"].startswith("Q/DQ as written")


def test_over_budget_writes_nothing(trained_onnx, holdout_deck, tmp_path):
    """Calibrated on black frames (the wrong data), INT8 ranges clip every real image: refused."""
    import cv2

    calib = tmp_path / "black" / "CD"
    calib.mkdir(parents=True)
    for i in range(8):
        cv2.imwrite(str(calib / f"{i}.png"), np.zeros((256, 256, 3), np.uint8))
    out = tmp_path / "model.qdq.onnx"
    with pytest.raises(ArtifactError, match="nothing written") as e:
        precision_onnx_from_onnx(trained_onnx, "int8", out, calib=calib.parent, eval_data=holdout_deck, budget=0.0)
    assert "agree" in e.value.message and "% of 40 images" in e.value.message and not out.exists()
    with pytest.raises(ConfigError, match="not an ONNX precision"):
        precision_onnx_from_onnx(trained_onnx, "int4", out, eval_data=holdout_deck)


def test_export_cli_writes_fp16_next_to_the_run(trained_run, holdout_deck):
    r = CliRunner().invoke(app, ["export", str(trained_run), "--precision", "fp16", "--eval-data", str(holdout_deck)])
    assert r.exit_code == 0, r.output
    assert "top-1 agreement" in r.output and (trained_run / "model.fp16.onnx").is_file()
    (trained_run / "model.fp16.onnx").unlink()
    (trained_run / "model.fp16.onnx.json").unlink()


@pytest.mark.slow
def test_mixed_precision_tries_prefixes_then_the_most_sensitive_units(trained_onnx, holdout_deck, deck_dir, tmp_path):
    """An unreachable target with at most 2 float units: the first 1 and 2 units float are tried, every
    unit's sensitivity is measured, the 1 and 2 most sensitive float are tried, the best is kept (its
    float units' convolutions read float weights, no DequantizeLinear; the rest is INT8), and the
    export refuses with the numbers."""
    from edgecrack.calibration import load_calibration
    from edgecrack.export.precision import _qdq_blob

    calib = tmp_path / "cal"
    for cls in ("CD", "UD"):
        (calib / cls).mkdir(parents=True)
        for p in sorted((deck_dir / cls).glob("*.jpg"))[40:56]:
            shutil.copy(p, calib / cls / p.name)
    m = read_manifest(trained_onnx)
    # uncorrected: bias correction lifts the all-INT8 model of this run to where no float unit beats it
    blob, rec = _qdq_blob(trained_onnx, load_calibration(calib), m, lambda *_: None, 1.01, 2, None,
                          bias_correction=False)
    assert rec["bias_correction"] is None
    sens = rec["sensitivity"]
    assert len(sens) == rec["units"] >= 10 and [s for _, s in sens] == sorted((s for _, s in sens), reverse=True)
    # all INT8, the first 1 and 2 units float, then the 1 and 2 most sensitive (unless the same set)
    order = [u for u, _ in sens]
    prefixes = [[f"trunk.{i}" for i in range(k)] for k in (1, 2)]
    expected = [("all int8", [])] + [("prefix", u) for u in prefixes] + [
        ("most sensitive", order[:k]) for k in (1, 2) if set(order[:k]) != set(prefixes[k - 1])]
    assert [(st["set"], st["units"]) for st in rec["steps"]] == expected
    # the kept model: the best agreement, ties to the earlier step
    best = max(rec["steps"], key=lambda st: st["agreement"])
    assert rec["float_units"] == best["units"]
    # this run has fewer than 32 training images outside the calibration set: scored on the calibration images
    assert rec["search_images"] == len(load_calibration(calib)) == 32
    model = onnx.load_from_string(blob)
    dq_out = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    for n in model.graph.node:
        if n.op_type != "Conv" or n.name.startswith("/head"):
            continue
        unit = n.name.split("/")[2] if n.name.startswith("/trunk/") else n.name
        assert (n.input[1] in dq_out) == (unit not in rec["float_units"]), n.name
    with pytest.raises(ArtifactError, match="units kept float") as e:
        precision_onnx_from_onnx(trained_onnx, "int8", tmp_path / "strict.qdq.onnx", calib=calib,
                                 eval_data=holdout_deck, budget=0.99, min_agreement=1.01, max_float=0)
    assert "0 backbone units kept float" in e.value.message and "nothing written" in e.value.message and not (tmp_path / "strict.qdq.onnx").exists()


def test_search_stops_at_the_target_and_keeps_the_best():
    """The search's order and stopping rule on a model whose agreement rises by unit: float prefixes
    first, then the most sensitive units, each phase stopping at the target."""
    from edgecrack.export import mixed

    units = {f"u{i}": [f"n{i}a", f"n{i}b"] for i in range(6)}
    weight = {"u0": 0.05, "u1": 0.5, "u2": 0.01, "u3": 0.3, "u4": 0.02, "u5": 0.1}
    made = []

    def quantize(float_nodes):
        made.append(sorted(float_nodes))
        return ",".join(sorted(float_nodes)).encode()

    def agreement(blob):
        floats = {n[1] for n in blob.decode().split(",") if n}
        shift = sum(w for u, w in weight.items() if u[1] not in floats)
        return mixed.Score(1.0 - shift / 2, shift)

    said = []
    # prefixes: u0 -> 0.535, u0-u1 -> 0.785, u0-u2 -> 0.79: none reaches 0.9 within 3 units, the
    # sensitivity order does at 2 (u1, u3: 0.91)
    r = mixed.search(units, quantize, agreement, target=0.9, max_float=3, progress=lambda *a: said.append(a))
    last = {phase: (done, total) for phase, done, total in said}
    assert set(last) == {"keeping the first 1 units float", "keeping the first 2 units float",
                         "keeping the first 3 units float", "sensitivity of each unit",
                         "keeping the 1 most sensitive units float", "keeping the 2 most sensitive units float"}
    assert all(done == total for done, total in last.values())  # every phase shown finished
    assert [u for u, _ in r.sensitivity] == ["u1", "u3", "u5", "u0", "u4", "u2"]
    assert r.float_units == ["u1", "u3"] and r.score.top1_agreement == pytest.approx(1 - 0.18 / 2)
    assert [(s["set"], s["units"]) for s in r.steps] == [
        ("all int8", []), ("prefix", ["u0"]), ("prefix", ["u0", "u1"]), ("prefix", ["u0", "u1", "u2"]),
        ("most sensitive", ["u1"]), ("most sensitive", ["u1", "u3"])]
    assert len(made) == 1 + 3 + 6 + 2
    # a prefix that reaches the target ends the search before any sensitivity probe
    made.clear()
    pre = mixed.search(units, quantize, agreement, target=0.78, max_float=8)
    assert pre.float_units == ["u0", "u1"] and pre.sensitivity == [] and len(made) == 3
    # the console says how the units were chosen, from the step that measured them
    assert mixed.chosen_as(pre.record()) == "the first 2 units (a float prefix), 78.5 % agreement on the search images"
    assert mixed.chosen_as(r.record()) == ("the 2 most sensitive units (one-in sensitivity), 91.0 % agreement on "
                                           "the search images")
    none = mixed.search(units, quantize, agreement, target=0.9, max_float=0)
    assert none.float_units == [] and len(none.steps) == 1
    # ``finish`` (bias correction) runs on each scored candidate, not on the one-in probes
    finished = []
    fin = mixed.search(units, quantize, agreement, target=0.9, max_float=3,
                       finish=lambda b: finished.append(b) or b + b",")
    assert len(finished) == 1 + 3 + 2 and fin.blob.endswith(b",") and fin.float_units == ["u1", "u3"]


def test_search_passes_over_candidates_too_slow():
    """With ``fast_enough`` (the CPU speed-up gate), a candidate that agrees but is too slow does not
    end the search and is not kept over a slower-agreeing fast one; the steps record the verdicts."""
    from edgecrack.export import mixed

    units = {f"u{i}": [f"n{i}"] for i in range(4)}
    weight = {"u0": 0.3, "u1": 0.02, "u2": 0.01, "u3": 0.25}

    def agreement(blob):
        floats = set(blob.decode().split(",")) - {""}
        shift = sum(w for u, w in weight.items() if f"n{u[1]}" not in floats)
        return mixed.Score(1.0 - shift, shift)

    def quantize(float_nodes):
        return ",".join(sorted(float_nodes)).encode()

    # float u3 (an island) is "slow"; prefixes are fast
    slow = lambda blob: "n3" not in blob.decode()  # noqa: E731
    r = mixed.search(units, quantize, agreement, target=0.95, max_float=3, fast_enough=slow)
    # prefixes reach 0.72, 0.74, 0.75; the sensitive set u0+u3 reaches 0.97 but is slow: the best fast one is kept
    assert r.float_units == ["u0", "u1", "u2"] and r.score.top1_agreement == pytest.approx(0.75)
    assert [s.get("fast_enough") for s in r.steps] == [True, True, True, True, False, False]
    # the most sensitive unit alone is the 1-unit prefix already measured: not built twice
    assert [s["units"] for s in r.steps][4:] == [["u0", "u3"], ["u0", "u3", "u1"]]
    # without the speed gate the same search stops at the slow set
    assert mixed.search(units, quantize, agreement, target=0.95, max_float=3).float_units == ["u0", "u3"]


def test_search_target_allows_one_search_image():
    """The search screens on ~160 images: one disagreement more than the target allows still reaches
    it (at 99 % one image is within one binomial standard error); two more do not. Without an image
    count the target is exact."""
    from edgecrack.export import mixed

    assert mixed.Score(158 / 160, 0.1, 160).reaches(0.99)  # 2 disagreements, 1 allowed + 1
    assert not mixed.Score(157 / 160, 0.1, 160).reaches(0.99)
    assert mixed.Score(1.0, 0.0, 50).reaches(1.0) and mixed.Score(49 / 50, 0.1, 50).reaches(1.0)
    assert not mixed.Score(48 / 50, 0.1, 50).reaches(1.0)
    assert not mixed.Score(158 / 160, 0.1).reaches(0.99) and mixed.Score(0.99, 0.1).reaches(0.99)
    p0 = np.tile([[0.2, 0.8]], (160, 1))
    p = p0.copy()
    p[:2] = [0.9, 0.1]  # two decisions flipped of 160
    s = mixed.score(p, p0, positive_index=1)
    assert s.images == 160 and s.top1_agreement == pytest.approx(158 / 160) and s.reaches(0.99)


def test_search_score_is_agreement_and_logit_shift():
    """The search's score: top-1 agreement from edgecrack.compare, mean |shift| of the positive logit."""
    from edgecrack.export import mixed

    p = np.array([[0.9, 0.1], [0.6, 0.4]])
    p0 = np.array([[0.5, 0.5], [0.4, 0.6]])
    s = mixed.score(p, p0, positive_index=0)
    assert s.top1_agreement == 0.5
    assert s.mean_logit_shift == pytest.approx((np.log(9) + 2 * np.log(1.5)) / 2)
    assert mixed.score(p0, p0, 0) == mixed.Score(1.0, 0.0, 2)
