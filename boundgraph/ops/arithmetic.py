"""Elementwise arithmetic: sums of tensors (residual connections), scaling by constants.

``sub`` and ``neg`` are canonicalised into ``add`` (with ``alpha = −1``) and ``mul`` (by −1), so
every spelling of a sum has one rule and every spelling of a scaling has another.
"""
from __future__ import annotations

import math
import operator
from typing import Any

import torch
from torch import Tensor

from ..ir import Interval
from .activation import GELU_TANH_BETA, GELU_TANH_KAPPA
from .base import Rule, constant_times_A, is_number, method, rule, unbroadcast

aten = torch.ops.aten
_SUB = (operator.sub, operator.isub, torch.sub, method("sub"), method("sub_"), aten.sub.Tensor)
_NEG = (operator.neg, torch.neg, method("neg"), aten.neg.default)


def _bounds(value: Any) -> tuple[Any, Any]:
    return (value.lower, value.upper) if isinstance(value, Interval) else (value, value)


def _as_operand_of(constant: Any, A: Tensor) -> Any:
    """Broadcast a constant that is shaped like the node's output (batch first) against ``A``."""
    if isinstance(constant, Tensor) and constant.dim() == A.dim() - 1:
        return constant.unsqueeze(1)
    return constant


@rule("add", spellings=(operator.add, operator.iadd, torch.add, method("add"), method("add_"),
                        aten.add.Tensor) + _SUB)
class Add(Rule):
    """``z = a + α·b`` for tensors or constants (α = −1 for every spelling of ``a − b``).

    IBP: ``[l_a + α l_b, u_a + α u_b]`` (bounds of b swapped when α < 0). CROWN: ``A`` reaches each
    perturbed operand unchanged (times α for b, summed over broadcast dimensions); a constant
    operand adds ``A·constant`` to the bias.
    """

    perturbable = (0, 1)

    def canonicalize(self, call):
        alpha = call.kwargs.get("alpha", 1)
        if call.spelling in _SUB:
            alpha = -alpha
        return (call.arg(0, "input"), call.arg(1, "other")), dict(alpha=alpha)

    def specialize(self, attrs, operand_shapes, out_shape):
        return dict(alpha=attrs["alpha"], shapes=tuple(operand_shapes))

    def forward(self, a, b, alpha=1, shapes=None) -> Tensor:
        return a + alpha * b

    def interval(self, a, b, alpha=1, shapes=None) -> Interval:
        (la, ua), (lb, ub) = _bounds(a), _bounds(b)
        if alpha < 0:
            lb, ub = ub, lb
        return Interval(la + alpha * lb, ua + alpha * ub)

    def backward(self, A, a, b, alpha, shapes):
        bias = 0
        A_a = A_b = None
        if a is None:
            A_a = unbroadcast(A, shapes[0])
        else:
            bias = bias + constant_times_A(A, a)
        if b is None:
            A_b = unbroadcast(A * alpha, shapes[1])
        else:
            bias = bias + alpha * constant_times_A(A, b)
        return (A_a, A_b), bias


@rule("mul", spellings=(operator.mul, operator.imul, torch.mul, method("mul"), method("mul_"),
                        aten.mul.Tensor) + _NEG)
