"""Pooling and reductions over the dimensions of each example.

Averages and sums (``avg_pool`` 1/2/3-d with any padding, ``ceil_mode``, ``count_include_pad`` and divisor;
``adaptive_avg_pool`` to any output size; ``sum`` and ``mean`` over dimensions) are linear maps with
non-negative weights: ``Structural`` rules (IBP maps both bounds through, CROWN's transpose is the map's
vector–Jacobian product).

Maxima (``max_pool`` 1/2/3-d with any kernel, stride, padding, dilation and ``ceil_mode``;
``adaptive_max_pool`` to any output size; ``amax``/``max`` and ``amin``/``min`` over dimensions) take the
largest element of a window. Every window is a row of one table of the flattened example's positions
(built once from the shapes), so one relaxation serves them all:

- IBP: ``[max_W l, max_W u]``, exact.
- Lower line ``z ≥ x_j`` with ``j`` the element of largest lower bound (every element is a lower line of
  the maximum; this one is the best at the box's lowest corner, so it never falls below IBP's bound).
- Upper line: with ``j`` the element of largest upper bound ``u_j`` and ``m`` the largest upper bound of
  the others, ``z ≤ max(x_j, m)``, which is convex in ``x_j``: its chord on ``[l_j, u_j]``,
  ``z ≤ m + (u_j − m)/(u_j − l_j)·(x_j − l_j)``, and ``z = x_j`` exactly when ``l_j ≥ m`` (``x_j`` dominates).
  The chord lies below IBP's constant ``u_j`` everywhere on the box, so it is at least as tight as the
  constant upper bound of DeepPoly (Singh et al. 2019) and auto_LiRPA, and equal to it at ``x_j = u_j``.
  Both lines meet the maximum at the ends of the interval they bound, as Lyu et al.'s tight lines do.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ir import Interval, LinearBounds
from .base import Nonlinear, Rule, Several, method, rule
from .structure import Structural, _batch_kept, _dim

aten = torch.ops.aten


def _tuple(value: Any, n: int) -> tuple:
    if isinstance(value, (list, tuple)):
        return tuple(value) if len(value) == n else tuple(value) * n if len(value) == 1 else tuple(value)
    return (value,) * n


# ---------------------------------------------------------------------------------------- averages, sums

_AVG = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3, F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3,
        aten.avg_pool2d.default: 2, aten.avg_pool3d.default: 3}
_ADAPTIVE_AVG = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3, F.adaptive_avg_pool1d: 1,
                 F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3, aten.adaptive_avg_pool2d.default: 2,
                 aten._adaptive_avg_pool2d.default: 2, aten.adaptive_avg_pool3d.default: 3,
                 aten._adaptive_avg_pool3d.default: 3, aten.adaptive_avg_pool1d.default: 1}


@rule("avg_pool", spellings=tuple(_AVG) + tuple(_ADAPTIVE_AVG))
class AvgPool(Structural):
    """``z = mean of x over each window`` (1, 2 or 3 spatial dimensions): ``avg_pool`` with any kernel,
    stride, padding, ``ceil_mode``, ``count_include_pad`` and ``divisor_override``, and ``adaptive_avg_pool``
    to any output size (windows ``[⌊iL/O⌋, ⌈(i+1)L/O⌉)``, overlapping where ``O`` does not divide ``L``).
    Non-negative weights: IBP ``[pool(l), pool(u)]`` is exact; CROWN's transpose is the pool's adjoint."""

    def canonicalize(self, call):
        x = call.arg(0, "input")
        if call.spelling in _ADAPTIVE_AVG:
            n = _ADAPTIVE_AVG[call.spelling]
            return (x,), dict(n=n, adaptive=tuple(call.out_shape[-n:]))
        n = _AVG[call.spelling]
        if call.module is not None:
            m = call.module
            kernel, stride, padding, ceil_mode = m.kernel_size, m.stride, m.padding, m.ceil_mode
            include, divisor = m.count_include_pad, getattr(m, "divisor_override", None)
        else:
            kernel, stride, padding = call.arg(1, "kernel_size"), call.arg(2, "stride", None), call.arg(3, "padding", 0)
            ceil_mode, include = call.arg(4, "ceil_mode", False), call.arg(5, "count_include_pad", True)
            divisor = call.arg(6, "divisor_override", None) if n > 1 else None
        stride = kernel if stride is None or stride == [] or stride == () else stride
        return (x,), dict(n=n, adaptive=None, kernel=_tuple(kernel, n), stride=_tuple(stride, n),
                          padding=_tuple(padding, n), ceil_mode=bool(ceil_mode), include=bool(include),
                          divisor=divisor)

    def apply(self, x, n, adaptive, kernel=None, stride=None, padding=None, ceil_mode=False, include=True,
              divisor=None):
        if adaptive is not None:
            return (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[n - 1](x, adaptive)
        if n == 1:
            return F.avg_pool1d(x, kernel, stride, padding, ceil_mode, include)
        pool = F.avg_pool2d if n == 2 else F.avg_pool3d
        return pool(x, kernel, stride, padding, ceil_mode, include, divisor)


_SUM = (torch.sum, method("sum"), aten.sum.dim_IntList)
_MEAN = (torch.mean, method("mean"), aten.mean.dim)


def _reduced_dims(call, rank: int) -> tuple[int, ...]:
    dims = call.arg(1, "dim", None)
    if dims is None or dims == [] or dims == ():
        raise call.fail("the reduction runs over every dimension, the batch included: reduce over dim=1 and up")
    dims = tuple(sorted(_dim(d, rank) for d in ((dims,) if isinstance(dims, int) else dims)))
    _batch_kept(call, dims)
    return dims


@rule("sum", spellings=_SUM + _MEAN)
class Sum(Structural):
    """``x.sum(dims)`` or ``x.mean(dims)`` (``keepdim`` either way) over dimensions other than the batch's:
    non-negative weights, so IBP sums (averages) the bounds exactly."""

    def canonicalize(self, call):
        x = call.arg(0, "input")
        dims = _reduced_dims(call, len(call.operand_shape(x)))
        if call.kwargs.get("dtype") is not None and call.kwargs["dtype"] != call.operand_dtype(x):
            raise call.fail("the reduction changes the dtype of a perturbed tensor")
        return (x,), dict(dims=dims, keepdim=bool(call.arg(2, "keepdim", False)), mean=call.spelling in _MEAN)

    def apply(self, x, dims, keepdim, mean):
        return x.mean(dims, keepdim) if mean else x.sum(dims, keepdim)


# ---------------------------------------------------------------------------------------- maxima

class WindowLines(NamedTuple):
    """Linear bounds of a maximum over windows, each bounding an output by one input element:
    ``lower_slope·x[lower_index] + lower_bias ≤ z ≤ upper_slope·x[upper_index] + upper_bias``. Indices are
    positions in the flattened example, ``(batch, outputs)``; slopes and biases have the output's shape."""

    lower_index: Tensor
    lower_slope: Tensor
    lower_bias: Tensor
    upper_index: Tensor
    upper_slope: Tensor
    upper_bias: Tensor


