"""Convolutions with a constant kernel, 1-, 2- and 3-dimensional, and their transposes.

``z = K ⋆ x + b`` for any stride, padding, dilation and groups. IBP (Gowal et al. 2018): ``z ∈ K ⋆ c + b ±
|K| ⋆ r`` (``affine_interval``). CROWN: the transpose of the convolution carries ``A`` back (never unfolded),
``bias += Σ A·b``.
A transposed convolution is the transpose of a convolution, so its CROWN transpose is that convolution.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ir import Interval
from .base import Rule, affine_interval, rule

aten = torch.ops.aten
_CONV = (None, F.conv1d, F.conv2d, F.conv3d)
_CONV_TRANSPOSE = (None, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


def _ntuple(value, n: int) -> tuple:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(value)
    return value * n if len(value) == 1 else value


class Conv(Rule):
    """``z = K ⋆ x + b`` in ``n`` spatial dimensions (module doc), ``padding="same"``/``"valid"`` included."""

    n = 2

    def canonicalize(self, call):
        if call.module is not None:
            m = call.module
            if m.padding_mode != "zeros":
                raise call.fail(f"padding_mode={m.padding_mode!r} is not supported; only 'zeros' (pad with F.pad "
                                "before the convolution)")
            attrs = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
            return (call.arg(0, "input"), call.param("weight"), call.param("bias")), attrs
        attrs = dict(stride=call.arg(3, "stride", 1), padding=call.arg(4, "padding", 0),
                     dilation=call.arg(5, "dilation", 1), groups=call.arg(6, "groups", 1))
        return (call.arg(0, "input"), call.arg(1, "weight"), call.arg(2, "bias", None)), attrs

    def specialize(self, attrs, operand_shapes, out_shape):
        n = self.n
        stride, dilation = _ntuple(attrs["stride"], n), _ntuple(attrs["dilation"], n)
        kernel = operand_shapes[1][-n:]
        padding = attrs["padding"]
        if padding == "valid":
            padding = (0,) * n
        elif padding == "same":
            total = [d * (k - 1) for d, k in zip(dilation, kernel)]
            if any(t % 2 for t in total):
                raise ValueError("padding='same' with an even receptive field pads unevenly; not supported")
            padding = tuple(t // 2 for t in total)
        padding = _ntuple(padding, n)
        in_size, out_size = operand_shapes[0][-n:], out_shape[-n:]
        output_padding = tuple(
            i - ((o - 1) * s - 2 * p + d * (k - 1) + 1)
            for i, o, s, p, d, k in zip(in_size, out_size, stride, padding, dilation, kernel))
        return dict(stride=stride, padding=padding, dilation=dilation, groups=attrs["groups"],
                    output_padding=output_padding)

    def forward(self, x, weight, bias, stride=1, padding=0, dilation=1, groups=1, output_padding=None):
        return _CONV[self.n](x, weight, bias, stride, padding, dilation, groups)

    def interval(self, x: Interval, weight, bias, stride, padding, dilation, groups, output_padding=None):
        return affine_interval(x, lambda t, w, b: _CONV[self.n](t, w, b, stride, padding, dilation, groups), weight,
                               bias)

    def backward(self, A, x, weight, bias, stride, padding, dilation, groups, output_padding):
        batch, specs = A.shape[:2]
        flat = A.reshape(batch * specs, *A.shape[2:])
        if self.n == 2:
            back = transpose_conv2d(flat, weight, stride, padding, dilation, groups, output_padding)
        else:
            back = _CONV_TRANSPOSE[self.n](flat, weight, None, stride, padding, output_padding, groups, dilation)
        spatial = tuple(range(-self.n, 0))
        bias_term = 0 if bias is None else torch.matmul(A.sum(dim=spatial), bias)
        return (back.reshape(batch, specs, *back.shape[1:]), None, None), bias_term


@rule("conv1d", spellings=(nn.Conv1d, F.conv1d, aten.conv1d.default))
class Conv1d(Conv):
    n = 1


@rule("conv2d", spellings=(nn.Conv2d, F.conv2d, aten.conv2d.default))
class Conv2d(Conv):
    n = 2


@rule("conv3d", spellings=(nn.Conv3d, F.conv3d, aten.conv3d.default))
class Conv3d(Conv):
    n = 3


class ConvTranspose(Rule):
    """``z = Kᵀ ⋆ x + b``, the transposed convolution in ``n`` spatial dimensions with any stride, padding,
    output padding (read off the traced shapes, which also covers ``output_size=``), groups and dilation.
    IBP: ``Kᵀ ⋆ c + b ± |K|ᵀ ⋆ r``. CROWN: its transpose is the convolution with the same kernel,
    ``A ← conv(A, K)``, and ``bias += Σ A·b``."""

    n = 2

    def canonicalize(self, call):
        if call.module is not None:
            m = call.module
            if m.padding_mode != "zeros":
                raise call.fail(f"padding_mode={m.padding_mode!r} is not supported; only 'zeros'")
            attrs = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
            operands = (call.arg(0, "input"), call.param("weight"), call.param("bias"))
        else:
            attrs = dict(stride=call.arg(3, "stride", 1), padding=call.arg(4, "padding", 0),
                         groups=call.arg(6, "groups", 1), dilation=call.arg(7, "dilation", 1))
            operands = (call.arg(0, "input"), call.arg(1, "weight"), call.arg(2, "bias", None))
        n = self.n
        stride, padding, dilation = (_ntuple(attrs[k], n) for k in ("stride", "padding", "dilation"))
        kernel = call.operand_shape(operands[1])[-n:]
        in_size, out_size = call.operand_shape(operands[0])[-n:], call.out_shape[-n:]
        output_padding = tuple(o - ((i - 1) * s - 2 * p + d * (k - 1) + 1)  # also what output_size= asked for
                               for i, o, s, p, d, k in zip(in_size, out_size, stride, padding, dilation, kernel))
        return operands, dict(stride=stride, padding=padding, dilation=dilation, groups=attrs["groups"],
                              output_padding=output_padding, in_size=tuple(in_size))

    def _apply(self, x, weight, bias, stride, padding, dilation, groups, output_padding):
        return _CONV_TRANSPOSE[self.n](x, weight, bias, stride, padding, output_padding, groups, dilation)

    def forward(self, x, weight, bias, stride=1, padding=0, dilation=1, groups=1, output_padding=0, in_size=None):
        return self._apply(x, weight, bias, stride, padding, dilation, groups, output_padding)

    def interval(self, x: Interval, weight, bias, stride, padding, dilation, groups, output_padding, in_size=None):
        return affine_interval(
            x, lambda t, w, b: self._apply(t, w, b, stride, padding, dilation, groups, output_padding), weight, bias)

    def backward(self, A, x, weight, bias, stride, padding, dilation, groups, output_padding, in_size):
        batch, specs = A.shape[:2]
        flat = A.reshape(batch * specs, *A.shape[2:])
        back = _CONV[self.n](flat, weight, None, stride, padding, dilation, groups)
        back = back[(...,) + tuple(slice(0, s) for s in in_size)]  # output padding past a stride: extra rows
        spatial = tuple(range(-self.n, 0))
        bias_term = 0 if bias is None else torch.matmul(A.sum(dim=spatial), bias)
        return (back.reshape(batch, specs, *back.shape[1:]), None, None), bias_term


@rule("conv_transpose1d", spellings=(nn.ConvTranspose1d, F.conv_transpose1d, aten.conv_transpose1d.default))
class ConvTranspose1d(ConvTranspose):
    n = 1


@rule("conv_transpose2d", spellings=(nn.ConvTranspose2d, F.conv_transpose2d, aten.conv_transpose2d.input))
class ConvTranspose2d(ConvTranspose):
    n = 2


@rule("conv_transpose3d", spellings=(nn.ConvTranspose3d, F.conv_transpose3d, aten.conv_transpose3d.input))
class ConvTranspose3d(ConvTranspose):
    n = 3


def transpose_conv2d(A: Tensor, weight: Tensor, stride, padding, dilation, groups, output_padding) -> Tensor:
    """The transpose of ``conv2d(·, weight)`` applied to ``A``: ``conv_transpose2d``, computed by the fastest of up
    to four equal ways for this shape, measured once per shape (``_fastest``): ``F.conv_transpose2d``; for stride
    1, the convolution with the flipped kernel; for few input channels, a matrix product and ``fold`` (col2im);
    for strides above 1, one of stride 1 over the output's phases (``_by_phases``).
    Which wins depends on the shape: on this project's CPU ``conv_transpose2d`` was 2.3× faster than the flipped
    kernel for one row of DM-small's second layer and even with it at nine; ``fold`` was 1.5× faster onto the
    input layer's one channel."""
    ways = _transpose_ways(A, weight, stride, padding, dilation, groups, output_padding)
    if len(ways) == 1 or torch.compiler.is_compiling():
        return ways["conv_transpose2d"]()
    grad = torch.is_grad_enabled() and (A.requires_grad or weight.requires_grad)
    key = (tuple(A.shape), tuple(weight.shape), stride, padding, dilation, groups, output_padding, A.dtype,
           A.device, grad)
    if key not in _FASTEST:
        _FASTEST[key] = _fastest(A, weight, grad, stride, padding, dilation, groups, output_padding)
    return ways[_FASTEST[key]]()


