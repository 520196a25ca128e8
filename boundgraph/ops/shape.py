"""Ops that only move or keep values: reshapes and identities."""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ir import Interval
from .base import Rule, method, rule

aten = torch.ops.aten


@rule("reshape", spellings=(torch.flatten, torch.reshape, nn.Flatten, nn.Unflatten, torch.unflatten,
                            method("unflatten"), method("view"), method("reshape"),
                            method("flatten"), aten.view.default, aten.reshape.default,
                            aten.flatten.using_ints, aten._unsafe_view.default))
class Reshape(Rule):
    """``z = reshape(x)`` keeping the batch dimension; every spelling becomes the per-example target
    shape read off the example input. IBP reshapes both bounds; CROWN reshapes ``A`` back."""

    def canonicalize(self, call):
        in_shape = call.operand_shape(call.arg(0, "input"))
        out = call.out_shape
        if in_shape is None or out is None or not out or out[0] != in_shape[0]:
            raise call.fail(f"a reshape from {in_shape} to {out} does not keep the batch dimension first")
        return (call.arg(0, "input"),), dict(shape=tuple(out[1:]))

    def specialize(self, attrs, operand_shapes, out_shape):
        return dict(shape=attrs["shape"], in_shape=tuple(operand_shapes[0][1:]))

    def forward(self, x: Tensor, shape, in_shape=None) -> Tensor:
        return x.reshape(x.shape[0], *shape)

    def interval(self, x: Interval, shape, in_shape=None) -> Interval:
        return Interval(self.forward(x.lower, shape), self.forward(x.upper, shape))

    def backward(self, A: Tensor, x: None, shape, in_shape):
        return (A.reshape(A.shape[0], A.shape[1], *in_shape),), 0


@rule("identity", spellings=(nn.Identity, nn.Dropout, F.dropout, aten.dropout.default, method("contiguous"),
                             aten.clone.default, method("clone"), torch.clone, aten.alias.default,
                             aten.contiguous.default))
class Identity(Rule):
    """``z = x``: identities and dropout in eval mode."""

    def canonicalize(self, call):
        if call.spelling in (F.dropout, aten.dropout.default) and call.arg(2, "training", True) \
                and call.arg(1, "p", 0.5) > 0:
            raise call.fail("dropout in training mode is random and has no sound bound; use model.eval()")
        return (call.arg(0, "input"),), {}

    def forward(self, x: Tensor) -> Tensor:
        return x

    def interval(self, x: Interval) -> Interval:
        return x

    def backward(self, A: Tensor, x: None):
        return (A,), 0
