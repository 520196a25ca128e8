"""Elementwise activations."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Lines, Nonlinear, method, rule

aten = torch.ops.aten


@rule("relu", spellings=(nn.ReLU, F.relu, F.relu_, torch.relu, torch.relu_, method("relu"), method("relu_"),
                         aten.relu.default, aten.relu_.default))
class ReLU(Nonlinear):
    """``σ(z) = max(z, 0)``; IBP ``[σ(l), σ(u)]``.

    Lines (Zhang et al. 2018, CROWN): stable active ``z``, stable inactive ``0``; unstable
    (``l < 0 < u``): upper ``u/(u−l)·(z − l)``, lower ``αz`` with α by ``strategy``: ``"adaptive"``
    α = 1 if u > −l else 0, ``"zero"`` α = 0, ``"one"`` α = 1, ``"tight"`` (Lyu et al. 2021: each line
    meets σ at the end of the interval it bounds, so over ``[l, u]`` the lower line stays ≥ σ(l) and the
    upper ≤ σ(u), which makes CROWN and LBP at least as tight as IBP) α = 0.
    """

    lipschitz = 1.0

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp(min=0)

    def lines(self, lower: Tensor, upper: Tensor, strategy: str) -> Lines:
        active = (lower >= 0).to(lower.dtype)
        unstable = (lower < 0) & (upper > 0)
        # u − l > 0 wherever the neuron is unstable; elsewhere divide by 1 (no inf, so no NaN gradient)
        slope = upper / torch.where(unstable, upper - lower, torch.ones_like(lower))
        upper_slope = torch.where(unstable, slope, active)
        upper_bias = torch.where(unstable, -slope * lower, torch.zeros_like(lower))
        if strategy == "adaptive":
            alpha = (upper > -lower).to(lower.dtype)
        elif strategy in ("zero", "one", "tight"):
            alpha = torch.full_like(lower, 1.0 if strategy == "one" else 0.0)
        else:
            raise ValueError(f"relu: unknown line strategy {strategy!r}")
        lower_slope = torch.where(unstable, alpha, active)
        return Lines(lower_slope, None, upper_slope, upper_bias)

    def unstable(self, lower: Tensor, upper: Tensor) -> Tensor:
        """Only neurons whose sign is not known: elsewhere the lines are exact whatever the bounds."""
        return (lower < 0) & (upper > 0)
