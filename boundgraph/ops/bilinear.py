"""Products of two perturbed tensors: ``x * y`` elementwise (with broadcasting), and through it ``x / y``
(``x · 1/y``) and ``x @ y`` (a broadcast product summed over the inner dimension), which their rules rewrite
into when both operands are perturbed (``Rule.expand``).

McCormick's planes (McCormick 1976; the relaxation CROWN uses for products, Shi et al. 2020): on the box
``x ∈ [lx, ux]``, ``y ∈ [ly, uy]``,

    z ≥ ly·x + lx·y − lx·ly      (L1, exact at the corners (lx, ·) and (·, ly))
    z ≥ uy·x + ux·y − ux·uy      (L2, exact at (ux, ·) and (·, uy))
    z ≤ uy·x + lx·y − lx·uy      (U1)
    z ≤ ly·x + ux·y − ux·ly      (U2)

each because ``(x − lx)(y − ly) ≥ 0`` and so on. Each plane is exact on two edges of the box and loose by up to
``(ux − lx)(uy − ly)`` at the opposite corner, so no plane is tighter everywhere. ``adaptive`` lines take, per
element, the lower plane whose minimum over the box is larger and the upper plane whose maximum is smaller,
which is the plane that loses least to IBP's exact range ``[min, max]`` of the four corner products; ``zero``
takes L1/U1, ``one`` L2/U2.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..ir import Interval, LinearBounds
from .base import Nonlinear, rule, spec_dot, unbroadcast


class ProductLines(NamedTuple):
    """``lower_x·x + lower_y·y + lower_bias ≤ x·y ≤ upper_x·x + upper_y·y + upper_bias``, in the output's shape."""

    lower_x: Tensor
    lower_y: Tensor
    lower_bias: Tensor
    upper_x: Tensor
    upper_y: Tensor
    upper_bias: Tensor


def _plane_extreme(a: Tensor, b: Tensor, c: Tensor, lx, ux, ly, uy, low: bool) -> Tensor:
    """The minimum (``low``) or maximum of ``a·x + b·y + c`` over the box."""
    if low:
        return a.clamp(min=0) * lx + a.clamp(max=0) * ux + b.clamp(min=0) * ly + b.clamp(max=0) * uy + c
    return a.clamp(min=0) * ux + a.clamp(max=0) * lx + b.clamp(min=0) * uy + b.clamp(max=0) * ly + c


@rule("product")
class Product(Nonlinear):
    """``z = x · y`` of two perturbed tensors, elementwise with broadcasting (module doc). IBP: the least and
    largest of the four corner products."""

    inputs = 2
    perturbable = (0, 1)

    def specialize(self, attrs, operand_shapes, out_shape):
        return dict(shapes=tuple(operand_shapes))

    def forward(self, x, y, shapes=None):  # type: ignore[override]
        return x * y

    def interval(self, x: Interval, y: Interval, shapes=None) -> Interval:  # type: ignore[override]
        corners = (x.lower * y.lower, x.lower * y.upper, x.upper * y.lower, x.upper * y.upper)
        low, high = corners[0], corners[0]
        for c in corners[1:]:
            low, high = torch.minimum(low, c), torch.maximum(high, c)
        return Interval(low, high)

    def lines(self, lx, ux, ly, uy, strategy, shapes=None):  # type: ignore[override]
        shape = torch.broadcast_shapes(lx.shape, ly.shape)
        lx, ux, ly, uy = (t.expand(shape) for t in (lx, ux, ly, uy))
        planes_low = ((ly, lx, -lx * ly), (uy, ux, -ux * uy))
        planes_high = ((uy, lx, -lx * uy), (ly, ux, -ux * ly))
        if strategy in ("zero", "one"):
            k = 0 if strategy == "zero" else 1
            return ProductLines(*planes_low[k], *planes_high[k])
        with torch.no_grad():
            first_low = _plane_extreme(*planes_low[0], lx, ux, ly, uy, True) >= \
                _plane_extreme(*planes_low[1], lx, ux, ly, uy, True)
            first_high = _plane_extreme(*planes_high[0], lx, ux, ly, uy, False) <= \
                _plane_extreme(*planes_high[1], lx, ux, ly, uy, False)
        low = (torch.where(first_low, a, b) for a, b in zip(*planes_low))
        high = (torch.where(first_high, a, b) for a, b in zip(*planes_high))
        return ProductLines(*low, *high)

    def line_values(self, lines: ProductLines, x: Tensor, y: Tensor) -> tuple:
        return (lines.lower_x * x + lines.lower_y * y, lines.lower_bias, lines.upper_x * x + lines.upper_y * y,
                lines.upper_bias)

    def unstable(self, lower, upper, **attrs):
        return upper > lower

    def backward(self, A: Tensor, lines: ProductLines, shapes=None, **attrs) -> tuple[tuple, Any]:  # type: ignore[override]
        """``A_x = A⁺·lower_x + A⁻·upper_x`` (summed over what ``x`` was broadcast along), ``A_y`` likewise,
        ``bias = A⁺·lower_bias + A⁻·upper_bias``."""
        positive = A.clamp(min=0)
        negative = A - positive
        per_row = [t.unsqueeze(1) for t in lines]
        A_x = positive * per_row[0] + negative * per_row[3]
        A_y = positive * per_row[1] + negative * per_row[4]
        bias = spec_dot(positive, lines.lower_bias) + spec_dot(negative, lines.upper_bias)
        return (unbroadcast(A_x, shapes[0]), unbroadcast(A_y, shapes[1])), bias

    def forward_linear(self, x: LinearBounds, y: LinearBounds, lines: ProductLines) -> LinearBounds:  # type: ignore[override]
        """Each plane's terms ``a·x`` bounded by ``a⁺·(x's lower bound) + a⁻·(x's upper bound)`` (mirrored above)."""
        def term(slope: Tensor, bounds: LinearBounds, lower: bool) -> tuple[Tensor, Tensor]:
            positive, negative = slope.clamp(min=0), slope.clamp(max=0)
            near = (bounds.lower_coef, bounds.lower_bias) if lower else (bounds.upper_coef, bounds.upper_bias)
            far = (bounds.upper_coef, bounds.upper_bias) if lower else (bounds.lower_coef, bounds.lower_bias)
            coef = near[0] * positive.unsqueeze(1) + far[0] * negative.unsqueeze(1)
            return coef, near[1] * positive + far[1] * negative

        lower_x, lower_xb = term(lines.lower_x, x, True)
        lower_y, lower_yb = term(lines.lower_y, y, True)
        upper_x, upper_xb = term(lines.upper_x, x, False)
        upper_y, upper_yb = term(lines.upper_y, y, False)
        return LinearBounds(lower_x + lower_y, lower_xb + lower_yb + lines.lower_bias, upper_x + upper_y,
                            upper_xb + upper_yb + lines.upper_bias)

    def deviation(self, x: Interval, y: Interval, shapes=None) -> Interval:  # type: ignore[override]
        """SingleProp (not a bound): ``c_x c_y ± (|c_x| r_y + |c_y| r_x + r_x r_y)``."""
        cx, rx = x.centre_radius()
        cy, ry = y.centre_radius()
        value, spread = cx * cy, cx.abs() * ry + cy.abs() * rx + rx * ry
        return Interval(value - spread, value + spread)
