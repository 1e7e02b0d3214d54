"""Triton model repository (parsed with Triton's own protobuf schema) and the Triton client
backend against a real ``tritonserver`` on loopback.

The server is the one shipped in the ``nvidia-pytriton`` wheel (python backend only), installed
in its own environment by ``deploy/triton/make-server-env.sh`` (``make test`` does it). It serves
the repository's python-backend variant, which runs the model with onnxruntime on CPU; the
ONNX Runtime and TensorRT variants are checked by parsing their ``config.pbtxt``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edgecrack.errors import ArtifactError, BackendUnavailable, ConfigError
from edgecrack.export.triton import MANIFEST_FILE, write_triton_repository
from edgecrack.manifest import read_manifest, write_manifest
from edgecrack.preprocess import preprocess_files
from edgecrack.runtime import OnnxRuntimeBackend, open_backend
from edgecrack.runtime.triton_backend import TritonBackend, parse_triton_url

REPO_ROOT = Path(__file__).resolve().parents[1]


# -- Triton's protobuf schema ----------------------------------------------------------------
def _model_config_pb2():
    """``model_config_pb2`` from tritonclient, loaded from its file (its package imports grpc)."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tritonclient is not installed (pip install 'edgecrack[triton]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    mod_spec = importlib.util.spec_from_file_location("_edgecrack_test_model_config_pb2", path)
    mod = importlib.util.module_from_spec(mod_spec)
    import warnings

    with warnings.catch_warnings():
        # Its gencode is one protobuf major older than the runtime onnx needs: supported, warned.
        warnings.simplefilter("ignore")
        mod_spec.loader.exec_module(mod)
    return mod


def parse_config(path: Path):
    from google.protobuf import text_format

    pb2 = _model_config_pb2()
    return text_format.Parse(path.read_text(), pb2.ModelConfig()), pb2


# -- fake engines (TensorRT is not here): real files with sidecar manifests --------------------
def _fake_engine(tmp: Path, onnx: Path, cc: str, precision: str = "fp16", trt: str = "10.3.0",
                 max_batch: int = 32, min_batch: int = 1, name: str | None = None) -> Path:
    from edgecrack.io import sha256_file

    m = read_manifest(onnx)
    sha = sha256_file(onnx)
    em = m.with_kind("tensorrt", parent=sha, extra={
        "precision": precision, "tensorrt_version": trt, "gpu_name": f"GPU sm{cc}", "compute_capability": cc,
        "onnx_sha256": sha, "batch_profile": {"min": min_batch, "opt": min(8, max_batch), "max": max_batch}})
    p = tmp / (name or f"model.{precision}.sm{cc.replace('.', '')}.engine")
    p.write_bytes(b"plan bytes " + cc.encode())  # Triton never loads it here; only copied and described
    write_manifest(p, em)
    return p


