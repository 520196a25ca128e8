"""The intermediate representation: a topologically ordered graph of canonical ops.

A node's operands are names of other nodes (``Ref``) or Python literals; its ``attrs`` hold every
non-tensor argument. Node kinds by ``op``:
- ``input``: the model's ``attrs["index"]``-th input; ``perturbed`` when its perturbation is set, unless
  ``attrs["clean"]`` (a copy that stays unperturbed, for batch statistics of the clean batch).
- ``param``: a parameter or buffer of the model, read live at every call (``attrs["path"]``).
- ``constant``: a frozen tensor or number computed once at compile time (``attrs["value"]``).
- ``spec``: the specification matrix ``C`` handed to a bound program.
- ``batch``: the batch size of the inputs (an int), for what the model computes from its shape
  (``torch.zeros(x.size(0), 16)``, ``cls_token.expand(x.shape[0], -1, -1)``): constants of every call.
- anything else: a canonical op with a rule in ``boundgraph.ops``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Iterator

from torch import Tensor

SOURCE_KINDS = ("input", "param", "constant", "spec", "batch")


class Ref(NamedTuple):
    """A reference to another node, used as an operand."""

    name: str


class Interval(NamedTuple):
    """Elementwise bounds ``lower <= z <= upper`` of a perturbed tensor."""

    lower: Tensor
    upper: Tensor

    def centre_radius(self) -> tuple[Tensor, Tensor]:
        # in place on fresh tensors: two allocations instead of four (IBP is memory-bound)
        return (self.upper + self.lower).mul_(0.5), (self.upper - self.lower).mul_(0.5)

    def sum_width(self) -> tuple[Tensor, Tensor]:
        """``(u + l, u − l)``: twice the centre and radius, for a linear map that takes the ½ into its weight
        (exactly: halving is exact in binary floating point) and saves two passes and their backward."""
        return self.upper + self.lower, self.upper - self.lower


class PerExample(NamedTuple):
    """A constant operand with one value per example (it depends on an input or on ``C``), marked so
    that LBP can repeat it for each input slice of a coefficient."""

    value: Tensor


class LinearBounds(NamedTuple):
    """Forward-mode linear bounds of a perturbed tensor in the perturbed input ``x`` (LBP, Lyu et al.
    2021): ``lower_coef·x + lower_bias ≤ z ≤ upper_coef·x + upper_bias``. A coefficient is
    ``(batch, n_x, *shape)``, one slice per input element (``n_x`` = elements of one example of ``x``),
    or ``(1, n_x, *shape)`` while it is the same for every example (up to the first nonlinearity);
    a bias is ``(batch, *shape)``."""

    lower_coef: Tensor
    lower_bias: Tensor
    upper_coef: Tensor
    upper_bias: Tensor


@dataclass
class Node:
    name: str
    op: str
    operands: tuple[Any, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    shape: tuple[int, ...] | None = None  # with the example batch size in front
    perturbed: bool = False
    module: str = ""  # path of the user's module this node came from, if any

    def refs(self) -> list[str]:
        return [o.name for o in self.operands if isinstance(o, Ref)]


@dataclass
class BoundGraph:
    nodes: dict[str, Node] = field(default_factory=dict)  # in topological order
    output: str = ""

    def add(self, node: Node) -> Node:
        if node.name in self.nodes:
            raise ValueError(f"duplicate node name {node.name!r}")
        self.nodes[node.name] = node
        return node

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self.nodes.values()))

    def fresh_name(self, base: str) -> str:
        name, k = base, 1
        while name in self.nodes:
            name, k = f"{base}_{k}", k + 1
        return name

    def users(self) -> dict[str, list[str]]:
        users: dict[str, list[str]] = {n: [] for n in self.nodes}
        for node in self.nodes.values():
            for r in node.refs():
                users[r].append(node.name)
        return users

    def ancestors(self, name: str) -> set[str]:
        """``name`` and every node it depends on."""
        seen, stack = set(), [name]
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(self.nodes[n].refs())
        return seen

    def inputs(self) -> list[Node]:
        return sorted((n for n in self if n.op == "input"), key=lambda n: n.attrs["index"])

    def copy(self) -> "BoundGraph":
        """A copy whose nodes may be edited; frozen tensors are shared, not cloned."""
        g = BoundGraph(output=self.output)
        for node in self.nodes.values():
            g.nodes[node.name] = Node(node.name, node.op, tuple(node.operands), copy.copy(node.attrs),
                                      node.source, node.shape, node.perturbed, node.module)
        return g

    def __str__(self) -> str:
        lines = []
        for n in self.nodes.values():
            ops = ", ".join(o.name if isinstance(o, Ref) else repr(o) for o in n.operands)
            attrs = {k: v for k, v in n.attrs.items() if not isinstance(v, Tensor)}
            mark = "*" if n.perturbed else " "
            lines.append(f"{mark} {n.name}: {n.op}({ops}) {attrs or ''} {list(n.shape or ())}")
        lines.append(f"  return {self.output}")
        return "\n".join(lines)
