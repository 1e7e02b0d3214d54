"""The artifact contract: what every checkpoint, ONNX model and engine says about itself.

A manifest travels with its artifact twice: as a sidecar JSON (``model.onnx.json``,
``model.fp16.engine.json``, ``manifest.json`` in a run folder) and, for ONNX files, inside
``metadata_props`` under the key ``edgecrack.manifest``. Engine plans are never modified:
their manifest lives only in the sidecar.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import MANIFEST_SCHEMA, __version__
from .errors import ArtifactError
from .io import atomic_write_json
from .preprocess import InputContract

METADATA_KEY = "edgecrack.manifest"
#: Artifact kinds this release writes and reads.
KINDS = ("checkpoint", "onnx", "onnx-int8", "tensorrt")
#: ``extra["format"]`` of a TensorRT-style Q/DQ INT8 ONNX (``export --precision int8``): made for
#: TensorRT's arithmetic, so a CPU runs it as written (see the onnxruntime backend).
QDQ_TENSORRT = "qdq-tensorrt"
#: Fields whose disagreement between two copies of one manifest changes answers.
DECISION_FIELDS = ("kind", "labels", "positive_label", "threshold", "input", "input_name", "output_name")
_FIX = "restore the artifact's manifest as it was exported, or export the artifact again (edgecrack export RUN)"


@dataclass
class Manifest:
    """Everything needed to run and trust an artifact.

    Attributes:
        kind: ``checkpoint``, ``onnx``, ``onnx-int8``, ``tensorrt``.
        labels: Class names in output order.
        positive_label: The "cracked" class the threshold applies to (binary models).
        threshold: Decision threshold on the positive class probability.
        input: The input contract (see :class:`edgecrack.preprocess.InputContract`).
        input_name: Graph input name.
        output_name: Graph output name (softmax probabilities ``float32 [N, len(labels)]``).
        backbone: Backbone registry name.
        weights_id: Pretrained weights identity (file name and sha256 prefix).
        fine_tune_blocks: Backbone units trained on top of the frozen trunk.
        head: Head architecture (pooling, dropout) needed to rebuild the network.
        data_fingerprint: Hash of the training images (bytes) and their labels.
        metrics: Headline metrics (validation / test).
        versions: Library versions that produced the artifact.
        parent: sha256 of the artifact this one was made from (ONNX for an engine).
        extra: Kind-specific fields (engine: TensorRT version, GPU, precision, ...).
        schema: Manifest schema version.
        edgecrack_version: edgecrack release that wrote it.
    """

    kind: str
    labels: list[str]
    positive_label: str | None
    threshold: float | None
    input: InputContract
    input_name: str = "images"
    output_name: str = "probs"
    backbone: str = ""
    weights_id: str = ""
    fine_tune_blocks: int = 0
    head: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    parent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema: int = MANIFEST_SCHEMA
    edgecrack_version: str = __version__

    @property
    def positive_index(self) -> int | None:
        if self.positive_label is None:
            return None
        return self.labels.index(self.positive_label)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input"] = self.input.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<manifest>") -> "Manifest":
        """Build a manifest from its JSON form, after :func:`validate_manifest_dict`.

        Raises:
            ArtifactError: Not a manifest, one from a newer edgecrack, or invalid fields.
        """
        validate_manifest_dict(d, source)
        d = dict(d)
        d["input"] = InputContract.from_dict(d["input"])
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as e:  # a required field is absent
            raise ArtifactError(f"{source}: manifest is missing a field ({e})", _FIX) from None

    def with_kind(self, kind: str, **changes: Any) -> "Manifest":
        d = self.to_dict()
        d.update(kind=kind, **changes)
        d["extra"] = dict(changes.get("extra", {}))
        return Manifest.from_dict(d)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _input_problems(c: Any) -> list[str]:
    if not isinstance(c, dict):
        return [f"input must be an object (the input contract), got {type(c).__name__}"]
    out = []
    for k in ("height", "width"):
        v = c.get(k)
        if not _is_int(v) or not 8 <= v <= 8192:
            out.append(f"input.{k} must be an integer pixel count in 8..8192, got {v!r}")
    wants = {"color": ("BGR", "RGB"), "dtype": ("uint8",), "layout": ("NHWC",), "resize": ("stretch",)}
    for k, allowed in wants.items():
        if k in c and c[k] not in allowed:
            out.append(f"input.{k} must be {' or '.join(allowed)}, got {c[k]!r}")
    for k in ("mean", "std"):
        v = c.get(k)
        if v is None:
            continue
        if not isinstance(v, (list, tuple)) or len(v) != 3 or not all(_is_number(x) for x in v):
            out.append(f"input.{k} must be three numbers, got {v!r}")
        elif k == "std" and not all(x > 0 for x in v):
            out.append(f"input.std must be positive, got {v!r}")
    return out


def validate_manifest_dict(d: Any, source: str = "<manifest>") -> None:
    """Check a manifest's JSON form: types, ranges and consistency, before anything trusts it.

    Every manifest read (sidecar, ONNX ``metadata_props``, checkpoint metadata) goes through
    here, so a hand-edited or damaged manifest is refused with what is wrong instead of
    silently changing answers (``threshold: 5.0`` would never flag a crack) or failing later
    with a traceback.

    Raises:
        ArtifactError: Not an object; schema missing, invalid or newer than this release; any
            field of the wrong type or out of range. The message lists every problem.
    """
    if not isinstance(d, dict):
        raise ArtifactError(f"{source}: manifest is not a JSON object", _FIX)
    schema = d.get("schema")
    if _is_int(schema) and schema > MANIFEST_SCHEMA:
        raise ArtifactError(
            f"{source}: manifest schema {schema} was written by a newer edgecrack "
            f"({d.get('edgecrack_version', '?')}); this is {__version__} (schema {MANIFEST_SCHEMA})",
            "upgrade edgecrack (pip install -U edgecrack) or re-export the artifact with this version",
        )
    bad: list[str] = []
    if not _is_int(schema) or schema < 1:
        bad.append(f"schema must be an integer 1..{MANIFEST_SCHEMA}, got {schema!r}")
    if d.get("kind") not in KINDS:
        bad.append(f"kind must be one of {', '.join(KINDS)}, got {d.get('kind')!r}")
    labels = d.get("labels")
    if (not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) and x for x in labels)
            or len(set(labels)) != len(labels)):
        bad.append(f"labels must be a list of at least two distinct non-empty names, got {labels!r}")
        labels = None
    pos = d.get("positive_label")
    if pos is not None and (not isinstance(pos, str) or (labels is not None and pos not in labels)):
        bad.append(f"positive_label must be one of the labels {labels}, got {pos!r}")
    thr = d.get("threshold")
    if thr is not None:
        if not _is_number(thr) or not 0 < thr < 1:
            bad.append(f"threshold must be a number strictly between 0 and 1, got {thr!r}")
        elif pos is None:
            bad.append("threshold is set but positive_label is not (which class does it apply to?)")
    bad += _input_problems(d.get("input"))
    for k in ("input_name", "output_name"):
        if k in d and (not isinstance(d[k], str) or not d[k]):
            bad.append(f"{k} must be a non-empty name, got {d[k]!r}")
    if "fine_tune_blocks" in d and (not _is_int(d["fine_tune_blocks"]) or d["fine_tune_blocks"] < 0):
        bad.append(f"fine_tune_blocks must be an integer >= 0, got {d['fine_tune_blocks']!r}")
    for k in ("head", "metrics", "versions", "extra"):
        if k in d and not isinstance(d[k], dict):
            bad.append(f"{k} must be an object, got {type(d[k]).__name__}")
    units = d["head"].get("backbone_units") if isinstance(d.get("head"), dict) else None
    if units is not None and (not _is_int(units) or units < 1):
        bad.append(f"head.backbone_units must be an integer >= 1, got {units!r}")
    for k in ("backbone", "weights_id", "data_fingerprint"):
        if k in d and not isinstance(d[k], str):
            bad.append(f"{k} must be a string, got {d[k]!r}")
    if d.get("parent") is not None and not isinstance(d["parent"], str):
        bad.append(f"parent must be a sha256 string or null, got {d['parent']!r}")
    if bad:
        raise ArtifactError(f"{source}: invalid manifest: " + "; ".join(bad), _FIX)


def manifest_disagreements(a: Manifest, b: Manifest) -> list[str]:
    """Decision fields (:data:`DECISION_FIELDS`) on which two copies of a manifest differ."""
    out = []
    for k in DECISION_FIELDS:
        x, y = getattr(a, k), getattr(b, k)
        if k == "input":
            x, y = x.to_dict(), y.to_dict()
        if k == "threshold" and x is not None and y is not None:
            same = math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
        else:
            same = x == y
        if not same:
            out.append(f"{k} {x!r} vs {y!r}")
    return out


def check_onnx_manifest(manifest: Manifest, embedded: Manifest | None, inputs: list[tuple[str, list, str]],
                        outputs: list[tuple[str, list, str]], source: str) -> None:
    """Refuse an ONNX model whose manifest disagrees with the model itself.

    Args:
        manifest: The manifest in use (the sidecar when there is one).
        embedded: The manifest inside the ONNX file's ``metadata_props`` (None when absent).
        inputs: Graph inputs as ``(name, shape, type)``; shape entries are ints or symbolic names.
        outputs: Graph outputs, same form.
        source: The ONNX file, for the message.

    Raises:
        ArtifactError: The sidecar disagrees with the embedded manifest (labels swapped,
            another threshold, another input size), or the manifest disagrees with the graph
            (input name, uint8 NHWC size, number of outputs).
    """
    bad = []
    if embedded is not None:
        diff = manifest_disagreements(manifest, embedded)
        if diff:
            raise ArtifactError(
                f"{source}: the sidecar manifest disagrees with the manifest embedded in the model: "
                + "; ".join(f"{d} (sidecar vs embedded)" for d in diff),
                f"the sidecar was edited or belongs to another export: delete {sidecar_path(source).name} to use the "
                "embedded manifest, or export the model again (edgecrack export RUN)")
    names = [i[0] for i in inputs]
    if names != [manifest.input_name]:
        bad.append(f"the graph's inputs are {names}, the manifest says {manifest.input_name!r}")
    else:
        _, shape, typ = inputs[0]
        c = manifest.input
        want = [None, c.height, c.width, 3]
        if typ not in ("tensor(uint8)", "uint8") or len(shape) != 4 or any(
                isinstance(s, int) and w is not None and s != w for s, w in zip(shape, want)):
            bad.append(f"the graph takes {typ} {list(shape)}, the manifest says uint8 [N, {c.height}, {c.width}, 3]")
    outs = {o[0]: o for o in outputs}
    if manifest.output_name not in outs:
        bad.append(f"the graph's outputs are {list(outs)}, the manifest says {manifest.output_name!r}")
    else:
        shape = outs[manifest.output_name][1]
        if shape and isinstance(shape[-1], int) and shape[-1] != len(manifest.labels):
            bad.append(f"the graph outputs {shape[-1]} classes, the manifest has {len(manifest.labels)} labels "
                       f"{manifest.labels}")
    if bad:
        raise ArtifactError(f"{source}: manifest does not match the model graph: " + "; ".join(bad), _FIX)


def verify_onnx_file(path: str | Path, manifest: Manifest) -> None:
    """:func:`check_onnx_manifest` for an ONNX file on disk (read with ``onnx``, else onnxruntime).

    Raises:
        ArtifactError: Unreadable model, or a manifest that disagrees with it.
    """
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is None:
        import onnxruntime as ort

        try:
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001
            raise ArtifactError(f"{path}: not a readable ONNX model ({e})", "export it again") from None
        check_onnx_session(sess, manifest, str(path))
        return
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types on corrupt files
        raise ArtifactError(f"{path}: not a readable ONNX model ({type(e).__name__})",
                            "the file is corrupt or truncated: export it again") from None

    def sig(values, skip=()):
        out = []
        for v in values:
            if v.name in skip:
                continue
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
            out.append((v.name, dims, f"tensor({onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name})"
                        if t.elem_type else "?"))
        return out

    inits = {i.name for i in model.graph.initializer}
    emb = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    embedded = _embedded(emb, path)
    check_onnx_manifest(manifest, embedded, sig(model.graph.input, inits), sig(model.graph.output), str(path))


def check_onnx_session(sess: Any, manifest: Manifest, source: str) -> None:
    """:func:`check_onnx_manifest` from an open onnxruntime session (no second read of the file)."""
    meta = sess.get_modelmeta().custom_metadata_map
    embedded = _embedded(meta.get(METADATA_KEY), source)
    ins = [(i.name, list(i.shape), i.type) for i in sess.get_inputs()]
    outs = [(o.name, list(o.shape), o.type) for o in sess.get_outputs()]
    check_onnx_manifest(manifest, embedded, ins, outs, source)


def _embedded(text: str | None, source: str | Path) -> Manifest | None:
    if text is None:
        return None
    try:
        return Manifest.from_dict(json.loads(text), f"{source}:metadata_props")
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{source}: the manifest in metadata_props is not valid JSON ({e})", _FIX) from None


def sidecar_path(artifact: str | Path) -> Path:
    """Sidecar of an artifact file: ``model.onnx`` -> ``model.onnx.json``; a folder -> ``manifest.json``."""
    p = Path(artifact)
    if p.is_dir():
        return p / "manifest.json"
    return p.with_name(p.name + ".json")


def write_manifest(artifact: str | Path, manifest: Manifest) -> Path:
    """Write the sidecar manifest of an artifact atomically."""
    return atomic_write_json(sidecar_path(artifact), manifest.to_dict())


def read_manifest(artifact: str | Path) -> Manifest:
    """Read an artifact's manifest: the sidecar, else (for ONNX) the embedded metadata.

    Raises:
        ArtifactError: No manifest, unreadable JSON, or one from a newer edgecrack.
    """
    p = Path(artifact)
    side = sidecar_path(p)
    if side.is_file():
        try:
            return Manifest.from_dict(json.loads(side.read_text()), str(side))
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{side}: manifest is not valid JSON ({e})", "re-export the artifact") from None
    if p.suffix == ".onnx" and p.is_file():
        m = manifest_from_onnx(p)
        if m is not None:
            return m
    raise ArtifactError(f"no edgecrack manifest for {p} (looked for {side.name})",
                        "export the model with edgecrack export, which writes the manifest")


def manifest_from_onnx(path: str | Path) -> Manifest | None:
    """The manifest embedded in an ONNX file's ``metadata_props`` (None when absent)."""
    try:
        import onnx
    except ImportError:
        return _manifest_from_onnx_ort(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types on corrupt files
        raise ArtifactError(f"{path}: not a readable ONNX model ({type(e).__name__})",
                            "the file is corrupt or truncated: export it again") from None
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return _embedded(prop.value, path)
    return None


def _manifest_from_onnx_ort(path: str | Path) -> Manifest | None:
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise ArtifactError(f"{path}: not a readable ONNX model ({e})", "export it again") from None
    return _embedded(sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY), path)