def _window_table(tables: list[Tensor], in_shape: tuple[int, ...]) -> Tensor:
    """The positions (in the flattened example) of every window's elements, ``(outputs, window)``, −1 for
    padding, from one ``(outputs_d, window_d)`` table per dimension of the example."""
    strides = [math.prod(in_shape[d + 1:]) for d in range(len(in_shape))]
    rank = len(tables)
    total = torch.zeros((), dtype=torch.long)
    valid = torch.ones((), dtype=torch.bool)
    for d, table in enumerate(tables):
        shape = [1] * (2 * rank)
        shape[d], shape[rank + d] = table.shape
        index = table.view(shape)
        valid = valid & (index >= 0)
        total = total + index.clamp(min=0) * strides[d]
    outputs = math.prod(t.shape[0] for t in tables)
    return torch.where(valid, total, -1).reshape(outputs, -1)


def _regular_windows(length: int, outputs: int, kernel: int, stride: int, padding: int, dilation: int) -> Tensor:
    start = torch.arange(outputs).unsqueeze(1) * stride - padding
    position = start + torch.arange(kernel).unsqueeze(0) * dilation
    return torch.where((position >= 0) & (position < length), position, -1)


def _adaptive_windows(length: int, outputs: int) -> Tensor:
    o = torch.arange(outputs)
    start, end = (o * length) // outputs, ((o + 1) * length + outputs - 1) // outputs
    width = int((end - start).max())
    position = start.unsqueeze(1) + torch.arange(width).unsqueeze(0)
    return torch.where(position < end.unsqueeze(1), position, -1)


