"""Pass: mark which nodes depend on a perturbed input. Only those get bounds; everything else
(parameters, folded weights, unperturbed inputs) is computed exactly, once per call."""
from __future__ import annotations

from typing import Iterable

from ..ir import BoundGraph


def mark_perturbed(graph: BoundGraph, perturbed_inputs: Iterable[int]) -> BoundGraph:
    indices = set(perturbed_inputs)
    out = graph.copy()
    for node in out:
        if node.op == "input":
            node.perturbed = node.attrs["index"] in indices and not node.attrs.get("clean")
        else:
            node.perturbed = any(out[r].perturbed for r in node.refs())
    return out
