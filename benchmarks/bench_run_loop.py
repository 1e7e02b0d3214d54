"""Inspection-loop benchmark: end-to-end fps vs the backend alone, and a tiled 4K frame.

Run: ``.venv/bin/python benchmarks/bench_run_loop.py --model runs/deck`` (a few minutes on a
2-core CPU). Writes ``benchmarks/run_loop/run_loop.json`` and ``benchmarks/run_loop/run_loop.md``.

1. Video file, 256x256 frames (the bundled SDNET2018 deck images as a real MJPEG video), one
   tile per frame, batch N: frames/s of ``edgecrack.loop.runner.run`` (capture, decode, preprocess,
   inference, postprocess and a JSONL log, all included) against the backend's own throughput
   on already preprocessed batches of the same size. Goal: >= 0.85x. The two are measured
   interleaved, several times, and compared by their medians, because the machine is shared.
2. A 3840x2160 frame made of real deck images, tiled at 256 px (135 tiles): frame latency and
   tiles/s through :class:`edgecrack.loop.inspector.Inspector`, and a short 4K video through the
   whole loop (4K MJPEG decoding included).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgecrack.bench.timing import LoopBudget, interleaved  # noqa: E402
from edgecrack.data import DEFAULT_DATASET, list_images  # noqa: E402
from edgecrack.io import atomic_write_json, atomic_write_text  # noqa: E402
from edgecrack.loop.config import RunConfig  # noqa: E402
from edgecrack.loop.inspector import Inspector  # noqa: E402
from edgecrack.loop.runner import run  # noqa: E402
from edgecrack.loop.types import Frame  # noqa: E402
from edgecrack.preprocess import decode_image, preprocess  # noqa: E402
from edgecrack.runtime import open_backend  # noqa: E402


def machine() -> dict:
    from edgecrack.platform import machine_summary

    return machine_summary()


def deck_video(path: Path, images: list[Path], fps: float = 25.0) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (256, 256))
    for p in images:
        w.write(cv2.resize(decode_image(p), (256, 256), interpolation=cv2.INTER_AREA))
    w.release()
    return path


def frame_4k(images: list[Path]) -> np.ndarray:
    """3840x2160 of real 256x256 deck crops (15 x 9 grid, the last row cut to fit)."""
    big = np.zeros((9 * 256, 15 * 256, 3), np.uint8)
    for i in range(9 * 15):
        r, c = divmod(i, 15)
        big[r * 256:(r + 1) * 256, c * 256:(c + 1) * 256] = decode_image(images[i % len(images)])
    return np.ascontiguousarray(big[:2160])


def backend_throughput(backend, batches: list[np.ndarray]) -> float:
    """Images/s of ``backend.probs`` on preprocessed batches (nothing else timed)."""
    n = sum(len(b) for b in batches)
    t0 = time.perf_counter()
    for b in batches:
        backend.probs(b)
    return n / (time.perf_counter() - t0)


def tile_resize_ms(tile: np.ndarray, contract, calls: int = 1000) -> dict:
    """ms per 256 px tile to the model input: OpenCV's area resize vs edgecrack's preprocess
    (the same bytes, see ``preprocess.resize_to_contract``), timed in alternating blocks
    (:func:`edgecrack.bench.timing.interleaved`), medians of ``calls`` calls each."""
    size = (contract.width, contract.height)
    stats, _ = interleaved({"area": lambda: cv2.resize(tile, size, interpolation=cv2.INTER_AREA),
                            "preprocess": lambda: preprocess(tile, contract)}, LoopBudget(iterations=calls))
    same = bool(np.array_equal(preprocess(tile, contract)[0], cv2.resize(tile, size, interpolation=cv2.INTER_AREA)))
    return {"area_resize_ms": round(stats["area"].p50_ms, 3), "preprocess_ms": round(stats["preprocess"].p50_ms, 3),
            "calls": calls, "same_bytes": same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="Run folder or .onnx (e.g. runs/deck).")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=400, help="Frames of the 256x256 video.")
    ap.add_argument("--repeats", type=int, default=5, help="Interleaved repetitions of each measurement.")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: its own).")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "run_loop")
    args = ap.parse_args()

    images = list_images(DEFAULT_DATASET)
    images = (images * (args.frames // len(images) + 1))[: args.frames]
    tmp = Path(tempfile.mkdtemp(prefix="edgecrack-bench-run-"))
    video = deck_video(tmp / "deck.avi", images)
    load_before = os.getloadavg()

    # -- 1. end-to-end vs backend at the same batch size --------------------------------------
    sel = open_backend(args.model, "auto", threads=args.threads)
    be = sel.backend
    x = preprocess([decode_image(p) for p in images], be.manifest.input)
    batches = [x[i:i + args.batch] for i in range(0, len(x), args.batch)]
    backend_throughput(be, batches[:4])  # warm-up: first-run allocations
    backend_fps, e2e_fps, summaries = [], [], []
    for r in range(args.repeats):
        backend_fps.append(backend_throughput(be, batches))
        s = run(RunConfig(source=str(video), model=args.model, batch=args.batch, threads=args.threads,
                          logs=[str(tmp / f"e2e{r}.jsonl")], handle_signals=False))
        assert s.frames == args.frames, s
        e2e_fps.append(s.fps)
        summaries.append(s)
        print(f"repeat {r}: backend {backend_fps[-1]:.1f} img/s, end-to-end {s.fps:.1f} fps "
              f"(ratio {s.fps / backend_fps[-1]:.3f})", flush=True)
    info = be.info()
    tile_ms = tile_resize_ms(decode_image(images[0]), be.manifest.input)
    be.close()
    med_b, med_e = statistics.median(backend_fps), statistics.median(e2e_fps)
    best = summaries[int(np.argsort(e2e_fps)[len(e2e_fps) // 2])]

    # -- 2. tiled 4K frame -------------------------------------------------------------------
    big = frame_4k(images)
    sel = open_backend(args.model, "auto", threads=args.threads)
    with sel.backend as be4:
        insp = Inspector(be4, tile=256, batch=args.batch)
        insp.inspect([Frame(big, 0, "4k", time.time(), 0)])  # warm-up
        lat = []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            (res,) = insp.inspect([Frame(big, r, "4k", time.time(), r)])
            lat.append((time.perf_counter() - t0) * 1e3)
        n_tiles = res.grid.n
        stage4k = insp.timer.summary(args.repeats + 1)
    lat_med = statistics.median(lat)
    v4k = tmp / "4k.avi"
    w = cv2.VideoWriter(str(v4k), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (3840, 2160))
    for _ in range(4):
        w.write(big)
    w.release()
    s4k = run(RunConfig(source=str(v4k), model=args.model, batch=args.batch, threads=args.threads,
                        logs=[str(tmp / "4k.jsonl")], handle_signals=False))
    load_after = os.getloadavg()

    ratio = med_e / med_b
    report = {
        "machine": machine(), "load_average_before": load_before, "load_average_after": load_after,
        "backend": info, "model": args.model, "batch": args.batch, "repeats": args.repeats,
        "end_to_end": {"source": "MJPEG video, 256x256, bundled SDNET2018 deck images", "frames": args.frames,
                       "backend_images_per_s": [round(v, 2) for v in backend_fps],
                       "end_to_end_fps": [round(v, 2) for v in e2e_fps],
                       "backend_images_per_s_median": round(med_b, 2), "end_to_end_fps_median": round(med_e, 2),
                       "ratio": round(ratio, 3), "goal_ratio": 0.85, "goal_met": ratio >= 0.85,
                       "stages_median_run": best.stages, "tile_resize": tile_ms},
        "tiled_4k": {"frame": [3840, 2160], "tile": 256, "stride": 256, "edge": "shift", "tiles": n_tiles,
                     "frame_latency_ms": [round(v, 1) for v in lat], "frame_latency_ms_median": round(lat_med, 1),
                     "tiles_per_s": round(n_tiles / lat_med * 1e3, 1), "inspector_stages": stage4k,
                     "video_run": {"frames": s4k.frames, "fps": s4k.fps, "tiles_per_s": s4k.tiles_per_s,
                                   "stages": s4k.stages}},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "run_loop.json", report)
    atomic_write_text(args.out / "run_loop.md", markdown(report))
    print(markdown(report))


def markdown(r: dict) -> str:
    e, t, m = r["end_to_end"], r["tiled_4k"], r["machine"]
    st = e["stages_median_run"]
    s4 = t["video_run"]["stages"]
    rows = "\n".join(f"| {k} | {st[k].get('ms_per_frame', 0):.2f} | {s4[k].get('ms_per_frame', 0):.1f} |"
                     for k in ("capture", "preprocess", "inference", "postprocess", "sinks"))
    return f"""# Inspection loop (`edgecrack run`) benchmark