_FASTEST: dict[tuple, str] = {}  # shape and options → the fastest way, measured on first use


def _transpose_ways(A: Tensor, weight: Tensor, stride, padding, dilation, groups, output_padding) -> dict:
    out_channels, in_per_group, kh, kw = weight.shape
    reach = (dilation[0] * (kh - 1), dilation[1] * (kw - 1))
    ways = {"conv_transpose2d": lambda: F.conv_transpose2d(A, weight, None, stride, padding, output_padding, groups,
                                                            dilation)}
    if stride == (1, 1) and padding[0] <= reach[0] and padding[1] <= reach[1]:
        def flipped():
            kernel = weight.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
            kernel = kernel.reshape(groups * in_per_group, out_channels // groups, kh, kw).flip(-2, -1)
            return F.conv2d(A, kernel, None, 1, (reach[0] - padding[0], reach[1] - padding[1]), dilation, groups)
        ways["flipped"] = flipped
    if groups == 1 and in_per_group <= 4:
        def fold():
            height = (A.shape[-2] - 1) * stride[0] - 2 * padding[0] + reach[0] + 1 + output_padding[0]
            width = (A.shape[-1] - 1) * stride[1] - 2 * padding[1] + reach[1] + 1 + output_padding[1]
            columns = torch.matmul(weight.reshape(out_channels, -1).t(), A.flatten(2))
            return F.fold(columns, (height, width), (kh, kw), dilation, padding, stride)
        ways["fold"] = fold
    if stride != (1, 1) and dilation == (1, 1):
        ways["phases"] = lambda: _by_phases(A, weight, stride, padding, groups, output_padding)
    return ways


def _by_phases(A: Tensor, weight: Tensor, stride, padding, groups, output_padding) -> Tensor:
    """``conv_transpose2d`` of stride ``s`` as one of stride 1 and its ``s_h·s_w`` output phases interleaved (the
    sub-pixel decomposition): output row ``s·i + a`` takes only the kernel taps ``a, a + s, …``, so with the kernel
    zero-padded to a multiple of ``s`` and regrouped as ``K[c, (o, a, b), p, q] = W[c, o, s_h p + a, s_w q + b]``,
    ``y[o, s_h i + a, s_w j + b] = conv_transpose2d(A, K)[(o, a, b), i, j]``; then the padding is cropped (and
    ``output_padding`` filled with zeros). On this project's CPU, onto DM-small's input layer ((1152, 16, 13, 13),
    16 → 1 channel, 4×4, stride 2; one thread): 19.6 ms forward and backward against 39 ms for ``conv_transpose2d``."""
    (sh, sw), (kh, kw) = stride, weight.shape[-2:]
    taps_h, taps_w = -(-kh // sh), -(-kw // sw)
    kernel = F.pad(weight, (0, taps_w * sw - kw, 0, taps_h * sh - kh))
    channels, per_group = kernel.shape[:2]
    kernel = kernel.view(channels, per_group, taps_h, sh, taps_w, sw).permute(0, 1, 3, 5, 2, 4)
    phases = F.conv_transpose2d(A, kernel.reshape(channels, per_group * sh * sw, taps_h, taps_w), None, 1, 0, 0, groups)
    batch, _, height, width = phases.shape
    full = phases.view(batch, -1, sh, sw, height, width).permute(0, 1, 4, 2, 5, 3).reshape(
        batch, -1, height * sh, width * sw)
    out_h = (A.shape[-2] - 1) * sh - 2 * padding[0] + kh + output_padding[0]
    out_w = (A.shape[-1] - 1) * sw - 2 * padding[1] + kw + output_padding[1]
    return F.pad(full, (-padding[1], padding[1] + out_w - width * sw, -padding[0], padding[0] + out_h - height * sh))


ROUNDS = 5  # timed runs per way in ``_fastest``


def _fastest(A: Tensor, weight: Tensor, grad: bool, *options) -> str:
    """The way that computes ``transpose_conv2d`` fastest for these shapes (forward, and backward if ``grad``), on
    stand-ins of ``A`` and ``weight``: after a warm-up each (a way slower than 3× the best warm-up is dropped), the
    median of ``ROUNDS`` interleaved timed runs (one run each chose differently from run to run on a shared CPU,
    where the ways were within 20%)."""
    import time

    stand_in = A.detach().clone().requires_grad_(grad and A.requires_grad)
    kernel = weight.detach().clone().requires_grad_(grad and weight.requires_grad)
    leaves = [t for t in (stand_in, kernel) if t.requires_grad]
    ways = _transpose_ways(stand_in, kernel, *options)
    sync = torch.cuda.synchronize if A.device.type == "cuda" else (lambda: None)

    def run(way) -> float:
        sync()
        start = time.perf_counter()
        with torch.enable_grad() if leaves else torch.no_grad():
            out = way()
            if leaves:
                torch.autograd.grad(out, leaves, torch.ones_like(out))
        sync()
        return time.perf_counter() - start

    warm = {name: run(way) for name, way in ways.items()}  # oneDNN builds its primitives here
    kept = [name for name, seconds in warm.items() if seconds <= 3 * min(warm.values())]
    if len(kept) == 1:
        return kept[0]
    times: dict[str, list[float]] = {name: [] for name in kept}
    for _ in range(ROUNDS):
        for name in kept:
            times[name].append(run(ways[name]))
    return min(kept, key=lambda name: sorted(times[name])[ROUNDS // 2])

