#!/usr/bin/env bash
# GPU check, one run under 8 minutes on a CUDA machine (see README "GPU"): CUDA training (head
# only; fine-tuning in mixed precision with DataLoader decode workers, on the bundled 400 images
# and on 2,000 synthetic ones for the scale projection of benchmarks/scale), FP32/FP16/INT8
# exports, torch GPU inference at batch 1/8/64, TensorRT engines when TensorRT is importable.
# Writes REPORT_DIR/gpu-check.json and .md (default benchmarks/gpu/report).
#   bash benchmarks/gpu/check.sh [REPORT_DIR]
# Rehearsal on a CPU (what tests/test_gpu_check.py runs, so that the script that waits for a GPU
# has run before it gets one): DEVICE=cpu DATA=small/dataset SCALE_IMAGES=40 bash benchmarks/gpu/check.sh DIR
# (float32 at batch 1 and 8 only, no autocast, no GPU memory figures; KEEP_RUNS=1 keeps the run folders;
# BENCH_ARGS replaces the bench's --batch 1,8,64 --duration 2).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUTDIR="${1:-benchmarks/gpu/report}"
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
DATA="${DATA:-}"                  # dataset folder; empty: the bundled 400 deck images
SCALE_IMAGES="${SCALE_IMAGES:-2000}"
RUNS="$(mktemp -d)"
[ -n "${KEEP_RUNS:-}" ] && echo "[gpu-check] run folders kept in $RUNS" || trap 'rm -rf "$RUNS"' EXIT
mkdir -p "$OUTDIR"
export EDGECRACK_CACHE="$RUNS/cache" PYTHONUNBUFFERED=1
log() { echo "[gpu-check] $*"; }
# GNU time gives each training's peak RSS; without it the report says so (None)
TIMEV=(); [ -x /usr/bin/time ] && TIMEV=(/usr/bin/time -v)
DATA_ARG=(); [ -n "$DATA" ] && DATA_ARG=("$DATA")

log "machine"; nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null || true
log "train --device $DEVICE (head only)"
${TIMEV[@]+"${TIMEV[@]}"} "$PY" -m edgecrack train ${DATA_ARG[@]+"${DATA_ARG[@]}"} --out "$RUNS/head" --device "$DEVICE" --no-plots 2> "$RUNS/head.time" | tail -5
log "train --device $DEVICE --fine-tune-blocks 2 (fp16 autocast + GradScaler on CUDA, 4 decode workers)"
${TIMEV[@]+"${TIMEV[@]}"} "$PY" -m edgecrack train ${DATA_ARG[@]+"${DATA_ARG[@]}"} --out "$RUNS/ft2" --device "$DEVICE" --fine-tune-blocks 2 --workers 4 \
  --no-plots 2> "$RUNS/ft2.time" | tail -5
log "scale: fine-tune $SCALE_IMAGES synthetic images on $DEVICE (cold cache, 8 views, 3 epochs)"
"$PY" - "$RUNS" "$DEVICE" "$SCALE_IMAGES" <<'PYEOF'
import json, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from bench_scale import measured_train, synthetic_dataset
runs, device, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
data = synthetic_dataset(runs / "scale-data", n, 2000)
r = measured_train(data, runs / "scale-ft", runs / "scale-cache", ["--device", device, "--workers", "8",
                   "--fine-tune-blocks", "1", "--epochs", "3"], str(Path.cwd()))
r.update(images=n)
(runs / "scale.json").write_text(json.dumps(r))
print({k: r[k] for k in ("wall_s", "peak_rss_mb")}, r["bottleneck"], flush=True)
PYEOF
log "exports"
"$PY" -m edgecrack export "$RUNS/head" --precision fp16 | tail -3 || log "FP16 refused (numbers above)"
"$PY" -m edgecrack export "$RUNS/head" --precision int8 | tail -3 || log "INT8 Q/DQ refused (numbers above)"
if "$PY" -c "import tensorrt" 2>/dev/null; then
  for p in fp32 fp16 int8; do
    "$PY" -m edgecrack build-engine "$RUNS/head" --precision "$p" | tail -3 || log "engine $p failed"
  done
else
  log "TensorRT not importable here: no engines built"