# -- repository -------------------------------------------------------------------------------
def test_repository_configs_parse_and_match_manifest(tmp_path, trained_onnx):
    m = read_manifest(trained_onnx)
    engines = [_fake_engine(tmp_path, trained_onnx, "8.7", max_batch=16), _fake_engine(tmp_path, trained_onnx, "7.2")]
    repo = write_triton_repository(trained_onnx, tmp_path / "repo", engine_paths=engines, max_batch=32)
    names = sorted(p.name for p in repo.iterdir() if p.is_dir())
    assert names == ["edgecrack_onnx", "edgecrack_python", "edgecrack_trt_fp16"]
    for name in names:
        cfg, pb2 = parse_config(repo / name / "config.pbtxt")
        assert cfg.name == name
        assert len(cfg.input) == 1 and len(cfg.output) == 1
        i, o = cfg.input[0], cfg.output[0]
        assert (i.name, i.data_type, list(i.dims)) == ("images", pb2.TYPE_UINT8, [m.input.height, m.input.width, 3])
        assert (o.name, o.data_type, list(o.dims)) == ("probs", pb2.TYPE_FP32, [len(m.labels)])
        assert o.label_filename == "labels.txt"
        assert (repo / name / "labels.txt").read_text().splitlines() == m.labels == ["CD", "UD"]
        assert cfg.HasField("dynamic_batching")
        assert cfg.parameters["edgecrack.onnx_sha256"].string_value == _sha(trained_onnx)
        assert json.loads(cfg.parameters["edgecrack.labels"].string_value) == m.labels
        assert float(cfg.parameters["edgecrack.threshold"].string_value) == pytest.approx(m.threshold)
        assert json.loads((repo / name / MANIFEST_FILE).read_text())["labels"] == m.labels
    onnx_cfg, _ = parse_config(repo / "edgecrack_onnx" / "config.pbtxt")
    assert onnx_cfg.platform == "onnxruntime_onnx" and onnx_cfg.max_batch_size == 32
    assert (repo / "edgecrack_onnx" / "1" / "model.onnx").read_bytes() == trained_onnx.read_bytes()
    assert read_manifest(repo / "edgecrack_onnx" / "1" / "model.onnx").labels == m.labels
    trt_cfg, pb2 = parse_config(repo / "edgecrack_trt_fp16" / "config.pbtxt")
    assert trt_cfg.platform == "tensorrt_plan"
    assert trt_cfg.max_batch_size == 16  # capped by the sm87 engine's optimisation profile
    assert dict(trt_cfg.cc_model_filenames) == {"8.7": "model.sm87.plan", "7.2": "model.sm72.plan"}
    assert trt_cfg.default_model_filename == ""  # two GPUs: no silent default for a third one
    assert [g.kind for g in trt_cfg.instance_group] == [pb2.ModelInstanceGroup.KIND_GPU]
    assert (repo / "edgecrack_trt_fp16" / "1" / "model.sm87.plan").read_bytes() == b"plan bytes 8.7"
    assert read_manifest(repo / "edgecrack_trt_fp16" / "1" / "model.sm72.plan").extra["compute_capability"] == "7.2"
    py_cfg, pb2 = parse_config(repo / "edgecrack_python" / "config.pbtxt")
    assert py_cfg.backend == "python" and [g.kind for g in py_cfg.instance_group] == [pb2.ModelInstanceGroup.KIND_CPU]
    assert (repo / "edgecrack_python" / "1" / "model.py").is_file()


def test_repository_rewrite_drops_stale_variants_and_keeps_other_models(tmp_path, trained_onnx):
    repo = tmp_path / "repo"
    write_triton_repository(trained_onnx, repo, engine_paths=[_fake_engine(tmp_path, trained_onnx, "8.7")])
    (repo / "someone_elses_model" / "1").mkdir(parents=True)
    (repo / "edgecrack_v2_onnx").mkdir()  # another edgecrack model name sharing the prefix
    (repo / "edgecrack_v2_onnx" / MANIFEST_FILE).write_text("{}")
    cfg, _ = parse_config(repo / "edgecrack_trt_fp16" / "config.pbtxt")
    assert cfg.default_model_filename == "model.sm87.plan"
    write_triton_repository(trained_onnx, repo, python_variant=False)
    assert sorted(p.name for p in repo.iterdir() if not p.name.startswith(".")) == [
        "edgecrack_onnx", "edgecrack_v2_onnx", "someone_elses_model"]
    assert not [p for p in repo.iterdir() if p.name.endswith((".tmp", ".old"))]


def test_repository_refuses_foreign_or_ambiguous_engines(tmp_path, trained_onnx):
    other = _fake_engine(tmp_path, trained_onnx, "8.7", name="other.engine")
    em = read_manifest(other)
    em.extra["onnx_sha256"] = em.parent = "0" * 64
    write_manifest(other, em)
    with pytest.raises(ArtifactError, match="built from another ONNX model"):
        write_triton_repository(trained_onnx, tmp_path / "r1", engine_paths=[other])
    a = _fake_engine(tmp_path, trained_onnx, "8.7", name="a.engine")
    b = _fake_engine(tmp_path, trained_onnx, "8.7", name="b.engine")
    with pytest.raises(ArtifactError, match="two fp16 engines for compute capability 8.7"):
        write_triton_repository(trained_onnx, tmp_path / "r2", engine_paths=[a, b])
    c = _fake_engine(tmp_path, trained_onnx, "7.2", trt="8.5.2", name="c.engine")
    with pytest.raises(ArtifactError, match="different TensorRT versions"):
        write_triton_repository(trained_onnx, tmp_path / "r3", engine_paths=[a, c])
    dla = _fake_engine(tmp_path, trained_onnx, "7.2", min_batch=8, max_batch=8, name="dla.engine")
    with pytest.raises(ArtifactError, match="static-batch engine"):
        write_triton_repository(trained_onnx, tmp_path / "r4", engine_paths=[dla])
    with pytest.raises(ConfigError, match="invalid Triton model name"):
        write_triton_repository(trained_onnx, tmp_path / "r5", model_name="bad name/x")
    with pytest.raises(ArtifactError, match="ONNX model not found"):
        write_triton_repository(tmp_path / "missing.onnx", tmp_path / "r6")


