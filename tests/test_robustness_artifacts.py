"""Trust in inputs and artifacts: no silent wrong answers from class names, manifests, caches,
engines or calibration lists (issue 10), and the full SDNET2018 layout (issue 13).

Every test here uses real files: bundled SDNET2018 images copied into other layouts, the
session's real trained model and ONNX file, real cache entries, real plan-sized files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgecrack.cli import app
from edgecrack.data import discover, resolve_positive
from edgecrack.errors import ConfigError, DatasetError

runner = CliRunner()


def _flat(text: str) -> str:
    return " ".join(text.split())


def _squash(text: str) -> str:
    return "".join(text.split())


def _copy_class(deck_dir: Path, src_cls: str, dst: Path, n: int, start: int = 0) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for p in sorted((deck_dir / src_cls).glob("*.jpg"))[start:start + n]:
        shutil.copy(p, dst / p.name)
        out.append(dst / p.name)
    return out


def _two_class_folder(root: Path, deck_dir: Path, cracked: str, sound: str, n: int = 2) -> Path:
    """Real cracked deck images under ``cracked``, real sound ones under ``sound``."""
    _copy_class(deck_dir, "CD", root / cracked, n)
    _copy_class(deck_dir, "UD", root / sound, n)
    return root


# -- 1. which class is the cracked one ----------------------------------------------------------


@pytest.mark.parametrize("cracked,sound", [
    ("Positive", "Negative"), ("positive", "negative"), ("POSITIVE", "NEGATIVE"), ("crack", "no_crack"),
    ("cracks", "no_cracks"), ("Cracked", "Uncracked"), ("defect", "ok"), ("defect", "no_defect"),
    ("Defect", "No Defect"), ("1", "0"), ("CD", "UD"), ("CW", "UW"), ("CP", "UP"), ("crack", "intact"),
])
def test_cracked_class_is_recognised_from_the_usual_folder_names(tmp_path, deck_dir, cracked, sound):
    ds = discover(_two_class_folder(tmp_path, deck_dir, cracked, sound))
    assert sorted(ds.classes) == sorted([cracked, sound])
    assert resolve_positive(ds.classes) == cracked


@pytest.mark.parametrize("a,b", [("A", "B"), ("cats", "dogs"), ("crack", "cracked"), ("CD", "CW"), ("ok", "good")])
def test_ambiguous_names_stop_and_ask_for_positive_label(tmp_path, deck_dir, a, b):
    ds = discover(_two_class_folder(tmp_path, deck_dir, a, b))
    with pytest.raises(DatasetError, match="cannot tell which class is the cracked one") as e:
        resolve_positive(ds.classes)
    assert "--positive-label" in e.value.hint and "Positive/Negative" in e.value.hint
    assert resolve_positive(ds.classes, b) == b  # the user's word wins


def test_positive_label_that_is_not_a_class_is_refused(tmp_path, deck_dir):
    ds = discover(_two_class_folder(tmp_path, deck_dir, "Positive", "Negative"))
    with pytest.raises(ConfigError, match="'positive' is not a class") as e:
        resolve_positive(ds.classes, "positive")
    assert "did you mean --positive-label Positive" in e.value.hint
    assert resolve_positive(["a", "b", "c"]) is None  # multi-class: no threshold class unless asked for


def test_train_refuses_ambiguous_class_names_before_any_work(tmp_path, deck_dir):
    data = _two_class_folder(tmp_path / "data", deck_dir, "left", "right")
    res = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), "--no-export", "--no-plots"])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
    err = _flat(res.stderr)
    assert "cannot tell which class is the cracked one from the names 'left' and 'right'" in err
    assert "--positive-label left (or right)" in err and "Traceback" not in res.output
    assert not (tmp_path / "run").exists()


def _train(data: Path, out: Path, cache: Path, *extra: str):
    """A real, small training run through the CLI (head only, one view, no plots)."""
    return runner.invoke(app, ["train", str(data), "--out", str(out), "--cache-dir", str(cache), "--views", "1",
                               "--tta", "1", "--no-plots", "--threads", "1", *extra])


def test_positive_negative_dataset_trains_with_positive_as_the_cracked_class(tmp_path, deck_dir, one_torch_thread):
    # Paths with rich markup in them ("[/y]" closes a tag) are printed literally, never parsed.
    data = _two_class_folder(tmp_path / "x[/y]z", deck_dir, "Positive", "Negative", n=12)
    run = tmp_path / "runs[/b]" / "r[bold]1"
    res = _train(data, run, tmp_path / "cache", "--no-export")
    assert res.exit_code == 0, res.output
    from edgecrack.manifest import read_manifest

    m = read_manifest(run)
    assert m.labels == ["Negative", "Positive"] and m.positive_label == "Positive" and 0 < m.threshold < 1
    out = _squash(res.stdout)  # rich may fold a long path at the console width
    assert "onPositive" in out and f"24imagesin{data}" in out and f"runfolder:{run}" in out


# -- 2. the full SDNET2018 layout ---------------------------------------------------------------

SURFACE_SIZES = {"D": 6, "W": 4, "P": 2}  # images per class and surface: distinct, so counts are checkable


@pytest.fixture(scope="module")
def sdnet_root(tmp_path_factory, deck_dir) -> Path:
    """``D/CD D/UD W/CW W/UW P/CP P/UP`` filled with distinct real bundled images."""
    root = tmp_path_factory.mktemp("SDNET2018")
    start = 0
    for surf, n in SURFACE_SIZES.items():
        _copy_class(deck_dir, "CD", root / surf / f"C{surf}", n, start)
        _copy_class(deck_dir, "UD", root / surf / f"U{surf}", n, start)
        start += n
    return root


def test_sdnet_root_is_a_binary_cracked_uncracked_problem_by_default(sdnet_root):
    ds = discover(sdnet_root, classes="binary")
    assert ds.classes == ["cracked", "uncracked"]
    assert ds.counts() == {"cracked": 12, "uncracked": 12}
    assert ds.surface_counts() == {"D": {"cracked": 6, "uncracked": 6}, "P": {"cracked": 2, "uncracked": 2},
                                   "W": {"cracked": 4, "uncracked": 4}}
    assert ds.describe_surfaces() == "D: 6 cracked, 6 uncracked; P: 2 cracked, 2 uncracked; W: 4 cracked, 4 uncracked"
    assert all(s.label == ("cracked" if s.path.parent.name[0] == "C" else "uncracked") and s.origin == s.path.parent.name
               for s in ds.samples)
    assert resolve_positive(ds.classes) == "cracked"


def test_sdnet_classes_all_keeps_six_and_surfaces_select(sdnet_root):
    six = discover(sdnet_root, classes="all")
    assert six.classes == ["CD", "CP", "CW", "UD", "UP", "UW"] and six.surface_counts() == {}
    assert resolve_positive(six.classes) is None
    dw = discover(sdnet_root, classes="binary", surfaces="D,W")
    assert dw.counts() == {"cracked": 10, "uncracked": 10} and sorted(dw.surface_counts()) == ["D", "W"]
    deck = discover(sdnet_root, classes="binary", surfaces=["d"])  # one surface is binary as it is
    assert deck.classes == ["CD", "UD"] and len(deck.samples) == 12 and resolve_positive(deck.classes) == "CD"
    assert discover(sdnet_root, classes="all", surfaces="P,W").classes == ["CP", "CW", "UP", "UW"]


def test_sdnet_bad_selections_are_clear_errors(sdnet_root, tmp_path, deck_dir):
    with pytest.raises(DatasetError, match=r"surface X not found in .* \(it has D, P, W\)") as e:
        discover(sdnet_root, surfaces="D,X")
    assert "--surfaces D,P,W" in e.value.hint
    plain = _two_class_folder(tmp_path, deck_dir, "Positive", "Negative")
    with pytest.raises(DatasetError, match="--surfaces needs an SDNET2018 layout"):
        discover(plain, surfaces="D")
    with pytest.raises(ConfigError, match="unknown --classes 'three'"):
        discover(sdnet_root, classes="three")


@pytest.mark.slow
def test_train_on_sdnet_root_reports_surfaces_and_eval_merges_the_same_way(sdnet_root, tmp_path, one_torch_thread):
    run = tmp_path / "run"
    # The pavement folder alone is CP/UP; as the test set of a merged model it merges too.
    res = _train(sdnet_root, run, tmp_path / "cache", "--surfaces", "D,W", "--test-dir", str(sdnet_root / "P"))
    assert res.exit_code == 0, res.output
    out = _flat(res.stdout)
    assert "20 images" in out and "cracked: 10, uncracked: 10" in out
    assert json.loads((run / "metrics.json").read_text())["test"]["n"] == 4
    assert "SDNET2018 surfaces merged into cracked / uncracked: D: 6 cracked, 6 uncracked; W: 4 cracked, 4 uncracked" in out
    from edgecrack.manifest import read_manifest

    m = read_manifest(run)
    assert (m.labels, m.positive_label) == (["cracked", "uncracked"], "cracked")
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["classes"], cfg["surfaces"]) == ("binary", ["D", "W"])
    # The binary model evaluates on the whole SDNET2018 root: all three surfaces, merged the same way.
    ev = runner.invoke(app, ["eval", str(run), str(sdnet_root), "--backend", "onnxruntime-cpu", "--out", str(tmp_path / "ev.json")])
    assert ev.exit_code == 0, ev.output
    metrics = json.loads((tmp_path / "ev.json").read_text())["metrics"]
    assert metrics["n"] == 24 and set(metrics["per_class"]) == {"cracked", "uncracked"}
    assert "cracked P/R/F1" in ev.stdout and f"{metrics['accuracy']:.3f}" in ev.stdout


# -- 3. manifests are validated and checked against the model ------------------------------------


@pytest.fixture()
def run_copy(tmp_path, trained_onnx) -> Path:
    """The session's real ONNX model and its sidecar, in a folder of its own."""
    from edgecrack.manifest import sidecar_path

    d = tmp_path / "run"
    d.mkdir()
    shutil.copy(trained_onnx, d / "model.onnx")
    shutil.copy(sidecar_path(trained_onnx), sidecar_path(d / "model.onnx"))
    return d


