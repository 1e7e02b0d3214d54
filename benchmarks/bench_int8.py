"""Where INT8 loses on this CPU: fused kernels vs 7-bit weights vs Q/DQ executed as written; FP16 too.

Run: ``.venv/bin/python benchmarks/bench_int8.py`` (about 14 minutes on a 2-core CPU).
Writes ``benchmarks/int8/int8.json`` and ``int8.md``.

One default ``edgecrack train`` run on the bundled data; every model is compared with FP32 on the
run's held-out split (validation + test), calibrated on 64 images of its training split:
- the onnxruntime u8s8 Q/DQ graph with 8-bit and with 7-bit (``reduce_range``) weights, each run
  through onnxruntime's fused kernels and in reference arithmetic (graph optimisation off), with
  and without bias correction (:mod:`edgecrack.export.biascorrect`);
- ``model.fp16.onnx`` as ``edgecrack export --precision fp16`` makes it;
- the TensorRT Q/DQ graph all INT8 without and with bias correction, and with the most sensitive
  backbone units kept float by the mixed-precision search (what ``edgecrack export --precision int8``
  writes);
- the CPU path's bias-corrected qdq-u8s8 graph with the first 0-4 backbone units float (agreement,
  speed-up timed against FP32 in alternating blocks), and onnxruntime's kernel time per backbone unit
  for FP32 and all-INT8 (profiler);
- the speed-up gate's own spread: one model's paired speed-up estimated 8 times in a row with the CPU
  path's measurement (20 calls a side in 4 alternating blocks) and with one five times longer;
- ``edgecrack build-engine --target cpu --precision int8``'s candidates (latency, agreement, verdict;
  speed-ups against FP32 timed alongside each).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Float prefix whose speed-up the gate-spread table re-measures (the written model's, as of this report).
GATE_UNITS = 3
sys.path.insert(0, str(ROOT))

from edgecrack.io import atomic_write_json, atomic_write_text  # noqa: E402


def unit_macs(backbone: str, height: int, width: int, n_units: int | None = None) -> dict[str, int]:
    """Multiply-accumulates of each backbone unit (``trunk.N``) of the first ``n_units`` (None: all) at
    ``height`` x ``width`` px, from the convolutions' shapes."""
    import torch

    from edgecrack.train.backbones import BACKBONES

    units, _, _ = BACKBONES[backbone].build()
    units = units[:n_units] if n_units else units
    macs: dict[str, int] = {}
    for i, unit in enumerate(units):
        for mod in unit.modules():
            if isinstance(mod, torch.nn.Conv2d):
                mod.register_forward_hook(lambda m, _, o, k=f"trunk.{i}": macs.__setitem__(
                    k, macs.get(k, 0) + o.numel() * m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups))
    x = torch.zeros(1, 3, height, width)
    with torch.no_grad():
        for unit in units:
            x = unit(x)
    return macs


