"""edgecrack.bench.training: the training benchmark section, folded into a report from the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from bench_reports import report_dict, write
from typer.testing import CliRunner

from edgecrack.bench import read_report, training_section
from edgecrack.cli import app
from edgecrack.errors import ConfigError

runner = CliRunner()


def test_training_section_folds_into_report(tmp_path):
    train = {"schema": "edgecrack.bench.train/1", "machine": {"cpu": "Test CPU", "cores": 2},
             "cv": {"folds": 5, "accuracy_mean": 0.86, "accuracy_folds": [0.85, 0.86, 0.87, 0.86, 0.86]},
             "wall_time_s": {"cold": 190.0, "warm": 21.5}, "bottleneck_images_per_s": 20.5}
    sec = training_section(train)
    assert sec["cv"]["accuracy_std"] == pytest.approx(float(np.std([0.85, 0.86, 0.87, 0.86, 0.86])))
    assert sec["cv"]["accuracy_min"] == 0.85 and sec["wall_time_s"] == {"cold": 190.0, "warm": 21.5}
    with pytest.raises(ConfigError, match="not a training benchmark"):
        training_section({"schema": "edgecrack.bench/1"})
    with pytest.raises(ConfigError, match="malformed"):
        training_section({"schema": "edgecrack.bench.train/1", "cv": {}})
    rep_path = write(tmp_path, "bench.json", report_dict())
    tj = write(tmp_path, "train.json", train)
    out = tmp_path / "out"
    r = runner.invoke(app, ["bench", str(rep_path), "--train-json", str(tj), "--report", str(out)])
    assert r.exit_code == 0, r.output
    md = (out / "bench.md").read_text()
    assert "## Training" in md and "| 5-fold CV accuracy | 0.860 ± 0.006" in md and "20.5 images/s" in md
    assert read_report(out / "bench.json").training["cv"]["folds"] == 5
