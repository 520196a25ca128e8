"""Elementwise activations: ReLU and ParamRamp with their own lines; every other activation on the
line-fitting machine of ``elementwise.py``."""
from __future__ import annotations

import functools
import math
import operator
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import nn as boundgraph_nn
from ..ir import Interval
from .base import LINE_STRATEGIES, Lines, Nonlinear, Several, is_number, method, rule
from .elementwise import Elementwise

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
        return torch.relu(x)  # its backward is one pass (threshold_backward); clamp's is two (ge, where)

    def lines(self, lower: Tensor, upper: Tensor, strategy: str) -> Lines:
        """Without case analysis (few passes, and few in autograd's backward): with ``u⁺ = max(u, 0)`` and
        ``l⁻ = min(l, 0)``, the upper line is ``u⁺/(u⁺ − l⁻)·(z − l⁻)``: the chord when unstable, ``z`` when active
        (``l⁻ = 0``: slope ``u/u = 1`` exactly), ``0`` when inactive (``u⁺ = 0``); ``u = l = 0`` divides by the
        smallest normal number instead of 0 (slope 0 where ``z = 0`` exactly). The adaptive lower slope,
        ``[u + l > 0]``, is 1 where active, 0 where inactive, and CROWN's choice where unstable.

        Each piece is written with ``relu``, whose backward is one branch-free pass: ``max(u, 0) = relu(u)``,
        ``min(l, 0) = l − relu(l)`` and ``max(d, tiny) = threshold(d, tiny, tiny)`` are exact, while autograd's
        ``clamp`` backward is a ``where`` that mispredicts on a random sign pattern (forward and backward of one
        clamp at (128, 32, 10, 10): 2.6 ms against 0.2 ms for relu). Non-finite bounds, which these spellings
        treat differently from ``clamp`` (``l = +inf`` gives NaN, a NaN width gives ``tiny``), never reach
        here unmarked: ``emit.nan_where_unbounded`` makes such a neuron's lines NaN."""
        tiny = torch.finfo(lower.dtype).tiny
        positive, negative = torch.relu(upper), lower - torch.relu(lower)
        upper_slope = positive / F.threshold(positive - negative, tiny, tiny)
        upper_bias = -upper_slope * negative
        if strategy == "adaptive":
            return Lines((upper + lower > 0).to(lower.dtype), None, upper_slope, upper_bias)
        if strategy not in ("zero", "one", "tight"):
            raise ValueError(f"relu: unknown line strategy {strategy!r}")
        active = (lower >= 0).to(lower.dtype)
        unstable = (lower < 0) & (upper > 0)
        lower_slope = torch.where(unstable, torch.full_like(lower, 1.0 if strategy == "one" else 0.0), active)
        return Lines(lower_slope, None, upper_slope, upper_bias)

    def unstable(self, lower: Tensor, upper: Tensor, **attrs) -> Tensor:
        """Only neurons whose sign is not known: elsewhere the lines are exact whatever the bounds."""
        return (lower < 0) & (upper > 0)

    alpha_rows = True  # its α may be kept per row of a sweep (``with_alpha``'s ``rows``; ``patches.patches_alpha``)

    def with_alpha(self, lines: Lines, lower: Tensor, upper: Tensor, alphas: dict, key, rows=None,
                   index: Optional[Tensor] = None) -> Lines:
        """Every ``αz`` with ``0 ≤ α ≤ 1`` is a lower line of an unstable ReLU; α per example and neuron, and per
        row of the sweep when ``rows`` is given (``(batch, rows, *shape)``). With ``index`` (``(batch, r)``), α is
        kept for all ``rows`` rows a sweep may take (an intermediate sweep's ``[I; −I]`` rows of every neuron:
        ``emit.row_ids``) and this chunk's rows are read from it, so each bounded neuron keeps its own slopes from
        one iteration to the next although which neurons are unstable (the chunk) changes."""
        if key not in alphas:
            start = lines.lower_slope.detach()
            if rows is not None:
                start = start.unsqueeze(1).expand(start.shape[0], rows, *start.shape[1:])
            alphas[key] = start.clone().requires_grad_(True)
        alpha, unstable, slope = alphas[key], self.unstable(lower, upper), lines.lower_slope
        if index is not None:
            alpha = alpha[torch.arange(alpha.shape[0], device=index.device).unsqueeze(1), index]
        if rows is not None:
            unstable, slope = unstable.unsqueeze(1), slope.unsqueeze(1)
        return lines._replace(lower_slope=torch.where(unstable, alpha, slope))


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
    middle = (lower >= 0) & (upper <= r) & (lower < r)  # [r, r] is the constant piece's
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

    def unstable(self, lower: Tensor, upper: Tensor, **attrs) -> Tensor:
        return upper > lower  # a kink may lie inside: the lines can change with the bounds


