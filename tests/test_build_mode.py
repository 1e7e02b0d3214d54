"""Which way each TensorRT version builds each precision (no GPU needed to decide)."""

from __future__ import annotations

import pytest

from edgecrack.errors import BackendUnavailable
from edgecrack.export.tensorrt import build_mode

NONE = {"fp16": False, "int8": False}
BOTH = {"fp16": True, "int8": True}


@pytest.mark.parametrize("major", [10, 11])
def test_tensorrt_10_and_11_build_strongly_typed_from_explicit_onnx(major):
    for prec in ("fp16", "int8"):
        m = build_mode(major, prec, "fp32", BOTH)
        assert m == {"onnx": prec, "strongly_typed": True, "flags": [], "calibrator": False}
    # given the Q/DQ file itself, its precision wins over the option
    assert build_mode(major, "fp16", "int8", NONE)["onnx"] == "int8"


def test_tensorrt_11_refuses_implicit_precision_with_the_way_out():
    for prec in ("fp16", "int8"):
        with pytest.raises(BackendUnavailable, match=f"export RUN --precision {prec}|strongly|explicit") as e:
            build_mode(11, prec, "fp32", NONE)
        assert f"--precision {prec}" in e.value.hint


def test_tensorrt_10_keeps_the_fp16_flag_only_without_an_fp16_onnx_and_never_calibrates():
    assert build_mode(10, "fp16", "fp32", NONE) == {"onnx": "fp32", "strongly_typed": False, "flags": ["FP16"],
                                                    "calibrator": False}
    with pytest.raises(BackendUnavailable, match="deprecated since 10.1"):
        build_mode(10, "int8", "fp32", NONE)


def test_tensorrt_8_uses_flags_qdq_when_present_calibrator_otherwise():
    assert build_mode(8, "fp16", "fp32", NONE)["flags"] == ["FP16"]
    q = build_mode(8, "int8", "fp32", BOTH)
    assert q["onnx"] == "int8" and q["flags"] == ["FP16", "INT8"] and not q["calibrator"]
    c = build_mode(8, "int8", "fp32", NONE)
    assert c["onnx"] == "fp32" and c["calibrator"] and not c["strongly_typed"]
    assert build_mode(8, "fp32", "fp32", NONE) == {"onnx": "fp32", "strongly_typed": False, "flags": [],
                                                   "calibrator": False}
