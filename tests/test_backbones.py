"""Backbone registry: pretrained weights loaded right, local weight files, clear errors without network."""

from __future__ import annotations

import time

import cv2
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from edgecrack.errors import WeightsError  # noqa: E402
from edgecrack.preprocess import InputContract, preprocess  # noqa: E402
from edgecrack.train.backbones import BACKBONES, load_backbone  # noqa: E402
from edgecrack.train.model import Normalize  # noqa: E402

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_efficientnet_lite0_imagenet_weights_classify_a_real_cat():
    skimage_data = pytest.importorskip("skimage.data")
    bb = load_backbone("efficientnet_lite0")
    assert bb.channels == 1280 and isinstance(bb.imagenet_head, torch.nn.Linear)
    assert bb.imagenet_head.out_features == 1000
    assert bb.weights_id.startswith("efficientnet-lite0") and ":sha256:" in bb.weights_id
    # chelsea() is RGB; the contract (like cv2.imread) is BGR
    bgr = cv2.cvtColor(skimage_data.chelsea(), cv2.COLOR_RGB2BGR)
    contract = InputContract(224, 224, mean=bb.spec.mean, std=bb.spec.std)
    batch = preprocess(bgr, contract)
    with torch.inference_mode():
        feats = bb.units.eval()(Normalize(contract)(torch.from_numpy(batch)))
        probs = torch.softmax(bb.imagenet_head.eval()(feats.mean((2, 3))), 1)[0].numpy()
    assert feats.shape == (1, 1280, 7, 7)
    assert int(probs.argmax()) in IMAGENET_CATS
    # measured 0.95 with the TF-port weights and TF "same" padding; broken padding or
    # BN eps, or a colour swap, drops it well below this
    assert probs[list(IMAGENET_CATS)].sum() > 0.8


def test_unknown_backbone_is_a_weights_error_listing_the_choices():
    t0 = time.perf_counter()
    with pytest.raises(WeightsError, match="unknown backbone 'vgg99'") as e:
        load_backbone("vgg99")
    assert "efficientnet_lite0" in e.value.hint and "resnet18" in e.value.hint
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_large"])
def test_torchvision_backbone_without_weights_fails_fast_without_network(name):
    t0 = time.perf_counter()
    with pytest.raises(WeightsError, match=f"backbone {name} needs pretrained weights") as e:
        load_backbone(name)
    assert "--weights FILE" in e.value.hint
    assert time.perf_counter() - t0 < 10.0  # builds the skeleton, never touches the network


def test_allow_download_without_network_is_a_clear_error_not_a_hang(monkeypatch, tmp_path):
    import urllib.request

    # no network: every request goes to a proxy on a closed loopback port (refused at once)
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached download to find
    monkeypatch.setattr(urllib.request, "_opener", None)  # rebuilt from the proxy variables above
    t0 = time.perf_counter()
    with pytest.raises(WeightsError, match="could not download resnet18 weights") as e:
        load_backbone("resnet18", allow_download=True)
    assert "--weights FILE" in e.value.hint
    assert time.perf_counter() - t0 < 30.0
    assert not any((tmp_path / "torch-home").rglob("*.pth"))


def test_torchvision_backbone_loads_a_local_weights_file(tmp_path):
    torch.manual_seed(123)
    ref = torchvision.models.resnet18(weights=None).eval()
    wfile = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), wfile)
    bb = load_backbone("resnet18", weights=wfile)
    assert bb.weights_id.startswith("resnet18.pth:sha256:")
    assert bb.spec.mean == (123.675, 116.28, 103.53)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        want = ref(x)
        feats = bb.units.eval()(x)
        got = bb.imagenet_head.eval()(feats.mean((2, 3)))
    assert feats.shape == (2, bb.channels, 2, 2)
    scale = want.abs().max()
    assert (got - want).abs().max() / scale < 1e-5
    # a different random initialisation is a different network: the comparison has teeth
    other = torchvision.models.resnet18(weights=None).eval()
    with torch.inference_mode():
        assert (other(x) - want).abs().max() / scale > 0.1


def test_mismatching_weights_file_is_a_weights_error(tmp_path):
    wfile = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wfile)
    with pytest.raises(WeightsError, match="weights do not match torchvision mobilenet_v3_large") as e:
        load_backbone("mobilenet_v3_large", weights=wfile)
    assert "mobilenet_v3_large" in e.value.hint


class _NotWeights:
    pass


def test_bad_weights_files_are_weights_errors(tmp_path):
    with pytest.raises(WeightsError, match="weights file not found"):
        load_backbone("resnet18", weights=tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"definitely not a torch file")
    with pytest.raises(WeightsError, match="cannot read weights file"):
        load_backbone("resnet18", weights=garbage)
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(WeightsError, match="holds a Tensor, not a state dict"):
        load_backbone("resnet18", weights=tensor)
    # arbitrary pickled objects are refused (weights-only loading), not executed
    pickled = tmp_path / "pickled.pth"
    torch.save({"conv1.weight": _NotWeights()}, pickled)
    with pytest.raises(WeightsError, match="cannot read weights file"):
        load_backbone("resnet18", weights=pickled)


def test_efficientnet_weights_file_missing_or_misshapen_tensor(tmp_path):
    from edgecrack.train.backbones import _lite_package_weights

    sd = torch.load(_lite_package_weights("efficientnet_lite0"), map_location="cpu", weights_only=True)
    missing = {k: v for k, v in sd.items() if k != "_blocks.7._project_conv.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="lacks tensor '_blocks.7._project_conv.weight'"):
        load_backbone("efficientnet_lite0", weights=tmp_path / "missing.pth")
    bad = dict(sd)
    bad["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"_conv_stem.weight has shape \(16, 3, 3, 3\), expected \(32, 3, 3, 3\)"):
        load_backbone("efficientnet_lite0", weights=tmp_path / "bad.pth")


def test_registry_has_at_least_two_torchvision_backbones():
    tv = [n for n, s in BACKBONES.items() if s.torchvision_name]
    assert {"mobilenet_v3_large", "resnet50"} <= set(tv)
    assert BACKBONES["efficientnet_lite0"].source == "package"