def _whole(length: int, reduced: bool) -> Tensor:
    return torch.arange(length).unsqueeze(0) if reduced else torch.arange(length).unsqueeze(1)


_TABLE_KEYS = ("table", "overlap", "out_shape", "in_shape", "negate")


class Maxima(Nonlinear):
    """Base of the maxima over windows (module doc); a rule gives its ``apply`` (the op) and ``windows``
    (one table per dimension of the example). ``negate``: the minimum, ``min_W x = −max_W(−x)``."""

    def windows(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...], **attrs: Any) -> list[Tensor]:
        raise NotImplementedError

    def apply(self, x: Tensor, **attrs: Any) -> Tensor:
        raise NotImplementedError

    def specialize(self, attrs, operand_shapes, out_shape):
        in_shape = tuple(operand_shapes[0][1:])
        params = {k: v for k, v in attrs.items() if k not in _TABLE_KEYS}
        table = _window_table(self.windows(in_shape, tuple(out_shape[1:]), **params), in_shape)
        if table.shape[0] != math.prod(out_shape[1:]):
            raise ValueError(f"{self.name}: the windows do not match the traced output shape {tuple(out_shape)}")
        if bool((table < 0).all(1).any()):
            raise ValueError(f"{self.name}: a window lies entirely in the padding (its maximum is -inf)")
        overlap = int(torch.bincount(table[table >= 0].flatten()).max())
        return dict(attrs, table=table, overlap=overlap, out_shape=tuple(out_shape[1:]), in_shape=in_shape)

    def forward(self, x, *, table=None, overlap=None, out_shape=None, in_shape=None, negate=False,  # type: ignore[override]
                **attrs):
        return -self.apply(-x, **attrs) if negate else self.apply(x, **attrs)

    def interval(self, x, **attrs):  # type: ignore[override]
        """Exact: ``[max_W l, max_W u]`` (for the minimum, ``[min_W l, min_W u]``)."""
        return Interval(self.forward(x.lower, **attrs), self.forward(x.upper, **attrs))

    def lipschitz_of(self, overlap=1, **attrs):
        """In L2: each output moves by at most its window's largest change, and each element lies in at
        most ``overlap`` windows, so ``‖Δz‖² ≤ overlap·‖Δx‖²``."""
        return math.sqrt(overlap)

    @staticmethod
    def _gather(x: Tensor, table: Tensor, fill: float) -> Tensor:
        """``(batch, outputs, window)``: the window elements of ``x`` (``fill`` at padding)."""
        values = x.flatten(1)[:, table.clamp(min=0)]
        return values.masked_fill(table < 0, fill)

    def lines(self, lower, upper, strategy, *, table, overlap=None, out_shape, in_shape=None, negate=False,  # type: ignore[override]
              **attrs):
        """The same lines for every strategy (module doc); for the minimum, the maximum's of ``−x``, negated."""
        if negate:
            lower, upper = -upper, -lower
        table = table.to(lower.device)
        low, high = self._gather(lower, table, -math.inf), self._gather(upper, table, -math.inf)
        pick_low = low.argmax(-1, keepdim=True)
        top, where = high.topk(min(2, high.shape[-1]), dim=-1)
        pick_high, u_j = where[..., :1], top[..., 0]
        second = top[..., 1] if top.shape[-1] > 1 else torch.full_like(u_j, -math.inf)
        l_j = low.gather(-1, pick_high).squeeze(-1)
        dominated = l_j >= second
        width = torch.where(dominated, torch.ones_like(u_j), u_j - l_j)
        slope = torch.where(dominated, torch.ones_like(u_j), (u_j - second) / width)
        bias = torch.where(dominated, torch.zeros_like(u_j), second - slope * l_j)
        positions = table.expand(lower.shape[0], -1, -1)
        lower_index = positions.gather(-1, pick_low).squeeze(-1)
        upper_index = positions.gather(-1, pick_high).squeeze(-1)
        shape = (lower.shape[0],) + tuple(out_shape)
        one, zero = torch.ones(shape, dtype=lower.dtype, device=lower.device), torch.zeros(shape, dtype=lower.dtype,
                                                                                            device=lower.device)
        if negate:  # z = −max(−x): −max ≤ −(−x_j) = x_j above, −(s·(−x_k) + t) = s·x_k − t below
            return WindowLines(upper_index, slope.view(shape), -bias.view(shape), lower_index, one, zero)
        return WindowLines(lower_index, one, zero, upper_index, slope.view(shape), bias.view(shape))

    def line_values(self, lines: WindowLines, z: Tensor) -> tuple:
        flat = z.flatten(1)
        below = lines.lower_slope * flat.gather(1, lines.lower_index).view_as(lines.lower_slope)
        above = lines.upper_slope * flat.gather(1, lines.upper_index).view_as(lines.upper_slope)
        return below, lines.lower_bias, above, lines.upper_bias

    def unstable(self, lower, upper, *, table, overlap=None, out_shape, in_shape=None, negate=False, **attrs):  # type: ignore[override]
        """The elements of the windows whose lines are not exact (no element dominates the others)."""
        lines = self.lines(lower, upper, "adaptive", table=table, out_shape=out_shape, negate=negate)
        exact = (lines.lower_index == lines.upper_index) & (lines.lower_slope == 1).flatten(1) & (
            lines.upper_slope == 1).flatten(1)
        table = table.to(lower.device)
        batch, n = lower.shape[0], lower[0].numel()
        loose = (~exact).unsqueeze(-1) & (table >= 0)
        index = torch.where(table >= 0, table, n).expand(batch, -1, -1)
        hits = torch.zeros(batch, n + 1, dtype=lower.dtype, device=lower.device)
        hits.scatter_add_(1, index.flatten(1), loose.flatten(1).to(lower.dtype))
        return (hits[:, :n] > 0).view_as(lower) & (upper > lower)

    def backward(self, A: Tensor, lines: WindowLines, *, in_shape, **attrs) -> tuple[tuple, Any]:  # type: ignore[override]
        """``A ← A⁺`` scattered to the lower lines' elements (times their slopes) plus ``A⁻`` to the upper
        lines'; ``bias = Σ A⁺·lower_bias + A⁻·upper_bias``."""
        batch, specs = A.shape[:2]
        flat = A.reshape(batch, specs, -1)
        positive = flat.clamp(min=0)
        negative = flat - positive
        size = lines.lower_index.shape[1]
        lower_slope, upper_slope = (s.reshape(batch, 1, size) for s in (lines.lower_slope, lines.upper_slope))
        back = flat.new_zeros(batch, specs, math.prod(in_shape))
        back = back.scatter_add(2, lines.lower_index.unsqueeze(1).expand(batch, specs, size), positive * lower_slope)
        back = back.scatter_add(2, lines.upper_index.unsqueeze(1).expand(batch, specs, size), negative * upper_slope)
        bias = torch.matmul(positive, lines.lower_bias.reshape(batch, size, 1)).squeeze(-1) + torch.matmul(
            negative, lines.upper_bias.reshape(batch, size, 1)).squeeze(-1)
        return (back.view(batch, specs, *in_shape),), bias

    def forward_linear(self, x: LinearBounds, lines: WindowLines) -> LinearBounds:  # type: ignore[override]
        """``z ≥ s_l·(W_l x + b_l)[j_l] + t_l`` (``s_l ≥ 0``), the upper bound likewise from ``x``'s upper bounds."""
        batch, n = lines.lower_index.shape[0], x.lower_coef.shape[1]
        shape = tuple(lines.lower_slope.shape[1:])

        def pick(coef: Tensor, bias: Tensor, index: Tensor, slope: Tensor, offset: Tensor) -> tuple[Tensor, Tensor]:
            coef = coef.reshape(coef.shape[0], n, -1).expand(batch, n, -1)
            taken = coef.gather(2, index.unsqueeze(1).expand(batch, n, index.shape[1])).view(batch, n, *shape)
            value = bias.reshape(batch, -1).gather(1, index).view(batch, *shape)
            return taken * slope.unsqueeze(1), value * slope + offset

        lower_coef, lower_bias = pick(x.lower_coef, x.lower_bias, lines.lower_index, lines.lower_slope, lines.lower_bias)
        upper_coef, upper_bias = pick(x.upper_coef, x.upper_bias, lines.upper_index, lines.upper_slope, lines.upper_bias)
        return LinearBounds(lower_coef, lower_bias, upper_coef, upper_bias)

    def deviation(self, x: Interval, **attrs):  # type: ignore[override]
        """SingleProp (not a bound): the centre through the maximum, ± the window's largest deviation."""
        centre, radius = x.centre_radius()
        value = self.forward(centre, **attrs)
        spread = self.apply(radius, **{k: v for k, v in attrs.items() if k not in _TABLE_KEYS})
        return Interval(value - spread, value + spread)


