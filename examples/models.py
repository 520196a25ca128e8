"""Model zoo: the architectures of the certified-training papers (names and shapes as in DESIGN.md)."""
from __future__ import annotations

import torch.nn as nn


def mlp_784_256_256_10() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def dm_small(in_channels: int = 1, size: int = 28, classes: int = 10) -> nn.Sequential:
    """DM-small (Gowal et al. 2018): Conv16 4×4/2, Conv32 4×4/1 (no padding), FC100, FC10."""
    side = (size - 4) // 2 + 1 - 3
    return nn.Sequential(nn.Conv2d(in_channels, 16, 4, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(32 * side * side, 100), nn.ReLU(),
                         nn.Linear(100, classes))


def dm_large(in_channels: int = 3, size: int = 32, classes: int = 10) -> nn.Sequential:
    """DM-large: Conv64 3×3/1, Conv64 3×3/1, Conv128 3×3/2, Conv128 3×3/1, Conv128 3×3/1 (padding 1),
    FC512, FC10."""
    return nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1), nn.ReLU(), nn.Conv2d(64, 64, 3, 1, 1), nn.ReLU(),
                         nn.Conv2d(64, 128, 3, 2, 1), nn.ReLU(), nn.Conv2d(128, 128, 3, 1, 1), nn.ReLU(),
                         nn.Conv2d(128, 128, 3, 1, 1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(128 * (size // 2) ** 2, 512), nn.ReLU(), nn.Linear(512, classes))
