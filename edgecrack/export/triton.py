"""Triton Inference Server model repositories from edgecrack ONNX models (and TensorRT engines).

When one device is not enough (many drones' streams, an archive of survey video), edgecrack
hands the model to an existing serving engine instead of growing its own. This module writes a
Triton model repository; :class:`edgecrack.runtime.triton_backend.TritonBackend` sends frames
to it with Triton's own client library.

One export writes up to three variants of the same model, side by side::

    DIR/
      edgecrack_onnx/            platform onnxruntime_onnx (GPU or CPU servers)
        config.pbtxt  labels.txt  edgecrack.json
        1/model.onnx  1/model.onnx.json
      edgecrack_trt_fp16/        platform tensorrt_plan, one plan per GPU (cc_model_filenames)
        config.pbtxt  labels.txt  edgecrack.json
        1/model.sm87.plan  1/model.sm87.plan.json
      edgecrack_python/          backend python wrapping onnxruntime (CPU-only servers)
        config.pbtxt  labels.txt  edgecrack.json
        1/model.py  1/model.onnx

Every variant takes the artifact's own contract, ``uint8 [-1, H, W, 3]`` BGR frames named
``images`` (normalisation is inside the graph), and returns ``float32 [-1, classes]``
probabilities named ``probs``, with dynamic batching. Each ``config.pbtxt`` carries the ONNX
sha256 in its ``parameters`` so a client can prove the served model is the one it holds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .. import __version__
from ..errors import ArtifactError, ConfigError
from ..io import atomic_write_json, sha256_file
from ..manifest import Manifest, read_manifest, sidecar_path

#: Parameter keys in ``config.pbtxt`` that identify an edgecrack model to clients.
PARAM_ONNX_SHA256 = "edgecrack.onnx_sha256"
PARAM_VARIANT = "edgecrack.variant"
PARAM_PRECISION = "edgecrack.precision"
PARAM_LABELS = "edgecrack.labels"
PARAM_THRESHOLD = "edgecrack.threshold"
PARAM_POSITIVE = "edgecrack.positive_label"
PARAM_CONTRACT = "edgecrack.input_contract"

#: File in each model folder holding the edgecrack manifest (the artifact's contract).
MANIFEST_FILE = "edgecrack.json"

#: Served variants, best first: a client that finds several picks the first one loaded.
VARIANT_ORDER = ("tensorrt", "onnxruntime", "python")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")


@dataclass(frozen=True)
class TritonVariant:
    """One model folder written into the repository."""

    name: str
    variant: str
    precision: str
    path: Path


def _pbtxt_str(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid protobuf text-format string


def _config_pbtxt(name: str, manifest: Manifest, max_batch: int, head: list[str], params: dict[str, str],
                  instance: str | None, queue_delay_us: int, comment: str) -> str:
    c = manifest.input
    lines = [f"# {comment}", f"name: {_pbtxt_str(name)}", *head, f"max_batch_size: {max_batch}",
             "input [", "  {", f"    name: {_pbtxt_str(manifest.input_name)}", "    data_type: TYPE_UINT8",
             f"    dims: [ {c.height}, {c.width}, 3 ]", "  }", "]",
             "output [", "  {", f"    name: {_pbtxt_str(manifest.output_name)}", "    data_type: TYPE_FP32",
             f"    dims: [ {len(manifest.labels)} ]", '    label_filename: "labels.txt"', "  }", "]",
             "version_policy: { latest: { num_versions: 1 } }",
             "dynamic_batching {", f"  max_queue_delay_microseconds: {queue_delay_us}", "}"]
    if instance:
        lines += ["instance_group [", f"  {{ kind: {instance}, count: 1 }}", "]"]
    for k, v in params.items():
        lines.append(f"parameters {{ key: {_pbtxt_str(k)} value: {{ string_value: {_pbtxt_str(v)} }} }}")
    return "\n".join(lines) + "\n"


def _common_params(manifest: Manifest, onnx_sha: str, variant: str, precision: str) -> dict[str, str]:
    return {
        PARAM_ONNX_SHA256: onnx_sha,
        PARAM_VARIANT: variant,
        PARAM_PRECISION: precision,
        PARAM_LABELS: json.dumps(manifest.labels),
        PARAM_THRESHOLD: "" if manifest.threshold is None else repr(float(manifest.threshold)),
        PARAM_POSITIVE: manifest.positive_label or "",
        PARAM_CONTRACT: json.dumps(manifest.input.to_dict(), sort_keys=True),
    }


def _check_engine(engine: Path, manifest: Manifest, onnx_sha: str) -> Manifest:
    if not engine.is_file():
        raise ArtifactError(f"TensorRT engine not found: {engine}", "build it with edgecrack build-engine MODEL.onnx")
    em = read_manifest(engine)
    if em.kind != "tensorrt":
        raise ArtifactError(f"{engine}: its manifest says {em.kind!r}, not a TensorRT engine",
                            "pass .engine/.plan files written by edgecrack build-engine")
    built_from = em.extra.get("onnx_sha256") or em.parent
    if built_from != onnx_sha:
        raise ArtifactError(f"{engine} was built from another ONNX model (sha256 {str(built_from)[:12]}..., this one "
                            f"is {onnx_sha[:12]}...)", "rebuild the engine from this model.onnx")
    if (em.labels, em.input, em.input_name, em.output_name) != (manifest.labels, manifest.input, manifest.input_name,
                                                                 manifest.output_name):
        raise ArtifactError(f"{engine}: input/output contract differs from the ONNX model's manifest",
                            "rebuild the engine from this model.onnx")
    for key in ("precision", "compute_capability", "tensorrt_version"):
        if not em.extra.get(key):
            raise ArtifactError(f"{engine}: sidecar manifest has no {key!r}", "rebuild the engine with edgecrack build-engine")
    return em


def _cc_slug(cc: str) -> str:
    return "sm" + cc.replace(".", "")


def _write_model_dir(root: Path, name: str, files: dict[str, bytes | Path | str]) -> Path:
    """Write one model folder next to the final one, then swap it in (a reader never sees half of it)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
    try:
        for rel, content in files.items():
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, dst)
            elif isinstance(content, bytes):
                dst.write_bytes(content)
            else:
                dst.write_text(content)
        os.chmod(tmp, 0o755)
        final = root / name
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=root))
            os.replace(final, old / name)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _is_edgecrack_model(path: Path, base: str) -> bool:
    """A variant folder this export owns: ``<base>_onnx|python|trt_<precision>`` with our manifest."""
    if not path.is_dir() or not path.name.startswith(base + "_") or not (path / MANIFEST_FILE).is_file():
        return False
    return re.fullmatch(r"onnx|python|trt_(fp32|fp16|int8)", path.name[len(base) + 1:]) is not None


