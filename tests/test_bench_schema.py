"""edgecrack.bench.schema: the report round-trips through JSON; newer majors and malformed reports are refused."""

from __future__ import annotations

import copy
import json

import pytest
from bench_reports import report_dict

from edgecrack.bench import BenchReport, read_report
from edgecrack.errors import ArtifactError, ConfigError


def test_report_schema_round_trip(tmp_path):
    rep = BenchReport.from_dict(report_dict())
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["schema"] == "edgecrack.bench/1"
    again = BenchReport.from_dict(d)
    assert again == rep
    assert again.results[2].reason == "onnxruntime has no CUDAExecutionProvider"
    assert again.cell("model.onnx", "onnxruntime-cpu").batch(8).compute.batch == 8
    # Keys added by a later minor version are ignored, not fatal.
    d["results"][1]["added_later"] = 1
    d["added_later"] = {}
    assert BenchReport.from_dict(d).results[1].artifact == "model.onnx"
    newer = dict(d, schema="edgecrack.bench/2")
    with pytest.raises(ArtifactError, match="newer edgecrack"):
        BenchReport.from_dict(newer)
    with pytest.raises(ConfigError, match="not an edgecrack bench report"):
        BenchReport.from_dict({"schema": "something/1"})
    broken = copy.deepcopy(d)
    del broken["results"][0]["batches"][0]["compute"]
    with pytest.raises(ConfigError, match="malformed"):
        BenchReport.from_dict(broken)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_report(bad)