def test_parse_triton_url():
    assert parse_triton_url("127.0.0.1:8001") == ("127.0.0.1:8001", False, None, "")
    assert parse_triton_url("https://triton.example:9443/v2/models/edgecrack_onnx/versions/3") == (
        "triton.example:9443", True, "edgecrack_onnx", "3")
    assert parse_triton_url("http://[::1]/v2/models/m/") == ("[::1]:8000", False, "m", "")
    with pytest.raises(ConfigError, match="not /v2/models/NAME"):
        parse_triton_url("http://host:8000/models/x")
    with pytest.raises(ConfigError, match="not a Triton HTTP URL"):
        parse_triton_url("grpc://host:8001")


def test_no_server_is_a_clear_error(trained_onnx):
    port = _free_port()  # nothing listens there
    b = TritonBackend(trained_onnx, read_manifest(trained_onnx), url=f"http://127.0.0.1:{port}", timeout_s=3)
    with pytest.raises(BackendUnavailable, match=f"no Triton server answers at http://127.0.0.1:{port}"):
        b.load()


# -- a real Triton server on loopback -----------------------------------------------------------
def _sha(p: Path) -> str:
    from edgecrack.io import sha256_file

    return sha256_file(p)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env_dir() -> Path:
    return Path(os.environ.get("EDGECRACK_TRITON_ENV", REPO_ROOT / ".venv-triton"))


