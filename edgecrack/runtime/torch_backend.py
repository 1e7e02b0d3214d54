"""PyTorch backend: runs a run folder's checkpoint (for parity checks and training-side eval).

torch is imported lazily: this module imports without it and reports it as unavailable.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable
from ..manifest import Manifest
from .base import Backend


class TorchBackend(Backend):
    """Eager PyTorch on a run folder's ``checkpoint.safetensors``.

    Args:
        artifact: Run folder (or its checkpoint file).
        manifest: The checkpoint manifest.
        device: ``cpu`` or ``cuda``.
        threads: torch intra-op threads.
    """

    name = "torch"

    def __init__(self, artifact: str | Path, manifest: Manifest, device: str = "cpu", threads: int | None = None):
        p = Path(artifact)
        super().__init__(p.parent if p.is_file() else p, manifest)
        self.device = device
        self.threads = threads
        self.name = f"torch-{device}"
        self._net = None
        self._saved_threads: int | None = None

    @staticmethod
    def probe(device: str = "cpu") -> str | None:
        # find_spec, not import: probing must stay cheap (importing torch takes seconds) and
        # must not load torch into a runtime process that then picks another backend.
        try:
            found = importlib.util.find_spec("torch") is not None
        except ImportError:  # a finder that refuses torch means it cannot be imported either
            found = False
        if not found:
            return "PyTorch is not installed (the 'train' extra)"
        if device == "cpu":
            return None
        import torch

        if not torch.cuda.is_available():
            return "PyTorch sees no CUDA device"
        return None

    def _load(self) -> None:
        why = self.probe(self.device)
        if why:
            raise BackendUnavailable(why)
        import torch

        from ..train.checkpoint import load_checkpoint

        if self.threads:
            self._saved_threads = torch.get_num_threads()  # process-wide: restored by close()
            torch.set_num_threads(self.threads)
        net, _ = load_checkpoint(self.artifact)
        self._net = net.to(self.device).eval()

    def _close(self) -> None:
        self._net = None
        if self._saved_threads is not None:
            import torch

            torch.set_num_threads(self._saved_threads)
            self._saved_threads = None

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        x = torch.from_numpy(feeds[self.manifest.input_name]).to(self.device)
        with torch.inference_mode():
            y = self._net(x).float().cpu().numpy()
        return {self.manifest.output_name: y}

    def _info(self) -> dict[str, Any]:
        import torch

        return {"library": f"torch {torch.__version__}", "device": self.device, "precision": "fp32",
                "providers": [], "threads": torch.get_num_threads()}
