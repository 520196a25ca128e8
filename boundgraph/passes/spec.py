"""Passes: append the output specification ``C`` (``(batch, specs, outputs)``) to the graph, fused into
the last linear layer when there is one: ``C(Wx + b) = (CW)x + Cb`` (Zhang et al. 2020; ``spec_linear``). IBP through
the fused layer is tighter than IBP followed by ``C``, and CROWN starts one layer earlier. ``fuse_loss`` then
appends the cross entropy of those margins (loss fusion, ``boundgraph/ops/loss.py``)."""
from __future__ import annotations

import math

from ..ir import BoundGraph, Node, Ref
from .dead_code import eliminate_dead_nodes


def fuse_spec(graph: BoundGraph) -> BoundGraph:
    out = graph.copy()
    last = out[out.output]
    spec = out.add(Node(out.fresh_name("spec"), "spec"))
    weight_source = last.operands[1] if last.op == "linear" and len(last.operands) == 3 else None
    fusable = (isinstance(weight_source, Ref) and not out[weight_source.name].perturbed
               and last.shape is not None and len(last.shape) == 2
               and (last.operands[2] is None or isinstance(last.operands[2], Ref)))
    if fusable:
        x, weight, bias = last.operands
        head = Node(out.fresh_name(f"{last.name}_spec"), "spec_linear", (x, Ref(spec.name), weight, bias), {},
                    last.source, None, last.perturbed)
    else:
        x = Ref(last.name)
        if last.shape is not None and len(last.shape) != 2:
            flat = (math.prod(last.shape[1:]),)
            x = Ref(out.add(Node(out.fresh_name(f"{last.name}_flat"), "reshape", (x,),
                                 {"shape": flat, "in_shape": last.shape[1:]}, last.source,
                                 (last.shape[0],) + flat, last.perturbed)).name)
        head = Node(out.fresh_name("spec_output"), "linear", (x, Ref(spec.name), None), {}, last.source,
                    None, last.perturbed)
    out.add(head)
    out.output = head.name
    return eliminate_dead_nodes(out)


def fuse_loss(graph: BoundGraph) -> BoundGraph:
    """The spec fused as ``fuse_spec`` does, then ``log(1 + Σ_i exp((C·f)_i))`` of its rows as the output: with
    ``C``'s rows ``e_j − e_y``, the cross entropy of ``f`` at label ``y``."""
    out = fuse_spec(graph)
    margins = out[out.output]
    loss = Node(out.fresh_name("fused_cross_entropy"), "fused_cross_entropy", (Ref(margins.name),), {},
                margins.source, (1, 1), margins.perturbed)
    out.add(loss)
    out.output = loss.name
    return out
