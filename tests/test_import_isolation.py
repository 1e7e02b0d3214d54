"""The deploy side imports without torch (a Jetson has TensorRT/onnxruntime + OpenCV + numpy only)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

MODULES = [
    "edgecrack.runtime", "edgecrack.runtime.onnxruntime_backend", "edgecrack.runtime.tensorrt_backend",
    "edgecrack.runtime.torch_backend", "edgecrack.loop.config", "edgecrack.loop.types", "edgecrack.loop.tiling",
    "edgecrack.loop.postprocess", "edgecrack.loop.render", "edgecrack.loop.sources", "edgecrack.loop.sources.live",
    "edgecrack.loop.sources.gstreamer", "edgecrack.loop.inspector", "edgecrack.loop.workers", "edgecrack.loop.runner",
    "edgecrack.loop.sinks", "edgecrack.redact",
    "edgecrack.preprocess", "edgecrack.metrics", "edgecrack.bench", "edgecrack.calibration", "edgecrack.doctor",
    "edgecrack.evaluate", "edgecrack.export.tensorrt", "edgecrack.export.quantize", "edgecrack.manifest",
    "edgecrack.platform", "edgecrack.artifacts", "edgecrack.compare", "edgecrack.runtime.registry",
    "edgecrack.engine_cache", "edgecrack.bench.run", "edgecrack.bench.render", "edgecrack.bench.compare",
    "edgecrack.export.precision", "edgecrack.export.ortquant", "edgecrack.export.run_images", "edgecrack.export.mixed",
]

SCRIPT = textwrap.dedent("""
    import importlib, importlib.abc, json, sys

    class BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch.") or name == "torchvision" or name.startswith("torchvision."):
                raise ImportError(f"No module named {name!r} (blocked by the isolation test)", name=name)
            return None

    sys.meta_path.insert(0, BlockTorch())
    result = {}
    for mod in json.loads(sys.argv[1]):
        try:
            importlib.import_module(mod)
            result[mod] = "ok"
        except Exception as e:
            result[mod] = f"{type(e).__name__}: {e}"
    from typer.testing import CliRunner
    from edgecrack.cli import app
    r = CliRunner().invoke(app, ["--help"])
    result["cli --help"] = "ok" if r.exit_code == 0 and "build-engine" in r.output else f"exit {r.exit_code}: {r.output[-300:]}"
    from edgecrack.doctor import run_doctor
    rep = run_doctor()
    torch_check = [c for c in rep.checks if c.name == "PyTorch"][0]
    result["doctor"] = "ok" if not torch_check.ok and rep.backends["torch-cpu"] else "doctor saw torch"
    result["torch_loaded"] = "torch" in sys.modules
    print(json.dumps(result))