def _slopes(weight: Tensor, like: Tensor) -> Tensor:
    """PReLU's negative slopes shaped to broadcast against ``like``: one for all, one per feature (dimension 1,
    as ``F.prelu``), or already broadcastable (ONNX's ``PRelu``)."""
    weight = weight.to(like.dtype)
    if weight.numel() == 1:
        return weight.reshape(())
    return _per_feature(weight, like) if weight.dim() == 1 else weight


@rule("prelu", spellings=(nn.PReLU, F.prelu, torch.prelu, aten.prelu.default, aten._prelu_kernel.default))
class PReLU(Nonlinear):
    """PReLU (He et al. 2015): ``σ(z) = z`` above 0 and ``a·z`` below, the slopes ``a`` learnt (one, or one per
    feature). For every ``a``, ``σ(z) = a·z + (1 − a)·relu(z)``, so its lines are ``a`` plus ``1 − a`` times ReLU's
    (for ``a > 1`` the factor is negative and ReLU's upper line gives the lower one). Piecewise linear with its
    kink at 0, σ takes its extremes over ``[l, u]`` at ``l``, ``u`` or 0 (IBP; not monotone for ``a < 0``)."""

    def canonicalize(self, call):
        if call.module is not None:
            return (call.arg(0, "input"), call.param("weight")), {}
        return (call.arg(0, "input"), call.arg(1, "weight")), {}

    def forward(self, x: Tensor, weight: Tensor) -> Tensor:  # type: ignore[override]
        return torch.where(x >= 0, x, _slopes(weight, x) * x)

    def interval(self, x: Interval, weight: Tensor) -> Interval:  # type: ignore[override]
        at_lower, at_upper = self.forward(x.lower, weight), self.forward(x.upper, weight)
        zero = torch.zeros_like(at_lower)
        kink = (x.lower < 0) & (x.upper > 0)
        low, high = torch.minimum(at_lower, at_upper), torch.maximum(at_lower, at_upper)
        return Interval(torch.where(kink, torch.minimum(low, zero), low), torch.where(kink, torch.maximum(high, zero), high))

    def lines(self, lower: Tensor, upper: Tensor, strategy: str, weight: Tensor) -> Lines:  # type: ignore[override]
        a = _slopes(weight, lower).expand_as(lower)
        c = 1 - a
        convex = c >= 0
        relu = ReLU().lines(lower, upper, strategy)
        # where c < 0, ReLU's lower line becomes the upper one: "tight" then wants it to meet ReLU at u (slope 1)
        mirrored = ReLU().lines(lower, upper, "one") if strategy == "tight" else relu
        zeros = torch.zeros_like(lower)
        low_slope = torch.where(convex, relu.lower_slope, mirrored.upper_slope)
        low_bias = torch.where(convex, zeros if relu.lower_bias is None else relu.lower_bias, mirrored.upper_bias)
        high_slope = torch.where(convex, relu.upper_slope, mirrored.lower_slope)
        high_bias = torch.where(convex, relu.upper_bias, zeros if mirrored.lower_bias is None else mirrored.lower_bias)
        return Lines(a + c * low_slope, c * low_bias, a + c * high_slope, c * high_bias)

    def unstable(self, lower: Tensor, upper: Tensor, **attrs) -> Tensor:
        return (lower < 0) & (upper > 0)


