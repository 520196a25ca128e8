"""Losses bounded as the last op of a program (loss fusion): the worst-case cross entropy from one backward row.

Certified training's objective is the cross entropy of the worst logits in the perturbation set. With the
margins ``z_j = f_j(x) − f_y(x)`` (``j ≠ y``; the spec rows ``e_j − e_y``), ``CE(f(x), y) = log(1 + Σ_j exp z_j)``.
Bounding the margins first needs one CROWN row per class; bounding this function of them needs one row in all
(the CROWN-IBP authors' library, Xu et al. 2020, "loss fusion"): ``exp`` is convex, so on each margin's interval
``[a_j, b_j]`` its chord lies above it, and the sum of the chords is a linear upper bound of ``Σ_j exp z_j``
that one backward sweep maximises over the set; ``log`` is increasing, so ``log(1 + max)`` bounds the loss.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..ir import Interval
from .base import Lines, Nonlinear, RULES, rule, through_lines


class TerminalLines(NamedTuple):
    """Lines of ``S(z) = exp(−s) + Σ_j exp(z_j − s)`` per margin (``lower_slope·z + lower_bias ≤ exp(z − s) ≤
    upper_slope·z + upper_bias``, ``(batch, margins)``), the shift ``s``, the interval's own loss range
    ``[floor, ceiling]`` and ``slack``, the rounding allowance of the upper line's value (``(batch, 1)`` each)."""

    lower_slope: Tensor
    lower_bias: Tensor
    upper_slope: Tensor
    upper_bias: Tensor
    shift: Tensor
    floor: Tensor
    ceiling: Tensor
    slack: Tensor


def _cross_entropy(z: Tensor) -> Tensor:
    """``log(1 + Σ_j exp z_j)`` over dimension 1, without overflow: ``(batch, 1)``."""
    return torch.logsumexp(torch.cat([torch.zeros_like(z[:, :1]), z], 1), 1, keepdim=True)


@rule("fused_cross_entropy")
class FusedCrossEntropy(Nonlinear):
    """``L(z) = log(1 + Σ_j exp z_j)`` of the margins ``z`` (``(batch, margins)`` → ``(batch, 1)``); the last op of
    a program (``terminal``): its lines bound ``S = exp(−s)·e^L``, and ``finish`` maps S's bounds back to L's.

    - IBP: L is increasing in every ``z_j``, so ``[L(a), L(b)]`` is its exact range over the box.
    - CROWN (loss fusion): shifted by ``s = max(0, max_j b_j)`` so that nothing overflows, each ``exp(z_j − s)``
      gets ``exp``'s own lines on ``[a_j − s, b_j − s]`` (the chord above, the parallel tangent below); their sum
      plus ``exp(−s)`` bounds S linearly, one row. After the sweep, ``L ≤ s + log(max S)`` and
      ``L ≥ s + log(min S)`` (where ``min S > 0``), each intersected with IBP's range.
    - LBP concretises ``z`` and takes IBP's range (the schedule asks for its interval, not linear bounds).
    """

    terminal = True

    def forward(self, z: Tensor) -> Tensor:  # type: ignore[override]
        return _cross_entropy(z)

    def interval(self, z: Interval) -> Interval:  # type: ignore[override]
        return Interval(_cross_entropy(z.lower), _cross_entropy(z.upper))

    def lines(self, lower: Tensor, upper: Tensor, strategy: str) -> TerminalLines:  # type: ignore[override]
        shift = upper.detach().amax(1, keepdim=True).clamp(min=0)  # any shift is exact; this one cannot overflow
        exp: Lines = RULES["exp"].lines(lower - shift, upper - shift, "adaptive")  # lines in z − s: k(z − s) + t
        lower_bias = exp.lower_bias if exp.lower_bias is not None else torch.zeros_like(lower)
        upper_bias = exp.upper_bias - exp.upper_slope * shift
        # the upper line's value is a difference of terms ~ k·|z|: near a margin's lower end it is far smaller than
        # they are, and rounding could make it 0 or negative, which log would turn into a bound far too low
        terms = (exp.upper_slope * torch.maximum(lower.abs(), upper.abs()) + upper_bias.abs()).detach()
        slack = 16 * torch.finfo(lower.dtype).eps * terms.sum(1, keepdim=True)
        return TerminalLines(exp.lower_slope, lower_bias - exp.lower_slope * shift, exp.upper_slope, upper_bias,
                             shift, _cross_entropy(lower), _cross_entropy(upper), slack)

    def backward(self, A: Tensor, lines: TerminalLines) -> tuple[tuple, Tensor]:  # type: ignore[override]
        """``A`` (``(batch, rows, 1)``) over S: the same coefficient on every margin's lines, plus ``A·exp(−s)``."""
        spread = A.expand(*A.shape[:2], lines.lower_slope.shape[1])
        new_A, bias = through_lines(spread, *lines[:4])
        return (new_A,), bias + A[..., 0] * torch.exp(-lines.shift)

    def finish(self, bounds: Interval, lines: TerminalLines) -> Interval:
        """L's bounds from S's (``(batch, 1)`` each; None where not asked for)."""
        lower = upper = None
        if bounds.lower is not None:
            positive = bounds.lower > 0
            logged = lines.shift + torch.log(torch.where(positive, bounds.lower, torch.ones_like(bounds.lower)))
            lower = torch.maximum(torch.where(positive, logged, lines.floor), lines.floor)
        if bounds.upper is not None:  # S > 0 and L ≥ floor everywhere: clamping to them keeps an upper bound
            tiny = torch.finfo(bounds.upper.dtype).tiny
            upper = lines.shift + torch.log((bounds.upper + lines.slack).clamp(min=tiny))
            upper = torch.minimum(torch.maximum(upper, lines.floor), lines.ceiling)
        return Interval(lower, upper)

    def line_values(self, lines: TerminalLines, z: Tensor) -> tuple:
        """The bounds the lines give at ``z``, mapped back to L (``boundgraph.check``)."""
        below = (lines.lower_slope * z + lines.lower_bias).sum(1, keepdim=True) + torch.exp(-lines.shift)
        above = (lines.upper_slope * z + lines.upper_bias).sum(1, keepdim=True) + torch.exp(-lines.shift)
        low, high = self.finish(Interval(below, above), lines)
        return low, None, high, torch.zeros_like(high)

    def deviation(self, z: Interval) -> Interval:  # type: ignore[override]
        raise ValueError("SingleProp's deviations are not bounds: a fused cross entropy takes a bound method")

    def forward_linear(self, z, lines):  # type: ignore[override]
        raise AssertionError("LBP takes the fused cross entropy's interval (the schedule asks for it)")
