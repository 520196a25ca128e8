"""Pass: attach to each op node its rule, and check the rule can bound it as the node is used
(which operands are perturbed). Failures name the node, the op and the user's source line."""
from __future__ import annotations

from ..errors import HOW_TO_REGISTER, UnsupportedOpError
from ..ir import SOURCE_KINDS, BoundGraph, Ref
from ..ops import RULES, Rule


def attach_rules(graph: BoundGraph) -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for node in graph:
        if node.op in SOURCE_KINDS:
            continue
        rule = RULES.get(node.op)
        if rule is None:
            raise UnsupportedOpError(node.name, node.op, node.source, "no rule is registered. " + HOW_TO_REGISTER)
        if node.perturbed:
            flags = tuple(isinstance(o, Ref) and graph[o.name].perturbed for o in node.operands)
            reason = rule.check(flags)
            if reason:
                raise UnsupportedOpError(node.name, node.op, node.source, reason)
        rules[node.name] = rule
    return rules
