"""Model zoo: the architectures of the certified-training papers (names and shapes as in DESIGN.md).

Every builder takes ``(in_channels, size, classes)`` so one name serves MNIST (1, 28) and CIFAR (3, 32).
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

Activation = Callable[[int], nn.Module]  # number of features (channels) → activation layer


def relu(features: int) -> nn.Module:
    return nn.ReLU()


def _side(size: int, *layers: tuple[int, int, int]) -> int:
    """Spatial size after convolutions given as (kernel, stride, padding)."""
    for kernel, stride, padding in layers:
        size = (size + 2 * padding - kernel) // stride + 1
    return size


def mlp(in_channels: int = 1, size: int = 28, classes: int = 10, act: Activation = relu) -> nn.Sequential:
    """MLP 784-256-256-10 (for MNIST-shaped input)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * size * size, 256), act(256), nn.Linear(256, 256),
                         act(256), nn.Linear(256, classes))


def mlp_small(in_channels: int = 1, size: int = 28, classes: int = 10, act: Activation = relu) -> nn.Sequential:
    """MLP 784-100-100-10: small enough for forward-mode LBP / CROWN-LBP training on a CPU."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * size * size, 100), act(100), nn.Linear(100, 100),
                         act(100), nn.Linear(100, classes))


def dm_small(in_channels: int = 1, size: int = 28, classes: int = 10, act: Activation = relu) -> nn.Sequential:
    """DM-small (Gowal et al. 2018): Conv16 4×4/2, Conv32 4×4/1 (no padding), FC100, FC10."""
    side = _side(size, (4, 2, 0), (4, 1, 0))
    return nn.Sequential(nn.Conv2d(in_channels, 16, 4, stride=2), act(16), nn.Conv2d(16, 32, 4, stride=1),
                         act(32), nn.Flatten(), nn.Linear(32 * side * side, 100), act(100),
                         nn.Linear(100, classes))


def dm_medium(in_channels: int = 1, size: int = 28, classes: int = 10, act: Activation = relu) -> nn.Sequential:
    """DM-medium: Conv32 3×3/1, Conv32 4×4/2, Conv64 3×3/1, Conv64 4×4/2 (no padding), FC512, FC512, FC10."""
    side = _side(size, (3, 1, 0), (4, 2, 0), (3, 1, 0), (4, 2, 0))
    return nn.Sequential(nn.Conv2d(in_channels, 32, 3), act(32), nn.Conv2d(32, 32, 4, stride=2), act(32),
                         nn.Conv2d(32, 64, 3), act(64), nn.Conv2d(64, 64, 4, stride=2), act(64), nn.Flatten(),
                         nn.Linear(64 * side * side, 512), act(512), nn.Linear(512, 512), act(512),
                         nn.Linear(512, classes))


def _large(in_channels: int, size: int, classes: int, batch_norm: bool, act: Activation) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in, c_out, stride in ((in_channels, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 128, 1)):
        layers.append(nn.Conv2d(c_in, c_out, 3, stride, 1))
        layers += [nn.BatchNorm2d(c_out)] if batch_norm else []
        layers.append(act(c_out))
    side = _side(size, (3, 1, 1), (3, 1, 1), (3, 2, 1), (3, 1, 1), (3, 1, 1))
    layers += [nn.Flatten(), nn.Linear(128 * side * side, 512)]
    layers += [nn.BatchNorm1d(512)] if batch_norm else []
    return nn.Sequential(*layers, act(512), nn.Linear(512, classes))


def dm_large(in_channels: int = 3, size: int = 32, classes: int = 10, act: Activation = relu) -> nn.Sequential:
    """DM-large: Conv64 3×3/1, Conv64 3×3/1, Conv128 3×3/2, Conv128 3×3/1, Conv128 3×3/1 (padding 1),
    FC512, FC10."""
    return _large(in_channels, size, classes, batch_norm=False, act=act)


def cnn7(in_channels: int = 3, size: int = 32, classes: int = 10, act: Activation = relu) -> nn.Sequential:
    """CNN7 (Shi et al. 2021): DM-large with batch norm after every convolution and after FC512."""
    return _large(in_channels, size, classes, batch_norm=True, act=act)


class ResidualBlock(nn.Module):
    """``relu(x + conv(relu(conv(x))))``, 3×3 convolutions keeping the shape."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return (x + self.conv2(self.conv1(x).relu())).relu()


def resnet_small(in_channels: int = 1, size: int = 28, classes: int = 10, act: Activation = relu) -> nn.Sequential:
    """A small ResNet: Conv16, a residual block, Conv32 3×3/2, a residual block, AvgPool 2, FC100, FC10.
    ReLU only (its blocks call ``.relu()``)."""
    if act is not relu:
        raise ValueError("resnet-small is built with ReLU only")
    side = _side(size, (3, 1, 1), (3, 2, 1)) // 2
    return nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), ResidualBlock(16),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(), ResidualBlock(32), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(32 * side * side, 100), nn.ReLU(), nn.Linear(100, classes))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp, "mlp-small": mlp_small, "dm-small": dm_small, "dm-medium": dm_medium, "dm-large": dm_large, "cnn7": cnn7,
    "resnet-small": resnet_small,
}
