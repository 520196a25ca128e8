"""Pass: drop every node the output does not depend on."""
from __future__ import annotations

from ..ir import BoundGraph


def eliminate_dead_nodes(graph: BoundGraph) -> BoundGraph:
    live = graph.ancestors(graph.output)
    out = graph.copy()
    out.nodes = {name: node for name, node in out.nodes.items() if name in live or node.op == "input"}
    return out
