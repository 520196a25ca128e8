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

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ir import Interval, LinearBounds, Ref
from .base import Nonlinear, Rule, method, rule, spec_dot, unbroadcast
from .constant import Slot

aten = torch.ops.aten


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


# ---------------------------------------------------------------------------------------------- softmax

_SOFTMAX = (nn.Softmax, F.softmax, torch.softmax, method("softmax"), aten._softmax.default, aten.softmax.int)
_LOG_SOFTMAX = (nn.LogSoftmax, F.log_softmax, torch.log_softmax, method("log_softmax"), aten._log_softmax.default,
                aten.log_softmax.int)
_LOGSUMEXP = (torch.logsumexp, method("logsumexp"), aten.logsumexp.default)


def _softmax_dim(call, rank: int) -> int:
    if call.module is not None:
        dim = call.module.dim
    elif call.spelling in (aten._softmax.default, aten._log_softmax.default):
        dim = call.arg(1, "dim")
    else:
        dim = call.arg(1, "dim", None)
    if dim is None:
        raise call.fail("softmax without dim= (the legacy implicit dim) is not supported: give dim")
    if not isinstance(dim, int):
        dims = tuple(dim)
        if len(dims) != 1:
            raise call.fail("logsumexp over several dims is not supported")
        dim = dims[0]
    dim = dim + rank if dim < 0 else dim
    if dim == 0:
        raise call.fail("softmax over the batch dimension mixes examples; boundgraph bounds each example on its own")
    return dim


def _masked_finite(mask: Tensor, dim: int) -> Tensor:
    """``mask`` with ``−inf`` as ``−max/4`` of its dtype, except along rows that are ``−inf`` throughout: rows along
    ``dim``, counted from the end (the scores' softmax dimension; a mask of lower rank is broadcast from the right,
    so it gets leading ones first)."""
    if mask.dim() < -dim:
        mask = mask.reshape((1,) * (-dim - mask.dim()) + tuple(mask.shape))
    whole = torch.isneginf(mask).all(dim, keepdim=True)
    return torch.where(whole, mask, mask.clamp(min=-torch.finfo(mask.dtype).max / 4))


def _finite_mask(build, x: Any, dim: int) -> Any:
    """``s + m`` before a softmax, ``m`` a constant (an additive attention mask as ONNX exports write it, ``−inf``
    where a score is masked): ``s + m'``, ``m'`` with ``−inf`` made ``−max/4`` of the dtype, as the attention rules
    make their masks (``ops/attention.py``: its ``exp`` is 0 at every point as ``−inf``'s is, and the bounds stay
    finite). A row masked throughout keeps its ``−inf`` (softmax is NaN there, and its bounds are not finite)."""
    source = build.source(x)
    if source is None or source.op != "add" or source.attrs.get("alpha", 1) != 1:
        return x
    a, b = source.operands
    perturbed = [isinstance(o, Ref) and build.is_perturbed(o) for o in (a, b)]
    if perturbed.count(True) != 1 or not isinstance(b if perturbed[0] else a, Ref):
        return x
    scores, mask = (a, b) if perturbed[0] else (b, a)
    rank = len(build.shape(x))  # the softmax's dimension from the end: the mask is broadcast from the right
    finite = build.add("call", (mask,), dict(fn=_masked_finite, args=(Slot(0), dim % rank - rank), kwargs={}),
                       "finite_mask", perturbed=False)
    return build.add("add", (scores, finite), dict(alpha=1), "masked")


