"""Ops that only move or keep values: reshapes and identities."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ir import Interval
from .base import Rule, method, rule

aten = torch.ops.aten


@rule("reshape", spellings=(torch.flatten, torch.reshape, nn.Flatten, nn.Unflatten, torch.unflatten,
                            method("unflatten"), method("view"), method("reshape"),
                            method("flatten"), aten.view.default, aten.reshape.default,
                            aten.flatten.using_ints, aten._unsafe_view.default, method("view_as"),
                            method("reshape_as"), torch.squeeze, method("squeeze"), aten.squeeze.dim,
                            aten.squeeze.dims, aten.squeeze.default, torch.unsqueeze, method("unsqueeze"),
                            aten.unsqueeze.default, aten.unflatten.int))
class Reshape(Rule):
    """``z = reshape(x)`` keeping the batch dimension; every spelling becomes the per-example target
    shape read off the example input. IBP reshapes both bounds; CROWN reshapes ``A`` back."""

    def canonicalize(self, call):
        in_shape = call.operand_shape(call.arg(0, "input"))
        out = call.out_shape
        if in_shape is None or out is None or not out or out[0] != in_shape[0]:
            error = call.fail(f"a reshape from {in_shape} to {out} does not keep the batch dimension first")
            for k in range(2, len(in_shape or ()) + 1):  # x.view(-1, d): rows of the batch and the next dims
                if len(out) > 1 and out[0] == math.prod(in_shape[:k]) and tuple(out[1:]) == tuple(in_shape[k:]):
                    error.fold = (call.arg(0, "input"), tuple(in_shape[1:k]))  # the pass may still take it apart
            raise error
        return (call.arg(0, "input"),), dict(shape=tuple(out[1:]))

    def specialize(self, attrs, operand_shapes, out_shape):
        return dict(shape=attrs["shape"], in_shape=tuple(operand_shapes[0][1:]))

    def forward(self, x: Tensor, shape, in_shape=None) -> Tensor:
        return x.reshape(x.shape[0], *shape)

    def interval(self, x: Interval, shape, in_shape=None) -> Interval:
        return Interval(self.forward(x.lower, shape), self.forward(x.upper, shape))

    def backward(self, A: Tensor, x: None, shape, in_shape):
        return (A.reshape(A.shape[0], A.shape[1], *in_shape),), 0


_CONVERSIONS = (method("to"), method("float"), method("double"), method("half"), method("bfloat16"), method("type_as"),
                method("type"), aten.to.dtype, aten._to_copy.default, aten.to.dtype_layout)
_DROPOUTS = (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
             aten.dropout.default)


@rule("identity", spellings=(nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                             method("contiguous"), aten.clone.default, method("clone"), torch.clone,
                             aten.alias.default, aten.contiguous.default, method("cpu"), method("cuda"))
         + _DROPOUTS + _CONVERSIONS)
class Identity(Rule):
    """``z = x``: identities, dropout in eval mode, and conversions that keep the dtype (``x.to(device)``,
    ``x.float()`` of a float32 tensor, ``x.type_as(y)``)."""

    def canonicalize(self, call):
        if call.spelling in _DROPOUTS and call.arg(2, "training", True) and call.arg(1, "p", 0.5) > 0:
            raise call.fail("dropout in training mode is random and has no sound bound; use model.eval()")
        if call.spelling in _CONVERSIONS and call.out_dtype != call.operand_dtype(call.arg(0, "input")):
            raise call.fail(f"the conversion changes the dtype of a perturbed tensor (to {call.out_dtype}); bound the "
                            "model in one dtype (model.to(dtype) and an input of that dtype)")
        return (call.arg(0, "input"),), {}

    def forward(self, x: Tensor) -> Tensor:
        return x

    def interval(self, x: Interval) -> Interval:
        return x

    def backward(self, A: Tensor, x: None):
        return (A,), 0


@rule("within")
class Within(Rule):
    """``z = x`` where the expansion that made the node knows ``lower ≤ x ≤ upper`` at every point (``x − max x
    ≤ 0`` and ``Σ exp(x − max x) ≥ 1`` in softmax, ``Var x + ε ≥ ε`` in a norm): IBP's interval, and any
    interval computed of it (CROWN's refinement, LBP's concretisation), is intersected with ``[lower, upper]``;
    the linear rules pass through it unchanged. Only expansions make it: the fact is theirs to prove."""

    refines = True  # the emitter intersects every interval of this node with ``interval`` of it

    def forward(self, x: Tensor, lower=None, upper=None) -> Tensor:
        return x

    def interval(self, x: Interval, lower=None, upper=None) -> Interval:
        low, high = x
        if lower is not None:
            low, high = low.clamp(min=lower), high.clamp(min=lower)
        if upper is not None:
            low, high = low.clamp(max=upper), high.clamp(max=upper)
        return Interval(low, high)

    def backward(self, A: Tensor, x: None, lower=None, upper=None):
        return (A,), 0

    def forward_linear(self, x, lower=None, upper=None):  # type: ignore[override]
        return x
