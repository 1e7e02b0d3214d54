#!/usr/bin/env bash
# GPU check, one run under 8 minutes on a CUDA machine (see README "GPU"): CUDA training,
# FP32/FP16/INT8 exports, torch GPU inference at batch 1/8/64, TensorRT engines when TensorRT
# is importable. Writes REPORT_DIR/gpu-check.json and .md (default benchmarks/gpu/report).
#   bash benchmarks/gpu/check.sh [REPORT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUTDIR="${1:-benchmarks/gpu/report}"
PY="${PYTHON:-python3}"
RUNS="$(mktemp -d)"
mkdir -p "$OUTDIR"
export EDGECRACK_CACHE="$RUNS/cache" PYTHONUNBUFFERED=1
log() { echo "[gpu-check] $*"; }

log "machine"; nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || true
log "train --device cuda (head only)"
/usr/bin/time -v "$PY" -m edgecrack train --out "$RUNS/head" --device cuda --no-plots 2> "$RUNS/head.time" | tail -5
log "train --device cuda --fine-tune-blocks 2"
/usr/bin/time -v "$PY" -m edgecrack train --out "$RUNS/ft2" --device cuda --fine-tune-blocks 2 --no-plots \
  2> "$RUNS/ft2.time" | tail -5
log "exports"
"$PY" -m edgecrack export "$RUNS/head" --precision fp16 | tail -3
"$PY" -m edgecrack export "$RUNS/head" --precision int8 | tail -3 || log "INT8 Q/DQ refused (numbers above)"
if "$PY" -c "import tensorrt" 2>/dev/null; then
  for p in fp32 fp16 int8; do
    "$PY" -m edgecrack build-engine "$RUNS/head" --precision "$p" | tail -3 || log "engine $p failed"
  done
  "$PY" -m edgecrack bench "$RUNS/head" --batch 1,8,64 --duration 2 --report "$OUTDIR/bench" | tail -15 || true
else
  log "TensorRT not importable here: no engines built"
fi
log "torch GPU inference"
"$PY" - "$RUNS" "$OUTDIR" <<'PYEOF'
import json, sys, time
from pathlib import Path
import numpy as np, torch
from edgecrack.train.api import load_checkpoint
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
rep = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "inference": [], "training": {}}
net, m = load_checkpoint(runs / "head")
for name in ("head", "ft2"):
    met = json.loads((runs / name / "metrics.json").read_text())
    t = (runs / f"{name}.time").read_text()
    peak_kb = next((int(l.split(":")[1]) for l in t.splitlines() if "Maximum resident" in l), None)
    rep["training"][name] = {"timings": met["timings"], "bottleneck": met["bottleneck"],
                             "validation_accuracy": met.get("validation", {}).get("accuracy"),
                             "peak_rss_mb": peak_kb / 1024 if peak_kb else None}
for dtype in (torch.float32, torch.float16):
    mod = net.cuda().eval().to(dtype)
    mod.normalize.to(torch.float32)  # the uint8 input is cast inside; keep the normaliser float
    for b in (1, 8, 64):
        x = torch.randint(0, 256, (b, m.input.height, m.input.width, 3), dtype=torch.uint8, device="cuda")
        torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype == torch.float16):
            for _ in range(10):
                mod(x)
            torch.cuda.synchronize()
            ts = []
            for _ in range(50):
                t0 = time.perf_counter(); mod(x); torch.cuda.synchronize(); ts.append(time.perf_counter() - t0)
        ms = float(np.median(ts) * 1e3)
        rep["inference"].append({"dtype": str(dtype).split(".")[-1], "batch": b, "p50_ms": ms,
                                 "images_per_s": b / ms * 1e3,
                                 "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20})
        print(rep["inference"][-1], flush=True)
(out / "gpu-check.json").write_text(json.dumps(rep, indent=2))
lines = [f"# GPU check: {rep['gpu']}", "", f"torch {rep['torch']}", "", "| dtype | batch | p50 ms | images/s | peak GPU MB |", "|---|---|---|---|---|"]
lines += [f"| {r['dtype']} | {r['batch']} | {r['p50_ms']:.2f} | {r['images_per_s']:.0f} | {r['peak_gpu_mb']:.0f} |" for r in rep["inference"]]
for k, v in rep["training"].items():
    lines += ["", f"training {k}: {json.dumps(v)}"]
(out / "gpu-check.md").write_text("\n".join(lines) + "\n")
PYEOF
log "report in $OUTDIR"
