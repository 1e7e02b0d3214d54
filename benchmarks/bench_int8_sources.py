"""Where the default model's INT8 error comes from, and what the classifier head can do about it.

Run: ``.venv/bin/python benchmarks/bench_int8_sources.py`` (about 15 minutes on a 2-core CPU).
Writes ``benchmarks/int8/sources.json`` and ``sources.md``.

All on the 400 bundled deck images at the default contract (224 px, EfficientNet-Lite0 trunk):

1. **Which quantization points matter.** TensorRT-style INT8 simulated in PyTorch (symmetric int8,
   per-channel weights with BatchNorm folded in, activation ranges = max |x| over 64 calibration
   images), switched on for one group of points at a time. Read out through one linear head
   (standardised ridge fitted on all 400 images' FP32 features): signal-to-quantization-noise
   ratio of the pooled features, mean |change| of the cracked-class logit, top-1 agreement.
2. **What the head can do.** 5-fold CV x 3 seeds of head variants trained on the 8 dihedral
   views: FP32 accuracy, and top-1 agreement of the same head on features of the real
   onnxruntime Q/DQ trunk, all INT8, in the settings of ``edgecrack export --precision int8``
   (:func:`edgecrack.export.precision.tensorrt_qdq_settings`), run in reference arithmetic.
"""

from __future__ import annotations

import argparse
import copy
import io
import logging
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgecrack.io import atomic_write_json, atomic_write_text  # noqa: E402

SIZE, CALIB, SEEDS, L2 = 224, 64, (0, 1, 2), 0.1
TAP = 8  # end of Lite0's first stride-16 stage (80 channels)


def _fq(t, amax: float):
    """Symmetric int8 fake quantization with range ``amax`` (a tensor for per-channel)."""
    import torch

    s = amax / 127.0
    return torch.clamp(torch.round(t / s), -127, 127) * s


def pooled(units, h, tap: int | None = None):
    """The units' final map average-pooled, then unit ``tap``'s map average- and max-pooled (if given)."""
    import torch

    taps = []
    for k, u in enumerate(units):
        h = u(h)
        if k == tap:
            taps += [h.mean((2, 3)), h.amax((2, 3))]
    return torch.cat([h.mean((2, 3)), *taps], 1)


class Sim:
    """The trunk with fake quantization switched on at chosen points."""

    def __init__(self, units, x, cal):
        self.units, self.x, self.cal = units, x, cal

    def features(self, units=None, x=None, tap: int | None = None):
        import torch

        units = self.units if units is None else units
        x = self.x if x is None else x
        with torch.inference_mode():
            return torch.cat([pooled(units, x[i:i + 50], tap) for i in range(0, len(x), 50)]).numpy()

    def with_weights(self, units_idx: set[int] | None = None):
        """Copy with per-channel int8 weights (BatchNorm folded) in the given units (None: all)."""
        import torch

        from edgecrack.train.backbones import _ConvBN

        u = copy.deepcopy(self.units)
        for name, m in u.named_modules():
            if not isinstance(m, _ConvBN) or (units_idx is not None and int(name.split(".")[0]) not in units_idx):
                continue
            conv = next(c for c in m if isinstance(c, torch.nn.Conv2d))
            bn = next(c for c in m if isinstance(c, torch.nn.BatchNorm2d))
            g = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().view(-1, 1, 1, 1)
            wf = conv.weight.detach() * g
            amax = wf.abs().amax((1, 2, 3), keepdim=True).clamp_min(1e-12)
            conv.weight.data = _fq(wf, amax) / torch.where(g == 0, torch.ones_like(g), g)
        return u

    def with_activations(self, units, kinds: tuple[str, ...], only: int | None = None, amax: dict | None = None):
        """Quantize activation points: ``clip`` (ReLU6 outputs), ``proj`` (projection outputs),
        ``res`` (residual sums); ranges from the calibration images unless given. Returns (units, ranges)."""
        import torch

        from edgecrack.train.backbones import MBConv

        u = copy.deepcopy(units)
        pts = []
        for i, unit in enumerate(u):
            if only is not None and i != only:
                continue
            for name, m in unit.named_modules():
                if ("clip" in kinds and isinstance(m, torch.nn.ReLU6)) or ("proj" in kinds and name.endswith("project")):
                    pts.append((f"{i}.{name}", m))
            if "res" in kinds and isinstance(unit, MBConv) and unit.residual:
                pts.append((f"{i}", unit))
        ranges = dict(amax or {})
        if not amax:
            hooks = [m.register_forward_hook(lambda mod, inp, out, k=k: ranges.__setitem__(
                k, max(ranges.get(k, 0.0), float(out.abs().max())))) for k, m in pts]
            self.features(u, self.x[self.cal])
            for h in hooks:
                h.remove()
        for k, m in pts:
            m.register_forward_hook(lambda mod, inp, out, a=ranges[k]: _fq(out, a))
        return u, ranges


