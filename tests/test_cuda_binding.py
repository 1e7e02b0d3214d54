"""The CUDA binding choice: one that imports but cannot initialise falls through to the next."""

from __future__ import annotations

import shutil

import pytest

from edgecrack.runtime._cuda import cuda_api, gpu_or_reason


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA driver")
def test_binding_without_driver_falls_through_with_every_reason():
    pytest.importorskip("cuda.bindings", reason="cuda-python (dev extra) not installed")
    api, why = cuda_api()
    assert api is None
    # cuda-python imported but could not initialise: its reason is recorded and pycuda was tried after it
    assert why.startswith("cuda-python: ") and "pycuda" in why
    api, gpu, why2 = gpu_or_reason()
    assert api is None and gpu is None and why2 == why