@rule("clamp_by", spellings=(torch.maximum, method("maximum"), aten.maximum.default, torch.minimum, method("minimum"),
                             aten.minimum.default, torch.fmax, torch.fmin, aten.clamp.Tensor))
class ClampBy(Nonlinear):
    """``clamp(z, low, high)`` by constant tensors (or numbers; either may be None), elementwise; ``maximum(z, c)``
    is ``clamp(z, c, None)``, ``minimum(z, c)`` is ``clamp(z, None, c)``. It is ``low + ramp(z − low)`` with
    ParamRamp's ``ramp(t) = min(max(t, 0), r)``, ``r = high − low``, so its lines are the ramp's over the six
    regions (an absent end is put beyond the interval, where the ramp is linear). IBP ``[clamp(l), clamp(u)]``."""

    lipschitz = 1.0

    def canonicalize(self, call):
        x = call.arg(0, "input")
        if call.spelling in (torch.minimum, method("minimum"), aten.minimum.default, torch.fmin):
            return (x, None, call.arg(1, "other")), {}
        if call.spelling is aten.clamp.Tensor:
            return (x, call.arg(1, "min", None), call.arg(2, "max", None)), {}
        return (x, call.arg(1, "other"), None), {}

    def check(self, perturbed):
        if any(perturbed[1:]):
            return "the maximum (minimum) of two perturbed tensors is not supported; only of a tensor and a constant"
        return None

    def forward(self, x, low, high):  # type: ignore[override]
        if low is not None:
            x = torch.maximum(x, torch.as_tensor(low, dtype=x.dtype, device=x.device))
        if high is not None:
            x = torch.minimum(x, torch.as_tensor(high, dtype=x.dtype, device=x.device))
        return x

    def lines(self, lower, upper, strategy, low, high):  # type: ignore[override]
        if strategy not in LINE_STRATEGIES:
            raise ValueError(f"clamp_by: unknown line strategy {strategy!r}")
        with torch.no_grad():  # stand-ins for an absent end, beyond the interval
            below = torch.minimum(lower, upper if high is None else torch.as_tensor(high, dtype=lower.dtype)) - 1
            base = below if low is None else torch.as_tensor(low, dtype=lower.dtype, device=lower.device)
            top = torch.maximum(upper, base) + 1 if high is None else torch.as_tensor(high, dtype=lower.dtype,
                                                                                      device=lower.device)
            base = torch.minimum(base, top)  # low > high clamps to high: clamp(z, high, high)
        base, top = base.expand_as(lower), top.expand_as(lower)
        ramp = _ramp_lines(lower - base, upper - base, top - base, strategy)
        return Lines(ramp.lower_slope, ramp.lower_bias + base - ramp.lower_slope * base,
                     ramp.upper_slope, ramp.upper_bias + base - ramp.upper_slope * base)

    def unstable(self, lower, upper, **attrs):
        return upper > lower


# ---------------------------------------------------------------- activations on the line-fitting machine
# Each is its function, derivative and curvature pieces (``boundgraph/ops/elementwise.py`` derives IBP,
# CROWN lines, LBP and SingleProp); a closed-form stationary point where σ' is invertible.

def _bisect(f, lo: float, hi: float, steps: int = 200) -> float:
    """A root of ``f`` on ``[lo, hi]`` (``f(lo)``, ``f(hi)`` of opposite signs), in float64."""
    flo = f(lo)
    for _ in range(steps):
        mid = (lo + hi) / 2
        if (f(mid) > 0) == (flo > 0):
            lo, flo = mid, f(mid)
        else:
            hi = mid
    return (lo + hi) / 2


@rule("sigmoid", spellings=(nn.Sigmoid, torch.sigmoid, F.sigmoid, method("sigmoid"), aten.sigmoid.default))
class Sigmoid(Elementwise):
    """``σ(z) = 1/(1 + e^{−z})``: convex below 0, concave above (S-shaped); ``σ' = σ(1 − σ)``, so
    ``σ' = k`` at ``σ = (1 ∓ √(1 − 4k))/2``."""

    lipschitz = 0.25

    def function(self, z):
        return torch.sigmoid(z)

    def derivative(self, z):
        s = torch.sigmoid(z)
        return s * (1 - s)

    def pieces(self):
        return (0.0,), (1, -1)

    def stationary(self, k, a, b, curvature):
        root = torch.sqrt((1 - 4 * k).clamp(min=0))
        return torch.logit((1 - root) / 2 if curvature > 0 else (1 + root) / 2)


