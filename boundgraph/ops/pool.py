"""Average pooling: a convolution with a constant, non-negative kernel per channel."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ir import Interval
from .base import Rule, rule
from .conv import _pair

aten = torch.ops.aten


@rule("avg_pool2d", spellings=(nn.AvgPool2d, F.avg_pool2d, aten.avg_pool2d.default))
class AvgPool2d(Rule):
    """``z = mean of x over each window``: linear with non-negative weights.

    IBP: ``[pool(l), pool(u)]`` (exact per output). CROWN: ``A`` goes back through the transposed
    pooling, ``conv_transpose2d(A / divisor, ones(k))``, where ``divisor`` counts each window's
    elements (all of them, those inside the image, or ``divisor_override``).
    """

    def canonicalize(self, call):
        if call.module is not None:
            m = call.module
            values = (m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override)
        else:
            values = (call.arg(1, "kernel_size"), call.arg(2, "stride", None), call.arg(3, "padding", 0),
                      call.arg(4, "ceil_mode", False), call.arg(5, "count_include_pad", True),
                      call.arg(6, "divisor_override", None))
        kernel, stride, padding, ceil_mode, count_include_pad, divisor_override = values
        if ceil_mode:
            raise call.fail("avg_pool2d with ceil_mode=True is not supported")
        stride = kernel if stride is None or stride == [] else stride
        return (call.arg(0, "input"),), dict(kernel_size=_pair(kernel), stride=_pair(stride),
                                            padding=_pair(padding), count_include_pad=count_include_pad,
                                            divisor_override=divisor_override)

    def specialize(self, attrs, operand_shapes, out_shape):
        (kh, kw), (sh, sw), (ph, pw) = attrs["kernel_size"], attrs["stride"], attrs["padding"]
        (h, w), (oh, ow) = operand_shapes[0][-2:], out_shape[-2:]
        output_padding = (h - ((oh - 1) * sh - 2 * ph + kh), w - ((ow - 1) * sw - 2 * pw + kw))
        return dict(attrs, in_hw=(h, w), output_padding=output_padding)

    def _pool(self, x, kernel_size, stride, padding, count_include_pad, divisor_override):
        return F.avg_pool2d(x, kernel_size, stride, padding, False, count_include_pad, divisor_override)

    def forward(self, x, kernel_size, stride, padding, count_include_pad, divisor_override,
                in_hw=None, output_padding=None):
        return self._pool(x, kernel_size, stride, padding, count_include_pad, divisor_override)

    def interval(self, x: Interval, kernel_size, stride, padding, count_include_pad, divisor_override,
                 in_hw, output_padding):
        args = (kernel_size, stride, padding, count_include_pad, divisor_override)
        return Interval(self._pool(x.lower, *args), self._pool(x.upper, *args))

    def backward(self, A, x, kernel_size, stride, padding, count_include_pad, divisor_override,
                 in_hw, output_padding):
        ones = A.new_ones(1, 1, *kernel_size)
        if divisor_override:
            divisor = float(divisor_override)
        elif count_include_pad:
            divisor = float(kernel_size[0] * kernel_size[1])
        else:
            divisor = F.conv2d(A.new_ones(1, 1, *in_hw), ones, None, stride, padding)[0, 0]
        batch, specs, channels, oh, ow = A.shape
        flat = (A / divisor).reshape(-1, 1, oh, ow)
        back = F.conv_transpose2d(flat, ones, None, stride, padding, output_padding)
        return (back.reshape(batch, specs, channels, *in_hw),), 0