class Mul(Rule):
    """``z = x · c`` with ``c`` constant (either operand may be the perturbed one; ``−x`` is ``x·(−1)``).

    IBP: ``[c⁺l + c⁻u, c⁺u + c⁻l]``. CROWN: ``A ← A·c`` (summed over broadcast dimensions).
    The product of two perturbed tensors is not linear: it becomes the bilinear rule's (``expand``).
    """

    perturbable = (0, 1)

    def canonicalize(self, call):
        if call.spelling in _NEG:
            return (call.arg(0, "input"), -1.0), {}
        return (call.arg(0, "input"), call.arg(1, "other")), {}

    def expand(self, node, perturbed, build):
        """Both operands perturbed: the bilinear rule's product (``boundgraph/ops/bilinear.py``); ``x * x`` the
        convex square, ``x * sigmoid(x)`` SiLU (Swish, as EfficientNet and ONNX exports spell it) and
        ``k·x · (1 + erf(d·x))`` and GPT-2's ``k·x · (1 + tanh(a(x + b x³)))`` GELU (``_erf_gelu``, ``_tanh_gelu``),
        one activation of one operand, tighter than the planes."""
        if len(perturbed) != 2 or not all(perturbed):
            return None
        a, b = node.operands
        if a == b:
            return build.finish("pow", (a,), dict(exponent=2.0))
        for x, other in ((a, b), (b, a)):  # x · xⁿ = xⁿ⁺¹ (an ONNX export's x³ is x · (x · x))
            power = build.source(other)
            if power is not None and power.op == "pow" and tuple(power.operands) == (x,) and \
                    float(power.attrs.get("exponent", 0)).is_integer() and power.attrs["exponent"] >= 1:
                return build.finish("pow", (x,), dict(exponent=float(power.attrs["exponent"]) + 1))
        for x, gate in ((a, b), (b, a)):
            gate_node = build.source(gate)
            if gate_node is not None and gate_node.op == "sigmoid" and tuple(gate_node.operands) == (x,):
                return build.finish("silu", (x,))
        for factor, gate in ((a, b), (b, a)):
            gelu = _erf_gelu(build, factor, gate) or _tanh_gelu(build, factor, gate)
            if gelu is not None:
                x, inner, attrs, outer = gelu
                scaled = x if inner == 1.0 else build.add("mul", (x, inner), suffix="gelu_input")
                if outer == 1.0:
                    return build.finish("gelu", (scaled,), attrs)
                return build.finish("mul", (build.add("gelu", (scaled,), attrs), outer))
        return build.finish("product", (a, b))

    def specialize(self, attrs, operand_shapes, out_shape):
        return dict(shapes=tuple(operand_shapes))

    def factor(self, constant: Any, like: Tensor) -> Any:
        """The constant the perturbed operand is multiplied by, in the dtype the product is computed in."""
        return constant

    def forward(self, a, b, shapes=None) -> Tensor:
        return a * b

    def interval(self, a, b, shapes=None) -> Interval:
        x, c = (a, self.factor(b, a.lower)) if isinstance(a, Interval) else (b, self.factor(a, b.lower))
        if not isinstance(c, Tensor):
            return Interval(x.lower * c, x.upper * c) if c >= 0 else Interval(x.upper * c, x.lower * c)
        positive, negative = c.clamp(min=0), c.clamp(max=0)
        return Interval(x.lower * positive + x.upper * negative, x.upper * positive + x.lower * negative)

    def backward(self, A, a, b, shapes):
        if a is None:
            return (unbroadcast(A * _as_operand_of(self.factor(b, A), A), shapes[0]), None), 0
        return (None, unbroadcast(A * _as_operand_of(self.factor(a, A), A), shapes[1])), 0


def _scaled(build, operand: Any) -> Any:
    """``(k, x)`` where ``operand`` is ``k·x`` or ``x·k`` (a number ``k``), else None."""
    source = build.source(operand)
    if source is None or source.op != "mul":
        return None
    left, right = source.operands
    return (left, right) if is_number(left) else (right, left) if is_number(right) else None


def _one_plus(build, gate: Any, op: str) -> Any:
    """The ``op`` node in ``gate = 1 + op(·)`` (either order), else None."""
    gate_node = build.source(gate)
    if gate_node is None or gate_node.op != "add" or gate_node.attrs.get("alpha", 1) != 1:
        return None
    first, second = gate_node.operands
    inner = first if is_number(second) and second == 1 else second if is_number(first) and first == 1 else None
    inner_node = build.source(inner)
    return inner_node if inner_node is not None and inner_node.op == op else None


def _gelu_factor(build, factor: Any, x: Any) -> Any:
    """``k`` where ``factor`` is ``x`` (1) or ``k·x``, else None."""
    if factor == x:
        return 1.0
    scaled = _scaled(build, factor)
    return scaled[0] if scaled is not None and scaled[1] == x else None


def _erf_gelu(build, factor: Any, gate: Any):
    """``(x, s, attrs, t)`` where ``factor · gate = k·x · (1 + erf(d·x))`` (``factor`` is ``x`` or ``k·x``; ``gate``
    is ``1 + erf(x·d)`` or ``1 + erf(x / c)``, ``d = 1/c``; ``k``, ``d`` numbers), else None. GELU is
    ``y·(1 + erf(y/√2))/2``, so with ``y = √2·d·x`` the identity ``x·(1 + erf(d·x)) = (√2/d)·GELU(√2·d·x)`` holds
    for every ``d ≠ 0``: the product is ``t·GELU(s·x)``, ``s = √2·d``, ``t = 2k/s``. It is how BERT's first
    implementations and ONNX exports before opset 20 write GELU (``x/√2``, and ``/ 1.4142135`` in float32, where
    ``s`` is 1 + 1.7e-8 and the exact identity still holds)."""
    erf = _one_plus(build, gate, "erf")
    argument = None if erf is None else build.source(erf.operands[0])
    if argument is not None and argument.op == "div" and is_number(argument.operands[1]):
        x, c = argument.operands
        inner = math.sqrt(2) / c if c != 0 else 0.0
    else:
        scaled = None if erf is None else _scaled(build, erf.operands[0])
        if scaled is None:
            return None
        d, x = scaled
        inner = math.sqrt(2) * d
    if inner == 0:
        return None
    k = _gelu_factor(build, factor, x)
    return None if k is None else (x, inner, dict(approximate="none"), 2 * k / inner)