def write_triton_repository(onnx_path: Path, out_dir: Path, engine_paths: Iterable[Path] = (), max_batch: int = 32,
                            model_name: str = "edgecrack", queue_delay_us: int = 2000,
                            python_variant: bool = True) -> Path:
    """Write (or update) a Triton model repository serving an edgecrack ONNX model.

    Writes ``<model_name>_onnx`` (ONNX Runtime), one ``<model_name>_trt_<precision>`` per
    precision among ``engine_paths`` (TensorRT plans, one file per GPU compute capability,
    selected by Triton through ``cc_model_filenames``) and ``<model_name>_python`` (Triton's
    python backend running onnxruntime on CPU). Other models in ``out_dir`` are left alone;
    earlier variants of the same ``model_name`` that this export no longer writes are removed.

    Args:
        onnx_path: FP32 (or INT8) edgecrack ``model.onnx`` with its manifest.
        out_dir: Repository root (``tritonserver --model-repository out_dir``); created if needed.
        engine_paths: TensorRT engines built from ``onnx_path`` (with sidecar manifests).
        max_batch: ``max_batch_size`` of the configs (capped per plan by its optimisation profile).
        model_name: Prefix of the model folders (letters, digits, ``_.-``).
        queue_delay_us: How long Triton waits to fill a dynamic batch.
        python_variant: Also write the python-backend variant.

    Returns:
        ``out_dir``.

    Raises:
        ArtifactError: Missing ONNX/engine, missing manifest, an engine built from another
            model, two engines for the same GPU and precision.
        ConfigError: Invalid name or batch size.
    """
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if not _NAME_RE.match(model_name):
        raise ConfigError(f"invalid Triton model name {model_name!r}",
                          "use letters, digits, '_', '.' and '-' (at most 64 characters)")
    if not 1 <= max_batch <= 4096:
        raise ConfigError(f"max batch {max_batch} is out of range", "use 1..4096, e.g. --max-batch 32")
    if not onnx_path.is_file() or onnx_path.suffix != ".onnx":
        raise ArtifactError(f"ONNX model not found: {onnx_path}", "pass a run folder's model.onnx (edgecrack export RUN)")
    if out_dir.exists() and not out_dir.is_dir():
        raise ArtifactError(f"{out_dir} exists and is not a folder", "choose another --triton folder")
    manifest = read_manifest(onnx_path)
    if manifest.output_name is None or not manifest.labels:
        raise ArtifactError(f"{onnx_path}: manifest has no output labels", "re-export the model with edgecrack export")
    onnx_sha = sha256_file(onnx_path)
    onnx_precision = manifest.extra.get("precision") or ("int8" if manifest.kind == "onnx-int8" else "fp32")
    labels_txt = "\n".join(manifest.labels) + "\n"
    manifest_json = json.dumps(manifest.to_dict(), indent=2) + "\n"
    sidecar = sidecar_path(onnx_path)
    onnx_sidecar: Path | str = sidecar if sidecar.is_file() else manifest_json
    out_dir.mkdir(parents=True, exist_ok=True)
    origin = f"written by edgecrack {__version__} from {onnx_path.name} (sha256 {onnx_sha[:16]})"
    written: list[TritonVariant] = []

    name = f"{model_name}_onnx"
    params = _common_params(manifest, onnx_sha, "onnxruntime", onnx_precision)
    cfg = _config_pbtxt(name, manifest, max_batch, ['platform: "onnxruntime_onnx"'], params, None, queue_delay_us, origin)
    p = _write_model_dir(out_dir, name, {"config.pbtxt": cfg, "labels.txt": labels_txt, MANIFEST_FILE: manifest_json,
                                          "1/model.onnx": onnx_path, "1/model.onnx.json": onnx_sidecar})
    written.append(TritonVariant(name, "onnxruntime", onnx_precision, p))

    groups: dict[str, dict[str, tuple[Path, Manifest]]] = {}
    for e in engine_paths:
        e = Path(e)
        em = _check_engine(e, manifest, onnx_sha)
        prec, cc = str(em.extra["precision"]), str(em.extra["compute_capability"])
        same = groups.setdefault(prec, {})
        if cc in same:
            other = same[cc][0]
            raise ArtifactError(f"two {prec} engines for compute capability {cc}: {other} and {e}",
                                "a Triton model serves one plan per GPU architecture (and one TensorRT version): "
                                "pass one engine per GPU, or write separate repositories")
        same[cc] = (e, em)
    for prec, by_cc in sorted(groups.items()):
        name = f"{model_name}_trt_{prec}"
        trt_versions = sorted({str(em.extra["tensorrt_version"]) for _, em in by_cc.values()})
        if len({tuple(v.split(".")[:3]) for v in trt_versions}) > 1:
            raise ArtifactError(f"{prec} engines come from different TensorRT versions ({', '.join(trt_versions)})",
                                "a Triton server runs one TensorRT version: build every engine with the version "
                                "of the server's container")
        cap = max_batch
        files: dict[str, bytes | Path | str] = {"labels.txt": labels_txt, MANIFEST_FILE: manifest_json}
        head = ['platform: "tensorrt_plan"']
        for cc, (e, em) in sorted(by_cc.items()):
            plan = f"model.{_cc_slug(cc)}.plan"
            files[f"1/{plan}"] = e
            files[f"1/{plan}.json"] = json.dumps(em.to_dict(), indent=2) + "\n"
            prof = em.extra.get("batch_profile") or {}
            if prof.get("max"):
                cap = min(cap, int(prof["max"]))
            if int(prof.get("min", 1)) > 1:
                raise ArtifactError(f"{e} is a static-batch engine (batch {prof['min']}), e.g. built for DLA",
                                    "build a dynamic-batch GPU engine for Triton (without --dla-core)")
            head.append(f"cc_model_filenames {{ key: {_pbtxt_str(cc)} value: {_pbtxt_str(plan)} }}")
        if len(by_cc) == 1:
            # One plan: also the default, so Triton loads it even when it spells the GPU's
            # capability differently; with several plans a GPU without one fails loudly.
            only = next(iter(by_cc))
            head.append(f"default_model_filename: {_pbtxt_str(f'model.{_cc_slug(only)}.plan')}")
        params = _common_params(manifest, onnx_sha, "tensorrt", prec)
        params["edgecrack.tensorrt_version"] = trt_versions[0]
        params["edgecrack.compute_capabilities"] = ",".join(sorted(by_cc))
        files["config.pbtxt"] = _config_pbtxt(name, manifest, cap, head, params, "KIND_GPU", queue_delay_us, origin)
        written.append(TritonVariant(name, "tensorrt", prec, _write_model_dir(out_dir, name, files)))

    if python_variant:
        name = f"{model_name}_python"
        params = _common_params(manifest, onnx_sha, "python", onnx_precision)
        params["intra_op_threads"] = "0"
        cfg = _config_pbtxt(name, manifest, max_batch, ['backend: "python"'], params, "KIND_CPU", queue_delay_us, origin)
        p = _write_model_dir(out_dir, name, {"config.pbtxt": cfg, "labels.txt": labels_txt, MANIFEST_FILE: manifest_json,
                                              "1/model.py": _PYTHON_MODEL, "1/model.onnx": onnx_path})
        written.append(TritonVariant(name, "python", onnx_precision, p))

    keep = {v.name for v in written}
    for d in out_dir.iterdir():
        # Variants of this model name from an earlier export (e.g. a TensorRT precision no
        # longer shipped) would otherwise keep serving a stale model.
        if d.name not in keep and _is_edgecrack_model(d, model_name):
            shutil.rmtree(d)
    atomic_write_json(out_dir / f".{model_name}.edgecrack-export.json", {
        "edgecrack_version": __version__, "onnx": str(onnx_path), "onnx_sha256": onnx_sha, "max_batch": max_batch,
        "variants": [{"name": v.name, "variant": v.variant, "precision": v.precision} for v in written]})
    return out_dir


__all__ = ["write_triton_repository", "TritonVariant", "VARIANT_ORDER", "MANIFEST_FILE", "PARAM_ONNX_SHA256",
           "PARAM_VARIANT", "PARAM_PRECISION", "PARAM_LABELS", "PARAM_THRESHOLD", "PARAM_POSITIVE", "PARAM_CONTRACT"]
