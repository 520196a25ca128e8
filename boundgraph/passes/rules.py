"""Pass: attach to each op node its rule, and check the rule can bound it as the node is used
(which operands are perturbed). Every failure is reported at once, each naming the node, the op, the
module and the user's source line."""
from __future__ import annotations

from ..errors import UnsupportedOpError
from ..ir import SOURCE_KINDS, BoundGraph, Ref
from ..ops import RULES, Rule
from ..ops.base import Expansion
from .dead_code import eliminate_dead_nodes


def expand_perturbed(graph: BoundGraph) -> BoundGraph:
    """Rewrite each node whose rule computes it another way for the operands this program perturbs
    (``Rule.expand``: ``x * y``, ``x / y``, ``x @ y`` of two perturbed tensors become the bilinear rule's,
    ``x * sigmoid(x)`` SiLU)."""
    out = BoundGraph(output=graph.output)
    taken = set(graph.nodes)

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    for node in graph.copy():
        rule = RULES.get(node.op)
        flags = tuple(isinstance(o, Ref) and graph[o.name].perturbed for o in node.operands)
        build = Expansion(node, lambda ref: out[ref.name].shape, fresh, lambda ref: out[ref.name].perturbed,
                          lambda ref: out.nodes.get(ref.name))
        replacement = rule.expand(node, flags, build) if rule is not None and node.perturbed else None
        for new in replacement or [node]:
            out.nodes[new.name] = new
    return eliminate_dead_nodes(out)  # what a rewrite left unused (x * sigmoid(x)'s sigmoid, once it is SiLU)


def attach_rules(graph: BoundGraph) -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    failures: list[UnsupportedOpError] = []
    for node in graph:
        if node.op in SOURCE_KINDS:
            continue
        rule = RULES.get(node.op)
        if rule is None:
            failures.append(UnsupportedOpError(node.name, node.op, node.source, "no bound rule is registered",
                                               node.module))
            continue
        if node.perturbed:
            flags = tuple(isinstance(o, Ref) and graph[o.name].perturbed for o in node.operands)
            reason = rule.check(flags)
            if reason:
                failures.append(UnsupportedOpError(node.name, node.op, node.source, reason, node.module))
        rules[node.name] = rule
    if failures:
        raise UnsupportedOpError.several(failures)
    return rules