def _tanh_gelu(build, factor: Any, gate: Any):
    """``(x, s, attrs, t)`` where ``factor · gate = k·x · (1 + tanh(a·(x + b·x³)))`` is ``t·GELU_tanh(s·x)`` with
    cubic coefficient ``κ'``, else None (GPT-2's ``NewGELUActivation`` writes it so). With ``y = s·x``,
    ``β(y + κ'y³) = a(x + b x³)`` exactly for ``s = a/β``, ``κ' = b/s²``; then ``t = 2k/s``. It is GELU's tanh form
    where ``κ'`` is torch's κ = 0.044715 to float64's rounding (then ``κ' = κ``: ``attrs`` are ``nn.GELU("tanh")``'s),
    or within 1e-6 of it: the constants read in float32 (an ONNX export writes ``0.044714998`` and ``0.79788458``),
    where the rule is built with ``cubic = κ'`` so that it bounds exactly the function the graph computes. Any other
    ``κ'`` is no GELU."""
    tanh = _one_plus(build, gate, "tanh")
    scaled = None if tanh is None else _scaled(build, tanh.operands[0])
    polynomial = None if scaled is None else build.source(scaled[1])
    if polynomial is None or polynomial.op != "add" or polynomial.attrs.get("alpha", 1) != 1:
        return None
    a = scaled[0]
    for x, cubic in (polynomial.operands, polynomial.operands[::-1]):
        term = _scaled(build, cubic)
        power = None if term is None else build.source(term[1])
        if power is None or power.op != "pow" or power.attrs.get("exponent") != 3 or tuple(power.operands) != (x,):
            continue
        b = term[0]
        if not (a > 0 and b > 0):
            return None
        s = a / GELU_TANH_BETA
        kappa = b / (s * s)
        if abs(kappa - GELU_TANH_KAPPA) <= 8 * 2.0 ** -52 * GELU_TANH_KAPPA:
            attrs = dict(approximate="tanh")
        elif abs(kappa - GELU_TANH_KAPPA) <= 1e-6 * GELU_TANH_KAPPA:
            attrs = dict(approximate="tanh", cubic=kappa)
        else:
            return None
        k = _gelu_factor(build, factor, x)
        return None if k is None else (x, s, attrs, 2 * k / s)
    return None


@rule("div", spellings=(operator.truediv, operator.itruediv, torch.div, torch.true_divide, method("div"),
                        method("div_"), aten.div.Tensor))
class Div(Mul):
    """``z = x / c`` with ``c`` constant: the scaling rule with factor ``1/c``; a perturbed divisor is expanded."""

    perturbable = (0,)

    def canonicalize(self, call):
        if call.kwargs.get("rounding_mode") is not None:
            raise call.fail("division with a rounding mode is not linear")
        return (call.arg(0, "input"), call.arg(1, "other")), {}

    def expand(self, node, perturbed, build):
        """A perturbed divisor: ``x / y = x · (1/y)``, the reciprocal on the line-fitting machine (refused where
        ``y``'s bounds reach 0), then a scaling (``x`` constant) or the bilinear product."""
        if not perturbed[1]:
            return None
        a, b = node.operands
        inverse = build.add("reciprocal", (b,))
        return build.finish("product" if perturbed[0] else "mul", (a, inverse))

    def forward(self, a, b, shapes=None) -> Tensor:
        return a / b

    def factor(self, constant: Any, like: Tensor) -> Any:
        """``1/c`` in the dtype ``x / c`` is computed in (a float32 constant of a float64 model is divided in
        float64, as the model divides)."""
        if isinstance(constant, Tensor):
            return 1.0 / constant.to(torch.result_type(like, constant))
        return 1.0 / constant
