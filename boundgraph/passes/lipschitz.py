"""Pass (an analysis): an upper bound on the global L2 Lipschitz constant of every node of a graph
with respect to its one perturbed input, for GloRo (Leino et al. 2021).

Composition by the chain rule and the triangle inequality: a node affine in one perturbed operand,
``z = L(x) + c``, has ``K_z = ‖L‖₂·K_x`` (affine in several, ``cat`` say: ``Σ ‖L_i‖₂·K_i``); a sum ``a + αb`` of
two has ``K_a + |α|·K_b``; an elementwise
nonlinearity has its rule's largest slope times ``K_x``. The operator norm ``‖L‖₂`` of any affine rule
comes from its own ``forward`` (``Lv``) and ``backward`` (``Lᵀu``, e.g. the transposed convolution):
- power iteration on ``LᵀL`` with an input-shaped iterate kept between calls (one or a few steps per
  training step, as GloRo trains), giving ``‖L v‖`` for the unit iterate ``v`` (differentiable in the
  parameters; a lower estimate that converges to ``‖L‖₂``);
- or, with ``exact=True`` (for certificates), the largest singular value of ``L``'s dense matrix in
  float64, built from ``L`` applied to the standard basis, times ``1 + 1e-6``.
An op whose rule gives no bound raises ``UnsupportedOpError``: nothing is assumed to be 1.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UnsupportedOpError
from ..ir import SOURCE_KINDS, BoundGraph, Ref
from ..ops import Nonlinear, Rule
from .shapes import operand_value, source_value

EXACT_LIMIT = 2e8  # entries of a dense operator matrix, for exact norms
SAFETY = 1 + 1e-6


def lipschitz_constants(graph: BoundGraph, rules: dict[str, Rule], model: nn.Module, iterates: dict[str, Tensor],
                        iterations: int = 1, exact: bool = False, upto: str | None = None) -> dict[str, Tensor]:
    """``K`` (a scalar tensor) for every perturbed node that ``upto`` (default: the output) depends on."""
    inputs = [n for n in graph.inputs() if n.perturbed]
    if len(inputs) != 1:
        raise ValueError(f"a global Lipschitz bound needs exactly one perturbed input; {len(inputs)} are perturbed")
    cone = graph.ancestors(upto or graph.output)
    values = constant_values(graph, rules, model, cone)
    K: dict[str, Any] = {}
    for node in graph:
        if node.name not in cone or not node.perturbed:
            continue
        if node.op == "input":
            K[node.name] = 1.0
            continue
        rule = rules[node.name]
        perturbed = [i for i, o in enumerate(node.operands) if isinstance(o, Ref) and graph[o.name].perturbed]
        if isinstance(rule, Nonlinear):
            constant = rule.lipschitz_of(**node.attrs)
            if constant is None:
                raise UnsupportedOpError(node.name, node.op, node.source, "its rule gives no Lipschitz constant "
                                                                          "(set `lipschitz` on the rule)")
            K[node.name] = constant * K[node.operands[0].name]
        elif node.op == "add" and len(perturbed) == 2:
            a, b = (node.operands[i].name for i in perturbed)
            K[node.name] = K[a] + abs(node.attrs.get("alpha", 1)) * K[b]
        else:  # affine in each perturbed operand (cat, stack, ...): K = Σ ‖L_i‖·K_i by the triangle inequality
            total: Any = 0.0
            for i in perturbed:
                source = graph[node.operands[i].name]
                others = {j: graph[node.operands[j].name].shape[1:] for j in perturbed if j != i}
                operator = _Operator(rule, node.operands, node.attrs, i, values, source.shape[1:], others)
                key = node.name if len(perturbed) == 1 else f"{node.name}:{i}"
                norm = operator.exact_norm(node.name) if exact else operator.power_norm(key, iterates, iterations)
                total = total + norm * K[source.name]
            K[node.name] = total
    return K


def constant_values(graph: BoundGraph, rules: dict[str, Rule], model: nn.Module, names: set[str]) -> dict[str, Any]:
    """The value of every unperturbed node among ``names`` (parameters, and what is computed from them
    alone); one that depends on an unperturbed input has no value independent of the input."""
    values: dict[str, Any] = {}
    for node in graph:
        if node.name not in names or node.perturbed:
            continue
        if node.op in ("input", "spec", "batch"):
            raise UnsupportedOpError(node.name, node.op, node.source, "a global Lipschitz bound cannot depend "
                                                                      "on an unperturbed input or the batch size")
        if node.op in SOURCE_KINDS:
            values[node.name] = source_value(node, model, ())
        else:
            operands = [operand_value(values, o) for o in node.operands]
            values[node.name] = rules[node.name].forward(*operands, **node.attrs)
    return values


class _Operator:
    """The linear part ``L`` of a node affine in its ``index``-th operand, the others fixed."""

    def __init__(self, rule: Rule, operands: tuple, attrs: dict, index: int, values: dict, in_shape: tuple,
                 others: dict | None = None) -> None:
        self.rule, self.attrs, self.index, self.in_shape = rule, attrs, index, tuple(in_shape)
        self.others = others or {}  # the other perturbed operands' positions and shapes: zero in L_i, None in Lᵀ
        self.operands = [None if k == index or k in self.others else operand_value(values, o)
                         for k, o in enumerate(operands)]

    def apply(self, v: Tensor) -> Tensor:
        """``L v`` for a batch of input-shaped ``v``."""
        def run(x: Tensor) -> Tensor:
            ops = list(self.operands)
            ops[self.index] = x
            for k, shape in self.others.items():
                ops[k] = x.new_zeros(x.shape[0], *shape)
            return self.rule.forward(*ops, **self.attrs)
        return run(v) - run(torch.zeros_like(v[:1]))

    def transpose(self, u: Tensor) -> Tensor:
        """``Lᵀ u`` by the rule's CROWN ``backward`` (one spec row per vector)."""
        ops = list(self.operands)
        ops[self.index] = None
        back, _ = self.rule.backward(u.unsqueeze(1), *ops, **self.attrs)
        return back[self.index].squeeze(1)

    def power_norm(self, key: str, iterates: dict[str, Tensor], iterations: int) -> Tensor:
        tensors = [o for o in self.operands if isinstance(o, Tensor) and o.is_floating_point()]
        dtype, device = (tensors[0].dtype, tensors[0].device) if tensors else (torch.get_default_dtype(), None)
        v = iterates.get(key)
        if v is None or tuple(v.shape[1:]) != self.in_shape:
            v = torch.randn(1, *self.in_shape, generator=torch.Generator().manual_seed(0))
        v = v.to(dtype=dtype, device=device)
        with torch.no_grad():
            for _ in range(iterations):
                v = self.transpose(self.apply(v))
                v = v / v.norm().clamp(min=1e-30)
        iterates[key] = v.detach()
        return self.apply(v).norm()

    def exact_norm(self, name: str) -> Tensor:
        n = math.prod(self.in_shape)
        self.operands = [o.double() if isinstance(o, Tensor) and o.is_floating_point() else o for o in self.operands]
        basis = torch.eye(n, dtype=torch.float64).reshape(n, *self.in_shape)
        out = self.apply(basis[:1])
        if n * out[0].numel() > EXACT_LIMIT:
            raise ValueError(f"node {name}: its {n}×{out[0].numel()} operator is too large for an exact norm; "
                             "use exact=False (power iteration)")
        matrix = self.apply(basis).reshape(n, -1)
        return torch.linalg.matrix_norm(matrix, ord=2) * SAFETY
