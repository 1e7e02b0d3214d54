"""Engine cache on first start: keyed by model, TensorRT version, GPU and precision; reuse,
rebuild after a JetPack upgrade, prune dead plans, and a clear "unavailable" where TensorRT is
missing (as on this machine).

Cached engines here are real files with real sidecar manifests, written the way
``engine_from_onnx`` writes them. Building real engines needs TensorRT and a GPU: those tests
are marked ``gpu`` + ``trt`` and skip elsewhere.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edgecrack.engine_cache import (EngineDecision, MachineFacts, cached_engine_path, engine_cache_key, ensure_engine,
                                    inspect_cache, main, sha256_file)
from edgecrack.errors import ArtifactError, ConfigError
from edgecrack.manifest import read_manifest, sidecar_path, write_manifest

ORIN_JP6 = MachineFacts("10.3.0", "Orin", "8.7")
ORIN_JP5 = MachineFacts("8.5.2.2", "Orin", "8.7")
XAVIER_JP5 = MachineFacts("8.5.2.2", "Xavier", "7.2")


def _engine(path: Path, onnx: Path, machine: MachineFacts, precision: str = "fp16", plan: bytes = b"PLAN" * 64,
            calib_hash: str | None = None) -> Path:
    """A cached engine as engine_from_onnx leaves it: the plan, then its sidecar manifest."""
    om = read_manifest(onnx)
    sha = sha256_file(onnx)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(plan)
    write_manifest(path, om.with_kind("tensorrt", parent=sha, extra={
        "precision": precision, "tensorrt_version": machine.tensorrt_version, "gpu_name": machine.gpu_name,
        "compute_capability": machine.compute_capability, "onnx_sha256": sha, "plan_bytes": len(plan),
        "plan_sha256": hashlib.sha256(plan).hexdigest(), "calibration_hash": calib_hash, "build_seconds": 1.5}))
    return path


def _keyed(cache: Path, onnx: Path, machine: MachineFacts, precision: str = "fp16", **kw) -> Path:
    key = engine_cache_key(sha256_file(onnx), machine, precision, kw.get("calib_hash"))
    return _engine(cached_engine_path(cache, onnx, precision, key), onnx, machine, precision, **kw)


class FakeBuilder:
    """Stands in for TensorRT's builder (absent here): writes what engine_from_onnx writes."""

    def __init__(self, machine: MachineFacts):
        self.machine = machine
        self.calls: list[Path] = []

    def __call__(self, onnx_path, out_path, precision="fp16", calib=None, progress=None):
        self.calls.append(Path(out_path))
        p = _engine(Path(out_path), Path(onnx_path), self.machine, precision, plan=b"BUILT" * 50)
        return p, read_manifest(p)


def test_key_changes_with_everything_that_makes_a_plan_different(trained_onnx):
    sha = sha256_file(trained_onnx)
    base = engine_cache_key(sha, ORIN_JP6, "fp16")
    assert len(base) == 20 and base == engine_cache_key(sha, MachineFacts("10.3.0", "Orin", "8.7"), "fp16")
    variants = [engine_cache_key("0" * 64, ORIN_JP6, "fp16"), engine_cache_key(sha, ORIN_JP5, "fp16"),
                engine_cache_key(sha, MachineFacts("10.3.0", "NVIDIA RTX A4000", "8.7"), "fp16"),
                engine_cache_key(sha, MachineFacts("10.3.0", "Orin", "8.6"), "fp16"),
                engine_cache_key(sha, ORIN_JP6, "fp32"), engine_cache_key(sha, ORIN_JP6, "int8", "abc"),
                engine_cache_key(sha, ORIN_JP6, "int8", "abd")]
    assert len({base, *variants}) == 8


def test_empty_cache_then_hit(tmp_path, trained_onnx):
    cache = tmp_path / "engines"
    st = inspect_cache(trained_onnx, cache, "fp16", ORIN_JP6)
    assert not st.reusable and st.stale == []
    assert st.reason == "no engine for TensorRT 10.3.0 on Orin (sm 8.7) in the cache yet"
    assert st.target.parent == cache and st.target.name.startswith("model.fp16.") and st.target.suffix == ".engine"
    _keyed(cache, trained_onnx, ORIN_JP6)
    st = inspect_cache(trained_onnx, cache, "fp16", ORIN_JP6)
    assert st.reusable and st.reason == f"cached engine {st.target.name} matches TensorRT 10.3.0 on Orin (sm 8.7)"