def unit_kernel_ms(model: bytes, shape: tuple[int, ...], runs: int = 60) -> dict[str, float]:
    """onnxruntime CPU kernel time per backbone unit (``trunk.N``; everything else ``other``) at batch 1,
    from onnxruntime's profiler: the mean over ``runs`` calls, in ms."""
    import json
    import re

    import numpy as np
    import onnxruntime as ort

    from edgecrack.runtime.onnxruntime_backend import no_spin_wait

    so = ort.SessionOptions()
    no_spin_wait(so)
    so.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="edgecrack-prof-") as t:
        so.profile_file_prefix = str(Path(t) / "prof")
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        name = sess.get_inputs()[0].name
        for _ in range(runs):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    out: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            m = re.match(r"^/trunk/trunk\.(\d+)/", e["name"])
            key = f"trunk.{m.group(1)}" if m else "other"
            out[key] = out.get(key, 0.0) + e["dur"] / 1e3 / runs
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "int8")
    a = ap.parse_args()
    import numpy as np
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from edgecrack.platform import machine_summary
    from edgecrack.platform import int8_isa
    from edgecrack.compare import fidelity, probs_on
    from edgecrack.export.biascorrect import BiasCorrector
    from edgecrack.export.ortquant import BATCH, float_nodes, session
    from edgecrack.export.precision import MAX_FLOAT_UNITS, _qdq_blob, precision_onnx_from_onnx
    from edgecrack.export.quantize import QuantizeConfig, QuantizeRefused, int8_from_onnx
    from edgecrack.export.run_images import calibration_for, eval_images_for
    from edgecrack.manifest import read_manifest
    from edgecrack.jobs import train_job
    from edgecrack.train.api import TrainConfig
    import onnx

    logging.getLogger().setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgecrack-int8-") as t:
        tmp = Path(t)
        train_job(TrainConfig(out=str(tmp / "run"), cache_dir=str(tmp / "cache"), plots=False))
        src = tmp / "run" / "model.onnx"
        m = read_manifest(src)
        cal = calibration_for(src, None)
        where, x, y = eval_images_for(src, None, m, cal)
        p0 = probs_on(session(src.read_bytes()), x, BATCH, m.input_name)
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
            fixed = BiasCorrector(pre.read_bytes(), cal, m)(q.read_bytes())
            for bc, blob in ((False, q.read_bytes()), (True, fixed)):
                for reference in (False, True):
                    f = fidelity(probs_on(session(blob, reference=reference), x, BATCH, m.input_name), p0, y, m)
                    rows.append({"model": f"qdq-u8s8, {'7' if rr else '8'}-bit weights"
                                          + (", bias corrected" if bc else ""),
                                 "run_as": "reference arithmetic (Q/DQ as written)" if reference
                                 else "onnxruntime fused kernels", **asdict(f)})
        r = precision_onnx_from_onnx(src, "fp16", tmp / "p.fp16.onnx", budget=0.99)
        rows.append({"model": "fp16", "run_as": "edgecrack export --precision fp16", **asdict(r.fidelity)})
        mixed = None
        for max_float, bc in ((0, False), (0, True), (MAX_FLOAT_UNITS, True)):
            t0 = time.perf_counter()
            blob, record = _qdq_blob(src, cal, m, lambda *_: None, 0.99, max_float, None, bc)
            f = fidelity(probs_on(session(blob, reference=True), x, BATCH, m.input_name), p0, y, m)
            n = len(record["float_units"])
            rows.append({"model": "qdq-tensorrt, " + (f"{n} of {record['units']} backbone units float"
                                                      if n else "all INT8") + (", bias corrected" if bc else ""),
                         "run_as": "edgecrack export --precision int8" + ("" if max_float else " --max-float-units 0")
                         + ("" if bc else " --no-bias-correction"),
                         "seconds": round(time.perf_counter() - t0, 1), **asdict(f)})
            mixed = record if max_float else mixed
        # onnxruntime CPU: the bias-corrected qdq-u8s8 graph as the CPU path builds it, with the first k
        # units float, timed against FP32 in alternating blocks; kernel time per unit from the profiler
        from onnxruntime.quantization.shape_inference import quant_pre_process

        from edgecrack.export.quantize import ROUNDS, _quantize_static, paired_latency_ms

        cpu_pre = tmp / "cpu-pre.onnx"
        quant_pre_process(str(pre), str(cpu_pre), skip_symbolic_shape=False)
        cpu_base = onnx.load(str(cpu_pre))
        fix = BiasCorrector(cpu_pre.read_bytes(), cal, m)
        fp32_sess = session(cpu_pre.read_bytes())
        prefix_rows, int8_all, gate_model = [], None, None
        for k in (0, 1, 2, 3, 4):
            floats = [n.name for n in cpu_base.graph.node if any(n.name.startswith(f"/trunk/trunk.{i}/") for i in range(k))]
            # the CPU path's own quantizer call, with its default settings; ranges calibrated once
            blob = fix(_quantize_static(cpu_pre, tmp / f"cpu-prefix{k}.onnx", "qdq-u8s8", cal, m, QuantizeConfig(),
                                        int8_isa().reduce_range, CalibrationMethod.MinMax,
                                        {"CalibMovingAverage": True}, float_nodes(cpu_base) + floats,
                                        tmp / "cpu-ranges.json"))
            int8_all = blob if k == 0 else int8_all
            sess = session(blob)
            f = fidelity(probs_on(sess, x, BATCH, m.input_name), p0, y, m)
            ref_ms, ms = paired_latency_ms(fp32_sess, sess, x, m.input_name, 1, QuantizeConfig().latency_runs)
            prefix_rows.append({"float_units": k, "fp32_ms": ref_ms, "int8_ms": ms, "speedup": ref_ms / ms,
                                **asdict(f)})
            gate_model = sess if k == GATE_UNITS else gate_model
        # the speed-up gate's own spread: the same model's paired speed-up estimated repeatedly, with the
        # CPU path's measurement and with one five times longer
        spread = {}
        runs0 = QuantizeConfig().latency_runs
        for runs, rounds in ((runs0, ROUNDS), (5 * runs0, 10)):
            estimates = []
            for _ in range(8):
                ref_ms, ms = paired_latency_ms(fp32_sess, gate_model, x, m.input_name, 1, runs, rounds)
                estimates.append(ref_ms / ms)
            spread[f"{runs} calls, {rounds} blocks"] = estimates
        shape = (1, m.input.height, m.input.width, 3)
        kernel = {"fp32": unit_kernel_ms(cpu_pre.read_bytes(), shape), "int8": unit_kernel_ms(int8_all, shape)}
        try:
            res = int8_from_onnx(src, tmp / "cpu.int8.onnx", QuantizeConfig())
            cpu, cpu_verdict = [res.fp32, *res.candidates], f"written: {res.chosen.name}"
            cpu_mixed = res.manifest.extra.get("mixed_precision")
        except QuantizeRefused as e:
            cpu_mixed = next(iter(e.mixed_precision.values()), None)
            cpu, cpu_verdict = [e.fp32, *e.candidates], ("refused: no candidate within 1 point, >= 99 % top-1 "
                                                         "agreement and >= 1.2x faster at batch 1")
    macs = unit_macs(m.backbone, m.input.height, m.input.width, m.head.get("backbone_units"))
    mixed["float_share_of_trunk_macs"] = sum(macs.get(u, 0) for u in mixed["float_units"]) / sum(macs.values())
    mixed["trunk_macs"] = sum(macs.values())
    cpu_rows = [{"name": c.name, "latency_ms_batch1": c.latency_ms["1"], "speedup_batch1": c.speedup(cpu[0], 1),
                 "top1_agreement": c.top1_agreement, "accuracy": c.accuracy,
                 "accuracy_delta_points": c.accuracy_delta_points, "verdict": c.verdict or "reference"} for c in cpu]
    rep = {"schema": "edgecrack.bench.int8/1", "machine": machine_summary(), "int8_isa": int8_isa().summary,
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "eval": where, "rows": rows,
           "mixed_precision": mixed, "cpu_int8": {"outcome": cpu_verdict, "candidates": cpu_rows},
           "cpu_float_prefix": prefix_rows, "cpu_kernel_ms_per_unit": kernel, "cpu_mixed_precision": cpu_mixed,
           "cpu_gate_spread": {"float_units": GATE_UNITS, "speedups": spread}}
    lines = ["# INT8 and FP16 fidelity on this CPU", "",
             f"Machine: {rep['machine']['cpu']}, {rep['machine']['cores']} cores; {rep['int8_isa']}. "
             f"Default model, held-out: {where}. Date {rep['date']}.", "",
             "| model | run as | top-1 agreement with FP32 | accuracy (FP32) | Δ points |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['run_as']} | {r['top1_agreement'] * 100:.1f} % | {r['accuracy']:.3f} "
              f"({r['fp32_accuracy']:.3f}) | {r['accuracy_delta_points']:+.1f} |" for r in rows]
    lines += ["", "Mixed-precision search (TensorRT Q/DQ): agreement with FP32 on "
              f"{mixed['search_images']} training images outside the calibration set as units are kept float, "
              "float prefixes first, then the most sensitive units (one-in sensitivity):", "",
              "| units float | set | units | search-set agreement | mean logit shift |", "|---|---|---|---|---|"]
    lines += [f"| {s['float_units']} | {s.get('set', 'most sensitive')} | {', '.join(s.get('units', []))} | "
              f"{s['agreement'] * 100:.1f} % | {s['logit_shift']:.3f} |" for s in mixed["steps"]]
    lines += ["", f"Float units of the written model: {', '.join(mixed['float_units'])}: "
              f"{mixed['float_share_of_trunk_macs'] * 100:.0f} % of the trunk's {mixed['trunk_macs'] / 1e6:.0f} M "
              f"multiply-accumulates at {m.input.height} x {m.input.width} px (from the convolutions' shapes)."]
    lines += ["", f"onnxruntime CPU INT8 (`edgecrack build-engine --target cpu`), {cpu_verdict}:", "",
              "| candidate | batch-1 latency | speed-up | top-1 agreement | accuracy | Δ points | verdict |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['latency_ms_batch1']:.1f} ms | x{r['speedup_batch1']:.2f} | "
              f"{r['top1_agreement'] * 100:.1f} % | {r['accuracy']:.3f} | {r['accuracy_delta_points']:+.1f} | "
              f"{r['verdict']} |" for r in cpu_rows]
    if cpu_mixed:
        share = sum(macs.get(u, 0) for u in cpu_mixed["float_units"]) / sum(macs.values())
        lines += ["", f"Float units of the CPU mixed candidate: {', '.join(cpu_mixed['float_units']) or 'none'} "
                  f"({share * 100:.0f} % of the trunk's multiply-accumulates); its search:", "",
                  "| units float | set | units | search-set agreement | mean logit shift | fast enough |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {s['float_units']} | {s['set']} | {', '.join(s['units'])} | {s['agreement'] * 100:.1f} % | "
                  f"{s['logit_shift']:.3f} | {'yes' if s.get('fast_enough', True) else 'no'} |" for s in cpu_mixed["steps"]]
    lines += ["", "onnxruntime CPU, bias-corrected qdq-u8s8 (the CPU path's graph) with the first k backbone units "
              f"float; held-out {where}; batch-1 latency timed against FP32 as the CPU path's gate times it "
              f"({QuantizeConfig().latency_runs} calls a side in {ROUNDS} alternating blocks, median of each side):", "",
              "| first units float | top-1 agreement | Δ points | FP32 | INT8 | speed-up |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['float_units']} | {r['top1_agreement'] * 100:.1f} % | {r['accuracy_delta_points']:+.1f} | "
              f"{r['fp32_ms']:.2f} ms | {r['int8_ms']:.2f} ms | x{r['speedup']:.2f} |" for r in prefix_rows]
    lines += ["", f"The speed-up gate's own spread: the CPU graph with the first {GATE_UNITS} units float, its "
              "batch-1 speed-up over FP32 estimated 8 times in a row by `paired_latency_ms` (the gate's measurement, "
              "and one five times longer):", "",
              "| measurement | estimates | min | median | max |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {', '.join(f'x{v:.2f}' for v in vs)} | x{min(vs):.2f} | x{float(np.median(vs)):.2f} | "
              f"x{max(vs):.2f} |" for k, vs in spread.items()]
    units = sorted((u for u in kernel["fp32"] if u != "other"), key=lambda u: int(u.split(".")[1])) + ["other"]
    lines += ["", "Kernel time per backbone unit at batch 1 (onnxruntime profiler, mean of 60 calls, all cores; "
              "'other' is the in-graph preprocessing, the head and layout changes):", "",
              "| unit | FP32 | INT8 (all units) | INT8 / FP32 |", "|---|---|---|---|"]
    lines += [f"| {u} | {kernel['fp32'].get(u, 0):.3f} ms | {kernel['int8'].get(u, 0):.3f} ms | "
              f"{kernel['int8'].get(u, 0) / max(kernel['fp32'].get(u, 0), 1e-9):.2f} |" for u in units]
    lines += ["", f"Load average at the end: {os.getloadavg()[0]:.1f} (2 cores; latencies are noisy when it is "
              "above 2)."]
    atomic_write_json(a.out / "int8.json", rep)
    atomic_write_text(a.out / "int8.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
