"""The deployable network: in-graph normalisation, frozen trunk, trainable top, head, softmax."""

from __future__ import annotations

import torch
from torch import nn

from ..preprocess import InputContract
from .backbones import BACKBONES, LoadedBackbone, keep_units


class Normalize(nn.Module):
    """``uint8 [N,H,W,3]`` BGR -> ``float32 [N,3,H,W]`` RGB, ``(x - mean) / std``.

    Lives inside the exported graph so that the host never normalises (ARCHITECTURE 1).
    The Cast comes first: TensorRT's ONNX parser (and onnxruntime's TensorRT provider)
    accept a uint8 tensor only as the direct input of a Cast, not of a Transpose, Gather,
    Slice or Shape. The channel flip is a constant-index gather on the float tensor.
    """

    def __init__(self, contract: InputContract):
        super().__init__()
        mean = torch.tensor(contract.mean, dtype=torch.float32)
        std = torch.tensor(contract.std, dtype=torch.float32)
        order = [2, 1, 0] if contract.color == "BGR" else [0, 1, 2]
        self.register_buffer("order", torch.tensor(order, dtype=torch.long), persistent=False)
        self.register_buffer("scale", (1.0 / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (-mean / std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().permute(0, 3, 1, 2)
        x = torch.index_select(x, 1, self.order)
        return x * self.scale + self.shift


POOLS = ("avg", "max", "avgmax")


def pool_features(x: torch.Tensor, pool: str) -> torch.Tensor:
    """Global pooling of a feature map ``[N, C, h, w]`` to ``[N, C]`` (``[N, 2C]`` for avgmax).

    Max pooling matters for cracks: a hairline crack covers a few percent of a tile, and an
    average over the whole map dilutes it.
    """
    if pool == "avg":
        return x.mean((2, 3))
    if pool == "max":
        return x.amax((2, 3))
    return torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)


class Head(nn.Module):
    """Global pool, dropout, linear classifier."""

    def __init__(self, channels: int, n_classes: int, dropout: float = 0.2, pool: str = "avg"):
        super().__init__()
        self.pool = pool
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels * (2 if pool == "avgmax" else 1), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = pool_features(x, self.pool)
        return self.fc(self.dropout(x))


TTA_VIEWS = (1, 2, 4)


def flip_views(x: torch.Tensor, n: int) -> torch.Tensor:
    """Stack the first ``n`` flip views of a normalised NCHW batch along the batch axis.

    Order matches :data:`edgecrack.train.bottleneck.VIEWS`: identity, horizontal flip,
    vertical flip, 180 degree rotation. Flipping after the in-graph normalisation gives the
    same numbers as flipping the pixels (normalisation is per pixel) and keeps the uint8
    input's only consumer a Cast.
    """
    views = [x, torch.flip(x, [3]), torch.flip(x, [2]), torch.flip(x, [2, 3])][:n]
    return torch.cat(views, 0)


class CrackNet(nn.Module):
    """The whole classifier as exported.

    ``forward`` takes the host contract (``uint8 NHWC BGR``) and returns softmax
    probabilities. ``trunk`` is frozen (its output is what the bottleneck phase caches),
    ``top`` holds the fine-tuned backbone units, ``head`` the classifier. With ``tta > 1`` the
    graph averages the probabilities of the first ``tta`` flip views of every image (cracks
    have no orientation; measured +2 points of 5-fold accuracy on the deck sample for 4 views,
    at 4x the backbone compute).
    """

    def __init__(self, trunk: nn.Module, top: nn.Module, head: Head, contract: InputContract, tta: int = 1):
        super().__init__()
        if tta not in TTA_VIEWS:
            raise ValueError(f"tta must be one of {TTA_VIEWS}, got {tta}")
        self.normalize = Normalize(contract)
        self.trunk = trunk
        self.top = top
        self.head = head
        self.tta = tta

    def logits_from_trunk(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(self.top(feats))

    def trunk_features(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.normalize(x_uint8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        if self.tta == 1:
            return torch.softmax(self.logits_from_trunk(self.trunk(x)), dim=1)
        p = torch.softmax(self.logits_from_trunk(self.trunk(flip_views(x, self.tta))), dim=1)
        # -1, not the traced batch size: a constant shape keeps Shape/Gather arithmetic out of the graph
        return p.reshape(self.tta, -1, self.head.fc.out_features).mean(0)


def split_units(units: nn.Sequential, fine_tune_blocks: int) -> tuple[nn.Sequential, nn.Sequential]:
    """Frozen trunk = all but the last ``fine_tune_blocks`` units; top = those units."""
    n = len(units)
    if not 0 <= fine_tune_blocks < n:
        raise ValueError(f"fine_tune_blocks must be in [0, {n - 1}], got {fine_tune_blocks}")
    cut = n - fine_tune_blocks
    return nn.Sequential(*units[:cut]), nn.Sequential(*units[cut:])


def build_cracknet(backbone: LoadedBackbone, n_classes: int, fine_tune_blocks: int, contract: InputContract,
                   dropout: float = 0.2, pool: str = "avg", tta: int = 1) -> CrackNet:
    """Assemble a :class:`CrackNet` from a loaded backbone."""
    trunk, top = split_units(backbone.units, fine_tune_blocks)
    for p in trunk.parameters():
        p.requires_grad_(False)
    return CrackNet(trunk, top, Head(backbone.channels, n_classes, dropout, pool), contract, tta).eval()


def skeleton_cracknet(backbone: str, n_classes: int, fine_tune_blocks: int, contract: InputContract,
                      pool: str = "avg", dropout: float = 0.2, tta: int = 1, units: int | None = None) -> CrackNet:
    """An untrained :class:`CrackNet` with the right shapes, to load a checkpoint into
    (``units``: backbone units kept; None: all)."""
    spec = BACKBONES[backbone]
    all_units, channels, head = spec.build()
    lb = LoadedBackbone(spec, all_units, channels, head, "skeleton")
    if units is not None:
        if not 1 <= units <= len(all_units):
            raise ValueError(f"{backbone} has {len(all_units)} units, a checkpoint cannot keep {units}")
        lb = keep_units(lb, units)
    return build_cracknet(lb, n_classes, fine_tune_blocks, contract, dropout, pool, tta)