@rule("softmax", spellings=_SOFTMAX + _LOG_SOFTMAX + _LOGSUMEXP)
class Softmax(Rule):
    """``softmax``, ``log_softmax`` and ``logsumexp`` over a dimension other than the batch's, bounded through
    their pieces when their input is perturbed (``expand``, ``exp_shifted``): ``d = x − max x``, ``e = exp(d)``,
    ``s = Σ e`` (keepdim), then ``softmax = e · (1/s)`` (the ``softmax_product`` rule: McCormick's planes, its
    interval intersected with softmax's own range), ``log_softmax = d − log s``, ``logsumexp = log s + max x``."""

    def canonicalize(self, call):
        x = call.arg(0, "input")
        dim = _softmax_dim(call, len(call.operand_shape(x)))
        kind = "log_softmax" if call.spelling in _LOG_SOFTMAX else "logsumexp" if call.spelling in _LOGSUMEXP \
            else "softmax"
        keepdim = bool(call.arg(2, "keepdim", False)) if kind == "logsumexp" else True
        if call.kwargs.get("dtype") is not None and call.kwargs["dtype"] != call.operand_dtype(x):
            raise call.fail("softmax with a dtype= conversion of a perturbed tensor is not supported")
        return (x,), dict(dim=dim, kind=kind, keepdim=keepdim)

    def forward(self, x, dim, kind, keepdim=True):
        if kind == "softmax":
            return torch.softmax(x, dim)
        if kind == "log_softmax":
            return torch.log_softmax(x, dim)
        return torch.logsumexp(x, dim, keepdim)

    def expand(self, node, perturbed, build):
        if not perturbed[0]:
            return None
        (x,), dim, kind = node.operands, node.attrs["dim"], node.attrs["kind"]
        if kind == "softmax":
            x = _finite_mask(build, x, dim)
        shifted, e, total, top, scores = exp_shifted(build, x, dim)
        if kind == "softmax":
            inverse = build.add("reciprocal", (total,))
            return build.finish("softmax_product", (e, inverse, scores), dict(dim=dim))
        log_total = build.add("log", (total,))
        if kind == "log_softmax":
            return build.finish("add", (shifted, log_total), dict(alpha=-1))
        value = build.add("add", (log_total, top), dict(alpha=1), "logsumexp")
        if not node.attrs["keepdim"]:
            shape = tuple(n for i, n in enumerate(build.shape(value)) if i != dim)
            value = build.add("reshape", (value,), dict(shape=shape[1:]), "squeezed")
        return build.finish("identity", (value,))


def exp_shifted(build, x, dim: int, penalty=None) -> tuple:
    """The pieces of a softmax along ``dim`` that never overflow: ``m = max x`` (of ``x + penalty``, a constant
    that masks), ``d = x − m ≤ 0``, ``e = exp(d) ≤ 1`` and ``s = Σ e ≥ 1`` (the maximum's term is ``exp(0)``),
    those two facts kept by ``within`` nodes, so that ``1/s ∈ (0, 1]`` stays finite however wide the scores'
    bounds are; softmax is ``e / s`` for any shift, so ``m``'s relaxation is the price. Returns ``d, e, s, m`` and
    the (masked) scores."""
    if penalty is not None:
        x = build.add("add", (x, penalty), dict(alpha=1), "masked")
    top = build.add("amax", (x,), dict(dims=(dim,), keepdim=True, negate=False), "max")
    shifted = build.add("add", (x, top), dict(alpha=-1), "centred")
    shifted = build.add("within", (shifted,), dict(upper=0.0), "shifted")
    e = build.add("exp", (shifted,))
    total = build.add("sum", (e,), dict(dims=(dim,), keepdim=True, mean=False), "sum")
    total = build.add("within", (total,), dict(lower=1.0), "total")
    return shifted, e, total, top, x


def _log_sum_exp_of_others(t: Tensor, dim: int) -> Tensor:
    """``log Σ_{j≠i} exp(t_j)`` along ``dim`` for each ``i`` (``−inf`` for a single element): the exclusive
    prefix and suffix ``logcumsumexp`` (each a running log-sum shifted by one place), joined by ``logaddexp``;
    never ``Σ − t_i``, which would lose the small terms beside a large one."""
    def exclusive(u: Tensor) -> Tensor:
        running = torch.logcumsumexp(u, dim)
        return torch.cat((torch.full_like(running.narrow(dim, 0, 1), -math.inf),
                          running.narrow(dim, 0, u.shape[dim] - 1)), dim)

    return torch.logaddexp(exclusive(t), exclusive(t.flip(dim)).flip(dim))


def softmax_range(scores: Interval, dim: int) -> Interval:
    """Softmax's exact range per element over the box ``l ≤ x ≤ u`` (``softmax_i`` rises with ``x_i`` and falls
    with every other ``x_j``): ``σ(l_i − log Σ_{j≠i} exp u_j) ≤ softmax_i ≤ σ(u_i − log Σ_{j≠i} exp l_j)``, σ the
    logistic function, ``softmax_i = σ(x_i − log Σ_{j≠i} exp x_j)``; in log space, so nothing overflows."""
    lower = torch.sigmoid(scores.lower - _log_sum_exp_of_others(scores.upper, dim))
    upper = torch.sigmoid(scores.upper - _log_sum_exp_of_others(scores.lower, dim))
    return Interval(lower, upper)


