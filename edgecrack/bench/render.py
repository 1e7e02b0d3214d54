"""A report for people: Markdown (summary, goals, tables, environment, notes) and a PNG of the distributions.

Writing is atomic: ``bench.json``, ``bench.md`` and ``bench.png`` are each complete or absent.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..io import atomic_path, atomic_write_json, atomic_write_text
from .goals import smallest_batch
from .schema import BenchReport
from .training import training_markdown


def _f(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def report_markdown(report: BenchReport) -> str:
    """The report as Markdown: summary, goals, the main table, stages, environment, notes."""
    env = report.environment
    cpu = env.get("cpu") or {}
    v = env.get("versions") or {}
    cfg = report.config
    out = [f"# edgecrack bench: {Path(report.run).name}", "",
           f"{report.created} · edgecrack {report.edgecrack_version} · schema `{report.schema}`", "",
           "## Summary", ""]
    out += [f"- {line.strip()}" for line in report.summary.get("lines", [])]
    out += ["", "## Goals", "", "| goal | measured | target | met | definition |", "|---|---|---|---|---|"]
    for g in report.goals:
        op = "<=" if g.direction == "max" else ">="
        met = "-" if g.met is None else ("yes" if g.met else "**no**")
        val = f"{g.value:.2f}x" if g.value is not None else f"not measured ({g.detail.get('reason', '')})"
        out.append(f"| {g.name} | {val} | {op} {g.goal:g}x | {met} | {g.definition} |")
    bl = report.baseline.get("bare_onnxruntime")
    for key, what in (("cpu_pair", "The two fastest CPU artifacts side by side"), ("eager_torch", "Speed-up detail")):
        et = report.baseline.get(key)
        if et:
            out += ["", f"{what} ({et['threads']} threads, {et['method']}): {et['slow_cell']} p50 "
                        f"{et['slow']['p50_ms']:.2f} ms (n={et['slow']['n']}), {et['fast_cell']} p50 "
                        f"{et['fast']['p50_ms']:.2f} ms (n={et['fast']['n']}): {et['ratio_p50']:.2f}x."]
    if bl:
        out += ["", f"Overhead detail (batch 1, {bl['threads']} threads, {bl['method']}): bare onnxruntime "
                    f"p50 {bl['bare']['p50_ms']:.2f} ms, edgecrack Backend.infer p50 {bl['compute']['p50_ms']:.2f} ms "
                    f"({bl['ratio_compute_p50']:.3f}x), edgecrack end to end p50 {bl['e2e']['p50_ms']:.2f} ms "
                    f"({bl['ratio_e2e_p50']:.3f}x)."]
    out += ["", "## Results", "",
            "Latency is per call (one batch), in ms; throughput in images/s; memory in MiB.", "",
            "| artifact | backend | precision | size MiB | batch | compute p50 | p90 | p99 | max | images/s "
            "| e2e p50 | e2e p99 | e2e images/s | accuracy | agreement | load ms | peak mem |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in report.results:
        size = f"{c.size_bytes / 2**20:.1f}"
        if not c.ok:
            out.append(f"| {c.artifact} | {c.backend} | {c.precision} | {size} | | {c.status}: {_md(c.reason)} "
                       "| | | | | | | | | | | |")
            continue
        acc = _f(c.accuracy.accuracy, ".3f") if c.accuracy else "-"
        agr = _f(c.accuracy.agreement, ".3f") if c.accuracy else "-"
        peak = _f(c.memory.get("peak_delta_mb"), ".0f")
        for i, b in enumerate(c.batches):
            first = i == 0
            e = b.e2e
            out.append(
                f"| {c.artifact if first else ''} | {c.backend if first else ''} | {c.precision if first else ''} "
                f"| {size if first else ''} | {b.batch} | {b.compute.p50_ms:.2f} | {b.compute.p90_ms:.2f} "
                f"| {b.compute.p99_ms:.2f} | {b.compute.max_ms:.2f} | {b.compute.images_per_s:.1f} "
                f"| {_f(e.p50_ms if e else None)} | {_f(e.p99_ms if e else None)} | {_f(e.images_per_s if e else None, '.1f')} "
                f"| {acc if first else ''} | {agr if first else ''} | {_f(c.load_ms, '.0f') if first else ''} "
                f"| {peak if first else ''} |")
    measured = [c for c in report.results if c.ok and c.batches]
    if measured:
        out += ["", "### End-to-end stages (mean ms per call)", "",
                "| artifact | backend | batch | decode | preprocess | infer | postprocess | n |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for c in measured:
            for b in c.batches:
                s = b.stages_ms
                out.append(f"| {c.artifact} | {c.backend} | {b.batch} | {_f(s.get('decode'))} | {_f(s.get('preprocess'))} "
                           f"| {_f(s.get('infer'))} | {_f(s.get('postprocess'), '.3f')} | {b.e2e.n if b.e2e else '-'} |")
        out += ["", "### Accuracy", "", "| artifact | backend | n | accuracy | ROC-AUC | F1 (positive) | threshold "
                "| agreement with reference | max abs prob diff |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for c in measured:
            a = c.accuracy
            if a is None:
                continue
            out.append(f"| {c.artifact} | {c.backend} | {a.n} | {a.accuracy:.3f} | {_f(a.roc_auc, '.3f')} "
                       f"| {_f(a.f1_positive, '.3f')} | {_f(a.threshold, '.3f')} | {_f(a.agreement, '.3f')} "
                       f"| {_f(a.max_abs_prob_diff, '.2e')} |")
        out += ["", "### Backends", "", "| artifact | backend | library | device | precision | providers | threads |",
                "|---|---|---|---|---|---|---|"]
        for c in measured:
            i = c.info
            out.append(f"| {c.artifact} | {c.backend} | {i.get('library', '-')} | {i.get('device', '-')} "
                       f"| {i.get('precision', '-')} | {', '.join(i.get('providers') or []) or '-'} | {i.get('threads', '-')} |")
    if report.training:
        out += ["", training_markdown(report.training).rstrip()]
    gpus = "; ".join(f"{g.get('name')} (driver {g.get('driver')}, {g.get('memory')})" for g in env.get("gpu") or []) or "none"
    jet = env.get("jetson")
    out += ["", "## Environment", "",
            f"- CPU: {cpu.get('model', '?')}, {cpu.get('physical_cores') or '?'} physical / {cpu.get('logical_cores', '?')} "
            f"logical cores, {cpu.get('usable_cores', '?')} usable" + (f", governor {cpu['governor']}" if cpu.get("governor") else ""),
            f"- Memory: {env.get('memory_gb', '?')} GiB; OS: {env.get('os', '?')}; Python {env.get('python', '?')}",
            f"- GPU: {gpus}"]
    if jet:
        out.append(f"- Jetson: {jet.get('model')}, {jet.get('l4t')}, power mode: {_md(jet.get('power_mode') or 'unknown')}")
    out.append("- Versions: " + ", ".join(f"{k} {v[k]}" for k in ("edgecrack", "numpy", "opencv", "onnxruntime", "torch",
                                                                   "tensorrt", "pycuda") if v.get(k)))
    if v.get("onnxruntime_providers"):
        out.append(f"- onnxruntime providers: {', '.join(v['onnxruntime_providers'])}")
    if env.get("loadavg"):
        out.append(f"- Load average at start: {', '.join(f'{x:.2f}' for x in env['loadavg'])}"
                   + (f"; at end: {', '.join(f'{x:.2f}' for x in env['loadavg_end'])}" if env.get("loadavg_end") else ""))
    out += ["", "## Configuration", "", "```json", json.dumps(cfg, indent=2), "```"]
    if report.notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(out) + "\n"


def _md(s: str | None) -> str:
    return (s or "").replace("|", "\\|").replace("\n", " ")


def write_plots(report: BenchReport, path: str | Path) -> str | None:
    """Latency distribution per backend (smallest batch) and throughput vs batch, as one PNG.

    matplotlib is imported here only; without it nothing is written.

    Returns:
        None when written, else the reason the plots were skipped.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return "plots skipped: matplotlib is not installed (pip install matplotlib)"
    cells = [c for c in report.results if c.ok and c.batches]
    if not cells:
        return "plots skipped: nothing was measured"
    b0 = smallest_batch(report)
    fig = Figure(figsize=(13, 0.9 * max(3, 2 * len(cells)) + 1.5))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    data, names = [], []
    for c in cells:
        b = c.batch(b0)
        if b is None:
            continue
        data.append(b.compute.samples_ms)
        names.append(f"{c.label}\ncompute")
        if b.e2e:
            data.append(b.e2e.samples_ms)
            names.append(f"{c.label}\nend to end")
    import matplotlib

    # matplotlib 3.10 replaced vert=False by orientation="horizontal" (vert is deprecated there).
    horiz = ({"orientation": "horizontal"} if tuple(int(x) for x in matplotlib.__version__.split(".")[:2]) >= (3, 10)
             else {"vert": False})
    ax1.boxplot(data, whis=(1, 99), showmeans=False, flierprops={"markersize": 2, "alpha": 0.4}, **horiz)
    ax1.set_yticks(range(1, len(names) + 1), names, fontsize=7)
    ax1.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax1.xaxis.set_major_formatter(plain)
    ax1.xaxis.set_minor_formatter(plain)
    ax1.tick_params(axis="x", which="both", labelsize=7)
    ax1.set_xlabel(f"latency per call at batch {b0} (ms, log scale); box p25-p75, whiskers p1-p99")
    ax1.set_title("Latency distribution")
    ax1.invert_yaxis()
    for c in cells:
        bs = [b.batch for b in c.batches]
        ax2.plot(bs, [b.compute.images_per_s for b in c.batches], marker="o", label=f"{c.label} (compute)")
        if all(b.e2e for b in c.batches):
            ax2.plot(bs, [b.e2e.images_per_s for b in c.batches], marker="x", linestyle="--", label=f"{c.label} (e2e)")
    ax2.set_xscale("log", base=2)
    ticks = sorted({b.batch for c in cells for b in c.batches})
    ax2.set_xticks(ticks, [str(t) for t in ticks])
    ax2.minorticks_off()
    ax2.set_xlabel("batch size")
    ax2.set_ylabel("images / s")
    ax2.set_title("Throughput vs batch")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    cpu = report.environment.get("cpu") or {}
    fig.suptitle(f"edgecrack bench · {cpu.get('model', '?')} · {report.config.get('threads_resolved')} threads", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return None


def write_report(report: BenchReport, out_dir: str | Path) -> dict[str, Path]:
    """Write ``bench.json``, ``bench.md`` and ``bench.png`` (atomically) into ``out_dir``.

    Returns:
        The paths written, by kind (``json``, ``markdown``, ``png`` when plotted).
    """
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    why = write_plots(report, d / "bench.png")
    if why:
        report.notes = [n for n in report.notes if not n.startswith("plots skipped")] + [why]
    else:
        paths["png"] = d / "bench.png"
    paths["json"] = atomic_write_json(d / "bench.json", report.to_dict())
    paths["markdown"] = atomic_write_text(d / "bench.md", report_markdown(report))
    return paths