def _edit_sidecar(onnx: Path, key: str, value) -> None:
    side = onnx.with_name(onnx.name + ".json")
    d = json.loads(side.read_text())
    if key.startswith("input."):
        d["input"][key.split(".", 1)[1]] = value
    else:
        d[key] = value
    side.write_text(json.dumps(d))


@pytest.mark.parametrize("key,value,expected", [
    ("threshold", 5.0, "invalid manifest: threshold must be a number strictly between 0 and 1, got 5.0"),
    ("threshold", "0.5", "threshold must be a number strictly between 0 and 1, got '0.5'"),
    ("threshold", True, "threshold must be a number strictly between 0 and 1, got True"),
    ("positive_label", "crack", "positive_label must be one of the labels ['CD', 'UD'], got 'crack'"),
    ("schema", -5, "schema must be an integer 1..1, got -5"),
    ("labels", ["CD"], "labels must be a list of at least two distinct non-empty names, got ['CD']"),
    ("input.height", "256", "input.height must be an integer pixel count in 8..8192, got '256'"),
    ("input.std", [0, 1, 1], "input.std must be positive"),
    ("kind", "pickle", "kind must be one of checkpoint, onnx, onnx-int8, tensorrt, got 'pickle'"),
])
def test_invalid_sidecar_values_are_refused_cleanly(run_copy, few_images, key, value, expected):
    _edit_sidecar(run_copy / "model.onnx", key, value)
    res = _eval(run_copy, few_images)
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    err = _flat(res.stderr)
    assert err.startswith("error: ") and expected in err and "Traceback" not in res.output
    assert "export the artifact again" in err