_MAX_POOL = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3, F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3,
             torch.max_pool1d: 1, torch.max_pool2d: 2, torch.max_pool3d: 3, aten.max_pool2d.default: 2,
             aten.max_pool3d.default: 3, aten.max_pool1d.default: 1, F.max_pool1d_with_indices: 1,
             F.max_pool2d_with_indices: 2, F.max_pool3d_with_indices: 3}


@rule("max_pool", spellings=tuple(_MAX_POOL))
class MaxPool(Maxima):
    """``max_pool`` over 1, 2 or 3 spatial dimensions with any kernel, stride (≠ kernel too), padding,
    dilation and ``ceil_mode``: windows of ``kernel`` elements ``dilation`` apart, starting ``stride``
    apart at ``−padding`` (``ceil_mode``'s last partial windows read off the traced output size)."""

    def canonicalize(self, call):
        n = _MAX_POOL[call.spelling]
        if call.module is not None:
            m = call.module
            values = (m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, m.return_indices)
        else:
            values = (call.arg(1, "kernel_size"), call.arg(2, "stride", None), call.arg(3, "padding", 0),
                      call.arg(4, "dilation", 1), call.arg(5, "ceil_mode", False), call.arg(6, "return_indices", False))
        kernel, stride, padding, dilation, ceil_mode, indices = values
        if indices or "with_indices" in getattr(call.spelling, "__name__", ""):
            raise call.fail("max pooling with return_indices=True: the indices depend on the values of a perturbed "
                            "tensor and have no bound (max_unpool needs them)")
        stride = kernel if stride is None or stride == [] or stride == () else stride
        return (call.arg(0, "input"),), dict(n=n, kernel=_tuple(kernel, n), stride=_tuple(stride, n),
                                            padding=_tuple(padding, n), dilation=_tuple(dilation, n),
                                            ceil_mode=bool(ceil_mode))

    def windows(self, in_shape, out_shape, n, kernel, stride, padding, dilation, ceil_mode):
        keep = [_whole(length, False) for length in in_shape[:-n]]
        return keep + [_regular_windows(in_shape[-n + d], out_shape[-n + d], kernel[d], stride[d], padding[d],
                                        dilation[d]) for d in range(n)]

    def apply(self, x, n, kernel, stride, padding, dilation, ceil_mode):
        pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[n - 1]
        return pool(x, kernel, stride, padding, dilation, ceil_mode)


