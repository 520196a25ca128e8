"""2-D convolution with a constant kernel."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ir import Interval
from .base import Rule, rule, spec_sum

aten = torch.ops.aten


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


@rule("conv2d", spellings=(nn.Conv2d, F.conv2d, aten.conv2d.default))
class Conv2d(Rule):
    """``z = K ⋆ x + b`` for any stride, padding, dilation and groups.

    IBP (Gowal et al. 2018): ``z ∈ K ⋆ c + b ± |K| ⋆ r``. CROWN: the transpose of the convolution
    carries ``A`` back, ``A ← conv_transpose2d(A, K)`` (never unfolded), ``bias += Σ A·b``.
    """

    def canonicalize(self, call):
        if call.module is not None:
            m = call.module
            if m.padding_mode != "zeros":
                raise call.fail(f"padding_mode={m.padding_mode!r} is not supported; only 'zeros'")
            attrs = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
            return (call.arg(0, "input"), call.param("weight"), call.param("bias")), attrs
        attrs = dict(stride=call.arg(3, "stride", 1), padding=call.arg(4, "padding", 0),
                     dilation=call.arg(5, "dilation", 1), groups=call.arg(6, "groups", 1))
        return (call.arg(0, "input"), call.arg(1, "weight"), call.arg(2, "bias", None)), attrs

    def specialize(self, attrs, operand_shapes, out_shape):
        stride, dilation = _pair(attrs["stride"]), _pair(attrs["dilation"])
        kernel = operand_shapes[1][-2:]
        padding = attrs["padding"]
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            total = [d * (k - 1) for d, k in zip(dilation, kernel)]
            if any(t % 2 for t in total):
                raise ValueError("padding='same' with an even receptive field pads unevenly; not supported")
            padding = tuple(t // 2 for t in total)
        padding = _pair(padding)
        in_hw, out_hw = operand_shapes[0][-2:], out_shape[-2:]
        output_padding = tuple(
            i - ((o - 1) * s - 2 * p + d * (k - 1) + 1)
            for i, o, s, p, d, k in zip(in_hw, out_hw, stride, padding, dilation, kernel))
        return dict(stride=stride, padding=padding, dilation=dilation, groups=attrs["groups"],
                    output_padding=output_padding)

    def forward(self, x, weight, bias, stride=1, padding=0, dilation=1, groups=1, output_padding=None):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    def interval(self, x: Interval, weight, bias, stride, padding, dilation, groups, output_padding=None):
        centre, radius = x.centre_radius()
        mid = F.conv2d(centre, weight, bias, stride, padding, dilation, groups)
        rad = F.conv2d(radius, weight.abs(), None, stride, padding, dilation, groups)
        return Interval(mid - rad, mid + rad)

    def backward(self, A, x, weight, bias, stride, padding, dilation, groups, output_padding):
        batch, specs = A.shape[:2]
        flat = A.reshape(batch * specs, *A.shape[2:])
        back = F.conv_transpose2d(flat, weight, None, stride, padding, output_padding, groups, dilation)
        bias_term = 0 if bias is None else torch.matmul(A.sum(dim=(-2, -1)), bias)
        return (back.reshape(batch, specs, *back.shape[1:]), None, None), bias_term
