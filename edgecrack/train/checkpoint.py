"""A run's trained network on disk: ``checkpoint.safetensors`` (weights, no pickle) + ``manifest.json``.

The one home of save/load, shared by training (:mod:`.api`), the torch runtime backend and the
ONNX export; it needs only the network definition (:mod:`.model`) and the core (manifest,
errors, atomic writes), never the training loop.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ArtifactError
from ..io import atomic_write_bytes
from ..manifest import Manifest, read_manifest, write_manifest
from .model import CrackNet, skeleton_cracknet

CHECKPOINT_FILE = "checkpoint.safetensors"


def save_checkpoint(net: CrackNet, manifest: Manifest, run: Path) -> Path:
    """Write ``checkpoint.safetensors`` (no pickle) and ``manifest.json`` atomically.

    Returns:
        The checkpoint file.
    """
    from safetensors.torch import save

    run = Path(run)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write_bytes(run / CHECKPOINT_FILE, save(state, metadata={"edgecrack": json.dumps(manifest.to_dict())}))
    write_manifest(run, manifest)
    return run / CHECKPOINT_FILE


def load_checkpoint(run: str | Path) -> tuple[CrackNet, Manifest]:
    """Rebuild the trained network of a run folder (weights-only; no pickle).

    Returns:
        (the network in eval mode on the CPU, its manifest)

    Raises:
        ArtifactError: Missing/corrupt checkpoint or manifest.
    """
    from safetensors.torch import load_file

    run = Path(run)
    ckpt = run / CHECKPOINT_FILE
    if not ckpt.is_file():
        raise ArtifactError(f"no {CHECKPOINT_FILE} in {run}", "train first: edgecrack train --out " + str(run))
    manifest = read_manifest(run)
    try:
        net = skeleton_cracknet(manifest.backbone, len(manifest.labels), manifest.fine_tune_blocks, manifest.input,
                                manifest.head.get("pool", "avg"), manifest.head.get("dropout", 0.2),
                                manifest.head.get("tta", 1), manifest.head.get("backbone_units"))
    except ValueError as e:
        raise ArtifactError(f"{run}: manifest does not describe a buildable network ({e})",
                            "train again or restore the manifest") from None
    try:
        state = load_file(str(ckpt))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types on bad files
        raise ArtifactError(f"{ckpt} is corrupt or truncated ({e})", "train again or restore the file") from None
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ArtifactError(f"{ckpt} does not match its manifest (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return net.eval(), manifest
