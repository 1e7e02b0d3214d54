"""First start on a device: build the TensorRT engine from the shipped ONNX once, then reuse it.

A TensorRT plan only runs on the TensorRT release and GPU it was built with, so a device ships
the portable ``model.onnx`` and builds its own engine the first time it starts. The engine is
cached under a key made of everything that makes a plan valid or different:

    sha256(ONNX sha256 | TensorRT version | GPU name | compute capability | precision | calibration hash)

Later starts find the same key and reuse the plan (after checking its sidecar manifest against
this machine and the plan's bytes against the sha256 recorded when it was built; a changed plan
is removed and rebuilt). A JetPack upgrade changes the TensorRT version, hence the key: the next start
builds a new engine, and engines of this model that can no longer run here are removed, so the
device's small eMMC does not fill up with dead plans. Nothing here crashes on a mismatch: a
mismatch is a reason, and the reason is reported.

Run on a device (what ``deploy/jetson/edgecrack-start.sh`` does before ``edgecrack run``)::

    python3 -m edgecrack.engine_cache runs/deck --cache-dir /var/lib/edgecrack/engines --precision fp16

prints the artifact to run (the cached engine, or the ONNX when TensorRT cannot run here).
TensorRT and the CUDA bindings are imported lazily, only when a GPU path is taken.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .artifacts import ENGINE_SUFFIXES, EngineFacts, precision_onnx_path, resolve_artifact
from .errors import ArtifactError, ConfigError, EdgecrackError
from .io import sha256_file
from .manifest import Manifest, read_manifest, sidecar_path, verify_onnx_file
from .platform import MachineFacts, engine_matches_machine, engine_mismatch, probe_machine

__all__ = ["MachineFacts", "probe_machine", "EngineDecision", "CacheState", "engine_cache_key", "cached_engine_path",
           "mismatch_with_facts", "inspect_cache", "ensure_engine", "main"]

PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_SUFFIX = ENGINE_SUFFIXES[0]


@dataclass
class EngineDecision:
    """What :func:`ensure_engine` decided.

    Attributes:
        path: Engine to run, or None when no engine can be used here (run the ONNX instead).
        reason: Why, in words a person can act on.
        action: ``reused``, ``built`` or ``unavailable``.
        key: Cache key of the engine for this model, machine and precision (None when unavailable).
        pruned: Stale engines of this model removed from the cache (built for another
            TensorRT version or GPU, or without a readable sidecar).
        manifest: The engine's manifest when ``path`` is set.
    """

    path: Path | None
    reason: str
    action: str
    key: str | None = None
    pruned: list[Path] = field(default_factory=list)
    manifest: Manifest | None = None


@dataclass
class CacheState:
    """The cache as seen for one model, machine and precision (no TensorRT needed to compute it).

    Attributes:
        target: Where the engine for this key lives (may not exist yet).
        reusable: True when ``target`` exists and may be run as it is.
        reason: Why it is (not) reusable.
        stale: Engines of this model that cannot be used here, with the reason for each.
    """

    target: Path
    reusable: bool
    reason: str
    stale: list[tuple[Path, str]] = field(default_factory=list)


def engine_cache_key(onnx_sha256: str, machine: MachineFacts, precision: str, calib_hash: str | None = None) -> str:
    """Cache key (20 hex digits) of the engine for one model, machine and precision."""
    parts = [onnx_sha256, machine.tensorrt_version, machine.gpu_name, machine.compute_capability, precision,
             calib_hash or "-"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def cached_engine_path(cache_dir: str | Path, onnx_path: str | Path, precision: str, key: str) -> Path:
    """``<cache>/<onnx stem>.<precision>.<key>.engine`` (its manifest: the same name + ``.json``)."""
    return Path(cache_dir) / f"{Path(onnx_path).stem}.{precision}.{key}{ENGINE_SUFFIX}"


def mismatch_with_facts(manifest: Manifest, machine: MachineFacts) -> str | None:
    """Why an engine (by its manifest) cannot run on ``machine``; None when it can."""
    return engine_mismatch(EngineFacts.from_manifest(manifest), machine)


def _engine_problem(engine: Path, onnx_sha: str, precision: str, calib_hash: str | None,
                    matches: Callable[[Manifest], str | None]) -> tuple[str | None, str | None]:
    """(problem, kind) of a cached engine, from its sidecar and the plan's bytes (no TensorRT needed).

    The plan's sha256 is checked last, only for an engine that would otherwise be reused: a
    plan of the right size with one changed byte fails to deserialize (or worse, loads), so
    its size alone proves nothing.

    Kinds: None (usable), ``broken`` (no/unreadable sidecar, truncated or changed plan), ``machine``
    (another TensorRT version or GPU), ``variant`` (this model, another precision or
    calibration), ``other-model``.
    """
    side = sidecar_path(engine)
    if not side.is_file():
        return "no sidecar manifest (an interrupted build?)", "broken"
    try:
        m = read_manifest(engine)
    except ArtifactError as e:
        return f"unreadable sidecar manifest ({e.message})", "broken"
    if m.kind != "tensorrt":
        return f"its sidecar describes a {m.kind!r} artifact, not an engine", "broken"
    facts = EngineFacts.from_manifest(m)
    if facts.onnx_sha256 != onnx_sha:
        return "built from another ONNX model", "other-model"
    why = matches(m)
    if why:
        return why, "machine"
    want = facts.plan_bytes
    size = engine.stat().st_size if engine.is_file() else 0
    if size == 0 or (want is not None and size != want):
        return f"plan is truncated ({size} bytes, its sidecar says {want})", "broken"
    if facts.precision != precision:
        return f"precision {facts.precision} (wanted {precision})", "variant"
    if precision == "int8" and facts.calibration_hash != calib_hash:
        return "calibrated on another calibration set", "variant"
    want_sha = facts.plan_sha256
    if not want_sha:
        return "its sidecar records no plan sha256, so the plan cannot be verified", "broken"
    if sha256_file(engine) != want_sha:
        return "plan bytes changed since it was built (sha256 differs from its sidecar)", "broken"
    return None, None


def inspect_cache(onnx_path: str | Path, cache_dir: str | Path, precision: str, machine: MachineFacts,
                  calib_hash: str | None = None, matches: Callable[[Manifest], str | None] | None = None,
                  onnx_sha256: str | None = None) -> CacheState:
    """Decide, from files alone, whether the cache holds a usable engine and which ones are stale.

    Args:
        onnx_path: The shipped ONNX model.
        cache_dir: Engine cache folder.
        precision: ``fp32``, ``fp16`` or ``int8``.
        machine: This machine's TensorRT version and GPU.
        calib_hash: Calibration set hash (INT8).
        matches: Engine-manifest check against the machine (default: compare with ``machine``;
            :func:`ensure_engine` passes TensorRT's own
            :func:`~edgecrack.runtime.tensorrt_backend.engine_matches_machine`).
        onnx_sha256: The ONNX file's sha256 when already known.

    Returns:
        The target path, whether it can be reused and why, and the stale engines of this model
        (unusable on this machine or broken; other precisions and other models are kept).
    """
    onnx_sha = onnx_sha256 or sha256_file(onnx_path)
    check = matches or (lambda m: mismatch_with_facts(m, machine))
    key = engine_cache_key(onnx_sha, machine, precision, calib_hash)
    target = cached_engine_path(cache_dir, onnx_path, precision, key)
    cache = Path(cache_dir)
    stale: list[tuple[Path, str]] = []
    outgrown: str | None = None
    for e in sorted(cache.glob(f"{Path(onnx_path).stem}.*{ENGINE_SUFFIX}")) if cache.is_dir() else []:
        if e == target:
            continue
        why, kind = _engine_problem(e, onnx_sha, precision, calib_hash, check)
        if kind in ("machine", "broken"):
            stale.append((e, why))
            if kind == "machine":
                outgrown = outgrown or f"{e.name} was {why}"
    if not target.is_file():
        reason = f"no engine for {machine.describe()} in the cache yet"
        return CacheState(target, False, reason + (f" ({outgrown})" if outgrown else ""), stale)
    why, _ = _engine_problem(target, onnx_sha, precision, calib_hash, check)
    if why:
        return CacheState(target, False, f"cached engine {target.name} cannot be reused: {why}", stale)
    return CacheState(target, True, f"cached engine {target.name} matches {machine.describe()}", stale)


@contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    """One builder at a time per cache folder (a service and a manual run may start together)."""
    import fcntl

    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _calib_hash(calib) -> str | None:
    if calib is None:
        return None
    if hasattr(calib, "hash"):
        return str(calib.hash)
    from .calibration import load_calibration

    return load_calibration(calib).hash


def ensure_engine(onnx_path: str | Path, cache_dir: str | Path, precision: str = "fp16", calib=None, *,
                  device_index: int = 0, machine: MachineFacts | None = None,
                  matches: Callable[[Manifest], str | None] | None = None,
                  build: Callable[..., tuple[Path, Manifest]] | None = None, progress=None) -> EngineDecision:
    """Reuse the cached engine for this model on this machine, or build and cache it.

    Args:
        onnx_path: The shipped ONNX model (a run folder resolves to its ``model.onnx``).
        cache_dir: Persistent engine cache (e.g. ``/var/lib/edgecrack/engines``).
        precision: ``fp32``, ``fp16`` or ``int8``.
        calib: Calibration set folder or :class:`~edgecrack.calibration.CalibrationSource` (INT8).
        device_index: CUDA device.
        machine: This machine's facts; default: probed (TensorRT version, GPU, capability).
        matches: Engine-vs-machine check; default: ``engine_matches_machine`` from the TensorRT
            backend when probing, else a comparison with ``machine``.
        build: Engine builder with :func:`edgecrack.export.tensorrt.engine_from_onnx`'s signature
            (the default).
        progress: ``(phase, done, total)`` callback passed to the builder.

    Returns:
        :class:`EngineDecision`: ``reused`` or ``built`` with the engine path, or
        ``unavailable`` (path None) when TensorRT or a GPU is missing here.

    Raises:
        ConfigError: Unknown precision, INT8 without a calibration set.
        ArtifactError: Missing ONNX or manifest; the build failed.
        BackendUnavailable: The GPU cannot build this precision (e.g. INT8 on a Jetson Nano).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}", f"choose one of: {', '.join(PRECISIONS)}")
    onnx_path = resolve_artifact(onnx_path)
    if precision == "int8" and calib is None and not precision_onnx_path(onnx_path, "int8").is_file():
        raise ConfigError("INT8 engines need model.qdq.onnx next to model.onnx (TensorRT 10/11) or a calibration set "
                          "(TensorRT 8.x)", "ship model.qdq.onnx (edgecrack export RUN --precision int8), pass "
                          "--calib FOLDER, or use --precision fp16")
    if onnx_path.suffix != ".onnx":
        raise ArtifactError(f"{onnx_path} is not an ONNX model", "ship the run folder or its model.onnx to the device")
    om = read_manifest(onnx_path)
    if om.kind != "onnx":
        raise ArtifactError(f"{onnx_path} is a {om.kind!r} model; engines are built from the FP32 model.onnx",
                            "ship the run's model.onnx (TensorRT calibrates INT8 itself)")
    verify_onnx_file(onnx_path, om)  # an engine inherits its ONNX's manifest: refuse a tampered one here
    cache_dir = Path(cache_dir)
    if machine is None:
        machine, why = probe_machine(device_index)
        if machine is None:
            return EngineDecision(None, f"TensorRT cannot run here: {why}", "unavailable")
        if matches is None:
            matches = lambda m: engine_matches_machine(m, device_index)  # noqa: E731
    calib_hash = _calib_hash(calib) if precision == "int8" else None
    onnx_sha = sha256_file(onnx_path)
    with _locked(cache_dir):
        state = inspect_cache(onnx_path, cache_dir, precision, machine, calib_hash, matches, onnx_sha)
        pruned = []
        for p, _why in state.stale:
            for f in (p, sidecar_path(p)):
                f.unlink(missing_ok=True)
            pruned.append(p)
        key = engine_cache_key(onnx_sha, machine, precision, calib_hash)
        if state.reusable:
            return EngineDecision(state.target, state.reason, "reused", key, pruned, read_manifest(state.target))
        if state.target.exists():
            # A broken plan under this key goes before the build, so a failed build never
            # leaves it to be judged again at the next start.
            for f in (state.target, sidecar_path(state.target)):
                f.unlink(missing_ok=True)
            pruned.append(state.target)
        if build is None:
            from .export.tensorrt import engine_from_onnx as build
        path, em = build(onnx_path, state.target, precision=precision, calib=calib, progress=progress)
        return EngineDecision(Path(path), f"{state.reason}: built {Path(path).name} "
                              f"in {EngineFacts.from_manifest(em).build_seconds or '?'} s", "built", key, pruned, em)


