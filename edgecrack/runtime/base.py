"""The backend contract (after Polygraphy's runners).

A backend executes one artifact: named numpy arrays in, named numpy arrays out. It knows
nothing about cameras or labels. The constructor is cheap; :meth:`Backend.load` and
:meth:`Backend.close` own sessions, engines and buffers. The public :meth:`Backend.infer`
validates and times, then calls the protected :meth:`Backend._infer` hook.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, EdgecrackError
from ..manifest import Manifest


class Backend:
    """Base class of all runtime backends.

    Args:
        artifact: The model file this backend runs.
        manifest: Its manifest (input contract, names, labels).
    """

    name = "base"

    def __init__(self, artifact: str | Path, manifest: Manifest):
        self.artifact = Path(artifact)
        self.manifest = manifest
        self.loaded = False
        self.last_latency_ms: float | None = None

    # -- lifecycle -------------------------------------------------------------------
    def load(self) -> "Backend":
        if not self.loaded:
            self._load()
            self.loaded = True
        return self

    def close(self) -> None:
        if self.loaded:
            self._close()
            self.loaded = False

    def __enter__(self) -> "Backend":
        return self.load()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- inference -------------------------------------------------------------------
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on named inputs; validates names, dtype and shape, records latency.

        Raises:
            ConfigError: Wrong input name, dtype or per-image shape.
        """
        if not self.loaded:
            self.load()
        c = self.manifest.input
        name = self.manifest.input_name
        if set(feeds) != {name}:
            raise ConfigError(f"{self.name}: expected input {name!r}, got {sorted(feeds)}")
        x = feeds[name]
        want = (c.height, c.width, 3)
        if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ConfigError(f"{self.name}: input must be uint8 [N, {want[0]}, {want[1]}, 3], got {x.dtype} {list(x.shape)}",
                              "preprocess frames with edgecrack.preprocess.preprocess()")
        if x.shape[0] == 0:
            return {self.manifest.output_name: np.zeros((0, len(self.manifest.labels)), np.float32)}
        t0 = time.perf_counter()
        out = self._infer({name: np.ascontiguousarray(x)})
        self.last_latency_ms = (time.perf_counter() - t0) * 1e3
        return out

    def probs(self, batch: np.ndarray) -> np.ndarray:
        """Convenience: probabilities ``float32 [N, classes]`` of a preprocessed uint8 batch."""
        return self.infer({self.manifest.input_name: batch})[self.manifest.output_name]

    def info(self) -> dict[str, Any]:
        """Name, library version, device, precision, providers: what every number traces to."""
        return {"backend": self.name, "artifact": str(self.artifact), **self._info()}

    # -- hooks -----------------------------------------------------------------------
    def _load(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _info(self) -> dict[str, Any]:
        return {}


class Unavailable(EdgecrackError):
    """A backend cannot run here; ``reason`` says why (recorded by ``open_backend``)."""
