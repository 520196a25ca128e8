"""Attention: ``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention`` (either ``batch_first``), bounded
through their pieces when their inputs are perturbed (``expand``): linear projections, heads by reshape and
permute, scores ``q kᵀ`` (the bilinear product), masks as a constant added to the scores, softmax
(``bilinear.exp_shifted``: ``e = exp(s − max s)``, ``e · 1/Σe``), ``P v`` (the bilinear product again), and the
output projection.

A mask never enters as ``−inf``: what may not be attended gets the finite penalty ``−max/4`` of the dtype (so its
``exp`` is exactly 0 at every point, as ``−inf``'s is), an additive float mask ``m`` is added as it is; bounds stay
finite intervals, and the maximum that shifts the scores is never a masked score unless a whole row is masked.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Rule, Several, rule
from .bilinear import exp_shifted
from .constant import Slot

aten = torch.ops.aten


def mask_penalty(attn_mask: Optional[Tensor], key_padding: Optional[Tensor], causal: bool, heads: int,
                 size: tuple[int, int], dtype: torch.dtype, device: Any, masks_true: bool) -> Optional[Tensor]:
    """The constant added to the scores (``(…, L, S)``, broadcast): 0 where attention may look, ``−inf`` where a
    boolean mask, the key padding (True: ignore) or causality forbids it, ``m`` for an additive mask ``m``, with
    ``−inf`` then made ``−max/4`` of the dtype; None where nothing is masked. ``masks_true``: a boolean
    ``attn_mask``'s True means masked (``nn.MultiheadAttention``) rather than attended
    (``F.scaled_dot_product_attention``)."""
    penalty = None

    def add(term: Tensor) -> None:
        nonlocal penalty
        penalty = term if penalty is None else penalty + term

    def additive(mask: Tensor, true_masks: bool) -> Tensor:
        if mask.dtype == torch.bool:
            masked = mask if true_masks else ~mask
            return torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(masked.to(device), -math.inf)
        return mask.to(dtype=dtype, device=device)

    if attn_mask is not None:
        mask = additive(attn_mask, masks_true)
        if mask.dim() == 3 and heads > 1:  # (batch · heads, L, S)
            mask = mask.reshape(-1, heads, *mask.shape[-2:])
        add(mask)
    if key_padding is not None:  # (batch, S): True (or an additive mask) for padding
        add(additive(key_padding, True)[:, None, None, :])
    if causal:
        add(additive(torch.ones(size, dtype=torch.bool, device=device).tril(), False))
    return None if penalty is None else penalty.clamp(min=-torch.finfo(dtype).max / 4)


def _penalty_node(build, node, mask, key_padding, causal: bool, heads: int, size: tuple[int, int], masks_true: bool):
    if mask is None and key_padding is None and not causal:
        return None
    operands = tuple(o for o in (mask, key_padding) if o is not None)
    slots = iter(Slot(i) for i in range(len(operands)))
    args = (next(slots) if mask is not None else None, next(slots) if key_padding is not None else None, causal, heads,
            size, node.attrs["dtype"], node.attrs["device"], masks_true)
    return build.add("call", operands, dict(fn=mask_penalty, args=args, kwargs={}), "penalty", perturbed=False)


def _attend(build, q, k, v, penalty, scale: float):
    """``softmax(q kᵀ · scale + penalty) v`` for ``(B, …, L, d)`` queries and ``(B, …, S, d)`` keys/values."""
    rank = len(build.shape(q))
    swap = tuple(range(rank - 2)) + (rank - 1, rank - 2)
    scores = build.add("matmul", (q, build.add("permute", (k,), dict(dims=swap), "keys_t")), suffix="scores")
    scores = build.add("mul", (scores, float(scale)), suffix="scaled")
    _, e, total, _, scores = exp_shifted(build, scores, rank - 1, penalty)
    weights = build.add("softmax_product", (e, build.add("reciprocal", (total,)), scores), dict(dim=rank - 1),
                        "weights")
    return build.add("matmul", (weights, v), suffix="context"), weights


_SDPA = (F.scaled_dot_product_attention, aten.scaled_dot_product_attention.default)


@rule("sdpa", spellings=_SDPA)
class ScaledDotProductAttention(Rule):
    """``F.scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale)`` (no dropout): ``softmax(q kᵀ/√d +
    mask) v``; a boolean mask marks what may be attended (True), a float mask is added to the scores."""

    perturbable = (0, 1, 2)

    def canonicalize(self, call):
        if call.arg(4, "dropout_p", 0.0):
            raise call.fail("attention dropout is random and has no sound bound: dropout_p=0 (model.eval())")
        if call.kwargs.get("enable_gqa"):
            raise call.fail("grouped-query attention (enable_gqa=True) is not supported")
        q, k, v = call.arg(0, "query"), call.arg(1, "key"), call.arg(2, "value")
        return (q, k, v, call.arg(3, "attn_mask", None)), dict(causal=bool(call.arg(5, "is_causal", False)),
                                                               scale=call.kwargs.get("scale", None),
                                                               dtype=call.out_dtype, device=call.out_device)

    def forward(self, q, k, v, mask, causal, scale, dtype=None, device=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)

    def expand(self, node, perturbed, build):
        if not any(perturbed[:3]):
            return None
        q, k, v, mask = node.operands
        shape_q, shape_k = build.shape(q), build.shape(k)
        scale = node.attrs["scale"] if node.attrs["scale"] is not None else 1 / math.sqrt(shape_q[-1])
        penalty = _penalty_node(build, node, mask, None, node.attrs["causal"], 1, (shape_q[-2], shape_k[-2]), False)
        context, _ = _attend(build, q, k, v, penalty, scale)
        return build.finish("identity", (context,))


@rule("mha", spellings=(nn.MultiheadAttention,))
class MultiheadAttention(Rule):
    """``nn.MultiheadAttention`` (``batch_first=False`` on ``x.transpose(0, 1)`` of batch-first tensors, its node
    batch-first; no ``bias_k``/``bias_v``/``add_zero_attn``, no dropout
    in training): the attention output and, where used, the weights (averaged over heads or not). Its masks
    (``attn_mask``: True or −inf masks; ``key_padding_mask``: True ignores a key) are constants or come from
    integer inputs. Bounded through its pieces: the in-projection (one packed weight or three), heads,
    ``_attend``, the out-projection."""

    perturbable = (0, 1, 2)

    def canonicalize(self, call):
        m = call.module
        if not m.batch_first and not call.sequence_first:
            raise call.fail("nn.MultiheadAttention with batch_first=False takes (sequence, batch, features): give it "
                            "x.transpose(0, 1) of a batch-first x, or build it with batch_first=True (boundgraph keeps "
                            "the batch on dimension 0 of the model's inputs)")
        if m.bias_k is not None or m.add_zero_attn:
            raise call.fail("nn.MultiheadAttention with bias_k/bias_v or add_zero_attn is not supported")
        if m.training and m.dropout > 0:
            raise call.fail("attention dropout in training mode is random and has no sound bound: call model.eval()")
        q = call.arg(0, "query")
        k, v = call.arg(1, "key", q), call.arg(2, "value", q)
        masks = (call.arg(5, "attn_mask", None), call.arg(3, "key_padding_mask", None))
        if m._qkv_same_embed_dim:
            weights = (call.param("in_proj_weight"), None, None, None)
        else:
            weights = (None, call.param("q_proj_weight"), call.param("k_proj_weight"), call.param("v_proj_weight"))
        out = (call.module_param("out_proj.weight"), call.module_param("out_proj.bias"))
        operands = (q, k, v) + masks + weights + (call.param("in_proj_bias"),) + out
        attrs = dict(heads=m.num_heads, module=m, need_weights=bool(call.arg(4, "need_weights", True)),
                     average=bool(call.arg(6, "average_attn_weights", True)), dtype=m.out_proj.weight.dtype,
                     device=call.out_device)
        return Several([("mha", operands, dict(attrs, output="output")),
                        ("mha", operands, dict(attrs, output="weights"))])

    def forward(self, q, k, v, attn_mask, key_padding, packed, wq, wk, wv, in_bias, out_weight, out_bias, heads,
                module, need_weights, average, output, dtype=None, device=None):
        swap = (lambda t: t.transpose(0, 1)) if not module.batch_first else (lambda t: t)  # noqa: E731
        result = module(swap(q), swap(k), swap(v), key_padding_mask=key_padding,
                        need_weights=need_weights or output == "weights", attn_mask=attn_mask,
                        average_attn_weights=average)
        return swap(result[0]) if output == "output" else result[1]

    def expand(self, node, perturbed, build):
        if not any(perturbed[:3]):
            return None
        (q, k, v, attn_mask, key_padding, packed, wq, wk, wv, in_bias, out_weight, out_bias) = node.operands
        a = node.attrs
        embed = build.shape(q)[-1]
        heads, width = a["heads"], embed // a["heads"]
        projected = []
        for i, (x, w) in enumerate(((q, wq), (k, wk), (v, wv))):
            if packed is not None:
                w = build.add("call", (packed,), dict(fn=_rows, args=(Slot(0), i * embed, embed), kwargs={}),
                              "in_weight", perturbed=False)
            b = None if in_bias is None else build.add("call", (in_bias,), dict(fn=_rows, args=(
                Slot(0), i * embed, embed), kwargs={}), "in_bias", perturbed=False)
            h = build.add("linear", (x, w, b), suffix="projected")
            length = build.shape(h)[1]
            h = build.add("reshape", (h,), dict(shape=(length, heads, width)), "heads")
            projected.append(build.add("permute", (h,), dict(dims=(0, 2, 1, 3)), "heads_first"))
        size = (build.shape(projected[0])[-2], build.shape(projected[1])[-2])
        penalty = _penalty_node(build, node, attn_mask, key_padding, False, heads, size, True)
        context, weights = _attend(build, *projected, penalty, 1 / math.sqrt(width))
        if a["output"] == "weights":
            if a["average"]:
                weights = build.add("sum", (weights,), dict(dims=(1,), keepdim=False, mean=True), "averaged")
            return build.finish("identity", (weights,))
        context = build.add("permute", (context,), dict(dims=(0, 2, 1, 3)), "merged")
        context = build.add("reshape", (context,), dict(shape=(size[0], embed)), "concatenated")
        return build.finish("linear", (context, out_weight, out_bias))


def _rows(t: Tensor, start: int, count: int) -> Tensor:
    """Rows ``start : start + count`` of a packed projection (its q, k or v part)."""
    return t[start:start + count]
