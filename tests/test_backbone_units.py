"""A backbone cut after N units (``--backbone-units``): trained, cached, exported and reloaded as that network."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from edgecrack.errors import ArtifactError, ConfigError  # noqa: E402
from edgecrack.manifest import read_manifest  # noqa: E402
from edgecrack.preprocess import InputContract, preprocess_files  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory, small_deck):
    from edgecrack.jobs import train_job
    from edgecrack.train.api import TrainConfig

    out = tmp_path_factory.mktemp("cut") / "run"
    cache = tmp_path_factory.mktemp("cut-cache")
    train_job(TrainConfig(data=str(small_deck), out=str(out), views=1, backbone_units=13, cache_dir=str(cache),
                          plots=False))
    return out


def test_cut_network_is_what_is_exported_and_reloaded(cut_run, holdout_deck):
    import onnxruntime as ort

    from edgecrack.train.backbones import load_backbone
    from edgecrack.train.checkpoint import load_checkpoint

    m = read_manifest(cut_run)
    assert m.head["backbone_units"] == 13
    net, _ = load_checkpoint(cut_run)
    assert len(net.trunk) == 13 and net.head.fc.in_features == 192  # unit 12's output: 192 channels
    full = load_backbone("efficientnet_lite0").units
    want_convs = sum(isinstance(x, torch.nn.Conv2d) for x in full[:13].modules())
    assert want_convs < sum(isinstance(x, torch.nn.Conv2d) for x in full.modules())
    g = onnx.load(str(cut_run / "model.onnx")).graph
    assert sum(n.op_type == "Conv" for n in g.node) == want_convs  # the deeper units are not in the graph

    paths = sorted(holdout_deck.glob("*/*.jpg"))[::5]
    x = preprocess_files(paths, m.input)
    with torch.inference_mode():
        p_ckpt = net(torch.from_numpy(x)).numpy()
    p_onnx = ort.InferenceSession(str(cut_run / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert np.abs(p_ckpt - p_onnx).max() < 1e-4
    assert json.loads((cut_run / "config.json").read_text())["backbone_units"] == 13


def test_cut_features_have_their_own_cache_key():
    from edgecrack.train.bottleneck import model_key

    c = InputContract()
    whole = model_key("efficientnet_lite0", "w", c, 0, True, ["id"])
    assert model_key("efficientnet_lite0", "w", c, 0, True, ["id"], units=None) == whole
    assert len({whole, model_key("efficientnet_lite0", "w", c, 0, True, ["id"], units=13),
                model_key("efficientnet_lite0", "w", c, 0, True, ["id"], units=16)}) == 3


def test_out_of_range_units_are_a_config_error():
    from edgecrack.train.api import TrainConfig, build_model

    with pytest.raises(ConfigError, match=r"--backbone-units must be in \[0, 18\] for efficientnet_lite0"):
        build_model(TrainConfig(backbone_units=19), ["CD", "UD"])
    with pytest.raises(ConfigError, match=r"--fine-tune-blocks must be in \[0, 1\] .* with 2 units kept"):
        build_model(TrainConfig(backbone_units=2, fine_tune_blocks=2), ["CD", "UD"])


@pytest.mark.parametrize("bad, msg", [(0, "head.backbone_units must be an integer >= 1"),
                                      ("13", "head.backbone_units must be an integer >= 1"),
                                      (40, "efficientnet_lite0 has 18 units, a checkpoint cannot keep 40")])
def test_manifest_with_bad_units_is_refused(cut_run, tmp_path, bad, msg):
    import shutil

    from edgecrack.train.checkpoint import load_checkpoint

    for name in ("checkpoint.safetensors", "manifest.json"):
        shutil.copy(cut_run / name, tmp_path / name)
    d = json.loads((tmp_path / "manifest.json").read_text())
    d["head"]["backbone_units"] = bad
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(ArtifactError, match=msg):
        load_checkpoint(tmp_path)