@pytest.fixture(scope="module")
def few_images(tmp_path_factory, holdout_deck) -> Path:
    """8 real held-out images (4 CD, 4 UD): enough to see answers flip, quick to evaluate."""
    root = tmp_path_factory.mktemp("few")
    for cls in ("CD", "UD"):
        _copy_class(holdout_deck, cls, root / cls, 4)
    return root


def _eval(run: Path, data: Path, out: Path | None = None):
    return runner.invoke(app, ["eval", str(run), str(data), "--batch-size", "8"] + (["--out", str(out)] if out else []))


@pytest.mark.parametrize("key,value,expected", [
    ("positive_label", "UD", "positive_label 'UD' vs 'CD' (sidecar vs embedded)"),
    ("threshold", 0.999, "threshold 0.999 vs"),
    ("input.height", 192, "input {"),
])
def test_sidecar_that_disagrees_with_the_embedded_manifest_is_refused(run_copy, few_images, key, value, expected):
    _edit_sidecar(run_copy / "model.onnx", key, value)
    res = _eval(run_copy, few_images)
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    err = _flat(res.stderr)
    assert "the sidecar manifest disagrees with the manifest embedded in the model" in err and expected in err
    assert "delete model.onnx.json to use the embedded manifest" in err and "Traceback" not in res.output