@rule("erf", spellings=(torch.erf, method("erf"), aten.erf.default, torch.special.erf))
class Erf(Elementwise):
    """The error function (GELU's exact form, as ONNX exports it: ``x·(1 + erf(x/√2))/2``): convex below 0,
    concave above; ``erf' = (2/√π)·e^{−z²}``, so ``σ' = k`` at ``z = ∓√(−log(k√π/2))``."""

    lipschitz = 2 / math.sqrt(math.pi)  # erf'(0), its largest slope

    def function(self, z):
        return torch.erf(z)

    def derivative(self, z):
        return self.lipschitz * torch.exp(-z * z)

    def pieces(self):
        return (0.0,), (1, -1)

    def stationary(self, k, a, b, curvature):
        ratio = (k / self.lipschitz).clamp(min=torch.finfo(k.dtype).tiny, max=1.0)
        root = torch.sqrt(-torch.log(ratio))
        return -root if curvature > 0 else root


@rule("tanh", spellings=(nn.Tanh, torch.tanh, F.tanh, method("tanh"), aten.tanh.default))
class Tanh(Elementwise):
    """``tanh``: convex below 0, concave above; ``tanh' = 1 − tanh²``, so ``σ' = k`` at ``tanh = ∓√(1 − k)``."""

    lipschitz = 1.0

    def function(self, z):
        return torch.tanh(z)

    def derivative(self, z):
        return 1 - torch.tanh(z) ** 2

    def pieces(self):
        return (0.0,), (1, -1)

    def stationary(self, k, a, b, curvature):
        root = torch.sqrt((1 - k).clamp(min=0))
        return torch.atanh(-root if curvature > 0 else root)


@rule("leaky_relu", spellings=(nn.LeakyReLU, F.leaky_relu, F.leaky_relu_, aten.leaky_relu.default,
                               aten.leaky_relu_.default))
class LeakyReLU(Elementwise):
    """``z`` above 0, ``a·z`` below: two linear pieces (convex kink for a < 1)."""

    parameters = (("negative_slope", 0.01),)

    def lipschitz_of(self, negative_slope=0.01):
        return max(1.0, abs(negative_slope))

    def function(self, z, negative_slope=0.01):
        return F.leaky_relu(z, negative_slope)

    def derivative(self, z, negative_slope=0.01):
        return torch.where(z >= 0, torch.ones_like(z), torch.full_like(z, negative_slope))

    def pieces(self, negative_slope=0.01):
        return (0.0,), (0, 0)


@rule("elu", spellings=(nn.ELU, F.elu, F.elu_, aten.elu.default))
class ELU(Elementwise):
    """``z`` above 0, ``α(e^z − 1)`` below (convex for α > 0, concave for α < 0); ``σ' = αe^z = k`` at
    ``log(k/α)``."""

    parameters = (("alpha", 1.0),)

    def canonicalize(self, call):
        if call.spelling is aten.elu.default and (call.arg(2, "scale", 1) != 1 or call.arg(3, "input_scale", 1) != 1):
            raise call.fail("elu with a scale (selu) is not supported")
        return super().canonicalize(call)

    def lipschitz_of(self, alpha=1.0):
        return max(1.0, abs(alpha))

    def function(self, z, alpha=1.0):
        return F.elu(z, alpha)

    def derivative(self, z, alpha=1.0):
        return torch.where(z > 0, torch.ones_like(z), alpha * torch.exp(z.clamp(max=0)))

    def pieces(self, alpha=1.0):
        return (0.0,), (1 if alpha >= 0 else -1, 0)

    def stationary(self, k, a, b, curvature, alpha=1.0):
        return torch.log(k / alpha) if alpha != 0 else None