def test_jetpack_upgrade_means_rebuild_and_the_old_plan_is_stale(tmp_path, trained_onnx):
    cache = tmp_path / "engines"
    old = _keyed(cache, trained_onnx, ORIN_JP5)
    st = inspect_cache(trained_onnx, cache, "fp16", ORIN_JP6)
    assert not st.reusable and st.target != old
    assert st.stale == [(old, "built with TensorRT 8.5.2.2 on Orin (sm 8.7), this machine has TensorRT 10.3.0 on Orin "
                              "(sm 8.7)")]
    assert "in the cache yet (" in st.reason and "built with TensorRT 8.5.2.2" in st.reason
    # The same ONNX moved to another module (Xavier -> Orin): another GPU, also stale.
    x = _keyed(cache, trained_onnx, XAVIER_JP5)
    st = inspect_cache(trained_onnx, cache, "fp16", ORIN_JP5)
    assert st.reusable  # the JetPack 5 Orin engine from above
    assert st.stale == [(x, "built for TensorRT 8.5.2.2 on Xavier (sm 7.2), this machine has TensorRT 8.5.2.2 on Orin "
                            "(sm 8.7)")]


def test_broken_plans_are_not_reused_and_other_work_is_kept(tmp_path, trained_onnx):
    cache = tmp_path / "engines"
    target = _keyed(cache, trained_onnx, ORIN_JP6)
    target.write_bytes(target.read_bytes()[:100])  # e.g. copied by hand and cut short
    st = inspect_cache(trained_onnx, cache, "fp16", ORIN_JP6)
    assert not st.reusable and st.reason.endswith("plan is truncated (100 bytes, its sidecar says 256)")
    orphan = cache / "model.fp16.0123456789abcdef0123.engine"
    orphan.write_bytes(b"x")  # no sidecar
    fp32 = _keyed(cache, trained_onnx, ORIN_JP6, "fp32")  # another precision of this model: kept
    other = tmp_path / "other" / "model.onnx"
    other.parent.mkdir()
    other.write_bytes(trained_onnx.read_bytes() + b" ")
    write_manifest(other, read_manifest(trained_onnx))
    foreign = _engine(cache / "model.fp16.ffffffffffffffffffff.engine", other, ORIN_JP5)  # another model: kept
    st = inspect_cache(trained_onnx, cache, "fp16", ORIN_JP6)
    assert [p for p, _ in st.stale] == [orphan]
    assert st.stale[0][1] == "no sidecar manifest (an interrupted build?)"
    assert fp32.is_file() and foreign.is_file()


def test_ensure_engine_builds_once_reuses_then_rebuilds_after_upgrade(tmp_path, trained_onnx):
    cache = tmp_path / "engines"
    b5 = FakeBuilder(ORIN_JP5)
    d1 = ensure_engine(trained_onnx, cache, machine=ORIN_JP5, build=b5)
    assert d1.action == "built" and d1.path == b5.calls[0] and d1.path.is_file()
    assert d1.reason.startswith("no engine for TensorRT 8.5.2.2 on Orin (sm 8.7) in the cache yet: built model.fp16.")
    assert d1.reason.endswith("in 1.5 s") and d1.key in d1.path.name
    d2 = ensure_engine(trained_onnx.parent, cache, machine=ORIN_JP5, build=b5)  # run folder resolves to model.onnx
    assert (d2.action, d2.path, d2.pruned, len(b5.calls)) == ("reused", d1.path, [], 1)
    assert d2.manifest.extra["tensorrt_version"] == "8.5.2.2"
    b6 = FakeBuilder(ORIN_JP6)
    d3 = ensure_engine(trained_onnx, cache, machine=ORIN_JP6, build=b6)
    assert d3.action == "built" and d3.path != d1.path and d3.pruned == [d1.path]
    assert not d1.path.exists() and not sidecar_path(d1.path).exists()
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == [d3.path.name, d3.path.name + ".json"]