fi
log "bench (every artifact on every backend here: TensorRT engines, onnxruntime, torch on $DEVICE)"
# shellcheck disable=SC2086
"$PY" -m edgecrack bench "$RUNS/head" ${BENCH_ARGS:---batch 1,8,64 --duration 2} --report "$OUTDIR/bench" | tail -15 \
  || log "bench failed (above)"
log "torch inference on $DEVICE"
"$PY" - "$RUNS" "$OUTDIR" "$DEVICE" <<'PYEOF'
import json, sys, time
from pathlib import Path
import numpy as np, torch
from edgecrack.platform import machine_summary
from edgecrack.train.checkpoint import load_checkpoint
runs, out, device = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
cuda = device.startswith("cuda")
rep = {"gpu": torch.cuda.get_device_name(0) if cuda else f"none (rehearsal on {machine_summary()['cpu']})",
       "device": device, "torch": torch.__version__, "inference": [], "training": {}}
scale = json.loads((runs / "scale.json").read_text())
rep["scale"] = {"images": scale["images"], "wall_s": scale["wall_s"], "peak_rss_mb": scale["peak_rss_mb"],
                "bottleneck": scale["bottleneck"], "timings": scale["timings"],
                "wall_h_56k_projected": scale["wall_s"] / scale["images"] * 56000 / 3600}
net, m = load_checkpoint(runs / "head")
for name in ("head", "ft2"):
    met = json.loads((runs / name / "metrics.json").read_text())
    t = (runs / f"{name}.time").read_text()
    peak_kb = next((int(l.split(":")[1]) for l in t.splitlines() if "Maximum resident" in l), None)
    cfg = json.loads((runs / name / "config.json").read_text())
    rep["training"][name] = {"timings": met["timings"], "bottleneck": met["bottleneck"],
                             "amp": cfg["loop"]["amp"], "workers": cfg["workers"],
                             "validation_accuracy": met.get("validation", {}).get("accuracy"),
                             "peak_rss_mb": peak_kb / 1024 if peak_kb else None}
sync = torch.cuda.synchronize if cuda else (lambda: None)
for dtype in (torch.float32, torch.float16) if cuda else (torch.float32,):
    mod = net.to(device).eval().to(dtype)
    mod.normalize.to(torch.float32)  # the uint8 input is cast inside; keep the normaliser float
    for b in (1, 8, 64) if cuda else (1, 8):
        x = torch.randint(0, 256, (b, m.input.height, m.input.width, 3), dtype=torch.uint8, device=device)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=cuda and dtype == torch.float16):
            for _ in range(10 if cuda else 2):
                mod(x)
            sync()
            ts = []
            for _ in range(50 if cuda else 3):
                t0 = time.perf_counter(); mod(x); sync(); ts.append(time.perf_counter() - t0)
        ms = float(np.median(ts) * 1e3)
        rep["inference"].append({"dtype": str(dtype).split(".")[-1], "batch": b, "p50_ms": ms,
                                 "images_per_s": b / ms * 1e3,
                                 "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None})
        print(rep["inference"][-1], flush=True)
(out / "gpu-check.json").write_text(json.dumps(rep, indent=2))
lines = [f"# GPU check: {rep['gpu']}", "", f"torch {rep['torch']}, device {device}", "",
         "| dtype | batch | p50 ms | images/s | peak GPU MB |", "|---|---|---|---|---|"]
lines += [f"| {r['dtype']} | {r['batch']} | {r['p50_ms']:.2f} | {r['images_per_s']:.0f} | "
          f"{'-' if r['peak_gpu_mb'] is None else format(r['peak_gpu_mb'], '.0f')} |" for r in rep["inference"]]
for k, v in rep["training"].items():
    lines += ["", f"training {k}: {json.dumps(v)}"]
sc = rep["scale"]
lines += ["", f"scale: fine-tuning {sc['images']} synthetic images on {device} (cold cache, 8 views, 3 epochs): "
          f"{sc['wall_s']:.1f} s wall, bottleneck {sc['bottleneck']['images_per_s']:.0f} images/s, peak RSS "
          f"{sc['peak_rss_mb']:.0f} MB; 56,000 images projected at {sc['wall_h_56k_projected']:.2f} h"]
(out / "gpu-check.md").write_text("\n".join(lines) + "\n")
PYEOF
log "report in $OUTDIR"
