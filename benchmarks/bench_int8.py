"""Where INT8 loses on this CPU: fused kernels vs 7-bit weights vs Q/DQ executed as written; FP16 too.

Run: ``.venv/bin/python benchmarks/bench_int8.py`` (about 3 minutes on a 2-core CPU).
Writes ``benchmarks/int8/int8.json`` and ``int8.md``.

One default ``edgecrack train`` run on the bundled data; every model is compared with FP32 on the
run's held-out split (validation + test), calibrated on 64 images of its training split:
- the onnxruntime u8s8 Q/DQ graph with 8-bit and with 7-bit (``reduce_range``) weights, each run
  through onnxruntime's fused kernels and in reference arithmetic (graph optimisation off);
- ``model.fp16.onnx`` and the TensorRT Q/DQ ``model.qdq.onnx`` as ``edgecrack export`` makes them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgecrack.io import atomic_write_json, atomic_write_text  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "int8")
    a = ap.parse_args()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from edgecrack.platform import machine_summary
    from edgecrack.platform import int8_isa
    from edgecrack.export.precision import (calibration_for, eval_images_for, fidelity, precision_onnx_from_onnx,
                                            probs_of, session)
    from edgecrack.export.quantize import float_nodes
    from edgecrack.manifest import read_manifest
    from edgecrack.train.api import TrainConfig, train
    import onnx

    logging.getLogger().setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgecrack-int8-") as t:
        tmp = Path(t)
        train(TrainConfig(out=str(tmp / "run"), cache_dir=str(tmp / "cache"), plots=False))
        src = tmp / "run" / "model.onnx"
        m = read_manifest(src)
        cal = calibration_for(src, None)
        where, x, y = eval_images_for(src, None, m, cal)
        p0 = probs_of(session(src.read_bytes()), x, m.input_name)
        base = onnx.load(str(src))
        del base.metadata_props[:]
        pre = tmp / "pre.onnx"
        onnx.save(base, str(pre))
        for rr in (False, True):

            class Reader:
                def __init__(self):
                    self.it = cal.batches(m.input, 8)

                def get_next(self):
                    b = next(self.it, None)
                    return None if b is None else {m.input_name: b}

            q = tmp / f"u8s8-rr{int(rr)}.onnx"
            quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=True, reduce_range=rr,
                            nodes_to_exclude=float_nodes(base), calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"CalibMovingAverage": True})
            for reference in (False, True):
                f = fidelity(probs_of(session(q.read_bytes(), reference=reference), x, m.input_name), p0, y, m)
                rows.append({"model": f"qdq-u8s8, {'7' if rr else '8'}-bit weights",
                             "run_as": "reference arithmetic (Q/DQ as written)" if reference else "onnxruntime fused kernels",
                             **asdict(f)})
        for prec in ("fp16", "int8"):
            r = precision_onnx_from_onnx(src, prec, tmp / f"p.{prec}.onnx", budget=0.99)
            rows.append({"model": r.manifest.extra["format"], "run_as": "edgecrack export --precision " + prec,
                         **asdict(r.fidelity)})
    rep = {"schema": "edgecrack.bench.int8/1", "machine": machine_summary(), "int8_isa": int8_isa().summary,
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "eval": where, "rows": rows}
    lines = ["# INT8 and FP16 fidelity on this CPU", "",
             f"Machine: {rep['machine']['cpu']}, {rep['machine']['cores']} cores; {rep['int8_isa']}. "
             f"Default model, held-out: {where}. Date {rep['date']}.", "",
             "| model | run as | top-1 agreement with FP32 | accuracy (FP32) | Δ points |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['run_as']} | {r['top1_agreement'] * 100:.1f} % | {r['accuracy']:.3f} "
              f"({r['fp32_accuracy']:.3f}) | {r['accuracy_delta_points']:+.1f} |" for r in rows]
    atomic_write_json(a.out / "int8.json", rep)
    atomic_write_text(a.out / "int8.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