_ADAPTIVE_MAX = {nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3, F.adaptive_max_pool1d: 1,
                 F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3, aten.adaptive_max_pool2d.default: 2,
                 aten.adaptive_max_pool3d.default: 3, aten.adaptive_max_pool1d.default: 1}


@rule("adaptive_max_pool", spellings=tuple(_ADAPTIVE_MAX))
class AdaptiveMaxPool(Maxima):
    """``adaptive_max_pool`` to any output size: windows ``[⌊iL/O⌋, ⌈(i+1)L/O⌉)`` per dimension (of unequal
    sizes, overlapping, where ``O`` does not divide ``L``)."""

    def canonicalize(self, call):
        n = _ADAPTIVE_MAX[call.spelling]
        indices = call.module.return_indices if call.module is not None else call.arg(2, "return_indices", False)
        if indices or isinstance(call.out_shape, type(None)):
            raise call.fail("adaptive max pooling with return_indices=True: the indices have no bound")
        return (call.arg(0, "input"),), dict(n=n, size=tuple(call.out_shape[-n:]))

    def windows(self, in_shape, out_shape, n, size):
        keep = [_whole(length, False) for length in in_shape[:-n]]
        return keep + [_adaptive_windows(in_shape[-n + d], size[d]) for d in range(n)]

    def apply(self, x, n, size):
        return (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)[n - 1](x, size)


