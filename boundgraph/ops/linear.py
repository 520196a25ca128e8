"""Affine maps with a constant weight: ``linear`` and the fused output specification."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ir import Interval, LinearBounds, PerExample
from .base import Rule, rule, spec_sum

aten = torch.ops.aten


def _matvec(A: Tensor, vector: Tensor) -> Tensor:
    """``spec_sum(A · vector)`` over the last dimension, vector ``(out,)`` or ``(batch, out)``."""
    if vector.dim() == 1:
        return spec_sum(torch.matmul(A, vector).unsqueeze(-1))
    return torch.matmul(A, vector.unsqueeze(-1)).squeeze(-1)


@rule("linear", spellings=(nn.Linear, F.linear, aten.linear.default))
class Linear(Rule):
    """``z = x Wᵀ + b``.

    IBP (Gowal et al. 2018): with centre ``c`` and radius ``r`` of x, ``z ∈ Wc + b ± |W| r``.
    CROWN (Zhang et al. 2018): ``A ← A W``, ``bias += A b``. ``W`` may be batched, ``(batch, out, in)``,
    as it is once the specification ``C`` has been fused in (``spec_weight``).
    """

    def canonicalize(self, call):
        if call.module is not None:
            return (call.arg(0, "input"), call.param("weight"), call.param("bias")), {}
        return (call.arg(0, "input"), call.arg(1, "weight"), call.arg(2, "bias", None)), {}

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if weight.dim() == 3:
            out = torch.matmul(weight, x.unsqueeze(-1)).squeeze(-1)
            return out if bias is None else out + bias
        return F.linear(x, weight, bias)

    def interval(self, x: Interval, weight: Tensor, bias: Tensor | None) -> Interval:
        centre, radius = x.centre_radius()
        mid = self.forward(centre, weight, bias)
        rad = self.forward(radius, weight.abs(), None)
        return Interval(mid - rad, mid + rad)

    def backward(self, A: Tensor, x: None, weight: Tensor, bias: Tensor | None):
        return (torch.matmul(A, weight), None, None), (0 if bias is None else _matvec(A, bias))

    def forward_linear(self, x: LinearBounds, weight: Tensor, bias: Tensor | None) -> LinearBounds:
        """LBP: ``W_l' = W⁺W_l + W⁻W_u`` by centre and radius, on the input slices as they lie (a batched
        weight multiplies each example's slices by one matrix product)."""
        weight, bias = (v.value if isinstance(v, PerExample) else v for v in (weight, bias))
        centre, radius = Interval(x.lower_coef, x.upper_coef).centre_radius()
        weight_t = weight.transpose(-1, -2)
        mid, rad = torch.matmul(centre, weight_t), torch.matmul(radius, weight_t.abs())
        biases = self.interval(Interval(x.lower_bias, x.upper_bias), weight, bias)
        return LinearBounds(mid - rad, biases.lower, mid + rad, biases.upper)


@rule("spec_weight")
class SpecWeight(Rule):
    """``C W``: the output specification fused into the last linear layer's weight
    (Zhang et al. 2020, CROWN-IBP), ``(batch, specs, in)``; ``C`` itself when there is no layer."""

    perturbable = ()

    def forward(self, C: Tensor, weight: Tensor | None) -> Tensor:
        return C if weight is None else torch.matmul(C, weight)


@rule("spec_bias")
class SpecBias(Rule):
    """``C b``, the fused bias: ``(batch, specs)``."""

    perturbable = ()

    def forward(self, C: Tensor, bias: Tensor) -> Tensor:
        return torch.matmul(C, bias)
