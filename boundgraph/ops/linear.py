"""Affine maps with a constant weight: ``linear``, ``matmul`` by a constant, and the fused output specification."""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ir import Interval, LinearBounds, PerExample
from .base import RULES, Rule, affine_interval, method, rule, spec_sum
from .structure import Structural

aten = torch.ops.aten


def _matvec(A: Tensor, vector: Tensor) -> Tensor:
    """``spec_sum(A · vector)`` over the last dimension, vector ``(out,)`` or ``(batch, out)``."""
    if vector.dim() == 1:
        return spec_sum(torch.matmul(A, vector).unsqueeze(-1))
    return torch.matmul(A, vector.unsqueeze(-1)).squeeze(-1)


@rule("linear", spellings=(nn.Linear, F.linear, aten.linear.default))
class Linear(Rule):
    """``z = x Wᵀ + b``.

    IBP (Gowal et al. 2018): with centre ``c`` and radius ``r`` of x, ``z ∈ Wc + b ± |W| r``.
    CROWN (Zhang et al. 2018): ``A ← A W``, ``bias += A b``. ``W`` may be batched, ``(batch, out, in)``:
    the specification ``C`` itself where no linear layer ends the model (``passes/spec.py``); with one,
    ``spec_linear``.
    """

    def canonicalize(self, call):
        if call.module is not None:
            return (call.arg(0, "input"), call.param("weight"), call.param("bias")), {}
        return (call.arg(0, "input"), call.arg(1, "weight"), call.arg(2, "bias", None)), {}

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if weight.dim() == 3:  # a product and a sum: 3.7x faster forward + backward than batched matrix-vector
            out = (weight * x.unsqueeze(-2)).sum(-1)  # products at (128, 9, 256) here, and not slower at 3200
            return out if bias is None else out + bias
        return F.linear(x, weight, bias)

    def interval(self, x: Interval, weight: Tensor, bias: Tensor | None) -> Interval:
        rows = x.lower.numel() // max(x.lower.shape[-1], 1)  # the output is rows x out, the weight out x in
        return affine_interval(x, self.forward, weight, bias, halve_output=weight.dim() == 2 and rows < weight.shape[1])

    def backward(self, A: Tensor, x: None, weight: Tensor, bias: Tensor | None):
        return (torch.matmul(A, weight), None, None), (0 if bias is None else _matvec(A, bias))

    def forward_linear(self, x: LinearBounds, weight: Tensor, bias: Tensor | None) -> LinearBounds:
        """LBP: ``W_l' = W⁺W_l + W⁻W_u`` by centre and radius, on the input slices as they lie (a batched
        weight multiplies each example's slices by one matrix product)."""
        weight, bias = (v.value if isinstance(v, PerExample) else v for v in (weight, bias))
        centre, radius = Interval(x.lower_coef, x.upper_coef).centre_radius()
        weight_t = weight.transpose(-1, -2)
        mid, rad = torch.matmul(centre, weight_t), torch.matmul(radius, weight_t.abs())
        biases = self.interval(Interval(x.lower_bias, x.upper_bias), weight, bias)
        return LinearBounds(mid - rad, biases.lower, mid + rad, biases.upper)


SPEC_GROUPS = 32  # the most distinct specifications (label classes) for which IBP of the fused head is grouped


