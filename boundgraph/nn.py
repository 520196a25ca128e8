"""Layers that certified training adds to ``torch.nn``: the ParamRamp activation (Lyu et al. 2021)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class ParamRamp(nn.Module):
    """``σ(z) = ηz`` for ``z < 0``, ``z`` on ``[0, r]``, ``ηz + (1−η)r`` above ``r`` (Lyu et al. 2021).

    ``r`` is learnt, one per feature (dimension 1 of the input: a linear layer's outputs or a
    convolution's channels); ``η`` is a buffer that a schedule may change (``set_eta``). Unlike ReLU it
    keeps three neuron states (inactive, linear, saturated), which is what lets bound-trained networks
    keep more neurons alive. ``boundgraph`` bounds it with its own rule (``boundgraph/ops/activation.py``)."""

    def __init__(self, num_features: int, eta: float = 0.01, r: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"ParamRamp: eta must lie in [0, 1], got {eta}")
        self.num_features = num_features
        self.r = nn.Parameter(torch.full((num_features,), float(r)))
        self.register_buffer("eta", torch.tensor(float(eta)))

    def forward(self, x: Tensor) -> Tensor:
        r = self.r.clamp(min=0).view(-1, *([1] * (x.dim() - 2)))
        return self.eta * x + (1 - self.eta) * torch.minimum(x.clamp(min=0), r)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eta={self.eta.item():g}"


def set_eta(model: nn.Module, eta: float) -> None:
    """Set η of every ParamRamp in ``model`` (for an η schedule)."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    for m in model.modules():
        if isinstance(m, ParamRamp):
            m.eta.fill_(eta)


@torch.no_grad()
def init_ramps(model: nn.Module, x: Tensor) -> None:
    """Set each ParamRamp's ``r`` to the mean of the positive values its input takes on the batch ``x``,
    per feature (1 where a feature is never positive), so that the ramp starts where the activations lie."""
    ramps = [m for m in model.modules() if isinstance(m, ParamRamp)]
    seen: dict[ParamRamp, Tensor] = {}

    def capture(module: nn.Module, args: tuple) -> None:
        z = args[0].transpose(0, 1).reshape(args[0].shape[1], -1)  # (features, everything else)
        positive = z.clamp(min=0)
        count = (z > 0).sum(1)
        seen[module] = torch.where(count > 0, positive.sum(1) / count.clamp(min=1), torch.ones_like(count, dtype=z.dtype))

    handles = [m.register_forward_pre_hook(capture) for m in ramps]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    for m, mean in seen.items():
        m.r.copy_(mean.to(m.r))