_AMAX = (torch.amax, method("amax"), aten.amax.default)
_AMIN = (torch.amin, method("amin"), aten.amin.default)
_MAX_DIM = (torch.max, method("max"), aten.max.dim)
_MIN_DIM = (torch.min, method("min"), aten.min.dim)


@rule("amax", spellings=_AMAX + _AMIN + _MAX_DIM + _MIN_DIM)
class Amax(Maxima):
    """``amax``/``amin`` over dimensions other than the batch's (``keepdim`` either way), and ``max``/``min``
    along one: ``x.max(dim)``'s values (its indices are refused where they are used); ``max(x, other)``
    of two tensors is ``maximum``."""

    def canonicalize(self, call):
        x = call.arg(0, "input")
        rank = len(call.operand_shape(x))
        negate = call.spelling in _AMIN + _MIN_DIM
        if call.spelling in _MAX_DIM + _MIN_DIM:
            other = call.arg(1, "dim", None)
            if other is None:
                raise call.fail("the maximum of every element reduces the batch too: give dim=")
            if not isinstance(other, int):  # max(x, other): elementwise, with a tensor
                return Several([("clamp_by", (x, None, other) if negate else (x, other, None), {})])
            dims = (_dim(other, rank),)
            _batch_kept(call, dims)
            attrs = dict(dims=dims, keepdim=bool(call.arg(2, "keepdim", False)), negate=negate)
            return Several([("amax", (x,), attrs), ("argmax", (x,), dict(dim=dims[0], keepdim=attrs["keepdim"]))])
        dims = call.arg(1, "dim", ())
        if dims is None or dims == () or dims == []:
            raise call.fail("the maximum of every element reduces the batch too: give dim=")
        dims = tuple(sorted({_dim(d, rank) for d in ((dims,) if isinstance(dims, int) else dims)}))
        _batch_kept(call, dims)
        return (x,), dict(dims=dims, keepdim=bool(call.arg(2, "keepdim", False)), negate=negate)

    def windows(self, in_shape, out_shape, dims, keepdim):
        return [_whole(length, d + 1 in dims) for d, length in enumerate(in_shape)]

    def apply(self, x, dims, keepdim):
        return x.amax(dims, keepdim)


@rule("argmax", spellings=(torch.argmax, method("argmax"), torch.argmin, method("argmin"), aten.argmax.default,
                           aten.argmin.default))
class ArgMax(Rule):
    """The position of a maximum: it depends on the values of a perturbed tensor and has no bound (its
    non-perturbed uses, on integer inputs, are computed exactly without a rule)."""

    perturbable = ()

    def check(self, perturbed):
        return "the position of a maximum (argmax, max(dim)'s indices) depends on the values of a perturbed tensor " \
               "and has no bound" if any(perturbed) else None

    def forward(self, x, dim=None, keepdim=False):
        return x.argmax(dim, keepdim)
