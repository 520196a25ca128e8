"""Example calls of every registered rule, each spelling that users write: the table the registry-driven tests
walk (``tests/ops/test_registry.py``: every rule has cases, every case compiles to its rule, is exact where
the op is linear, and is sound under every method inside a nonlinear model). A rule without a case fails
``test_every_registered_rule_has_example_calls``: adding an op means adding its rule and its rows here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class OpCase:
    rule: str  # the canonical op the call must become
    name: str
    call: Callable  # (x) -> tensor, x of shape (batch, *shape)
    shape: tuple
    linear: bool = True  # a linear map: CROWN is exact on it alone
    monotone: bool = True  # non-negative weights: IBP is exact on it alone too
    becomes: str = ""  # the op in the compiled graph, where the rule canonicalises into another ("split": index)
    domain: bool = False  # its pieces have a domain (1/Σ exp, rsqrt of a variance) that LBP's bounds may leave

    def __repr__(self) -> str:
        return f"{self.rule}:{self.name}"


def _m(module: nn.Module) -> Callable:
    return module


def _split_sizes(t):
    a, b, c = t.split([1, 3, 2], dim=-1)
    return torch.cat([c, 2 * a, b], -1)


class _Attend(nn.Module):
    """``nn.MultiheadAttention`` as a call: its output, or its weights under an attention and a padding mask."""

    def __init__(self, weights: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.attention, self.weights = nn.MultiheadAttention(6, 2, batch_first=True), weights

    def forward(self, t):
        if not self.weights:
            return self.attention(t, t, t, need_weights=False)[0]
        keys = t[:, :4]
        mask = torch.tensor([[False, True, False, False]] * 5)
        padding = torch.zeros(t.shape[0], 4, dtype=torch.bool) | (torch.arange(4) == 2)
        return self.attention(t, keys, keys, attn_mask=mask, key_padding_mask=padding)[1]


class _Recur(nn.Module):
    """A recurrent cell stepped over a sequence's 4 rows (state from the previous step), or a recurrent layer's
    output (or its final state)."""

    def __init__(self, module: nn.Module, final: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.module, self.final = module, final

    def forward(self, t):
        if isinstance(self.module, (nn.LSTM, nn.GRU, nn.RNN)):
            out, state = self.module(t)
            return state[-1] if self.final else out
        state = None
        for step in range(t.shape[1]):
            state = self.module(t[:, step], state)
        return state[0] if isinstance(self.module, nn.LSTMCell) else state


IMAGE = (3, 7, 6)
SEQ = (4, 9)
VOLUME = (2, 5, 4, 6)

CASES = [
    # ---- structure.py
    OpCase("permute", "permute", lambda t: t.permute(0, 2, 3, 1), IMAGE),
    OpCase("permute", "torch.permute", lambda t: torch.permute(t, (0, 3, 1, 2)), IMAGE),
    OpCase("permute", "transpose", lambda t: t.transpose(1, 2), IMAGE),
    OpCase("permute", "transpose negative", lambda t: torch.transpose(t, -1, -2), IMAGE),
    OpCase("permute", "swapaxes", lambda t: t.swapaxes(1, 3), IMAGE),
    OpCase("permute", "movedim", lambda t: t.movedim(1, -1), IMAGE),
    OpCase("index", "slices", lambda t: t[:, 1:3, ::2], IMAGE),
    OpCase("index", "negative", lambda t: t[:, -2:, :-1, -3], IMAGE),
    OpCase("index", "None and ellipsis", lambda t: t[:, None, ..., 1:], IMAGE),
    OpCase("index", "select", lambda t: t.select(2, -1), IMAGE),
    OpCase("index", "narrow", lambda t: torch.narrow(t, 3, 1, 3), IMAGE),
    OpCase("index", "index_select", lambda t: t.index_select(1, torch.tensor([2, 0, 2])), IMAGE),
    OpCase("index", "integer tensor", lambda t: t[:, torch.tensor([[1, 0], [2, 2]])], IMAGE),
    OpCase("index", "boolean mask", lambda t: t[:, :, torch.tensor([True, False, True, True, False, True, False])],
           IMAGE),
    OpCase("cat", "cat", lambda t: torch.cat([t, 2 * t[:, :1]], dim=1), IMAGE),
    OpCase("cat", "cat negative", lambda t: torch.cat((t, t.flip(-1)), -1), IMAGE),
    OpCase("cat", "cat constant", lambda t: torch.cat([t, torch.ones_like(t[:, :1])], 1), IMAGE),
    OpCase("cat", "concat", lambda t: torch.concat([t, t], dim=2), IMAGE),
    OpCase("cat", "stack", lambda t: torch.stack([t, -t], dim=1), IMAGE),
    OpCase("cat", "stack last", lambda t: torch.stack([t, t * 3], dim=-1), SEQ),
    OpCase("cat", "hstack", lambda t: torch.hstack([t[:, 0], t[:, 1]]), SEQ),
    OpCase("flip", "flip", lambda t: t.flip(1, 3), IMAGE),
    OpCase("flip", "roll", lambda t: torch.roll(t, shifts=(2, -1), dims=(2, 3)), IMAGE),
    OpCase("expand", "expand", lambda t: t[:, :, None].expand(-1, -1, 3, -1), SEQ),
    OpCase("expand", "expand_as", lambda t: t[:, :1].expand_as(t), IMAGE),
    OpCase("expand", "repeat", lambda t: t.repeat(1, 2, 1, 3), IMAGE),
    OpCase("expand", "tile", lambda t: torch.tile(t, (1, 2)), SEQ),
    OpCase("pad", "constant", lambda t: F.pad(t, (1, 2, 0, 1)), IMAGE),
    OpCase("pad", "constant value", lambda t: F.pad(t, (1, 1), value=-1.5), SEQ),
    OpCase("pad", "negative crop", lambda t: F.pad(t, (-1, 2, 1, -2)), IMAGE),
    OpCase("pad", "reflect", lambda t: F.pad(t, (2, 1, 1, 2), mode="reflect"), IMAGE),
    OpCase("pad", "replicate", lambda t: F.pad(t, (2, 0, 3, 1), mode="replicate"), IMAGE),
    OpCase("pad", "circular", lambda t: F.pad(t, (1, 2, 2, 1), mode="circular"), IMAGE),
    OpCase("pad", "ReflectionPad2d", _m(nn.ReflectionPad2d((1, 2, 2, 1))), IMAGE),
    OpCase("pad", "ZeroPad2d", _m(nn.ZeroPad2d(1)), IMAGE),
    OpCase("pad", "ConstantPad1d", _m(nn.ConstantPad1d((2, 1), 0.5)), SEQ),
    OpCase("pad", "ReplicationPad3d", _m(nn.ReplicationPad3d(1)), VOLUME),
    OpCase("pixel_shuffle", "PixelShuffle", _m(nn.PixelShuffle(2)), (8, 3, 2)),
    OpCase("pixel_shuffle", "pixel_unshuffle", lambda t: F.pixel_unshuffle(t, 2), (2, 4, 6)),
    OpCase("pixel_shuffle", "channel_shuffle", _m(nn.ChannelShuffle(2)), (4, 3, 3)),
    OpCase("interpolate", "nearest x2", _m(nn.Upsample(scale_factor=2)), IMAGE),
    OpCase("interpolate", "nearest size", lambda t: F.interpolate(t, size=(9, 10)), IMAGE),
    OpCase("interpolate", "bilinear", lambda t: F.interpolate(t, scale_factor=1.5, mode="bilinear"), IMAGE),
    OpCase("interpolate", "bilinear corners", _m(nn.UpsamplingBilinear2d(scale_factor=2)), IMAGE),
    OpCase("interpolate", "bilinear size corners", lambda t: F.interpolate(t, size=(5, 11), mode="bilinear",
                                                                           align_corners=True), IMAGE),
    OpCase("interpolate", "linear 1d", lambda t: F.interpolate(t, scale_factor=2, mode="linear"), SEQ),
    OpCase("interpolate", "area", lambda t: F.interpolate(t, size=(3, 4), mode="area"), IMAGE),
    OpCase("split", "chunk", lambda t: torch.cat(t.chunk(3, dim=2)[::-1], 2), IMAGE, becomes="index"),
    OpCase("split", "split sizes", lambda t: _split_sizes(t), IMAGE, becomes="index"),
    OpCase("split", "unbind", lambda t: torch.stack(t.unbind(1)[::-1], 1), SEQ, becomes="index"),
    OpCase("split", "tensor_split", lambda t: t.tensor_split(3, dim=1)[1], SEQ, becomes="index"),
    OpCase("repeat_interleave", "repeat_interleave", lambda t: t.repeat_interleave(2, dim=2), IMAGE),
    # ---- shape.py
    OpCase("reshape", "flatten", _m(nn.Flatten()), IMAGE),
    OpCase("reshape", "view", lambda t: t.view(t.size(0), 7, -1), IMAGE),
    OpCase("reshape", "reshape shape arithmetic", lambda t: t.reshape(t.shape[0], t.shape[1] * t.shape[2], -1), IMAGE),
    OpCase("reshape", "unflatten", lambda t: t.unflatten(2, (3, 3)), SEQ),
    OpCase("reshape", "squeeze unsqueeze", lambda t: t.unsqueeze(2).unsqueeze(-1).squeeze(-1), SEQ),
    OpCase("reshape", "view_as", lambda t: t.flatten(1).view_as(t), IMAGE),
    OpCase("identity", "contiguous", lambda t: t.transpose(1, 2).contiguous(), IMAGE),
    OpCase("identity", "to dtype", lambda t: t.to(t.dtype) + t.type_as(t), SEQ),
    OpCase("identity", "Dropout2d eval", _m(nn.Dropout2d(0.5).eval()), IMAGE),
    # ---- pool.py: averages and sums
    OpCase("avg_pool", "AvgPool2d", _m(nn.AvgPool2d(2)), IMAGE),
    OpCase("avg_pool", "avg_pool2d padded", lambda t: F.avg_pool2d(t, 3, 2, 1), IMAGE),
    OpCase("avg_pool", "avg_pool2d ceil no pad count", _m(nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)),
           IMAGE),
    OpCase("avg_pool", "avg_pool2d divisor", lambda t: F.avg_pool2d(t, 2, 1, divisor_override=3), IMAGE),
    OpCase("avg_pool", "avg_pool1d", _m(nn.AvgPool1d(3, 2, 1, ceil_mode=True)), SEQ),
    OpCase("avg_pool", "avg_pool3d", lambda t: F.avg_pool3d(t, 2, 1), VOLUME),
    OpCase("avg_pool", "adaptive 1x1", _m(nn.AdaptiveAvgPool2d(1)), IMAGE),
    OpCase("avg_pool", "adaptive non-divisible", _m(nn.AdaptiveAvgPool2d((4, 5))), IMAGE),
    OpCase("avg_pool", "adaptive 1d", lambda t: F.adaptive_avg_pool1d(t, 4), SEQ),
    OpCase("avg_pool", "adaptive 3d", _m(nn.AdaptiveAvgPool3d((2, 3, 4))), VOLUME),
    OpCase("sum", "sum", lambda t: t.sum(1), IMAGE),
    OpCase("sum", "sum keepdim", lambda t: torch.sum(t, dim=(-1, 2), keepdim=True), IMAGE),
    OpCase("sum", "mean", lambda t: t.mean((2, 3)), IMAGE),
    OpCase("sum", "mean keepdim", lambda t: torch.mean(t, -1, keepdim=True), SEQ),
    # ---- conv.py
    OpCase("conv1d", "Conv1d", _m(nn.Conv1d(4, 3, 3, stride=2, padding=1, dilation=2)), SEQ, monotone=False),
    OpCase("conv1d", "conv1d same groups", _m(nn.Conv1d(4, 6, 3, padding="same", groups=2)), SEQ, monotone=False),
    OpCase("conv2d", "Conv2d", _m(nn.Conv2d(3, 4, 3, stride=(2, 1), padding=1)), IMAGE, monotone=False),
    OpCase("conv3d", "Conv3d", _m(nn.Conv3d(2, 3, (2, 3, 2), stride=(1, 2, 1), padding=(1, 0, 1))), VOLUME,
           monotone=False),
    OpCase("conv_transpose1d", "ConvTranspose1d", _m(nn.ConvTranspose1d(4, 3, 3, stride=2, padding=1, output_padding=1)),
           SEQ, monotone=False),
    OpCase("conv_transpose2d", "ConvTranspose2d", _m(nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1)), IMAGE,
           monotone=False),
    OpCase("conv_transpose2d", "groups dilation output padding",
           _m(nn.ConvTranspose2d(3, 6, 3, stride=2, padding=2, output_padding=1, groups=3, dilation=2)), IMAGE,
           monotone=False),
    OpCase("conv_transpose3d", "ConvTranspose3d", _m(nn.ConvTranspose3d(2, 2, 2, stride=2)), VOLUME, monotone=False),
    # ---- linear.py, arithmetic.py, norm.py
    OpCase("linear", "Linear", _m(nn.Linear(9, 5)), SEQ, monotone=False),
    OpCase("matmul", "x @ W", lambda t: t @ torch.linspace(-1, 1, 45, dtype=t.dtype).reshape(9, 5), SEQ, monotone=False),
    OpCase("matmul", "W @ x", lambda t: torch.matmul(torch.linspace(-2, 1, 12, dtype=t.dtype).reshape(3, 4), t), SEQ,
           monotone=False),
    OpCase("matmul", "x @ vector", lambda t: t.matmul(torch.linspace(-1, 1, 9, dtype=t.dtype)), SEQ, monotone=False),
    OpCase("matmul", "bmm per-example", lambda t: torch.bmm(t, torch.linspace(-1, 1, 18, dtype=t.dtype).reshape(9, 2).expand(
        t.shape[0], -1, -1)), SEQ, monotone=False),
    OpCase("add", "residual", lambda t: t + t.flip(2) - 1.0, SEQ, monotone=False),
    OpCase("mul", "scale", lambda t: t * torch.linspace(-1, 1, 9) * -2.0, SEQ, monotone=False),
    OpCase("div", "divide", lambda t: t / torch.linspace(1, 2, 9), SEQ),
    OpCase("batch_norm", "BatchNorm1d", _m(nn.BatchNorm1d(4).eval()), SEQ, monotone=False),
    OpCase("batch_norm", "BatchNorm3d", _m(nn.BatchNorm3d(2).eval()), VOLUME, monotone=False),
    # ---- pool.py: maxima (nonlinear)
    OpCase("max_pool", "MaxPool2d", _m(nn.MaxPool2d(2)), IMAGE, linear=False),
    OpCase("max_pool", "overlapping", _m(nn.MaxPool2d(3, stride=2, padding=1)), IMAGE, linear=False),
    OpCase("max_pool", "ceil_mode dilation", lambda t: F.max_pool2d(t, 2, 2, 1, dilation=2, ceil_mode=True), IMAGE,
           linear=False),
    OpCase("max_pool", "stride 1", lambda t: F.max_pool2d(t, (2, 3), 1), IMAGE, linear=False),
    OpCase("max_pool", "max_pool1d", _m(nn.MaxPool1d(3, 2, ceil_mode=True)), SEQ, linear=False),
    OpCase("max_pool", "max_pool3d", lambda t: F.max_pool3d(t, 2, (1, 2, 2), padding=(0, 1, 1)), VOLUME, linear=False),
    OpCase("adaptive_max_pool", "non-divisible", _m(nn.AdaptiveMaxPool2d((4, 5))), IMAGE, linear=False),
    OpCase("adaptive_max_pool", "global", lambda t: F.adaptive_max_pool2d(t, 1), IMAGE, linear=False),
    OpCase("adaptive_max_pool", "1d", _m(nn.AdaptiveMaxPool1d(4)), SEQ, linear=False),
    OpCase("amax", "amax", lambda t: t.amax(dim=(1, 3)), IMAGE, linear=False),
    OpCase("amax", "max dim values", lambda t: torch.cat([t.max(dim=2).values, t.max(1, keepdim=True)[0].squeeze(1)], 1),
           IMAGE, linear=False),
    OpCase("amax", "amin", lambda t: torch.amin(t, -1, keepdim=True), SEQ, linear=False),
    OpCase("amax", "min dim", lambda t: torch.min(t, 1)[0], SEQ, linear=False),
    # ---- bilinear.py: products of two perturbed tensors (the compiled graph keeps the user's op; a program
    # that perturbs both operands expands it into the bilinear product)
    OpCase("product", "x * y", lambda t: t * t.flip(2), SEQ, linear=False, monotone=False, becomes="mul"),
    OpCase("product", "square", lambda t: t * t, SEQ, linear=False, monotone=False, becomes="mul"),
    OpCase("product", "squeeze-excite gate", lambda t: t * torch.sigmoid(t.mean((2, 3), keepdim=True)), IMAGE,
           linear=False, monotone=False, becomes="mul"),
    OpCase("product", "x / y", lambda t: t / (2 + torch.sigmoid(t.flip(1))), SEQ, linear=False, monotone=False,
           becomes="div", domain=True),
    OpCase("product", "constant / y", lambda t: 3.0 / (t * t + 1), SEQ, linear=False, monotone=False, becomes="div",
           domain=True),
    OpCase("matmul_product", "x @ yT", lambda t: t @ t.transpose(1, 2), SEQ, linear=False, monotone=False, becomes="matmul"),
    OpCase("matmul_product", "scores times values", lambda t: (t[..., :3] @ t[..., 3:].transpose(-1, -2)) @ t, IMAGE,
           linear=False, monotone=False, becomes="matmul"),
    OpCase("einsum", "x W (a constant)", lambda t: torch.einsum("bij,jk->bik", t, torch.linspace(
        -1, 1, 27, dtype=t.dtype).reshape(9, 3)), SEQ, monotone=False),
    OpCase("einsum", "a sum, permuted", lambda t: torch.einsum("bcij->bjc", t), IMAGE),
    OpCase("einsum", "scores of two perturbed", lambda t: torch.einsum("bqd,bkd->bqk", t, t[:, 1:]), SEQ,
           linear=False, monotone=False),
    OpCase("einsum", "three operands", lambda t: torch.einsum("bi,bj,j->bi", t[:, 0], t[:, 1],
           torch.linspace(-1, 1, 9, dtype=t.dtype)), SEQ, linear=False, monotone=False),
    OpCase("einsum", "implicit output", lambda t: torch.einsum("bi,ij", t[:, 0], torch.linspace(
        -1, 1, 36, dtype=t.dtype).reshape(9, 4)), SEQ, monotone=False),
    OpCase("softmax", "softmax", lambda t: torch.softmax(t, -1), SEQ, linear=False, monotone=False, domain=True),
    OpCase("softmax", "Softmax dim 1", _m(nn.Softmax(dim=1)), IMAGE, linear=False, monotone=False, domain=True),
    OpCase("softmax", "log_softmax", lambda t: F.log_softmax(t, dim=1), SEQ, linear=False, monotone=False, domain=True),
    OpCase("softmax", "logsumexp", lambda t: torch.logsumexp(t, 2), SEQ, linear=False, monotone=False, domain=True),
    OpCase("softmax_product", "softmax's product", lambda t: t.softmax(dim=2), SEQ, linear=False, monotone=False,
           becomes="softmax", domain=True),
    OpCase("within", "softmax's known ranges", lambda t: torch.softmax(3 * t, 1), SEQ, linear=False, monotone=False,
           becomes="softmax"),
    OpCase("within", "a norm's known ranges", lambda t: t.std(dim=2, keepdim=True) * t.var(dim=2, keepdim=True), SEQ,
           linear=False, monotone=False, becomes="mul", domain=True),
    # ---- attention.py
    OpCase("sdpa", "scaled_dot_product_attention", lambda t: F.scaled_dot_product_attention(t, t, t), IMAGE,
           linear=False, monotone=False, domain=True),
    OpCase("sdpa", "causal", lambda t: F.scaled_dot_product_attention(t[:, :, :4], t[:, :, 1:5], t[:, :, 2:6],
                                                                       is_causal=True), IMAGE, linear=False,
           monotone=False, domain=True),
    OpCase("sdpa", "boolean mask", lambda t: F.scaled_dot_product_attention(
        t, t, t, attn_mask=torch.arange(49).reshape(7, 7) % 3 != 1), IMAGE, linear=False,
           monotone=False, domain=True),
    OpCase("mha", "MultiheadAttention", _Attend(weights=False), (5, 6), linear=False, monotone=False, domain=True),
    OpCase("mha", "weights and masks", _Attend(weights=True), (5, 6), linear=False, monotone=False, domain=True),
    OpCase("masked_fill", "masked_fill -inf", lambda t: torch.softmax(t.masked_fill(
        torch.tensor([True, False, False, True, False, False, False, False, True]), float("-inf")), -1), SEQ,
           linear=False, monotone=False, domain=True),
    OpCase("masked_fill", "masked_fill value", lambda t: t.masked_fill(torch.arange(9) % 3 == 0, -2.5), SEQ),
    OpCase("where", "where a number", lambda t: torch.where(torch.arange(9) % 3 == 0, t, -1.5), SEQ),
    OpCase("where", "where a number first", lambda t: torch.where(torch.arange(9) % 2 == 0, 2.0, t), SEQ),
    OpCase("where", "where both perturbed", lambda t: torch.where(torch.arange(9) < 4, t, -t.flip(-1)), SEQ,
           monotone=False),
    OpCase("where", "where a constant tensor", lambda t: t.where(torch.arange(9) > 2, torch.linspace(-1, 1, 9)), SEQ),
    OpCase("where", "where -inf then softmax", lambda t: torch.softmax(torch.where(
        torch.tensor([True, False, False, True, False, False, False, False, True]), float("-inf"), t), -1), SEQ,
           linear=False, monotone=False, domain=True),
    # ---- recurrent.py
    OpCase("rnn_cell", "LSTMCell", _Recur(nn.LSTMCell(9, 3)), SEQ, linear=False, monotone=False),
    OpCase("rnn_cell", "GRUCell", _Recur(nn.GRUCell(9, 3)), SEQ, linear=False, monotone=False),
    OpCase("rnn_cell", "RNNCell relu", _Recur(nn.RNNCell(9, 3, nonlinearity="relu")), SEQ, linear=False,
           monotone=False),
    OpCase("rnn", "LSTM two layers", _Recur(nn.LSTM(9, 3, num_layers=2, batch_first=True)), SEQ, linear=False,
           monotone=False),
    OpCase("rnn", "GRU bidirectional", _Recur(nn.GRU(9, 2, batch_first=True, bidirectional=True)), SEQ,
           linear=False, monotone=False),
    OpCase("rnn", "RNN final state", _Recur(nn.RNN(9, 3, batch_first=True), final=True), SEQ, linear=False,
           monotone=False),
    # ---- norm.py: per-example norms
    OpCase("layer_norm", "LayerNorm", _m(nn.LayerNorm(9)), SEQ, linear=False, monotone=False, domain=True),
    OpCase("layer_norm", "layer_norm 2 dims", lambda t: F.layer_norm(t, (4, 9)), SEQ, linear=False, monotone=False,
           domain=True),
    OpCase("normalised_product", "layer norm's product", _m(nn.LayerNorm(9, elementwise_affine=False)), SEQ,
           linear=False, monotone=False, becomes="layer_norm", domain=True),
    OpCase("group_norm", "GroupNorm", _m(nn.GroupNorm(2, 4)), (4, 3, 3), linear=False, monotone=False, domain=True),
    OpCase("group_norm", "InstanceNorm2d", _m(nn.InstanceNorm2d(3, affine=True)), IMAGE, linear=False,
           monotone=False, domain=True),
    OpCase("batch_norm", "InstanceNorm1d running stats", _m(nn.InstanceNorm1d(4, track_running_stats=True).eval()),
           SEQ, monotone=False),
    OpCase("var", "var", lambda t: t.var(2), SEQ, linear=False, monotone=False, domain=True),
    OpCase("var", "std keepdim biased", lambda t: torch.std(t, dim=(2, 3), unbiased=False, keepdim=True), IMAGE,
           linear=False, monotone=False, domain=True),
    # ---- activation.py: clamps by constant tensors (the line-fitting machine's are tested by the registry of
    # Elementwise rules in tests/ops/test_activation.py)
    OpCase("prelu", "PReLU one slope", _m(nn.PReLU(init=0.3)), SEQ, linear=False),
    OpCase("prelu", "PReLU per channel", _m(nn.PReLU(3, init=-0.4)), IMAGE, linear=False, monotone=False),
    OpCase("prelu", "F.prelu slopes above 1", lambda t: F.prelu(t, torch.linspace(0.5, 1.8, 4, dtype=torch.float64)),
           SEQ, linear=False),
    OpCase("clamp_by", "maximum", lambda t: torch.maximum(t, torch.linspace(-1, 1, 9)), SEQ, linear=False),
    OpCase("clamp_by", "minimum", lambda t: t.minimum(torch.full((9,), 0.25)), SEQ, linear=False),
    OpCase("clamp_by", "max with tensor", lambda t: torch.max(t, torch.zeros(9)), SEQ, linear=False),
    OpCase("clamp_by", "clamp by tensors", lambda t: t.clamp(min=torch.linspace(-1, 0, 9), max=torch.linspace(0, 1, 9)),
           SEQ, linear=False),
    OpCase("clamp_by", "clamp crossed", lambda t: torch.clamp(t, torch.full((9,), 0.5), torch.linspace(-1, 1, 9)), SEQ,
           linear=False),
]

# rules with no user spelling of their own, tested where the pass that makes them is
INTERNAL = {"spec_linear", "bn_fold_weight", "bn_fold_bias", "bn_batch_mean", "bn_batch_var", "call",
            "argmax", "fused_cross_entropy"}  # the last: loss fusion's output (tests/ops/test_loss.py)