@rule("softmax_product")
class SoftmaxProduct(Product):
    """``softmax = e · r`` with ``e = exp(x − max x)`` and ``r = 1/Σ e``; its third operand is the scores ``x``
    (not relaxed: the lines are the product's planes in ``e`` and ``r``), whose bounds give softmax's exact range
    per element (``softmax_range``), which the product's interval is intersected with: that range knows that
    ``e_i`` is one of the denominator's terms and that every ``e`` shares one shift."""

    perturbable = (0, 1, 2)

    def specialize(self, attrs, operand_shapes, out_shape):
        return dict(shapes=tuple(operand_shapes[:2]), dim=attrs["dim"])

    def forward(self, x, y, scores=None, shapes=None, dim=None):  # type: ignore[override]
        return x * y

    def interval(self, x: Interval, y: Interval, scores=None, shapes=None, dim=None) -> Interval:  # type: ignore[override]
        product = super().interval(x, y, shapes)
        if not isinstance(scores, Interval):  # the scores are not perturbed: exact already
            return product
        exact = softmax_range(scores, dim)
        return Interval(torch.maximum(product.lower, exact.lower), torch.minimum(product.upper, exact.upper))

    def lines(self, lx, ux, ly, uy, strategy, scores=None, shapes=None, dim=None):  # type: ignore[override]
        return super().lines(lx, ux, ly, uy, strategy, shapes)

    def backward(self, A, lines, shapes=None, dim=None, **attrs):  # type: ignore[override]
        return super().backward(A, lines, shapes)

    def deviation(self, x, y, scores=None, shapes=None, dim=None):  # type: ignore[override]
        return super().deviation(x, y, shapes)


@rule("normalised_product")
class NormalisedProduct(Product):
    """``y = d · (var + ε)^(−1/2)`` of a norm, with ``d = x − mean x`` and ``var = mean d²`` over ``count``
    elements: the product's planes, and its interval intersected with ``|y| ≤ √count`` (as ``d_i² ≤ Σ_j d_j² =
    count · var``), which keeps IBP finite where ``var``'s lower bound reaches 0 (Shi et al. 2020 bound layer
    norm the same way)."""

    def specialize(self, attrs, operand_shapes, out_shape):
        return dict(shapes=tuple(operand_shapes), limit=attrs["limit"])

    def forward(self, x, y, shapes=None, limit=None):  # type: ignore[override]
        return x * y

    def interval(self, x: Interval, y: Interval, shapes=None, limit=None) -> Interval:  # type: ignore[override]
        product = super().interval(x, y, shapes)
        return Interval(product.lower.clamp(min=-limit), product.upper.clamp(max=limit))

    def lines(self, lx, ux, ly, uy, strategy, shapes=None, limit=None):  # type: ignore[override]
        """The planes, but the constant ``−√count`` (``√count``) where even IBP's range of the product over the
        box passes it: there the box (``var``'s lower bound near 0) is far looser than the norm can be."""
        planes = super().lines(lx, ux, ly, uy, strategy, shapes)
        with torch.no_grad():
            product = super().interval(Interval(lx, ux), Interval(ly, uy), shapes)
            low, high = product.lower < -limit, product.upper > limit
        zero = torch.zeros_like(planes.lower_bias)
        return ProductLines(torch.where(low, zero, planes.lower_x), torch.where(low, zero, planes.lower_y),
                            torch.where(low, zero - limit, planes.lower_bias), torch.where(high, zero, planes.upper_x),
                            torch.where(high, zero, planes.upper_y), torch.where(high, zero + limit, planes.upper_bias))

    def backward(self, A, lines, shapes=None, limit=None, **attrs):  # type: ignore[override]
        return super().backward(A, lines, shapes)

    def deviation(self, x, y, shapes=None, limit=None):  # type: ignore[override]
        return super().deviation(x, y, shapes)