GELU_TANH_BETA, GELU_TANH_KAPPA = math.sqrt(2 / math.pi), 0.044715  # GELU's tanh form: z/2·(1 + tanh(β(z + κz³)))


@functools.lru_cache(maxsize=None)
def _gelu_tanh_inflection(cubic: float) -> float:
    """Where ``z/2·(1 + tanh(u))``, ``u = β(z + κz³)``, changes curvature on ``(1, 2)``, in float64: its second
    derivative is ``(1 − t²)·(u' + z/2·(u'' − 2t·u'²))`` (``t = tanh u``, ``u' = β(1 + 3κz²)``, ``u'' = 6βκz``), and
    the second factor falls through 0 once there for κ near GPT-2's 0.044715 (the only κ ``gelu`` is built with)."""
    def curvature(z: float) -> float:
        t = math.tanh(GELU_TANH_BETA * (z + cubic * z ** 3))
        du, ddu = GELU_TANH_BETA * (1 + 3 * cubic * z * z), 6 * GELU_TANH_BETA * cubic * z
        return du + z / 2 * (ddu - 2 * t * du * du)
    return _bisect(curvature, 1.0, 2.0)


@rule("gelu", spellings=(nn.GELU, F.gelu, aten.gelu.default))
class GELU(Elementwise):
    """``z·Φ(z)`` (``approximate="tanh"``: ``z/2·(1 + tanh(β(z + κz³)))``, ``β = √(2/π)``, ``κ = cubic``, torch's
    0.044715 unless a spelt-out form read from float32 constants has a κ a rounding away, ``ops/arithmetic.py``):
    concave, convex on ``[−√2, √2]`` (tanh form: ±1.4185…), concave; not monotone (its minimum ≈ −0.17 lies near
    −0.75)."""

    parameters = (("approximate", "none"),)  # torch's; ``cubic`` is set only by the spelt-out form's rewrite

    def _inflection(self, approximate: str, cubic: float) -> float:
        return math.sqrt(2) if approximate == "none" else _gelu_tanh_inflection(cubic)

    def lipschitz_of(self, approximate="none", cubic=GELU_TANH_KAPPA):
        point = self._inflection(approximate, cubic)
        slope = float(self.derivative(torch.tensor(point, dtype=torch.float64), approximate, cubic))
        return slope * (1 + 1e-9)  # σ' peaks at the inflection point

    def function(self, z, approximate="none", cubic=GELU_TANH_KAPPA):
        if approximate == "none" or cubic == GELU_TANH_KAPPA:
            return F.gelu(z, approximate=approximate)
        return 0.5 * z * (1 + torch.tanh(GELU_TANH_BETA * (z + cubic * z ** 3)))

    def derivative(self, z, approximate="none", cubic=GELU_TANH_KAPPA):
        if approximate == "none":
            return 0.5 * (1 + torch.erf(z / math.sqrt(2))) + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        t = torch.tanh(GELU_TANH_BETA * (z + cubic * z ** 3))
        return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * GELU_TANH_BETA * (1 + 3 * cubic * z * z)

    def pieces(self, approximate="none", cubic=GELU_TANH_KAPPA):
        point = self._inflection(approximate, cubic)
        return (-point, point), (-1, 1, -1)


def _silu_curvature(z: float) -> float:
    s = 1 / (1 + math.exp(-z))
    return 2 + z * (1 - 2 * s)


_SILU_INFLECTION = _bisect(_silu_curvature, 1.0, 4.0)  # σ'' = s(1 − s)(2 + z(1 − 2s)) vanishes at ±2.3994


@rule("silu", spellings=(nn.SiLU, F.silu, aten.silu.default, aten.silu_.default))
class SiLU(Elementwise):
    """``z·s(z)`` with ``s`` the logistic sigmoid (swish): concave, convex on ``[−2.3994, 2.3994]``,
    concave; not monotone (its minimum ≈ −0.28 lies near −1.28)."""

    lipschitz = float(1 / (1 + math.exp(-_SILU_INFLECTION)) * (1 + _SILU_INFLECTION / (1 + math.exp(_SILU_INFLECTION)))
                      ) * (1 + 1e-9)

    def function(self, z):
        return F.silu(z)

    def derivative(self, z):
        s = torch.sigmoid(z)
        return s * (1 + z * (1 - s))

    def pieces(self):
        return (-_SILU_INFLECTION, _SILU_INFLECTION), (-1, 1, -1)


