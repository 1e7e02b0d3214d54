"""``edgecrack cv``: k-fold cross-validation as a command, the same code as benchmarks/bench_train.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgecrack.cli import app
from edgecrack.data import list_images

pytest.importorskip("torch")

runner = CliRunner()

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_cv_command_writes_the_report_and_every_fold_tests_other_images(small_deck, tmp_path):
    out = tmp_path / "cv"
    r = runner.invoke(app, ["cv", str(small_deck), "--folds", "2", "--views", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "cv.json").read_text())
    assert rep["folds"] == 2 and rep["images"] == 40 and len(rep["accuracy_folds"]) == 2
    assert rep["positive_label"] == "CD" and rep["config"]["views"] == 2
    folds = [json.loads((out / f"fold{i}" / "metrics.json").read_text())["test"] for i in (0, 1)]
    assert rep["accuracy_folds"] == [m["accuracy"] for m in folds]
    assert rep["accuracy_mean"] == pytest.approx(sum(rep["accuracy_folds"]) / 2)
    assert rep["cracked_recall_mean"] == pytest.approx(sum(m["per_class"]["CD"]["recall"] for m in folds) / 2)
    assert min(rep["accuracy_folds"]) >= 0.5  # a real model on real images, 20 held out per fold
    tests = [{e["path"] for e in json.loads((out / f"fold{i}" / "splits.json").read_text())["test"]} for i in (0, 1)]
    assert not tests[0] & tests[1]
    assert tests[0] | tests[1] == {str(p.resolve()) for p in list_images(small_deck)}  # each image held out once
    md = (out / "cv.md").read_text()
    assert "# 2-fold cross-validation of edgecrack train" in md
    assert f"| accuracy (mean ± std) | {rep['accuracy_mean']:.3f} ± {rep['accuracy_std']:.3f} |" in md
    assert "2-fold CV accuracy" in _flat(r.output) and "cv.md" in r.output


def test_bench_train_reports_through_the_library(small_deck, tmp_path):
    """benchmarks/bench_train.py's cross_validate is edgecrack.train.cv's, on the bundled data."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import bench_train
    finally:
        sys.path.pop(0)
    from edgecrack.train import cv

    assert bench_train.cross_validate.__doc__ and "edgecrack.train.cv.cross_validate" in bench_train.cross_validate.__doc__
    assert "fold_dirs" not in vars(bench_train)  # no second copy of the fold logic
    assert callable(cv.cross_validate) and callable(cv.cv_markdown)


@pytest.mark.parametrize("args,msg", [
    (["--folds", "1"], "--folds must be within 2..20"),
    (["--folds", "21"], "--folds must be within 2..20"),
    (["--config", "{missing}"], "cannot read config"),
])
def test_cv_user_errors_exit_1_without_traceback(args, msg, small_deck, tmp_path):
    args = [a.replace("{missing}", str(tmp_path / "nope.json")) for a in args]
    r = runner.invoke(app, ["cv", str(small_deck), "--out", str(tmp_path / "cv"), *args])
    assert r.exit_code == 1, r.output
    assert msg in _flat(r.output) and "Traceback" not in r.output