def test_swapped_labels_are_refused_and_the_hint_restores_the_right_answers(run_copy, few_images):
    onnx = run_copy / "model.onnx"
    good = _eval(run_copy, few_images, run_copy / "good.json")
    assert good.exit_code == 0, good.output
    _edit_sidecar(onnx, "labels", ["UD", "CD"])
    res = _eval(run_copy, few_images)
    assert res.exit_code == 1, res.output  # before: exit 0 with every answer flipped
    err = _flat(res.stderr)
    assert "labels ['UD', 'CD'] vs ['CD', 'UD'] (sidecar vs embedded)" in err
    onnx.with_name("model.onnx.json").unlink()  # what the hint says
    again = _eval(run_copy, few_images, run_copy / "again.json")
    assert again.exit_code == 0, again.output
    acc = [json.loads((run_copy / f).read_text())["metrics"]["accuracy"] for f in ("good.json", "again.json")]
    assert acc[0] == acc[1] and acc[0] >= 0.625


def test_manifest_that_disagrees_with_the_graph_is_refused(run_copy):
    import onnx as onnx_lib

    from edgecrack.manifest import check_onnx_manifest, read_manifest
    from edgecrack.runtime import open_backend

    path = run_copy / "model.onnx"
    model = onnx_lib.load(str(path))
    del model.metadata_props[:]  # an ONNX model with only a sidecar (e.g. re-saved by another tool)
    onnx_lib.save(model, str(path))
    assert open_backend(run_copy).backend.manifest.input.height == 224
    _edit_sidecar(path, "input.height", 192)
    _edit_sidecar(path, "input.width", 192)
    with pytest.raises(Exception) as e:
        open_backend(run_copy)
    assert type(e.value).__name__ == "ArtifactError"
    assert ("manifest does not match the model graph: the graph takes tensor(uint8) ['batch', 224, 224, 3], the "
            "manifest says uint8 [N, 192, 192, 3]") in e.value.message
    m = read_manifest(path)
    with pytest.raises(Exception, match=r"the graph's inputs are \['x'\], the manifest says 'images'.*"
                                        r"the graph outputs 3 classes, the manifest has 2 labels"):
        check_onnx_manifest(m, None, [("x", ["n", 224, 224, 3], "tensor(uint8)")], [("probs", ["n", 3], "tensor(float)")],
                            "m.onnx")


def test_engine_is_never_built_from_a_tampered_sidecar(run_copy, tmp_path):
    from edgecrack.engine_cache import MachineFacts, ensure_engine
    from edgecrack.errors import ArtifactError

    def builder(*a, **kw):
        raise AssertionError("must not build")

    _edit_sidecar(run_copy / "model.onnx", "labels", ["UD", "CD"])
    with pytest.raises(ArtifactError, match=r"labels \['UD', 'CD'\] vs \['CD', 'UD'\]"):
        ensure_engine(run_copy, tmp_path / "engines", machine=MachineFacts("10.3.0", "Orin", "8.7"), build=builder)


# -- 7. paths are printed literally ------------------------------------------------------------


def test_paths_with_markup_are_printed_literally_by_eval_and_calibration(run_copy, few_images, tmp_path):
    odd = tmp_path / "x[/y]z" / "r[bold]un"
    shutil.copytree(run_copy, odd)
    res = runner.invoke(app, ["eval", str(odd), str(few_images), "--all"])
    assert res.exit_code == 0, res.output
    assert f"artifactsof{odd}on{few_images}" in _squash(res.stdout)
    cal = tmp_path / "c[/a]l"
    res = runner.invoke(app, ["calibration", "build", "--out", str(cal), "--n", "4"])
    assert res.exit_code == 0, res.output
    assert f"--calib{cal}" in _squash(res.stdout) and (cal / "calibration.json").is_file()