class MatMulLines(NamedTuple):
    """McCormick's planes of every term ``x_ik·y_kj`` of ``z = x @ y``, one plane choice per output element:
    the operands' bounds and, per ``(i, j)``, whether the lower (upper) bound takes L1 (U1) or L2 (U2)."""

    lx: Tensor
    ux: Tensor
    ly: Tensor
    uy: Tensor
    first_low: Tensor
    first_high: Tensor


def _pos(t: Tensor) -> Tensor:
    return t.clamp(min=0)


def _neg(t: Tensor) -> Tensor:
    return t.clamp(max=0)


@rule("matmul_product")
class MatMulProduct(Nonlinear):
    """``z = x @ y`` of two perturbed batched matrices (attention's ``q kᵀ`` and ``P v``), without forming its
    terms: with one plane per output element ``(i, j)`` for all its terms ``k``, every sum over ``k`` is a matrix
    product, so CROWN's transpose costs a few matmuls and no ``(…, n, k, m)`` tensor (auto_LiRPA's BoundMatMul
    takes fixed planes; here the plane whose extreme over the box is tighter, as for ``product``). IBP: the sum
    of each term's exact range (corner products)."""

    inputs = 2
    perturbable = (0, 1)

    def specialize(self, attrs, operand_shapes, out_shape):
        return dict(shapes=tuple(operand_shapes))

    def forward(self, x, y, shapes=None):  # type: ignore[override]
        return torch.matmul(x, y)

    def interval(self, x: Interval, y: Interval, shapes=None) -> Interval:  # type: ignore[override]
        a, b = x.lower.unsqueeze(-1), x.upper.unsqueeze(-1)
        c, d = y.lower.unsqueeze(-3), y.upper.unsqueeze(-3)
        corners = (a * c, a * d, b * c, b * d)
        low, high = corners[0], corners[0]
        for t in corners[1:]:
            low, high = torch.minimum(low, t), torch.maximum(high, t)
        return Interval(low.sum(-2), high.sum(-2))

    def lines(self, lx, ux, ly, uy, strategy, shapes=None):  # type: ignore[override]
        m = torch.matmul
        if strategy in ("zero", "one"):
            first = torch.full(torch.broadcast_shapes(lx.shape[:-1] + (1,), ly.shape[:-2] + (1, ly.shape[-1])),
                               strategy == "zero", dtype=torch.bool, device=lx.device)
            return MatMulLines(lx, ux, ly, uy, first, first)
        with torch.no_grad():
            low1 = m(lx, _pos(ly)) + m(ux, _neg(ly)) + m(_pos(lx), ly) + m(_neg(lx), uy) - m(lx, ly)
            low2 = m(lx, _pos(uy)) + m(ux, _neg(uy)) + m(_pos(ux), ly) + m(_neg(ux), uy) - m(ux, uy)
            high1 = m(ux, _pos(uy)) + m(lx, _neg(uy)) + m(_pos(lx), uy) + m(_neg(lx), ly) - m(lx, uy)
            high2 = m(ux, _pos(ly)) + m(lx, _neg(ly)) + m(_pos(ux), uy) + m(_neg(ux), ly) - m(ux, ly)
        return MatMulLines(lx, ux, ly, uy, low1 >= low2, high1 <= high2)

    def line_values(self, lines: MatMulLines, x: Tensor, y: Tensor) -> tuple:
        m, L = torch.matmul, lines
        low1, low2 = m(x, L.ly) + m(L.lx, y) - m(L.lx, L.ly), m(x, L.uy) + m(L.ux, y) - m(L.ux, L.uy)
        high1, high2 = m(x, L.uy) + m(L.lx, y) - m(L.lx, L.uy), m(x, L.ly) + m(L.ux, y) - m(L.ux, L.ly)
        low = torch.where(L.first_low, low1, low2)
        high = torch.where(L.first_high, high1, high2)
        return low, torch.zeros_like(low), high, torch.zeros_like(high)

    def unstable(self, lower, upper, **attrs):
        return upper > lower

    def backward(self, A: Tensor, lines: MatMulLines, shapes=None, **attrs) -> tuple[tuple, Any]:  # type: ignore[override]
        """``A⁺`` takes the lower planes, ``A⁻`` the upper, per output element; each plane's sums over ``k`` are
        matrix products: ``A_x = P @ y_boundᵀ``, ``A_y = x_boundᵀ @ P``, ``bias = −Σ P ⊙ (x_bound @ y_bound)``."""
        m, L = torch.matmul, [t.unsqueeze(1) for t in lines]
        lx, ux, ly, uy, first_low, first_high = L
        positive = A.clamp(min=0)
        negative = A - positive
        parts = ((positive * first_low, lx, ly), (positive * ~first_low, ux, uy),  # lower planes L1, L2
                 (negative * first_high, lx, uy), (negative * ~first_high, ux, ly))  # upper planes U1, U2
        A_x = A_y = bias = 0
        for P, xb, yb in parts:
            A_x = A_x + m(P, yb.transpose(-1, -2))
            A_y = A_y + m(xb.transpose(-1, -2), P)
            bias = bias - (P * m(xb, yb)).flatten(2).sum(-1)
        return (unbroadcast(A_x, shapes[0]), unbroadcast(A_y, shapes[1])), bias

    def forward_linear(self, x: LinearBounds, y: LinearBounds, lines: MatMulLines) -> LinearBounds:  # type: ignore[override]
        """Each plane's ``y_bound·x`` and ``x_bound·y`` terms bounded by the operands' linear bounds (by the signs
        of the bounds), as matrix products over the input slices."""
        m = torch.matmul
        lx, ux, ly, uy, first_low, first_high = (t.unsqueeze(1) for t in lines)

        def times_x(bound: Tensor, lower: bool) -> tuple[Tensor, Tensor]:  # Σ_k x_ik · bound_kj
            near = (x.lower_coef, x.lower_bias) if lower else (x.upper_coef, x.upper_bias)
            far = (x.upper_coef, x.upper_bias) if lower else (x.lower_coef, x.lower_bias)
            return (m(near[0], _pos(bound)) + m(far[0], _neg(bound)),
                    m(near[1], _pos(bound[:, 0])) + m(far[1], _neg(bound[:, 0])))

        def times_y(bound: Tensor, lower: bool) -> tuple[Tensor, Tensor]:  # Σ_k bound_ik · y_kj
            near = (y.lower_coef, y.lower_bias) if lower else (y.upper_coef, y.upper_bias)
            far = (y.upper_coef, y.upper_bias) if lower else (y.lower_coef, y.lower_bias)
            return (m(_pos(bound), near[0]) + m(_neg(bound), far[0]),
                    m(_pos(bound[:, 0]), near[1]) + m(_neg(bound[:, 0]), far[1]))

        def plane(xb, yb, choose, lower):
            (cx, bx), (cy, by) = times_x(yb, lower), times_y(xb, lower)
            return cx + cy, bx + by - m(xb[:, 0], yb[:, 0])

        low = [plane(lx, ly, first_low, True), plane(ux, uy, first_low, True)]
        high = [plane(lx, uy, first_high, False), plane(ux, ly, first_high, False)]
        pick = lambda pair, choose: (torch.where(choose, pair[0][0], pair[1][0]),  # noqa: E731
                                     torch.where(choose[:, 0], pair[0][1], pair[1][1]))
        (lower_coef, lower_bias), (upper_coef, upper_bias) = pick(low, first_low), pick(high, first_high)
        return LinearBounds(lower_coef, lower_bias, upper_coef, upper_bias)

    def deviation(self, x: Interval, y: Interval, shapes=None) -> Interval:  # type: ignore[override]
        """SingleProp (not a bound): ``c_x @ c_y ± (|c_x| @ r_y + r_x @ |c_y| + r_x @ r_y)``."""
        cx, rx = x.centre_radius()
        cy, ry = y.centre_radius()
        m = torch.matmul
        value, spread = m(cx, cy), m(cx.abs(), ry) + m(rx, cy.abs()) + m(rx, ry)
        return Interval(value - spread, value + spread)