def test_ensure_engine_without_tensorrt_is_a_reason_not_a_crash(tmp_path, trained_onnx, capsys):
    pytest.importorskip("edgecrack.runtime.tensorrt_backend")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    d = ensure_engine(trained_onnx, tmp_path / "engines")
    assert isinstance(d, EngineDecision)
    assert (d.path, d.action, d.key) == (None, "unavailable", None)
    assert d.reason.startswith("TensorRT cannot run here: TensorRT is not installed")
    assert not (tmp_path / "engines").exists()  # nothing written on a machine that cannot build
    assert main([str(trained_onnx.parent), "--cache-dir", str(tmp_path / "engines")]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(trained_onnx)  # what the start script hands to edgecrack run
    assert "unavailable: TensorRT cannot run here" in err


def test_bad_requests_are_clear_errors(tmp_path, trained_onnx, capsys):
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        ensure_engine(trained_onnx, tmp_path, precision="fp8")
    with pytest.raises(ConfigError, match="INT8 engines need model.qdq.onnx next to model.onnx"):
        ensure_engine(trained_onnx, tmp_path, precision="int8")
    with pytest.raises(ArtifactError, match="artifact not found"):
        ensure_engine(tmp_path / "nope.onnx", tmp_path)
    int8 = tmp_path / "model.int8.onnx"
    int8.write_bytes(trained_onnx.read_bytes())
    write_manifest(int8, read_manifest(trained_onnx).with_kind("onnx-int8"))
    with pytest.raises(ArtifactError, match="is a 'onnx-int8' model; engines are built from the FP32 model.onnx"):
        ensure_engine(int8, tmp_path, machine=ORIN_JP6, build=FakeBuilder(ORIN_JP6))
    assert main([str(tmp_path / "nope.onnx"), "--cache-dir", str(tmp_path)]) == 1
    assert "error: artifact not found" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.trt
def test_real_engine_built_once_then_reused(tmp_path, trained_onnx):
    cache = tmp_path / "engines"
    d1 = ensure_engine(trained_onnx, cache, precision="fp16")
    assert d1.action == "built" and d1.path.is_file()
    # An engine of this model from "before the upgrade": same files, older TensorRT in the sidecar.
    old = cache / "model.fp16.00000000000000000000.engine"
    old.write_bytes(d1.path.read_bytes())
    m = read_manifest(d1.path)
    m.extra["tensorrt_version"] = "8.5.2.2" if not m.extra["tensorrt_version"].startswith("8.5.2") else "10.3.0"
    write_manifest(old, m)
    d2 = ensure_engine(trained_onnx, cache, precision="fp16")
    assert (d2.action, d2.path, d2.pruned) == ("reused", d1.path, [old])
    from edgecrack.runtime.tensorrt_backend import TensorRTBackend

    with TensorRTBackend(d2.path, read_manifest(d2.path)) as b:
        assert b.info()["precision"] == "fp16"


def test_plan_with_one_flipped_byte_is_rebuilt_not_reused(tmp_path, trained_onnx):
    cache = tmp_path / "engines"
    target = _keyed(cache, trained_onnx, ORIN_JP6, plan=trained_onnx.read_bytes()[:4096])  # real bytes, plan-sized
    b = bytearray(target.read_bytes())
    b[len(b) // 2] ^= 0x01  # same size: the size check alone calls this reusable
    target.write_bytes(bytes(b))
    st = inspect_cache(trained_onnx, cache, "fp16", ORIN_JP6)
    assert not st.reusable
    assert st.reason == (f"cached engine {target.name} cannot be reused: plan bytes changed since it was built "
                         "(sha256 differs from its sidecar)")
    b6 = FakeBuilder(ORIN_JP6)
    d = ensure_engine(trained_onnx, cache, machine=ORIN_JP6, build=b6)
    assert (d.action, d.path, b6.calls) == ("built", target, [target])
    assert d.reason.startswith(st.reason + ": built ")
    assert sha256_file(target) == read_manifest(target).extra["plan_sha256"]
    assert ensure_engine(trained_onnx, cache, machine=ORIN_JP6, build=b6).action == "reused"


def test_failed_rebuild_of_a_corrupt_plan_leaves_nothing_to_reuse(tmp_path, trained_onnx):
    cache = tmp_path / "engines"
    target = _keyed(cache, trained_onnx, ORIN_JP6)
    target.write_bytes(b"X" * target.stat().st_size)

    def failing(*a, **kw):
        raise ArtifactError("TensorRT could not build the engine (out of memory)")

    with pytest.raises(ArtifactError, match="could not build"):
        ensure_engine(trained_onnx, cache, machine=ORIN_JP6, build=failing)
    assert not target.exists() and not sidecar_path(target).exists()
    st = inspect_cache(trained_onnx, cache, "fp16", ORIN_JP6)
    assert not st.reusable and "in the cache yet" in st.reason


def test_sidecar_without_plan_sha256_is_not_trusted(tmp_path, trained_onnx):
    cache = tmp_path / "engines"
    target = _keyed(cache, trained_onnx, ORIN_JP6)
    m = read_manifest(target)
    del m.extra["plan_sha256"]
    write_manifest(target, m)
    st = inspect_cache(trained_onnx, cache, "fp16", ORIN_JP6)
    assert not st.reusable and st.reason.endswith("its sidecar records no plan sha256, so the plan cannot be verified")