@rule("softplus", spellings=(nn.Softplus, F.softplus, aten.softplus.default))
class Softplus(Elementwise):
    """``log(1 + e^{βz})/β``, and ``z`` where ``βz`` exceeds ``threshold`` (torch's switch, a jump down of
    ``log(1 + e^{-threshold})/β``): convex, then linear; ``σ' = s(βz) = k`` at ``logit(k)/β``."""

    parameters = (("beta", 1.0), ("threshold", 20.0))
    lipschitz = 1.0

    def function(self, z, beta=1.0, threshold=20.0):
        return F.softplus(z, beta, threshold)

    def derivative(self, z, beta=1.0, threshold=20.0):
        return torch.where(z * beta > threshold, torch.ones_like(z), torch.sigmoid(beta * z))

    def pieces(self, beta=1.0, threshold=20.0):
        return (threshold / beta,), (1, 0)

    def limits(self, point, beta=1.0, threshold=20.0):
        return math.log1p(math.exp(threshold)) / beta, point  # torch jumps down to z past the threshold

    def stationary(self, k, a, b, curvature, beta=1.0, threshold=20.0):
        return torch.logit(k.clamp(0, 1)) / beta


_CLAMPS = (torch.clamp, torch.clip, method("clamp"), method("clip"), method("clamp_"), method("clip_"),
           aten.clamp.default)


@rule("hardtanh", spellings=(nn.Hardtanh, nn.ReLU6, F.hardtanh, F.hardtanh_, F.relu6, aten.hardtanh.default,
                             aten.hardtanh_.default) + _CLAMPS)
class Hardtanh(Elementwise):
    """``clamp(z, min_val, max_val)`` (``ReLU6`` is ``[0, 6]``; ``clamp`` by constants, a bound ±inf where
    it is None): linear pieces between its finite ends."""

    parameters = (("min_val", -1.0), ("max_val", 1.0))
    lipschitz = 1.0

    def canonicalize(self, call):
        if call.spelling is F.relu6:
            return (call.arg(0, "input"),), dict(min_val=0.0, max_val=6.0)
        if call.spelling in _CLAMPS:
            low, high = call.arg(1, "min", None), call.arg(2, "max", None)
            if not all(v is None or isinstance(v, (int, float)) for v in (low, high)):
                return Several([("clamp_by", (call.arg(0, "input"), low, high), {})])
            return (call.arg(0, "input"),), dict(min_val=-math.inf if low is None else float(low),
                                                 max_val=math.inf if high is None else float(high))
        return super().canonicalize(call)

    def function(self, z, min_val=-1.0, max_val=1.0):
        return z.clamp(min_val, max_val)

    def derivative(self, z, min_val=-1.0, max_val=1.0):
        return ((z > min_val) & (z < max_val)).to(z.dtype)

    def pieces(self, min_val=-1.0, max_val=1.0):
        ends = tuple(float(v) for v in (min_val, max_val) if math.isfinite(v))
        return ends, (0,) * (len(ends) + 1)


@rule("hardswish", spellings=(nn.Hardswish, F.hardswish, aten.hardswish.default))
class Hardswish(Elementwise):
    """``z·relu6(z + 3)/6``: 0 below −3, ``z(z + 3)/6`` on ``[−3, 3]`` (convex), ``z`` above 3; the kinks at
    ±3 are concave. Not monotone (minimum −3/8 at −3/2)."""

    lipschitz = 1.5

    def function(self, z):
        return F.hardswish(z)

    def derivative(self, z):
        return torch.where(z < -3, torch.zeros_like(z), torch.where(z > 3, torch.ones_like(z), (2 * z + 3) / 6))

    def pieces(self):
        return (-3.0, 3.0), (0, 1, 0)

    def stationary(self, k, a, b, curvature):
        return (6 * k - 3) / 2