# ---------------------------------------------------------------------------------------------- einsum

def _einsum_parts(equation: str, count: int) -> tuple[list[str], str]:
    """The operands' subscripts and the output's (torch's implicit output: the letters used once, sorted)."""
    equation = equation.replace(" ", "")
    inputs, _, output = equation.partition("->")
    subscripts = inputs.split(",")
    if "->" not in equation:
        letters = "".join(subscripts)
        output = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    if len(subscripts) != count:
        raise ValueError(f"einsum {equation!r} names {len(subscripts)} operands, {count} given")
    return subscripts, output


def _layout(t: Tensor, perm: tuple, shape: tuple) -> Tensor:
    return t.permute(perm).reshape(shape)


@rule("einsum", spellings=(torch.einsum, aten.einsum.default))
class Einsum(Rule):
    """``torch.einsum(equation, *operands)`` with the batch as the first subscript of every operand that carries
    it, bounded through its pieces when an operand is perturbed (``expand``): each operand permuted and reshaped
    onto one order of all the letters (a constant without the batch letter broadcasts over it), their product
    (``mul``: linear where one operand is perturbed, McCormick's ``product`` where two are), the sum over the
    contracted letters, and the output's permutation. The broadcast product holds every term of the contraction;
    ``x @ y`` (the ``matmul_product`` rule) is the lean spelling of a matrix product."""

    perturbable = tuple(range(16))

    def canonicalize(self, call):
        equation = call.arg(0, "equation")
        operands = call.args[1:]
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)) and not isinstance(operands[0], Ref):
            operands = tuple(operands[0])
        if not isinstance(equation, str) or "." in equation:
            raise call.fail("einsum with an ellipsis (...) is not supported: name every dimension")
        try:
            subscripts, output = _einsum_parts(equation, len(operands))
        except ValueError as error:
            raise call.fail(str(error)) from None
        shapes = [call.operand_shape(o) for o in operands]
        batch = subscripts[0][0] if subscripts[0] else ""
        for s, shape in zip(subscripts, shapes):
            if shape is not None and len(s) != len(shape):
                raise call.fail(f"subscripts {s!r} do not match an operand of rank {len(shape)}")
            if len(set(s)) != len(s):
                raise call.fail(f"subscripts {s!r} repeat a letter (a diagonal): not supported")
            if batch in s[1:]:
                raise call.fail(f"the batch subscript {batch!r} must come first in every operand that has it")
        if not output.startswith(batch):
            raise call.fail(f"einsum's output {output!r} must keep the batch subscript {batch!r} first")
        return tuple(operands), dict(subscripts=tuple(subscripts), output=output)

    def forward(self, *operands, subscripts, output):
        return torch.einsum(",".join(subscripts) + "->" + output, *operands)

    def expand(self, node, perturbed, build):
        if not any(perturbed):
            return None
        subscripts, output = node.attrs["subscripts"], node.attrs["output"]
        batch = subscripts[0][0]
        order = [batch] + [c for c in dict.fromkeys("".join(subscripts)) if c != batch]
        size = {}
        for o, s in zip(node.operands, subscripts):
            shape = build.shape(o)
            for c, n in zip(s, shape or ()):
                size[c] = max(size.get(c, 1), n) if c != batch else 1
        terms = []
        for o, s, p in zip(node.operands, subscripts, perturbed):
            batched = s.startswith(batch)
            letters = [c for c in order if c in s]
            perm = tuple(s.index(c) for c in letters)
            shape = tuple(size[c] if c in s else 1 for c in order[1:])  # the batch's place aside
            if p:
                moved = build.add("permute", (o,), dict(dims=perm), "moved") if perm != tuple(range(len(s))) else o
                terms.append(build.add("reshape", (moved,), dict(shape=shape), "laid_out"))
            else:
                shape = (-1,) + shape if batched else shape
                terms.append(build.add("call", (o,), dict(fn=_layout, args=(Slot(0), perm, shape), kwargs={}),
                                       "laid_out", perturbed=False))
        value = terms[0]
        for term in terms[1:]:
            value = build.add("mul", (value, term), suffix="terms")
        contracted = tuple(i for i, c in enumerate(order) if c not in output)
        if contracted:
            value = build.add("sum", (value,), dict(dims=contracted, keepdim=False, mean=False), "contracted")
        kept = [c for c in order if c in output]
        perm = tuple(kept.index(c) for c in output)
        if perm != tuple(range(len(perm))):
            value = build.add("permute", (value,), dict(dims=perm), "ordered")
        return build.finish("identity", (value,))
