"""Normalisation: batch norm with running statistics (eval mode) and its folding into the layer before; layer,
group and instance norm, variance and standard deviation, bounded through their pieces."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ir import Interval
from .base import Rule, Several, method, rule, spec_sum

aten = torch.ops.aten


def bn_scale_shift(mean: Tensor, var: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
    """Eval-mode batch norm as ``scale·x + shift`` per channel: ``scale = γ/√(var+ε)``,
    ``shift = β − μ·scale``."""
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return scale, shift


@rule("batch_norm", spellings=(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, F.batch_norm, aten.batch_norm.default))
class BatchNorm(Rule):
    """``z = γ (x − μ)/√(σ² + ε) + β`` with running statistics: a per-channel affine map (channel
    dimension 1). IBP: ``scale·c + shift ± |scale|·r``. CROWN: ``A ← A·scale``, ``bias += Σ A·shift``.
    Folded into a convolution before it (``passes.fold_batchnorm``), not into a linear layer.
    """

    def canonicalize(self, call):
        if call.module is not None:
            m = call.module
            if not m.track_running_stats or m.running_mean is None:
                raise call.fail("batch norm without running statistics has no fixed eval-mode map")
            operands = (call.arg(0, "input"), call.param("running_mean"), call.param("running_var"),
                        call.param("weight"), call.param("bias"))
            return operands, dict(eps=m.eps)
        if call.arg(5, "training", False):
            raise call.fail("batch norm with training=True is not supported; use running statistics")
        if call.spelling is aten.batch_norm.default:  # (input, weight, bias, running_mean, running_var, ...)
            operands = (call.arg(0, "input"), call.arg(3, "running_mean"), call.arg(4, "running_var"),
                        call.arg(1, "weight"), call.arg(2, "bias"))
        else:
            operands = (call.arg(0, "input"), call.arg(1, "running_mean"), call.arg(2, "running_var"),
                        call.arg(3, "weight", None), call.arg(4, "bias", None))
        return operands, dict(eps=call.arg(7, "eps", 1e-5))

    def specialize(self, attrs, operand_shapes, out_shape):
        return dict(eps=attrs["eps"], ndim=len(out_shape))

    def _affine(self, mean, var, weight, bias, eps, ndim):
        scale, shift = bn_scale_shift(mean, var, weight, bias, eps)
        shape = (-1,) + (1,) * (ndim - 2)
        return scale.view(shape), shift.view(shape)

    def forward(self, x, mean, var, weight, bias, eps, ndim=None):
        scale, shift = self._affine(mean, var, weight, bias, eps, x.dim())
        return x * scale + shift

    def interval(self, x: Interval, mean, var, weight, bias, eps, ndim):
        scale, shift = self._affine(mean, var, weight, bias, eps, ndim)
        centre, radius = x.centre_radius()
        mid, rad = centre * scale + shift, radius * scale.abs()
        return Interval(mid - rad, mid + rad)

    def backward(self, A, x, mean, var, weight, bias, eps, ndim):
        scale, shift = self._affine(mean, var, weight, bias, eps, ndim)
        return (A * scale, None, None, None, None), spec_sum(A * shift)


@rule("bn_fold_weight")
class BatchNormFoldWeight(Rule):
    """The weight of a layer followed by batch norm, with the norm folded in: ``W·scale`` per output."""

    perturbable = ()

    def forward(self, weight, mean, var, gamma, beta, eps):
        scale, _ = bn_scale_shift(mean, var, gamma, beta, eps)
        return weight * scale.view(-1, *([1] * (weight.dim() - 1)))


@rule("bn_fold_bias")
class BatchNormFoldBias(Rule):
    """The bias of a layer followed by batch norm, with the norm folded in: ``b·scale + shift``."""

    perturbable = ()

    def forward(self, bias, mean, var, gamma, beta, eps):
        scale, shift = bn_scale_shift(mean, var, gamma, beta, eps)
        return shift if bias is None else bias * scale + shift


def _reduced_dims(x: Tensor) -> list[int]:
    return [0] + list(range(2, x.dim()))


@rule("bn_batch_mean")
class BatchMean(Rule):
    """The per-channel mean of a batch, as batch norm computes it in training mode."""

    perturbable = ()
    reduces_batch = True

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=_reduced_dims(x))


@rule("bn_batch_var")
class BatchVariance(Rule):
    """The per-channel (biased) variance of a batch, as batch norm normalises with it in training mode."""

    perturbable = ()
    reduces_batch = True

    def forward(self, x: Tensor) -> Tensor:
        return x.var(dim=_reduced_dims(x), unbiased=False)


# ---------------------------------------------------------------------------------------------- per-example norms

def _normalise(build, x, dims: tuple[int, ...], eps: float, correction: float = 0.0, root: bool = True):
    """``(x − mean) · (var + eps)^(−1/2)`` over ``dims`` from the pieces (the centring is linear, exact in CROWN;
    ``var`` the mean of the convex square; the product McCormick's); without ``root``, the variance itself."""
    mean = build.add("sum", (x,), dict(dims=dims, keepdim=True, mean=True), "mean")
    centred = build.add("add", (x, mean), dict(alpha=-1), "centred")
    square = build.add("pow", (centred,), dict(exponent=2.0), "square")
    variance = build.add("sum", (square,), dict(dims=dims, keepdim=True, mean=True), "variance")
    if correction:
        count = 1
        for d in dims:
            count *= build.shape(x)[d]
        variance = build.add("mul", (variance, count / (count - correction)), suffix="unbiased")
    variance = build.add("within", (variance,), dict(lower=0.0), "nonnegative")  # a mean of squares
    if not root:
        return variance
    shifted = build.add("add", (variance, float(eps)), dict(alpha=1), "plus_eps")
    shifted = build.add("within", (shifted,), dict(lower=float(eps)), "shifted")
    inverse = build.add("pow", (shifted,), dict(exponent=-0.5), "rsqrt")
    count = 1
    for d in dims:
        count *= build.shape(x)[d]
    return build.add("normalised_product", (centred, inverse), dict(limit=math.sqrt(count)), "normalised")


def _affine(build, y, weight, bias, view: tuple | None = None):
    """``y · weight + bias`` (the parameters reshaped to ``view`` to broadcast, e.g. per channel)."""
    from .constant import Slot
    for parameter, op in ((weight, "mul"), (bias, "add")):
        if parameter is None:
            continue
        if view is not None:
            parameter = build.add("call", (parameter,), dict(fn="reshape", args=(Slot(0),) + view, kwargs={}),
                                  "view", perturbed=False)
        y = build.add(op, (y, parameter), dict(alpha=1) if op == "add" else None, op)
    return y


@rule("layer_norm", spellings=(nn.LayerNorm, F.layer_norm, aten.layer_norm.default))
class LayerNorm(Rule):
    """``(x − E x)/√(Var x + ε)·γ + β`` over the last dimensions of each example (Ba et al. 2016), bounded through
    its pieces when ``x`` is perturbed (``_normalise``); γ and β must not be."""

    def canonicalize(self, call):
        if call.module is not None:
            m = call.module
            return (call.arg(0, "input"), call.param("weight"), call.param("bias")), dict(
                dims=len(m.normalized_shape), eps=m.eps)
        shape = call.arg(1, "normalized_shape")
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return (call.arg(0, "input"), call.arg(2, "weight", None), call.arg(3, "bias", None)), dict(
            dims=len(shape), eps=call.arg(4, "eps", 1e-5))

    def forward(self, x, weight, bias, dims, eps):
        return F.layer_norm(x, x.shape[x.dim() - dims:], weight, bias, eps)

    def expand(self, node, perturbed, build):
        if not perturbed[0]:
            return None
        x, weight, bias = node.operands
        rank = len(build.shape(x))
        y = _normalise(build, x, tuple(range(rank - node.attrs["dims"], rank)), node.attrs["eps"])
        return build.finish("identity", (_affine(build, y, weight, bias),))


@rule("group_norm", spellings=(nn.GroupNorm, F.group_norm, aten.group_norm.default, nn.InstanceNorm1d,
                               nn.InstanceNorm2d, nn.InstanceNorm3d, F.instance_norm, aten.instance_norm.default))
class GroupNorm(Rule):
    """Group norm (Wu & He 2018): channels in ``groups`` groups, each normalised over its channels and positions
    per example, then a per-channel affine map; instance norm is ``groups = channels`` (with running statistics
    in eval mode it is the batch-norm rule's affine map). Bounded through its pieces (``_normalise``)."""

    def canonicalize(self, call):
        x = call.arg(0, "input")
        channels = call.operand_shape(x)[1]
        instance = call.spelling in (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, F.instance_norm,
                                     aten.instance_norm.default)
        if call.module is not None:
            m = call.module
            if instance and m.track_running_stats and not m.training:
                return Several([("batch_norm", (x, call.param("running_mean"), call.param("running_var"),
                                                call.param("weight"), call.param("bias")), dict(eps=m.eps))])
            groups = channels if instance else m.num_groups
            return (x, call.param("weight"), call.param("bias")), dict(groups=groups, eps=m.eps)
        if instance:
            if not call.arg(5, "use_input_stats", True):
                return Several([("batch_norm", (x, call.arg(1, "running_mean"), call.arg(2, "running_var"),
                                                call.arg(3, "weight", None), call.arg(4, "bias", None)),
                                 dict(eps=call.arg(7, "eps", 1e-5)))])
            return (x, call.arg(3, "weight", None), call.arg(4, "bias", None)), dict(groups=channels,
                                                                                     eps=call.arg(7, "eps", 1e-5))
        return (x, call.arg(2, "weight", None), call.arg(3, "bias", None)), dict(groups=call.arg(1, "num_groups"),
                                                                                 eps=call.arg(4, "eps", 1e-5))

    def forward(self, x, weight, bias, groups, eps):
        return F.group_norm(x, groups, weight, bias, eps)

    def expand(self, node, perturbed, build):
        if not perturbed[0]:
            return None
        x, weight, bias = node.operands
        shape, groups = build.shape(x), node.attrs["groups"]
        grouped = build.add("reshape", (x,), dict(shape=(groups, shape[1] // groups) + tuple(shape[2:])), "grouped")
        y = _normalise(build, grouped, tuple(range(2, len(shape) + 1)), node.attrs["eps"])
        y = build.add("reshape", (y,), dict(shape=tuple(shape[1:])), "ungrouped")
        view = (shape[1],) + (1,) * (len(shape) - 2)
        return build.finish("identity", (_affine(build, y, weight, bias, view),))


_VAR = (torch.var, method("var"), aten.var.correction, aten.var.dim)
_STD = (torch.std, method("std"), aten.std.correction, aten.std.dim)


@rule("var", spellings=_VAR + _STD)
class Variance(Rule):
    """``var`` and ``std`` over dimensions other than the batch's (``correction``/``unbiased``, ``keepdim``):
    ``n/(n − correction) · mean((x − mean x)²)``, and its square root, through the pieces."""

    def canonicalize(self, call):
        x = call.arg(0, "input")
        rank = len(call.operand_shape(x))
        dims = call.arg(1, "dim", None)
        if dims is None:
            raise call.fail("the variance of every element mixes the examples: give dim=")
        dims = tuple(sorted(d + rank if d < 0 else d for d in ((dims,) if isinstance(dims, int) else dims)))
        if 0 in dims:
            raise call.fail("the variance over the batch dimension mixes examples")
        correction = call.kwargs.get("correction", None)
        if correction is None:
            unbiased = call.kwargs.get("unbiased", call.args[2] if len(call.args) > 2 and isinstance(call.args[2], bool)
                                       else True)
            correction = 1 if unbiased else 0
        keepdim = bool(call.kwargs.get("keepdim", call.args[3] if len(call.args) > 3 else False))
        return (x,), dict(dims=dims, correction=float(correction), keepdim=keepdim, root=call.spelling in _STD)

    def forward(self, x, dims, correction, keepdim, root):
        value = torch.var(x, dims, correction=correction, keepdim=keepdim)
        return value.sqrt() if root else value

    def expand(self, node, perturbed, build):
        if not perturbed[0]:
            return None
        (x,), a = node.operands, node.attrs
        value = _normalise(build, x, a["dims"], 0.0, a["correction"], root=False)
        if a["root"]:
            value = build.add("sqrt", (value,))
        if not a["keepdim"]:
            shape = tuple(s for i, s in enumerate(build.shape(value)) if i not in a["dims"])
            value = build.add("reshape", (value,), dict(shape=shape[1:]), "squeezed")
        return build.finish("identity", (value,))