@rule("spec_linear")
class SpecLinear(Rule):
    """``z = C(Wx + b)``: the output specification ``C`` (``(batch, specs, out)``) fused into the last linear
    layer (Zhang et al. 2020, CROWN-IBP): IBP bounds ``(CW)x`` rather than ``C`` times the bounds of ``Wx``.

    IBP: ``C(Wc + b) ± |CW| r``. The radius needs ``|C_i W|`` for every example ``i``; examples whose ``C_i``
    is the same (a margin specification has one per label) share it, so with ``K`` distinct ones it is
    ``K`` matrices ``|C_k W|`` and one matrix product ``r · [|C_1 W|; …; |C_K W|]ᵀ`` read at each example's own
    ``k`` (at (128, 9, 256): 1.0 ms forward + backward, against 2.2–2.6 ms for the ``(batch, specs, in)``
    products of the batched weight ``C W``, kept for ``K > SPEC_GROUPS`` or ``2K > batch``). CROWN: ``A ← (A C) W``,
    ``bias += (A C) b``. LBP: the batched weight ``C W`` as one more linear layer."""

    def forward(self, x: Tensor, C: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return torch.matmul(C, F.linear(x, weight, bias).unsqueeze(-1)).squeeze(-1)

    def interval(self, x: Interval, C: Tensor, weight: Tensor, bias: Tensor | None) -> Interval:
        total, width = x.sum_width()
        centre = F.linear(total, weight) * 0.5
        if bias is not None:
            centre = centre + bias
        mid = torch.matmul(C, centre.unsqueeze(-1)).squeeze(-1)
        rad = self._radius(width, C * 0.5, weight)
        return Interval(mid - rad, mid + rad)

    @staticmethod
    def _radius(width: Tensor, C: Tensor, weight: Tensor) -> Tensor:
        """``|C_i W| w_i`` for every example ``i`` (``(batch, specs)``), by groups of equal ``C_i``."""
        batch, specs = C.shape[:2]
        grouped = None  # not under compile (the groups' number is data-dependent), nor where C needs its gradient
        if batch > 1 and not C.requires_grad and not torch.compiler.is_compiling():
            grouped = _groups(C.reshape(batch, -1))
        if grouped is not None:
            first, which = grouped
            each = torch.matmul(C[first], weight).abs()  # (K, specs, in)
            rad = F.linear(width, each.flatten(0, 1)).view(batch, -1, specs)  # (batch, K, specs)
            return rad[torch.arange(batch, device=C.device), which]
        return RULES["linear"].forward(width, torch.matmul(C, weight).abs(), None)

    def backward(self, A: Tensor, x: None, C: Tensor, weight: Tensor, bias: Tensor | None):
        AC = torch.matmul(A, C)  # (batch, rows, out)
        return (torch.matmul(AC, weight), None, None, None), (0 if bias is None else _matvec(AC, bias))

    def forward_linear(self, x: LinearBounds, C, weight: Tensor, bias: Tensor | None) -> LinearBounds:
        C = C.value if isinstance(C, PerExample) else C
        return RULES["linear"].forward_linear(x, PerExample(torch.matmul(C, weight)),
                                              None if bias is None else PerExample(torch.matmul(C, bias)))


def _groups(rows: Tensor) -> tuple[Tensor, Tensor] | None:
    """Examples with equal rows: one example of each of the ``K`` groups and each example's group, or None
    where ``K > SPEC_GROUPS`` or ``2K > batch``. Grouped by a hash (one product and a 1-d ``unique``: 0.15 ms
    at (128, 90) here, ``unique(dim=0)`` 0.24 ms), then checked exactly: a collision or a NaN gives None."""
    batch = rows.shape[0]
    key = torch.mv(rows.double(), torch.linspace(1.0, 2.0, rows.shape[1], dtype=torch.float64,
                                                 device=rows.device).sqrt())
    keys, which = torch.unique(key, return_inverse=True)
    if keys.shape[0] > SPEC_GROUPS or 2 * keys.shape[0] > batch:
        return None
    first = torch.zeros(keys.shape[0], dtype=torch.long, device=rows.device).scatter_(
        0, which, torch.arange(batch, device=rows.device))
    return (first, which) if bool((rows[first][which] == rows).all()) else None


_MATMUL = (torch.matmul, operator.matmul, method("matmul"), torch.bmm, method("bmm"), torch.mm, method("mm"),
           aten.matmul.default, aten.bmm.default, aten.mm.default)


@rule("matmul", spellings=_MATMUL)
class MatMul(Structural):
    """``z = x @ W`` or ``W @ x`` with ``W`` constant (a weight, a fixed projection; ``mm``/``bmm`` too), with
    torch's broadcasting of the leading dimensions and 1-d operands.

    IBP: ``c @ W ± r @ |W|`` (``W @ c ± |W| @ r``). CROWN: the map's transpose, ``A ← A Wᵀ`` (``Wᵀ A``), from
    autograd, summed over broadcast dimensions. The product of two perturbed operands is the bilinear rule's
    (``boundgraph/ops/bilinear.py``)."""

    def canonicalize(self, call):
        return (call.arg(0, "input"), call.arg(1, "other" if call.spelling is not torch.bmm else "mat2")), {}

    def check(self, perturbed):
        return "the product of two perturbed matrices needs both batched alike (same rank, at least 3)" \
            if all(perturbed) else None

    def expand(self, node, perturbed, build):
        """Both perturbed: the bilinear rule's matrix product (``boundgraph/ops/bilinear.py``)."""
        if not all(perturbed):
            return None
        a, b = node.operands
        a_shape, b_shape = build.shape(a)[1:], build.shape(b)[1:]
        if len(a_shape) != len(b_shape) or len(a_shape) < 2:
            return None  # refused by ``check``
        return build.finish("matmul_product", (a, b))

    def _is_data(self, i: int) -> bool:
        return False  # no operand adds to the output: the constant one is the map's matrix

    def apply(self, a, b):
        return torch.matmul(a, b)

    def interval(self, a, b, in_shapes=None):
        if isinstance(a, Interval):
            centre, radius = a.centre_radius()
            return _centred(torch.matmul(centre, b), torch.matmul(radius, b.abs()))
        centre, radius = b.centre_radius()
        return _centred(torch.matmul(a, centre), torch.matmul(a.abs(), radius))

    def transpose(self, A, operands, in_shapes, attrs):
        """A constant operand with one matrix per example (rank of the perturbed one, batch first) is repeated
        for every spec row, as the rows are folded into the batch."""
        batch, specs = A.shape[:2]
        moving = next(i for i, o in enumerate(operands) if o is None)
        rank = len(in_shapes[moving]) + 1
        operands = tuple(o.repeat_interleave(specs, 0) if isinstance(o, Tensor) and o.dim() == rank
                         and o.shape[0] == batch and batch > 1 else o for o in operands)
        return super().transpose(A, operands, in_shapes, attrs)


def _centred(mid: Tensor, rad: Tensor) -> Interval:
    return Interval(mid - rad, mid + rad)
