"""Shared fixtures: real bundled images, the committed tiny ONNX model (no torch needed), and one tiny
real model trained once per session (needs torch)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from edgecrack.data import DEFAULT_DATASET

#: The committed tiny classifier (tests/assets/make_tiny_model.py): model.onnx, its sidecar, golden.npz.
TINY_MODEL = Path(__file__).resolve().parent / "assets" / "tiny"

# Tests never touch the user's cache.
os.environ.setdefault("EDGECRACK_CACHE", str(Path(os.environ.get("PYTEST_TMPDIR", "/tmp")) / "edgecrack-test-cache"))


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401

        return True
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    import shutil as sh

    has_gpu = sh.which("nvidia-smi") is not None
    try:
        import tensorrt  # noqa: F401

        has_trt = True
    except ImportError:
        has_trt = False
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU (none on this machine)"))
        if "trt" in item.keywords and not has_trt:
            item.add_marker(pytest.mark.skip(reason="needs TensorRT (not installed on this machine)"))


@pytest.fixture
def one_torch_thread():
    """Eager PyTorch with two OpenMP threads spins on a busy 2-core machine; one thread is several times faster."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def deck_dir() -> Path:
    """The bundled SDNET2018 deck sample (200 CD, 200 UD real images)."""
    return DEFAULT_DATASET


@pytest.fixture(scope="session")
def small_deck(tmp_path_factory, deck_dir) -> Path:
    """40 real images (20 CD, 20 UD) copied into a fresh folder."""
    root = tmp_path_factory.mktemp("small_deck")
    for cls in ("CD", "UD"):
        (root / cls).mkdir()
        for p in sorted((deck_dir / cls).glob("*.jpg"))[:20]:
            shutil.copy(p, root / cls / p.name)
    return root


@pytest.fixture(scope="session")
def holdout_deck(tmp_path_factory, deck_dir) -> Path:
    """40 other real images (20 CD, 20 UD) not in ``small_deck``."""
    root = tmp_path_factory.mktemp("holdout_deck")
    for cls in ("CD", "UD"):
        (root / cls).mkdir()
        for p in sorted((deck_dir / cls).glob("*.jpg"))[-20:]:
            shutil.copy(p, root / cls / p.name)
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, small_deck) -> Path:
    """A real run folder (checkpoint, manifest, model.onnx) trained on ``small_deck``.

    Head-only on pooled EfficientNet-Lite0 features, 2 views, 5 epochs: a few seconds.
    """
    if not _has_torch():
        pytest.skip("training needs the 'train' extra (torch)")
    from edgecrack.jobs import train_job
    from edgecrack.train.api import TrainConfig
    from edgecrack.train.loop import LoopConfig

    out = tmp_path_factory.mktemp("runs") / "tiny"
    cache = tmp_path_factory.mktemp("cache")
    cfg = TrainConfig(data=str(small_deck), out=str(out), views=2, tta=2, cache_dir=str(cache), plots=True,
                      fine_tune_blocks=0, loop=LoopConfig(epochs=5, seed=0))
    train_job(cfg)
    return out


@pytest.fixture(scope="session")
def trained_onnx(trained_run) -> Path:
    return trained_run / "model.onnx"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder holding the committed tiny ONNX classifier: uint8 NHWC 64x64 input, embedded
    manifest (labels CD/UD, positive CD), softmax output. No torch needed; a weak model (about 0.7
    accuracy on the deck sample), so tests that need a trained model's accuracy use ``trained_run``.

    A fresh copy per session: tests may write engines or copies next to it.
    """
    out = tmp_path_factory.mktemp("tiny_run") / "tiny"
    out.mkdir()
    for name in ("model.onnx", "model.onnx.json"):
        shutil.copy(TINY_MODEL / name, out / name)
    return out


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run) -> Path:
    return tiny_run / "model.onnx"


@pytest.fixture(scope="session")
def tiny_golden() -> dict:
    """The tiny model's golden tensors: ``names`` (deck images), ``images`` (their uint8 model input),
    ``probs`` (onnxruntime's output when they were made)."""
    import numpy as np

    with np.load(TINY_MODEL / "golden.npz") as z:
        return {k: z[k] for k in z.files}