def _fit(X: np.ndarray, y: np.ndarray, l2: float):
    """Ridge-penalised logistic regression (L-BFGS), two classes."""
    import torch

    Xt, yt = torch.from_numpy(X).double(), torch.from_numpy(y).long()
    W = torch.zeros(2, X.shape[1], dtype=torch.double, requires_grad=True)
    b = torch.zeros(2, dtype=torch.double, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=300, line_search_fn="strong_wolfe", tolerance_grad=1e-7)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(Xt @ W.T + b, yt) + l2 * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach().numpy(), b.detach().numpy()


def _trunk_onnx(units, contract, tap: int) -> bytes:
    """The trunk as exported (in-graph normalisation first), returning final avg + the tap's avg/max."""
    import onnx
    import torch

    from edgecrack.export.graph import fold_constants
    from edgecrack.train.model import Normalize

    class Trunk(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.normalize, self.trunk = Normalize(contract), units

        def forward(self, x):
            return pooled(self.trunk, self.normalize(x), tap)

    buf = io.BytesIO()
    torch.onnx.export(Trunk().eval(), (torch.zeros(1, SIZE, SIZE, 3, dtype=torch.uint8),), buf, input_names=["images"],
                      output_names=["f"], dynamic_axes={"images": {0: "n"}, "f": {0: "n"}}, opset_version=17,
                      dynamo=False)
    return fold_constants(onnx.load_from_string(buf.getvalue())).SerializeToString()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "int8")
    a = ap.parse_args()
    import warnings

    import onnx
    import torch
    from onnxruntime.quantization import quantize_static

    from edgecrack.data import discover, kfold_indices
    from edgecrack.export.ortquant import float_nodes, quiet_root_logger, session
    from edgecrack.export.precision import TENSORRT_QDQ_OPS, tensorrt_qdq_settings
    from edgecrack.platform import machine_summary
    from edgecrack.preprocess import InputContract, normalize_reference, preprocess_files
    from edgecrack.train.backbones import load_backbone
    from edgecrack.train.bottleneck import DIHEDRAL as VIEWS

    warnings.simplefilter("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    t_start = time.perf_counter()
    ds = discover(ROOT / "edgecrack" / "data" / "sdnet2018-deck")
    paths = [s.path for s in ds.samples]
    labels = [s.label for s in ds.samples]
    y = np.array([0 if lab == "CD" else 1 for lab in labels])  # 0 = cracked
    contract = InputContract(height=SIZE, width=SIZE)
    X8 = preprocess_files(paths, contract)  # uint8 NHWC BGR, what the deployed graph gets

    def normalise(batch: np.ndarray):
        return torch.from_numpy(normalize_reference(batch, contract))

    x = normalise(X8)
    rng = np.random.default_rng(0)
    cal = np.concatenate([rng.choice(np.flatnonzero(y == k), CALIB // 2, replace=False) for k in (0, 1)])
    units = load_backbone("efficientnet_lite0").units.eval()
    sim = Sim(units, x, cal)

    # ---- part 1: quantization points, read out through one head -------------------------
    f0 = sim.features()
    mu, sd = f0.mean(0), f0.std(0) + 1e-6
    W, b = _fit((f0 - mu) / sd, y, L2)

    def cracked_logit(f):
        z = ((f - mu) / sd) @ W.T + b
        return z[:, 0] - z[:, 1]

    l0 = cracked_logit(f0)
    points = []

    def point(name: str, f: np.ndarray) -> None:
        err = f - f0
        row = {"points": name, "sqnr_db": round(float(10 * np.log10((f0 ** 2).sum() / max((err ** 2).sum(), 1e-30))), 1),
               "logit_shift": round(float(np.abs(cracked_logit(f) - l0).mean()), 3),
               "agreement": round(float((np.sign(cracked_logit(f)) == np.sign(l0)).mean()), 4)}
        points.append(row)
        print(f"{name:48s} SQNR {row['sqnr_db']:5.1f} dB  |dlogit| {row['logit_shift']:.3f}  agree {row['agreement']:.3f}",
              flush=True)

    point("input (normalised pixels)", sim.features(x=_fq(x, float(x.abs().max()))))
    point("weights, all units", sim.features(sim.with_weights()))
    stem_u, stem_r = sim.with_activations(units, ("clip",), only=0)
    point("stem output (ReLU6) alone", sim.features(stem_u))
    for kinds, label in ((("clip",), "every ReLU6 output"), (("proj",), "every projection output"),
                         (("res",), "every residual sum"), (("clip", "proj", "res"), "every activation")):
        point(label, sim.features(sim.with_activations(units, kinds)[0]))
    every_but_stem, _ = sim.with_activations(sim.with_weights(set(range(1, len(units)))), ("clip", "proj", "res"))
    every_but_stem[0] = copy.deepcopy(units[0])  # float stem, float input
    allq, _ = sim.with_activations(sim.with_weights(), ("clip", "proj", "res"))
    xq = _fq(x, float(x.abs().max()))
    point("everything (input, weights, activations)", sim.features(allq, x=xq))
    point("everything but the input and the stem", sim.features(every_but_stem))
    for amax in (4.0, 3.0):
        u, _ = sim.with_activations(units, ("clip",), only=0, amax={"0.3": amax})
        point(f"stem output alone, range clipped to {amax:g}", sim.features(u))
    # the stem output's distribution and how much the trunk amplifies its quantization noise
    acts = []
    h = units[0].register_forward_hook(lambda m, i, o: acts.append(o.detach()))
    sim.features(x=x[cal])
    h.remove()
    s0 = torch.cat(acts)
    sample = s0.flatten()[::97]
    stem = {"range": round(stem_r["0.3"], 3), "zeros": round(float((s0 == 0).float().mean()), 3),
            "percentiles": {str(q): round(float(torch.quantile(sample, q)), 3) for q in (0.5, 0.9, 0.99)},
            "sqnr_at_stem_db": round(float(10 * np.log10((s0 ** 2).sum() / ((_fq(s0, stem_r["0.3"]) - s0) ** 2).sum())), 1)}

    # ---- part 2: head variants against the real onnxruntime Q/DQ trunk -------------------
    def view_features(noise_step: float = 0.0, draws: int = 1, views=tuple(VIEWS)) -> np.ndarray:
        out = []
        for _ in range(draws):
            u = copy.deepcopy(units)
            if noise_step:
                u[0].register_forward_hook(lambda m, i, o: o + (torch.rand_like(o) - 0.5) * noise_step)
            out += [sim.features(u, x=normalise(np.stack([VIEWS[v](im) for im in X8])), tap=TAP) for v in views]
        return np.stack(out, 1)

    t0 = time.perf_counter()
    clean = view_features()  # [N, 8 views, final 1280 + tap 160]
    noisy = view_features(noise_step=6.0 / 127, draws=2, views=("id",))
    print(f"features: {time.perf_counter() - t0:.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="edgecrack-int8src-") as t:
        tmp = Path(t)
        (tmp / "fp32.onnx").write_bytes(_trunk_onnx(units, contract, TAP))
        model = onnx.load(str(tmp / "fp32.onnx"))

        class Reader:
            def __init__(self):
                self.it = iter([X8[cal[i:i + 8]] for i in range(0, len(cal), 8)])

            def get_next(self):
                nxt = next(self.it, None)
                return None if nxt is None else {"images": nxt}

        always = float_nodes(model)
        quantizable = [n.name for n in model.graph.node if n.op_type in TENSORRT_QDQ_OPS and n.name not in set(always)]
        units_of: dict[str, list[str]] = {}
        for n in quantizable:  # the trunk's units are called one by one here: /trunk.N/...
            hit = re.match(r"^/trunk\.(\d+)/", n)
            if hit:
                units_of.setdefault(f"trunk.{hit.group(1)}", []).append(n)
        islands = {"all": [], "stem": units_of["trunk.0"] + units_of["trunk.1"]}
        for name, extra in islands.items():
            with quiet_root_logger():
                quantize_static(str(tmp / "fp32.onnx"), str(tmp / f"qdq-{name}.onnx"), Reader(),
                                nodes_to_exclude=always + extra, **tensorrt_qdq_settings())

        def run(path: Path) -> np.ndarray:
            s = session(path.read_bytes(), reference=True)
            return np.concatenate([s.run(None, {"images": X8[i:i + 32]})[0] for i in range(0, len(X8), 32)])

        ort32 = run(tmp / "fp32.onnx")
        ort8 = {name: run(tmp / f"qdq-{name}.onnx") for name in islands}
    n_final = 1280
    variants = {
        "final features, average pooled (default head)": (np.r_[0:n_final], False),
        "+ stem-noise training rows (2 draws, +-half an INT8 step)": (np.r_[0:n_final], True),
        f"+ trunk.{TAP} output, average and max pooled": (np.r_[0:clean.shape[2]], False),
    }
    heads = []
    for name, (cols, with_noise) in variants.items():
        acc, agree = [], {k: [] for k in ort8}
        for seed in SEEDS:
            for fold in kfold_indices(labels, 5, seed):
                tr = np.setdiff1d(np.arange(len(y)), fold)
                rows = [clean[tr][:, :, cols]] + ([noisy[tr][:, :, cols]] if with_noise else [])
                Xtr = np.concatenate(rows, 1).reshape(-1, len(cols))
                ytr = np.repeat(y[tr], sum(r.shape[1] for r in rows))
                m_, s_ = clean[tr][:, :, cols].reshape(-1, len(cols)).mean(0), clean[tr][:, :, cols].reshape(-1, len(cols)).std(0) + 1e-6
                Wv, bv = _fit((Xtr - m_) / s_, ytr, L2)
                d32 = (((ort32[fold][:, cols] - m_) / s_) @ Wv.T + bv).argmax(1)
                acc.append((d32 == y[fold]).mean())
                for k, f8 in ort8.items():
                    agree[k].append(((((f8[fold][:, cols] - m_) / s_) @ Wv.T + bv).argmax(1) == d32).mean())
        heads.append({"head": name, "cv_accuracy": round(float(np.mean(acc)), 3),
                      "cv_accuracy_std": round(float(np.std(acc)), 3),
                      "int8_agreement": round(float(np.mean(agree["all"])), 4),
                      "int8_agreement_stem_float": round(float(np.mean(agree["stem"])), 4)})
        print(heads[-1], flush=True)

    res = {"machine": machine_summary(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "images": len(y), "calibration_images": CALIB, "size": SIZE, "l2": L2, "tap": TAP,
           "points": points, "stem_output": stem, "heads": heads,
           "seconds": round(time.perf_counter() - t_start, 1)}
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out / "sources.json", res)
    atomic_write_text(a.out / "sources.md", render(res))
    print(render(res))


def render(r: dict) -> str:
    m = r["machine"]
    st = r["stem_output"]
    lines = [
        "# Where the default model's INT8 error comes from",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores. Date {r['date']}. {r['images']} bundled deck images at "
        f"{r['size']} px, EfficientNet-Lite0 trunk; ranges from {r['calibration_images']} calibration images. "
        f"Produced by `benchmarks/bench_int8_sources.py` in {r['seconds']:.0f} s.",
        "",
        "## 1. Which quantization points move the decision",
        "",
        "TensorRT-style INT8 simulated in PyTorch (symmetric int8, per-channel weights with BatchNorm folded, "
        "max-|x| activation ranges), switched on for one group of points at a time and read out through one "
        "linear head fitted on the FP32 features (standardised ridge, L2 "
        f"{r['l2']:g}). Agreement: sign of the cracked-class logit vs FP32 on all {r['images']} images.",
        "",
        "| quantized points | feature SQNR | mean abs. logit change | top-1 agreement |",
        "|---|---|---|---|",
        *[f"| {p['points']} | {p['sqnr_db']:.1f} dB | {p['logit_shift']:.3f} | {p['agreement'] * 100:.1f} % |"
          for p in r["points"]],
        "",
        f"The stem's output (ReLU6, range {st['range']:g}, so one INT8 step is {st['range'] / 127:.3f}) is spread "
        f"over the whole range: median {st['percentiles']['0.5']:g}, 90th percentile {st['percentiles']['0.9']:g}, "
        f"99th {st['percentiles']['0.99']:g}, {st['zeros'] * 100:.0f} % exact zeros. Its quantization noise is "
        f"{st['sqnr_at_stem_db']:.1f} dB below the signal there; by the pooled features the same noise is "
        f"{r['points'][2]['sqnr_db']:.1f} dB below: the trunk amplifies it by "
        f"{st['sqnr_at_stem_db'] - r['points'][2]['sqnr_db']:.0f} dB on these low-contrast deck textures. A "
        "narrower range clips the many large values and is worse (rows 'range clipped to'), so a calibration method "
        "cannot buy this back: these deck features are sensitive to small perturbations early in the trunk.",
        "",
        "Per backbone unit, in the real Q/DQ graph: the one-in sensitivities of `benchmarks/int8/int8.md`.",
        "",
        "## 2. What the head can do",
        "",
        f"5-fold CV x {len(SEEDS)} seeds, heads trained on the 8 dihedral views (standardised ridge, L2 {r['l2']:g}); "
        "FP32 accuracy, and top-1 agreement of the same head on the real onnxruntime Q/DQ trunk (all INT8, "
        "`tensorrt_qdq_settings`, reference arithmetic) vs the FP32 ONNX trunk. The calibration images are "
        "among the CV images.",
        "",
        "| head | CV accuracy (FP32) | INT8 agreement, all INT8 | INT8 agreement, stem and first block float |",
        "|---|---|---|---|",
        *[f"| {h['head']} | {h['cv_accuracy']:.3f} ± {h['cv_accuracy_std']:.3f} | {h['int8_agreement'] * 100:.1f} % | "
          f"{h['int8_agreement_stem_float'] * 100:.1f} % |" for h in r["heads"]],
        "",
        f"With the default head, keeping the stem and the first block float in the real graph moves agreement from "
        f"{r['heads'][0]['int8_agreement'] * 100:.1f} % to {r['heads'][0]['int8_agreement_stem_float'] * 100:.1f} %: "
        "the stem output is the largest single source, but weights and the other early activations add up, so "
        "no single float tensor reaches 99 %; the search of `export --precision int8` keeps more units float "
        "(`benchmarks/int8/int8.md`). Differences under ~3 accuracy points are noise on 400 images (fold std above).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
