"""The line-fitting machine for an elementwise σ known by its function, its derivative and its curvature
pieces (convex, concave or linear between breakpoints: inflection points and kinks).

A new activation is a subclass giving ``function``, ``derivative``, ``pieces`` (and, where it has one,
the closed-form ``stationary`` point), nothing else: IBP, CROWN lines, LBP and SingleProp come from here.

Lines (CROWN's general activations, Zhang et al. 2018), in a form that needs no case analysis: a slope k,
the chord's ``(σ(u) − σ(l))/(u − l)`` (σ' at the midpoint where the interval is too narrow for a chord),
and the tightest intercepts for it, ``b_upper = max_{[l,u]} σ(z) − kz`` and ``b_lower = min_{[l,u]} σ(z) − kz``.
On a convex piece the chord itself is the upper line and the parallel tangent the lower; on a concave piece
the reverse; across an inflection point both are parallel tangents. IBP is the same computation with k = 0
(so non-monotone σ such as GELU get their true range).

The extremes are exact at the interval's ends and at breakpoints inside it or at its ends, from each side that
meets the interval (which covers linear pieces, kinks and jumps: ``sign`` on ``[0, u]`` is 1 just right of 0).
Inside a concave piece ``[a, b]`` (for the maximum; a convex one for the minimum) the extreme is bounded by the
tangent of ``h(z) = σ(z) − kz`` at a point ``z0`` where ``σ'(z0) ≈ k``:
``h(z) ≤ h(z0) + h'(z0)(z − z0)`` holds on ``[a, b]`` for *any* ``z0`` of a concave piece, so an inexact
``z0`` (from bisection) costs tightness, never soundness.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor

from ..ir import Interval
from .base import Lines, Nonlinear

BISECTION_STEPS = 30
NARROW = 1e-6  # relative width below which the slope is σ' at the midpoint instead of the chord's


class Elementwise(Nonlinear):
    """Base of elementwise activations given by σ, σ' and their curvature pieces (see the module doc).
    ``parameters``: the activation's constant arguments as ``(name, default)``, read from the module's
    attributes or the call's arguments (in order after the input) into the node's attributes."""

    parameters: tuple[tuple[str, Any], ...] = ()

    # ---- what an activation gives ----------------------------------------------------------------------
    def function(self, z: Tensor, **attrs: Any) -> Tensor:
        raise NotImplementedError

    def derivative(self, z: Tensor, **attrs: Any) -> Tensor:
        """σ'(z); at a kink, the derivative of the curved piece that has the kink as its end."""
        raise NotImplementedError

    def pieces(self, **attrs: Any) -> tuple[tuple[float, ...], tuple[int, ...]]:
        """Breakpoints (increasing) and the curvature of each of the ``len + 1`` pieces between them:
        +1 convex, −1 concave, 0 linear."""
        raise NotImplementedError

    def limits(self, point: float, **attrs: Any) -> tuple[float, float]:
        """σ's limits from the left and from the right at a breakpoint (they differ where σ jumps)."""
        value = float(self.function(torch.tensor(point, dtype=torch.float64), **attrs))
        return value, value

    def stationary(self, k: Tensor, a: Tensor, b: Tensor, curvature: int, **attrs: Any) -> Optional[Tensor]:
        """A point of ``[a, b]`` (one piece) where σ' = k, in closed form, or None to find it by bisection."""
        return None

    def domain_error(self, lower: Tensor, upper: Tensor, **attrs: Any) -> Optional[str]:
        """Why σ cannot be bounded on these intervals (they leave its domain), or None."""
        return None

    # ---- what the machine derives ----------------------------------------------------------------------
    def canonicalize(self, call):
        if call.module is not None:
            attrs = {name: getattr(call.module, name, default) for name, default in self.parameters}
        else:
            attrs = {name: call.arg(i + 1, name, default) for i, (name, default) in enumerate(self.parameters)}
        return (call.arg(0, "input"),), attrs

    def forward(self, x: Tensor, **attrs: Any) -> Tensor:
        return self.function(x, **attrs)

    def interval(self, x: Interval, **attrs: Any) -> Interval:  # type: ignore[override]
        self._check_domain(x.lower, x.upper, attrs)
        zero = torch.zeros((), dtype=x.lower.dtype, device=x.lower.device)
        return Interval(self.extreme(x.lower, x.upper, zero, False, attrs),
                        self.extreme(x.lower, x.upper, zero, True, attrs))

    def lines(self, lower: Tensor, upper: Tensor, strategy: str, **attrs: Any) -> Lines:  # type: ignore[override]
        """The same lines for every strategy (chord slope, tightest intercepts); ``tight`` lines in Lyu et
        al.'s sense exist for ReLU and ParamRamp only."""
        self._check_domain(lower, upper, attrs)
        k = self.slope(lower, upper, attrs)
        return Lines(k, self.extreme(lower, upper, k, False, attrs), k, self.extreme(lower, upper, k, True, attrs))

    def unstable(self, lower: Tensor, upper: Tensor, **attrs: Any) -> Tensor:
        return upper > lower  # a curved piece or a kink may lie inside: tighter bounds can tighten the lines

    def slope(self, lower: Tensor, upper: Tensor, attrs: dict) -> Tensor:
        width = upper - lower
        narrow = width <= NARROW * (1 + torch.maximum(lower.abs(), upper.abs()))
        safe = torch.where(narrow, torch.ones_like(width), width)
        chord = (self.function(upper, **attrs) - self.function(lower, **attrs)) / safe
        tangent = self.derivative(((lower + upper) / 2).detach(), **attrs)  # any slope is sound: a choice
        tangent = torch.where(torch.isfinite(tangent), tangent, torch.zeros_like(tangent))  # √ at 0
        return torch.where(narrow, tangent, chord)

    def extreme(self, lower: Tensor, upper: Tensor, k: Tensor, maximize: bool, attrs: dict) -> Tensor:
        """``max`` (or ``min``) of ``h(z) = σ(z) − kz`` over ``[lower, upper]``, elementwise: exact at the
        ends and breakpoints, bounded by a tangent of ``h`` inside the curved pieces that can hold it."""
        pick = torch.maximum if maximize else torch.minimum

        def h(z: Tensor) -> Tensor:
            return self.function(z, **attrs) - k * z

        best = pick(h(lower), h(upper))
        breakpoints, curvatures = self.pieces(**attrs)
        for point in breakpoints:  # both one-sided limits: σ may jump there (also at an end: sign on [0, u])
            from_left, from_right = self.limits(point, **attrs)
            best = torch.where((lower < point) & (point <= upper), pick(best, from_left - k * point), best)
            best = torch.where((lower <= point) & (point < upper), pick(best, from_right - k * point), best)
        edges = (-math.inf,) + tuple(breakpoints) + (math.inf,)
        wanted = -1 if maximize else 1  # a maximum inside a piece needs concavity, a minimum convexity
        for start, end, curvature in zip(edges[:-1], edges[1:], curvatures):
            if curvature != wanted:
                continue
            a, b = lower.clamp(min=start), upper.clamp(max=end)
            inside = a < b
            a, b = torch.where(inside, a, lower), torch.where(inside, b, upper)  # keep unused lanes finite
            with torch.no_grad():
                z0 = self._stationary(k, a, b, curvature, attrs)
            z0 = torch.maximum(torch.minimum(z0, b), a)
            tilt = self.derivative(z0, **attrs) - k
            tilt = torch.where(inside, tilt, torch.zeros_like(tilt))  # unused lanes: no inf·0 in the gradient
            tangent = h(z0) + pick(tilt * (a - z0), tilt * (b - z0))
            best = torch.where(inside, pick(best, tangent), best)
        return best

    def _stationary(self, k: Tensor, a: Tensor, b: Tensor, curvature: int, attrs: dict) -> Tensor:
        """``z0`` in ``[a, b]`` with ``σ'(z0) ≈ k``: closed form if the activation has one, else bisection
        (σ' is monotone on a piece: increasing where convex, decreasing where concave)."""
        k = k.expand_as(a)
        found = self.stationary(k, a, b, curvature, **attrs)
        if found is not None:
            return torch.nan_to_num(found, nan=0.0)
        lo, hi = a.detach().clone(), b.detach().clone()
        lo, hi = lo.clamp(min=-1e6), hi.clamp(max=1e6)  # a piece without an end: search a finite stretch
        for _ in range(BISECTION_STEPS):
            mid = (lo + hi) / 2
            rising = (self.derivative(mid, **attrs) < k) if curvature > 0 else (self.derivative(mid, **attrs) > k)
            lo, hi = torch.where(rising, mid, lo), torch.where(rising, hi, mid)
        return (lo + hi) / 2

    def _check_domain(self, lower: Tensor, upper: Tensor, attrs: dict) -> None:
        reason = self.domain_error(lower, upper, **attrs)
        if reason:
            raise ValueError(f"{self.name}: {reason}")