@rule("hardsigmoid", spellings=(nn.Hardsigmoid, F.hardsigmoid, aten.hardsigmoid.default))
class Hardsigmoid(Elementwise):
    """``relu6(z + 3)/6``: 0, ``z/6 + 1/2`` on ``[−3, 3]``, 1: three linear pieces."""

    lipschitz = float(torch.tensor(1 / 6, dtype=torch.float32))  # torch's kernels use float32's 1/6, a hair above

    def function(self, z):
        return F.hardsigmoid(z)

    def derivative(self, z):
        return ((z > -3) & (z < 3)).to(z.dtype) / 6

    def pieces(self):
        return (-3.0, 3.0), (0, 0, 0)


@rule("abs", spellings=(torch.abs, method("abs"), aten.abs.default))
class Abs(Elementwise):
    """``|z|``: two linear pieces, a convex kink at 0; not monotone."""

    lipschitz = 1.0

    def function(self, z):
        return z.abs()

    def derivative(self, z):
        return torch.sign(z)

    def pieces(self):
        return (0.0,), (0, 0)


@rule("sign", spellings=(torch.sign, method("sign"), aten.sign.default, torch.sgn, method("sgn"), aten.sgn.default))
class Sign(Elementwise):
    """``sign(z)``: −1 below 0, 0 at 0, 1 above: two constant pieces and a jump at 0 (``limits`` −1 and 1), so
    the machine's lines across 0 are the chord's slope ``2/(u − l)`` with intercepts ``−1`` and ``1``, and its
    IBP ``[sign(l), sign(u)]``. No Lipschitz constant (GloRo refuses it)."""

    def function(self, z):
        return torch.sign(z)

    def derivative(self, z):
        return torch.zeros_like(z)

    def pieces(self):
        return (0.0,), (0, 0)

    def limits(self, point):
        return -1.0, 1.0


@rule("exp", spellings=(torch.exp, method("exp"), aten.exp.default))
class Exp(Elementwise):
    """``e^z``: convex; ``σ' = k`` at ``log k``. No Lipschitz constant."""

    def function(self, z):
        return torch.exp(z)

    def derivative(self, z):
        return torch.exp(z)

    def pieces(self):
        return (), (1,)

    def stationary(self, k, a, b, curvature):
        return torch.log(k)


@rule("log", spellings=(torch.log, method("log"), aten.log.default))
class Log(Elementwise):
    """``log z`` for ``z > 0``: concave; ``σ' = 1/z = k`` at ``1/k``. Inputs whose lower bound can reach
    0 are refused."""

    def function(self, z):
        return torch.log(z)

    def derivative(self, z):
        return 1 / z

    def pieces(self):
        return (), (-1,)

    def stationary(self, k, a, b, curvature):
        return 1 / k

    def domain_error(self, lower, upper):
        if bool((lower <= 0).any()):
            return (f"its input's lower bound reaches {float(lower.detach().min()):.3g} ≤ 0, outside log's domain (0, ∞): "
                    "bound a smaller set, or keep the input positive (e.g. log(softplus(z) + eps))")
        return None


@rule("sqrt", spellings=(torch.sqrt, method("sqrt"), aten.sqrt.default))
class Sqrt(Elementwise):
    """``√z`` for ``z ≥ 0``: concave; ``σ' = 1/(2√z) = k`` at ``1/(4k²)``. Inputs whose lower bound can fall
    below 0 are refused."""

    def function(self, z):
        return torch.sqrt(z)

    def derivative(self, z):
        return 0.5 / torch.sqrt(z)

    def pieces(self):
        return (), (-1,)

    def stationary(self, k, a, b, curvature):
        return 0.25 / (k * k)

    def domain_error(self, lower, upper):
        if bool((lower < 0).any()):
            return (f"its input's lower bound reaches {float(lower.detach().min()):.3g} < 0, outside sqrt's domain [0, ∞): "
                    "bound a smaller set, or keep the input non-negative")
        return None


