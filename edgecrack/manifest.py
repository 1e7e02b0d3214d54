"""The artifact contract: what every checkpoint, ONNX model and engine says about itself.

A manifest travels with its artifact twice: as a sidecar JSON (``model.onnx.json``,
``model.fp16.engine.json``, ``manifest.json`` in a run folder) and, for ONNX files, inside
``metadata_props`` under the key ``edgecrack.manifest``. Engine plans are never modified:
their manifest lives only in the sidecar.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import MANIFEST_SCHEMA, __version__
from .errors import ArtifactError
from .io import atomic_write_json
from .preprocess import InputContract

METADATA_KEY = "edgecrack.manifest"


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
        if not isinstance(d, dict):
            raise ArtifactError(f"{source}: manifest is not a JSON object")
        schema = d.get("schema", 0)
        if not isinstance(schema, int) or schema > MANIFEST_SCHEMA:
            raise ArtifactError(
                f"{source}: manifest schema {schema} was written by a newer edgecrack "
                f"({d.get('edgecrack_version', '?')}); this is {__version__} (schema {MANIFEST_SCHEMA})",
                "upgrade edgecrack (pip install -U edgecrack) or re-export the artifact with this version",
            )
        try:
            d = dict(d)
            d["input"] = InputContract.from_dict(d["input"])
            known = set(cls.__dataclass_fields__)
            return cls(**{k: v for k, v in d.items() if k in known})
        except (KeyError, TypeError) as e:
            raise ArtifactError(f"{source}: manifest is missing or has a malformed field ({e})",
                                "re-export the artifact with edgecrack export") from None

    def with_kind(self, kind: str, **changes: Any) -> "Manifest":
        d = self.to_dict()
        d.update(kind=kind, **changes)
        d["extra"] = dict(changes.get("extra", {}))
        return Manifest.from_dict(d)


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
            return Manifest.from_dict(json.loads(prop.value), f"{path}:metadata_props")
    return None


def _manifest_from_onnx_ort(path: str | Path) -> Manifest | None:
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise ArtifactError(f"{path}: not a readable ONNX model ({e})", "export it again") from None
    meta = sess.get_modelmeta().custom_metadata_map
    if METADATA_KEY in meta:
        return Manifest.from_dict(json.loads(meta[METADATA_KEY]), f"{path}:metadata_props")
    return None
