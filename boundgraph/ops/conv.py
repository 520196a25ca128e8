"""2-D convolution with a constant kernel."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ir import Interval
from .base import Rule, rule

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
        back = transpose_conv2d(flat, weight, stride, padding, dilation, groups, output_padding)
        bias_term = 0 if bias is None else torch.matmul(A.sum(dim=(-2, -1)), bias)
        return (back.reshape(batch, specs, *back.shape[1:]), None, None), bias_term


def transpose_conv2d(A: Tensor, weight: Tensor, stride, padding, dilation, groups, output_padding) -> Tensor:
    """The transpose of ``conv2d(·, weight)`` applied to ``A``: ``conv_transpose2d``, computed the
    fastest of three equal ways. On CPU, ``conv_transpose2d`` leaves the oneDNN path; a stride-1
    transpose is a convolution with the flipped kernel (about 1.5× faster), and a transpose onto few
    channels (the input layer) is a batched matrix product followed by ``fold`` (col2im, about 2×)."""
    out_channels, in_per_group, kh, kw = weight.shape
    reach = (dilation[0] * (kh - 1), dilation[1] * (kw - 1))
    if stride == (1, 1) and padding[0] <= reach[0] and padding[1] <= reach[1]:
        flipped = weight.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
        flipped = flipped.reshape(groups * in_per_group, out_channels // groups, kh, kw).flip(-2, -1)
        return F.conv2d(A, flipped, None, 1, (reach[0] - padding[0], reach[1] - padding[1]), dilation, groups)
    if groups == 1 and in_per_group <= 4 and A.device.type == "cpu":
        height = (A.shape[-2] - 1) * stride[0] - 2 * padding[0] + reach[0] + 1 + output_padding[0]
        width = (A.shape[-1] - 1) * stride[1] - 2 * padding[1] + reach[1] + 1 + output_padding[1]
        columns = torch.matmul(weight.reshape(out_channels, -1).t(), A.flatten(2))
        return F.fold(columns, (height, width), (kh, kw), dilation, padding, stride)
    return F.conv_transpose2d(A, weight, None, stride, padding, output_padding, groups, dilation)
