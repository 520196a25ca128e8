"""Elementwise activations."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import nn as boundgraph_nn
from ..ir import Interval
from .base import LINE_STRATEGIES, Lines, Nonlinear, method, rule

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

    def with_alpha(self, lines: Lines, lower: Tensor, upper: Tensor, alphas: dict, key: str) -> Lines:
        """Every ``αz`` with ``0 ≤ α ≤ 1`` is a lower line of an unstable ReLU; α per example and neuron."""
        if key not in alphas:
            alphas[key] = lines.lower_slope.detach().clone().requires_grad_(True)
        alpha = alphas[key]
        return lines._replace(lower_slope=torch.where(self.unstable(lower, upper), alpha, lines.lower_slope))


def _ramp_lines(lower: Tensor, upper: Tensor, r: Tensor, strategy: str) -> Lines:
    """Lines of ``ramp(z) = min(max(z, 0), r)`` on ``[l, u]``, by the six places ``l`` and ``u`` can lie:
    exact when both are in one piece (``u ≤ 0``: 0; ``0 ≤ l, u ≤ r``: z; ``l ≥ r``: r); over the lower
    kink only (``l < 0 < u ≤ r``) ReLU's lines; over the upper kink only (``0 ≤ l < r < u``) the chord
    below and, above, ``r`` (tight) or ``z`` when ``r − l > u − r`` (adaptive); over both kinks ``0`` and
    ``r`` (tight lines meet the ramp at ``l`` and ``u``, Lyu et al. 2021)."""
    zero, one = torch.zeros_like(lower), torch.ones_like(lower)
    r = r.expand_as(lower)
    lower_kink = (lower < 0) & (upper > 0)
    upper_kink = (lower < r) & (upper > r)
    below_only, above_only, both = lower_kink & ~upper_kink, upper_kink & ~lower_kink, lower_kink & upper_kink
    middle = (lower >= 0) & (upper <= r)
    # exact pieces: slope 1 in the middle, constant r above
    lower_slope, lower_bias = middle.to(lower.dtype), torch.where(lower >= r, r, zero)
    upper_slope, upper_bias = lower_slope.clone(), lower_bias.clone()
    width = torch.where(below_only | above_only, upper - lower, one)
    # lower kink only: chord above; below αz with α as ReLU's strategy says
    chord = upper / width
    upper_slope = torch.where(below_only, chord, upper_slope)
    upper_bias = torch.where(below_only, -chord * lower, upper_bias)
    alpha = (upper > -lower).to(lower.dtype) if strategy == "adaptive" else (one if strategy == "one" else zero)
    lower_slope = torch.where(below_only, alpha, lower_slope)
    # upper kink only: chord from (l, l) to (u, r) below; above r, or z
    chord = (r - lower) / width
    lower_slope = torch.where(above_only, chord, lower_slope)
    lower_bias = torch.where(above_only, lower - chord * lower, lower_bias)
    take_z = (r - lower > upper - r) if strategy == "adaptive" else torch.full_like(lower, strategy == "one",
                                                                                     dtype=torch.bool)
    upper_slope = torch.where(above_only & take_z, one, upper_slope)
    upper_bias = torch.where(above_only & ~take_z, r, upper_bias)
    # both kinks: 0 ≤ ramp ≤ r
    upper_bias = torch.where(both, r, upper_bias)
    return Lines(lower_slope, lower_bias, upper_slope, upper_bias)


def _per_feature(t: Tensor, like: Tensor) -> Tensor:
    """A per-feature vector (features on dimension 1) shaped to broadcast against ``like``."""
    return t.view(-1, *([1] * (like.dim() - 2)))


def _check_eta(eta: Tensor) -> None:
    """Monotonicity (IBP) and the lines' ``1 − η ≥ 0`` scaling need ``0 ≤ η ≤ 1``; a buffer loaded from a
    state dict or written in place is not checked by the layer, so bounds check it. (NaN passes here and
    makes the bounds vacuous.)"""
    if bool(((eta < 0) | (eta > 1)).any()):
        raise ValueError(f"ParamRamp's eta must lie in [0, 1] for its bounds, got {eta.flatten()[:4].tolist()} "
                         "(set it with boundgraph.nn.set_eta)")


@rule("param_ramp", spellings=(boundgraph_nn.ParamRamp,))
class ParamRampRule(Nonlinear):
    """ParamRamp (Lyu et al. 2021): ``σ(z) = ηz + (1−η)·min(max(z, 0), r)`` with ``r ≥ 0`` learnt per
    feature (``max(r, 0)`` is used) and ``0 ≤ η ≤ 1``: ``ηz`` below 0, ``z`` on ``[0, r]``, ``ηz + (1−η)r``
    above ``r``. Monotone, so IBP is ``[σ(l), σ(u)]``. Its lines are ``ηz`` plus ``1−η`` times the
    ramp's lines (``_ramp_lines``), which covers all six regions for "tight" and "adaptive" lines."""

    lipschitz = 1.0  # slopes η and 1

    def canonicalize(self, call):
        return (call.arg(0, "input"), call.param("r"), call.param("eta")), {}

    def forward(self, x: Tensor, r: Tensor, eta: Tensor) -> Tensor:  # type: ignore[override]
        r = _per_feature(r.clamp(min=0), x)
        return eta * x + (1 - eta) * torch.minimum(x.clamp(min=0), r)

    def interval(self, x: Interval, r: Tensor, eta: Tensor) -> Interval:  # type: ignore[override]
        _check_eta(eta)
        return super().interval(x, r, eta)

    def lines(self, lower: Tensor, upper: Tensor, strategy: str, r: Tensor, eta: Tensor) -> Lines:  # type: ignore[override]
        if strategy not in LINE_STRATEGIES:
            raise ValueError(f"param_ramp: unknown line strategy {strategy!r}")
        _check_eta(eta)
        ramp = _ramp_lines(lower, upper, _per_feature(r.clamp(min=0), lower), strategy)
        return Lines(eta + (1 - eta) * ramp.lower_slope, (1 - eta) * ramp.lower_bias,
                     eta + (1 - eta) * ramp.upper_slope, (1 - eta) * ramp.upper_bias)

    def unstable(self, lower: Tensor, upper: Tensor) -> Tensor:
        return upper > lower  # a kink may lie inside: the lines can change with the bounds