@rule("reciprocal", spellings=(torch.reciprocal, method("reciprocal"), aten.reciprocal.default))
class Reciprocal(Elementwise):
    """``1/z`` for ``z ≠ 0``: concave below 0, convex above; ``σ' = −1/z² = k`` at ``±√(−1/k)``. Inputs
    whose bounds can reach 0 are refused."""

    def function(self, z):
        return torch.reciprocal(z)

    def derivative(self, z):
        return -1 / (z * z)

    def pieces(self):
        return (0.0,), (-1, 1)

    def stationary(self, k, a, b, curvature):
        root = torch.sqrt(-1 / k)
        return root if curvature > 0 else -root

    def domain_error(self, lower, upper):
        if bool(((lower <= 0) & (upper >= 0)).any()):
            return ("its input's bounds reach 0, where 1/z has no bound: bound a smaller set, or keep the input "
                    "away from 0")
        return None


_POW = (torch.square, method("square"), aten.square.default, torch.pow, operator.pow, method("pow"),
        aten.pow.Tensor_Scalar, torch.rsqrt, method("rsqrt"), aten.rsqrt.default)


@rule("pow", spellings=_POW)
class Pow(Elementwise):
    """``z^p`` for a constant exponent ``p`` (``square`` is ``p = 2``, ``rsqrt`` ``p = −1/2``):
    - an even integer: convex; an odd integer ≥ 3: concave below 0, convex above (both on the whole line);
    - any other ``p``: on ``z ≥ 0`` (``z > 0`` for ``p < 0``): convex for ``p > 1`` or ``p < 0``, concave for
      ``0 < p < 1``; inputs whose bounds leave that domain are refused.
    ``σ' = p z^{p−1} = k`` at ``z = (k/p)^{1/(p−1)}`` (the sign by the piece for odd ``p``)."""

    parameters = (("exponent", 2.0),)

    def canonicalize(self, call):
        if call.spelling in (torch.square, method("square"), aten.square.default):
            return (call.arg(0, "input"),), dict(exponent=2.0)
        if call.spelling in (torch.rsqrt, method("rsqrt"), aten.rsqrt.default):
            return (call.arg(0, "input"),), dict(exponent=-0.5)
        exponent = call.arg(1, "exponent")
        if not is_number(exponent):
            raise call.fail("a power with a tensor exponent, or of a constant base, is not supported; only z ** p "
                            "with a constant number p")
        return (call.arg(0, "input"),), dict(exponent=float(exponent))

    @staticmethod
    def _integer(p: float) -> bool:
        return p == int(p) and p >= 1

    def lipschitz_of(self, exponent=2.0):
        return 1.0 if exponent == 1 else None

    def function(self, z, exponent=2.0):
        return z ** exponent if not self._integer(exponent) else z ** int(exponent)

    def derivative(self, z, exponent=2.0):
        if exponent == 1:
            return torch.ones_like(z)
        if self._integer(exponent):
            return exponent * z ** int(exponent - 1)
        return exponent * z ** (exponent - 1)

    def pieces(self, exponent=2.0):
        if exponent == 1:
            return (), (0,)
        if self._integer(exponent):
            return ((), (1,)) if int(exponent) % 2 == 0 else ((0.0,), (-1, 1))
        return (), (-1 if 0 < exponent < 1 else 1,)

    def stationary(self, k, a, b, curvature, exponent=2.0):
        if exponent == 1:
            return None
        if self._integer(exponent):
            root = (k.abs() / exponent) ** (1 / (exponent - 1))
            if int(exponent) % 2 == 0:
                return torch.sign(k) * root
            return root if curvature > 0 else -root
        return (k / exponent).clamp(min=0) ** (1 / (exponent - 1))

    def domain_error(self, lower, upper, exponent=2.0):
        if self._integer(exponent):
            return None
        if exponent < 0 and bool((lower <= 0).any()):
            return (f"its input's lower bound reaches {float(lower.detach().min()):.3g} ≤ 0, outside z ** {exponent}'s "
                    "domain (0, ∞): bound a smaller set, or keep the input positive (e.g. var + eps)")
        if exponent > 0 and bool((lower < 0).any()):
            return (f"its input's lower bound reaches {float(lower.detach().min()):.3g} < 0, outside z ** {exponent}'s "
                    "domain [0, ∞)")
        return None