""")


def test_deploy_modules_import_without_torch():
    present = [m for m in MODULES if importlib.util.find_spec(m) is not None]
    missing = sorted(set(MODULES) - set(present))
    r = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(present)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    bad = {k: v for k, v in res.items() if v not in ("ok", False)}
    assert not bad, f"imports needing torch: {bad} (modules not in this build, skipped: {missing})"
    assert res["torch_loaded"] is False


# -- no import cycles ----------------------------------------------------------------------------
# Edges are every import of an edgecrack module, at module level or inside a function (a lazy
# import still couples the two modules), except under ``if TYPE_CHECKING:``. ``from pkg import
# name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``. A package's
# ``__init__`` that Python runs on the way to a submodule is not counted as an edge.

#: Modules this layer owns: none of them may be on a cycle.
ACYCLIC = {"edgecrack.platform", "edgecrack.artifacts", "edgecrack.compare", "edgecrack.metrics", "edgecrack.evaluate",
           "edgecrack.doctor", "edgecrack.engine_cache", "edgecrack.runtime", "edgecrack.runtime.registry",
           "edgecrack.export.onnx", "edgecrack.export.tensorrt", "edgecrack.export.from_run", "edgecrack.cli.bench",
           "edgecrack.cli.common", "edgecrack.cli", "edgecrack.progress", "edgecrack.jobs", "edgecrack.train.api",
           "edgecrack.train.checkpoint", "edgecrack.report", "edgecrack.report_html", "edgecrack.geo",
           "edgecrack.export.precision", "edgecrack.export.quantize", "edgecrack.export.ortquant",
           "edgecrack.export.run_images", "edgecrack.export.mixed"}

#: Cycles elsewhere in the package, known and owned by other changes: they may shrink or go, never
#: grow. None left (report <-> report_html and export.precision <-> export.quantize are gone).
KNOWN_CYCLES: list[set[str]] = []


def _import_graph() -> dict[str, set[str]]:
    import ast
    from pathlib import Path

    import edgecrack

    root = Path(edgecrack.__file__).parent
    mods: dict[str, Path] = {}
    for p in root.rglob("*.py"):
        parts = ["edgecrack", *p.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p

    def type_checking_nodes(tree: ast.AST) -> set[int]:
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
        return skip

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        skip = type_checking_nodes(tree)
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:  # edgecrack.x.y.Name -> the module that defines it
                    t = t.rpartition(".")[0]
                if t and t != name:
                    edges.add(t)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []
    counter = [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                elif nxt in on:
                    low[v] = min(low[v], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


def test_cycle_finder_finds_a_lazy_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_the_shared_layer():
    cycles = _cycles(_import_graph())
    mine = [sorted(c & ACYCLIC) for c in cycles if c & ACYCLIC]
    assert not mine, f"import cycles through {mine}: {[sorted(c) for c in cycles if c & ACYCLIC]}"
    new = [sorted(c) for c in cycles if not any(c <= k for k in KNOWN_CYCLES)]
    assert not new, f"new import cycles: {new}"


def test_train_and_export_do_not_import_each_other():
    """The torch side in layers: ``edgecrack.jobs`` runs training then export; below it, train/
    never imports export/, and export/ (like the torch runtime backend) reaches a trained network
    only through ``train.checkpoint`` and the network definition it needs."""
    graph = _import_graph()
    allowed_from_train = {"edgecrack.train.checkpoint", "edgecrack.train.model", "edgecrack.train.backbones"}
    bad = sorted(f"{m} -> {t}" for m, edges in graph.items() for t in edges
                 if (m.startswith("edgecrack.train") and t.startswith("edgecrack.export"))
                 or ((m.startswith("edgecrack.export") or m.startswith("edgecrack.runtime"))
                     and t.startswith("edgecrack.train") and t not in allowed_from_train))
    assert not bad, bad
    assert graph["edgecrack.train.checkpoint"] <= {"edgecrack.train.model", "edgecrack.train.backbones",
                                                   "edgecrack.manifest", "edgecrack.errors", "edgecrack.io"}
    assert "edgecrack.train.checkpoint" in graph["edgecrack.runtime.torch_backend"]


def test_cli_commands_are_thin_and_import_no_other_command():
    """One module per command under ``edgecrack.cli``: each imports ``cli.common`` and the library,
    never another command module (what two commands share lives in ``common``)."""
    graph = _import_graph()
    commands = {m for m in graph if m.startswith("edgecrack.cli.") and m not in ("edgecrack.cli.common",
                                                                                   "edgecrack.cli.__main__")}
    assert {"edgecrack.cli.train", "edgecrack.cli.export", "edgecrack.cli.build_engine", "edgecrack.cli.run",
            "edgecrack.cli.bench"} <= commands
    crossing = sorted(f"{m} -> {t}" for m in commands for t in graph[m] if t in commands or t == "edgecrack.cli")
    assert not crossing, crossing


#: Largest module, in lines (issue 11: no module over ~800 lines).
MAX_MODULE_LINES = 800


def test_no_module_over_800_lines():
    from pathlib import Path

    import edgecrack

    root = Path(edgecrack.__file__).parent
    big = {str(p.relative_to(root)): n for p in root.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not big, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {big}"