def _env_python_facts(env_dir: Path) -> tuple[str, str, Path]:
    out = subprocess.run([str(env_dir / "bin" / "python"), "-c",
                          "import sys, sysconfig, pytriton, os; print(f'{sys.version_info[0]}.{sys.version_info[1]}'); "
                          "print(sysconfig.get_config_var('LIBDIR')); print(os.path.dirname(pytriton.__file__))"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.split("\n")
    return out[0], out[1], Path(out[2])


@pytest.fixture(scope="module")
def triton_server(tmp_path_factory, trained_onnx):
    """A real ``tritonserver`` on 127.0.0.1 serving the python-backend variant; stopped afterwards."""
    env_dir = _server_env_dir()
    if not (env_dir / "bin" / "python").is_file():
        pytest.skip(f"no Triton server environment at {env_dir}: run deploy/triton/make-server-env.sh "
                    "(make test does) or set EDGECRACK_TRITON_ENV")
    pyver, libdir, pytriton_dir = _env_python_facts(env_dir)
    server_root = pytriton_dir / "tritonserver"
    stub = server_root / "python_backend_stubs" / pyver / "triton_python_backend_stub"
    tmp = tmp_path_factory.mktemp("triton")
    repo = write_triton_repository(trained_onnx, tmp / "repo", max_batch=16, queue_delay_us=5000)
    backends = tmp / "backends"
    shutil.copytree(server_root / "backends" / "python", backends / "python")
    shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
    http_port = _free_port()
    env = dict(os.environ)
    # The stub finds its Python (and so onnxruntime + numpy 1.x) through the first python3 on PATH.
    env["PATH"] = f"{env_dir / 'bin'}:{env.get('PATH', '')}"
    env["LD_LIBRARY_PATH"] = f"{pytriton_dir.parent / 'nvidia_pytriton.libs'}:{libdir}"
    cmd = [str(server_root / "bin" / "tritonserver"), f"--model-repository={repo}", f"--backend-directory={backends}",
           "--model-control-mode=explicit", "--load-model=edgecrack_python", "--http-address=127.0.0.1",
           f"--http-port={http_port}", "--allow-grpc=false", "--allow-metrics=false", "--exit-timeout-secs=5"]
    log = open(tmp / "tritonserver.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"tritonserver exited with {proc.returncode}:\n"
                            + (tmp / "tritonserver.log").read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("tritonserver not ready after 90 s:\n" + (tmp / "tritonserver.log").read_text(errors="replace")[-3000:])
            time.sleep(0.25)
        yield {"url": url, "repo": repo, "log": tmp / "tritonserver.log"}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def holdout_batch(holdout_deck, trained_onnx):
    paths = sorted(holdout_deck.rglob("*.jpg"))
    assert len(paths) == 40
    return preprocess_files(paths, read_manifest(trained_onnx).input)


def test_triton_python_variant_matches_onnxruntime(triton_server, trained_onnx, holdout_batch):
    m = read_manifest(trained_onnx)
    with OnnxRuntimeBackend(trained_onnx, m) as ref:
        want = ref.probs(holdout_batch)
    with TritonBackend(trained_onnx, m, url=triton_server["url"]) as tb:
        assert tb.model_name == "edgecrack_python"  # found by the ONNX sha256 in its config
        got = tb.probs(holdout_batch)  # 40 images against max_batch_size 16: three requests
        one = tb.probs(holdout_batch[:1])
        info = tb.info()
    assert got.shape == (40, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(one, want[:1], atol=1e-5)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    assert info["backend"] == "triton"
    assert info["served"] == {"model": "edgecrack_python", "version": "latest", "platform": "python",
                              "variant": "python", "precision": "fp32", "max_batch_size": 16}
    assert "Triton server 2." in info["library"]


def test_triton_dynamic_batching_merges_concurrent_requests(triton_server, trained_onnx, holdout_batch):
    from concurrent.futures import ThreadPoolExecutor

    import tritonclient.http as httpclient

    m = read_manifest(trained_onnx)
    url = triton_server["url"]
    client = httpclient.InferenceServerClient(url.split("://")[1])
    before = client.get_inference_statistics("edgecrack_python")["model_stats"][0]

    def one(i):
        with TritonBackend(trained_onnx, m, url=f"{url}/v2/models/edgecrack_python") as tb:
            return tb.probs(holdout_batch[i:i + 1])

    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(one, range(16)))
    after = client.get_inference_statistics("edgecrack_python")["model_stats"][0]
    client.close()
    with OnnxRuntimeBackend(trained_onnx, m) as ref:
        want = ref.probs(holdout_batch[:16])
    np.testing.assert_allclose(np.concatenate(outs), want, atol=1e-5)
    assert after["inference_count"] - before["inference_count"] == 16
    # Executions never exceed requests; fewer means the server merged concurrent requests.
    assert 1 <= after["execution_count"] - before["execution_count"] <= 16


def test_open_backend_triton_and_mismatch_errors(triton_server, trained_run, trained_onnx, holdout_batch, tmp_path):
    sel = open_backend(trained_run, prefer="triton", url=triton_server["url"])
    try:
        assert sel.backend.name == "triton" and sel.backend.model_name == "edgecrack_python"
        assert sel.backend.probs(holdout_batch[:4]).shape == (4, 2)
    finally:
        sel.backend.close()
    m = read_manifest(trained_onnx)
    # Another ONNX file (one byte of metadata different): the server's model is not its model.
    other = tmp_path / "other.onnx"
    other.write_bytes(trained_onnx.read_bytes() + b"\n")
    write_manifest(other, m)
    with pytest.raises(ArtifactError, match="serves no ready model written from other.onnx"):
        TritonBackend(other, m, url=triton_server["url"]).load()
    with pytest.raises(ArtifactError, match="'edgecrack_python' was written from another ONNX model"):
        TritonBackend(other, m, url=f"{triton_server['url']}/v2/models/edgecrack_python").load()
    # Models in the repository that the server has not loaded are not ready.
    with pytest.raises(BackendUnavailable, match="'edgecrack_onnx' .* is not ready"):
        TritonBackend(trained_onnx, m, url=f"{triton_server['url']}/v2/models/edgecrack_onnx").load()
    # A local contract that differs from the served one is refused before any frame is sent.
    wrong = m.with_kind(m.kind, labels=["CD", "UD", "spall"])
    with pytest.raises(ArtifactError, match=r"output dims \[2\] \(want \[3\]\)"):
        TritonBackend(trained_onnx, wrong, url=triton_server["url"]).load()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