def main(argv: list[str] | None = None) -> int:
    """``python -m edgecrack.engine_cache MODEL --cache-dir DIR``: print the artifact to run.

    Exit 0 with the engine (or, when TensorRT cannot run here, the ONNX) on stdout; the decision
    goes to stderr (the journal, under systemd). With ``--fallback-onnx`` a failed build also
    prints the ONNX; without it a failed build exits 1. ``--require-engine`` exits 1 where
    TensorRT cannot run.
    """
    ap = argparse.ArgumentParser(prog="python -m edgecrack.engine_cache",
                                 description="Build the TensorRT engine for this device once; reuse it afterwards.")
    ap.add_argument("model", help="run folder or model.onnx shipped to the device")
    ap.add_argument("--cache-dir", required=True, help="persistent engine cache folder")
    ap.add_argument("--precision", default="fp16", choices=PRECISIONS)
    ap.add_argument("--calib", default=None, help="calibration set folder (INT8)")
    ap.add_argument("--device", type=int, default=0, help="CUDA device index")
    ap.add_argument("--fallback-onnx", action="store_true", help="run the ONNX model when the engine build fails")
    ap.add_argument("--require-engine", action="store_true", help="exit 1 when TensorRT cannot run here")
    args = ap.parse_args(argv)

    def say(msg: str) -> None:
        print(f"edgecrack engine cache: {msg}", file=sys.stderr, flush=True)

    def progress(phase: str, done: int, total: int) -> None:
        if total and done == 0:
            say(f"{phase} ({total} steps)")

    try:
        onnx = resolve_artifact(args.model)
    except EdgecrackError as e:
        say(f"error: {e}")  # no model at all: nothing to fall back to
        return 1
    try:
        d = ensure_engine(onnx, args.cache_dir, args.precision, args.calib, device_index=args.device, progress=progress)
    except EdgecrackError as e:
        if not args.fallback_onnx:
            say(f"error: {e}")
            return 1
        say(f"engine build failed, running the ONNX model instead: {e}")
        print(onnx)
        return 0
    for p in d.pruned:
        say(f"removed stale engine {p.name}")
    say(f"{d.action}: {d.reason}")
    if d.path is None and args.require_engine:
        say("error: an engine is required (EDGECRACK_ENGINE=require) and none can be built here")
        return 1
    print(d.path if d.path is not None else onnx)
    return 0


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
