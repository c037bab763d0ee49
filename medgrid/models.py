"""Model registry: name -> constructor(in_channels, n_classes, size).

Every model takes images in [0, 1] and normalises them itself (per-task channel mean and
std, stored as buffers in the checkpoint), so attacks and epsilons live in pixel space.
Every model exposes ``features(x)`` (the penultimate representation, used for robust-dataset
construction) and ``head`` (the final linear layer).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from medgrid.errors import UserError

FIT_CHUNK = 1 << 24  # values of a training split reduced at once (a 64 MiB float32 copy at most)


@torch.no_grad()
def channel_stats(images_uint8: torch.Tensor, chunk: int = FIT_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and unbiased std, in [0, 1] units (float32 on the CPU), of uint8 (N, C, H, W) images.

    The images are counted chunk by chunk (about ``chunk`` values at a time, on their own device) into a
    histogram of the 256 grey levels per channel; mean and variance follow from it in float64, exactly up
    to that rounding, whatever the chunking.
    """
    n, c = images_uint8.shape[:2]
    rows = max(1, chunk // max(1, images_uint8[:1].numel()))
    counts = torch.zeros((c, 256), dtype=torch.int64, device=images_uint8.device)
    for start in range(0, n, rows):
        block = images_uint8[start:start + rows]
        for ch in range(c):
            counts[ch] += torch.bincount(block[:, ch].reshape(-1), minlength=256)
    counts = counts.cpu().double()
    levels = torch.arange(256, dtype=torch.float64)
    total = counts.sum(1)
    mean = (counts * levels).sum(1) / total
    var = (counts * (levels[None] - mean[:, None]) ** 2).sum(1) / (total - 1)
    return (mean / 255.0).float(), (var.sqrt() / 255.0).float()


class Normalize(nn.Module):
    """(x - mean) / std per channel; the statistics are buffers so they travel with the weights."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("mean", torch.full((1, channels, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, channels, 1, 1), 0.5))

    @torch.no_grad()
    def fit(self, images_uint8: torch.Tensor) -> None:
        """Set mean and (unbiased) std per channel from a (N, C, H, W) uint8 training split.

        A split of at most FIT_CHUNK values is converted to float32 whole and reduced by torch (as medgrid
        always did, so these statistics are unchanged); a larger one is never copied whole: its statistics
        come from :func:`channel_stats`, chunk by chunk, wherever the split is held.
        """
        if images_uint8.numel() <= FIT_CHUNK:
            x = images_uint8.cpu().float().div_(255.0)
            mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
        else:
            mean, std = channel_stats(images_uint8)
        self.mean.copy_(mean.view_as(self.mean))
        self.std.copy_(std.clamp_min(1e-3).view_as(self.std))

    def forward(self, x):
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """normalise -> body (penultimate features) -> linear head."""

    def __init__(self, in_channels: int, body: nn.Module, n_features: int, n_classes: int):
        super().__init__()
        self.normalize = Normalize(in_channels)
        self.body = body
        self.head = nn.Linear(n_features, n_classes)

    def features(self, x):
        return self.body(self.normalize(x))

    def forward(self, x):
        return self.head(self.features(x))


def _conv_block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def cnn_small(in_channels: int, n_classes: int, size: int) -> Classifier:
    """conv16-32-64 with pooling, then a 4x4 spatial pool so position stays visible; fast on a CPU."""
    body = nn.Sequential(
        _conv_block(in_channels, 16), nn.MaxPool2d(2),
        _conv_block(16, 32), nn.MaxPool2d(2),
        _conv_block(32, 64), nn.AdaptiveAvgPool2d(4),
        nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU(inplace=True),
    )
    return Classifier(in_channels, body, 128, n_classes)


def resnet18(in_channels: int, n_classes: int, size: int) -> Classifier:
    """torchvision's ResNet-18; small-image stem (3x3 stride-1 conv, no max-pool) at 28 and 64 px."""
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(num_classes=n_classes)
    if size <= 64:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    n_features = net.fc.in_features
    net.fc = nn.Identity()
    return Classifier(in_channels, net, n_features, n_classes)


class _PreActBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class _PreActResNet18Body(nn.Module):
    def __init__(self, in_channels: int, size: int):
        super().__init__()
        stride = 1 if size <= 64 else 2
        self.stem = nn.Conv2d(in_channels, 64, 3, stride, 1, bias=False)
        layers, cin = [], 64
        for cout, s in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_PreActBlock(cin, cout, s), _PreActBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(512)

    def forward(self, x):
        out = F.relu(self.bn(self.layers(self.stem(x))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


def preact_resnet18(in_channels: int, n_classes: int, size: int) -> Classifier:
    """Pre-activation ResNet-18 (He et al. 2016), the usual adversarial-training baseline."""
    return Classifier(in_channels, _PreActResNet18Body(in_channels, size), 512, n_classes)


MODELS: dict[str, Callable[[int, int, int], Classifier]] = {
    "cnn-small": cnn_small,
    "resnet18": resnet18,
    "preact-resnet18": preact_resnet18,
}


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Model in eval mode (BatchNorm uses running statistics, e.g. during an attack); each submodule's own mode
    restored after (``train(was)`` on the top would switch an eval-mode model inside a training-mode wrapper)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training


def build(arch: str, in_channels: int, n_classes: int, size: int) -> Classifier:
    if arch not in MODELS:
        raise UserError(f"unknown arch {arch!r}; valid: {', '.join(MODELS)}")
    return MODELS[arch](in_channels, n_classes, size)