Machine: {m['cpu']}, {m['cores']} cores, onnxruntime {m['onnxruntime']}, OpenCV {m['opencv']}.
Backend: {r['backend']['backend']} ({r['backend'].get('threads')} threads), model `{r['model']}` (`{Path(r['backend']['artifact']).name}`, {r['backend'].get('precision')}), batch {r['batch']}.
Load average (1/5/15 min) before {', '.join(f'{v:.1f}' for v in r['load_average_before'])},
after {', '.join(f'{v:.1f}' for v in r['load_average_after'])}: the machine was shared, so both sides
of each comparison were measured interleaved, {r['repeats']} times, and compared by medians.

## End to end vs the backend alone (video file, 256x256 frames, one tile each)

| | median | runs |
|---|---:|---|
| backend only, preprocessed batches of {r['batch']} | {e['backend_images_per_s_median']:.1f} img/s | {', '.join(map(str, e['backend_images_per_s']))} |
| `edgecrack run` end to end (decode, preprocess, infer, JSONL log) | {e['end_to_end_fps_median']:.1f} fps | {', '.join(map(str, e['end_to_end_fps']))} |
| **ratio** (goal >= {e['goal_ratio']}) | **{e['ratio']:.3f}** | {'met' if e['goal_met'] else 'NOT met'} |

Per 256 px tile to the model input, alone (medians of {e['tile_resize']['calls']} calls each, in alternating blocks): OpenCV's area resize
{e['tile_resize']['area_resize_ms']:.3f} ms, edgecrack's preprocess {e['tile_resize']['preprocess_ms']:.3f} ms (same bytes: {'yes' if e['tile_resize']['same_bytes'] else 'NO'}).

## Tiled 4K frame (3840x2160, 256 px tiles, {t['tiles']} tiles)

- Frame latency (tile, preprocess, {t['tiles']} tiles in batches of {r['batch']}, crack map):
  median **{t['frame_latency_ms_median']:.0f} ms** ({', '.join(map(str, t['frame_latency_ms']))} ms)
- Throughput: **{t['tiles_per_s']:.1f} tiles/s**
- Whole loop on a 4K MJPEG video ({t['video_run']['frames']} frames): {t['video_run']['fps']:.2f} fps,
  {t['video_run']['tiles_per_s']:.1f} tiles/s

## Per-stage time (ms per frame; stages overlap in threads, so they do not add up to 1/fps)

| stage | 256x256 video | 4K video |
|---|---:|---:|
{rows}
"""


if __name__ == "__main__":
    main()
