"""Full CROWN's refining sweeps through convolutions with coefficients as local windows ("patches").

A sweep that bounds the neurons of a convolution's output starts from one-hot rows ``[I; −I]``. Back through that
convolution, the row of neuron ``(c, i, j)`` is the kernel ``±K[c]`` placed at ``(i·s − p, j·s − p)`` of the
convolution's input; back through an elementwise node's lines it keeps its window; back through another
convolution (stride ``s'``, padding ``p'``, kernel ``k'``) it stays a window, ``(h − 1)·s' + k'`` high, at ``origin·s'
− p'``. Dense maps ``(rows, C, H, W)`` hold mostly zeros there: the windows hold only the receptive field
(auto_LiRPA's "patches" mode, Xu et al. 2020, follows the same idea). For DM-small's second convolution
a row is 16×4×4 numbers instead of 16×13×13 and, at the input, 10×10 instead of 28×28.

Each row's window origin is ``grid·stride − padding`` of its neuron's position ``grid`` in the target's output map;
``stride`` and ``padding`` grow with each convolution passed. Values outside a map (a convolution's zero padding)
are read as 0 (``F.unfold`` pads with zeros), so a coefficient there meets a slope, bias or input bound 0 and adds
nothing, as the dense transpose drops it. ``boundgraph.emit`` uses this path only where it is exactly the dense
sweep (a chain of ``conv2d`` with groups 1 and dilation 1 and elementwise nodes down to a box-perturbed input) and
where every window is at most half its map; ``tests/test_patches.py`` checks it equal to the dense sweep.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .ops.conv import transpose_conv2d


class Patches(NamedTuple):
    """Rows of a sweep as windows: ``coef`` ``(batch, rows, C, h, w)`` over the current map, whose top-left corner
    is ``grid·stride − padding`` (``grid``: ``(batch, rows)`` flat positions in a ``(grid_h, grid_w)`` map)."""

    coef: Tensor
    grid: Tensor
    grid_w: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    cells: int  # positions in the target's output map (a row's neuron ``n`` sits at ``n mod cells``)


def patches_start(rows: Tensor, weight: Tensor, bias: Optional[Tensor], out_shape: tuple[int, int, int], stride,
                  padding) -> tuple[Patches, Tensor]:
    """The rows ``[I; −I]`` of the neurons ``rows`` (``(batch, k)``, flat in ``out_shape``) of ``conv2d(x, weight,
    bias)``, carried back through it: windows ``±weight[c]`` on the convolution's input, and the bias ``±bias[c]``
    (``(batch, 2k)``)."""
    channels, height, width = out_shape
    channel, grid = rows // (height * width), rows % (height * width)
    kernel = weight[channel]  # (batch, k, C_in, kh, kw)
    coef = torch.cat([kernel, -kernel], 1)
    grid = torch.cat([grid, grid], 1)
    if bias is None:
        start_bias = torch.zeros(coef.shape[:2], dtype=coef.dtype, device=coef.device)
    else:
        start_bias = torch.cat([bias[channel], -bias[channel]], 1)
    return Patches(coef, grid, width, tuple(stride), tuple(padding), height * width), start_bias


def windows(value: Tensor, patches: Patches) -> Tensor:
    """``value`` (``(batch, C, H, W)``, or broadcastable to it) read at every row's window: ``(batch, rows, C, h,
    w)``, zero outside the map."""
    batch, rows, channels, h, w = patches.coef.shape
    unfolded = F.unfold(value, (h, w), padding=patches.padding, stride=patches.stride)  # (batch, C·h·w, L)
    columns = torch.gather(unfolded, 2, _positions(patches, value).unsqueeze(1).expand(batch, unfolded.shape[1], rows))
    return columns.transpose(1, 2).reshape(batch, rows, channels, h, w)


def _positions(patches: Patches, value: Tensor) -> Tensor:
    """Each row's window as an index into ``F.unfold``'s windows of ``value`` (with the patches' stride/padding)."""
    h, w = patches.coef.shape[-2:]
    across = (value.shape[-1] + 2 * patches.padding[1] - w) // patches.stride[1] + 1
    return (patches.grid // patches.grid_w) * across + patches.grid % patches.grid_w


def patches_lines(patches: Patches, lower_slope: Tensor, lower_bias: Optional[Tensor], upper_slope: Tensor,
                  upper_bias: Tensor, like: Tensor, lower_rows: Optional[Tensor] = None) -> tuple[Patches, Tensor]:
    """Back through an elementwise node's lines: ``A' = A⁺·s_l + A⁻·s_u``, bias ``Σ A⁺·b_l + A⁻·b_u`` per row,
    each line (broadcast to ``like``, the node's input bounds) read at the row's window
    (``boundgraph.ops.base.through_lines`` on windows); ``lower_rows``: a lower slope of each row's own, already
    on its window (``patches_alpha``)."""
    lower_slope, upper_slope, upper_bias = (t.expand_as(like) for t in (lower_slope, upper_slope, upper_bias))
    lower_bias = None if lower_bias is None else lower_bias.expand_as(like)
    coef = patches.coef
    positive = coef.clamp(min=0)
    negative = coef - positive
    lower_rows = windows(lower_slope, patches) if lower_rows is None else lower_rows
    new = positive * lower_rows + negative * windows(upper_slope, patches)
    bias = (negative * windows(upper_bias, patches)).flatten(2).sum(2)
    if lower_bias is not None:
        bias = bias + (positive * windows(lower_bias, patches)).flatten(2).sum(2)
    return patches._replace(coef=new), bias


def patches_alpha(lower_slope: Tensor, unstable: Tensor, alphas: dict, key, patches: Patches, index: Tensor,
                  rows: int) -> Tensor:
    """α-CROWN's lower slopes of ReLU on windows, one set per row of the sweep (as auto_LiRPA keeps them per
    start neuron): ``α`` where the neuron is unstable, the line's own slope elsewhere, ``(batch, r, C, h, w)``.
    ``alphas[key]`` holds all ``rows`` rows (every neuron's ``[I; −I]``, ``emit.row_ids``), created from the lines
    on first use; ``index`` (``(batch, r)``) picks this chunk's."""
    slope = windows(lower_slope.expand_as(unstable), patches)
    if key not in alphas:
        batch, _, channels, h, w = patches.coef.shape
        neurons = torch.arange(rows, device=index.device) % (rows // 2)
        every = patches._replace(coef=patches.coef.new_zeros(()).expand(batch, rows, channels, h, w),
                                 grid=(neurons % patches.cells).expand(batch, rows))
        alphas[key] = windows(lower_slope.detach().expand_as(unstable), every).clone().requires_grad_(True)
    alpha = alphas[key][torch.arange(index.shape[0], device=index.device).unsqueeze(1), index]
    return torch.where(windows(unstable.to(slope.dtype), patches) > 0.5, alpha, slope)


def patches_conv(patches: Patches, weight: Tensor, bias: Optional[Tensor], out_hw: tuple[int, int], stride,
                 padding) -> tuple[Patches, Tensor]:
    """Back through ``conv2d(·, weight, bias)`` (output ``out_hw`` high and wide): window positions outside its
    output are dropped, the bias adds ``Σ A·bias[c]``, and each window goes through the convolution's transpose."""
    coef = patches.coef
    batch, rows, channels, h, w = coef.shape
    if any(patches.padding):
        coef = coef * _inside(patches, out_hw).unsqueeze(2)
    term = (coef.sum((-2, -1)) * bias).sum(-1) if bias is not None else coef.new_zeros(batch, rows)
    back = transpose_conv2d(coef.reshape(batch * rows, channels, h, w), weight, tuple(stride), (0, 0), (1, 1), 1,
                            (0, 0))  # the fastest way for this shape (``ops/conv.py``)
    grown = Patches(back.reshape(batch, rows, *back.shape[1:]), patches.grid, patches.grid_w,
                    (patches.stride[0] * stride[0], patches.stride[1] * stride[1]),
                    (patches.padding[0] * stride[0] + padding[0], patches.padding[1] * stride[1] + padding[1]),
                    patches.cells)
    return grown, term


def _inside(patches: Patches, hw: tuple[int, int]) -> Tensor:
    """``(batch, rows, h, w)``: 1 where a window position lies inside a map ``hw`` high and wide, else 0."""
    h, w = patches.coef.shape[-2:]
    device, dtype = patches.coef.device, patches.coef.dtype
    top = (patches.grid // patches.grid_w) * patches.stride[0] - patches.padding[0]
    left = (patches.grid % patches.grid_w) * patches.stride[1] - patches.padding[1]
    ys = top.unsqueeze(-1) + torch.arange(h, device=device)
    xs = left.unsqueeze(-1) + torch.arange(w, device=device)
    rows_ok = ((ys >= 0) & (ys < hw[0])).to(dtype)
    cols_ok = ((xs >= 0) & (xs < hw[1])).to(dtype)
    return rows_ok.unsqueeze(-1) * cols_ok.unsqueeze(-2)


def patches_concretize(patches: Patches, box) -> Tensor:
    """The lower bound of each row over the input box ``[l, u]``: ``Σ A⁺·l + A⁻·u`` over its window
    (``(batch, rows)``)."""
    coef = patches.coef
    positive = coef.clamp(min=0)
    low, high = windows(box.lower, patches), windows(box.upper, patches)
    return (positive * low + (coef - positive) * high).flatten(2).sum(2)


def window_sizes(chain: list[tuple[str, tuple]], start_kernel: tuple[int, int]) -> list[tuple[int, int]]:
    """The window (height, width) at each step of a patch sweep: the start kernel, unchanged by elementwise
    steps, ``(h − 1)·s + k`` after a convolution (``chain``: ``("lines", ())`` or ``("conv", (kernel, stride))``)."""
    h, w = start_kernel
    sizes = [(h, w)]
    for kind, attrs in chain:
        if kind == "conv":
            (kh, kw), (sh, sw) = attrs
            h, w = (h - 1) * sh + kh, (w - 1) * sw + kw
        sizes.append((h, w))
    return sizes
