"""Batch normalisation with running statistics (eval mode), and its folding into the layer before."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ir import Interval
from .base import Rule, rule, spec_sum

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
    Usually folded into the convolution or linear layer before it (``passes.fold_batchnorm``).
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
