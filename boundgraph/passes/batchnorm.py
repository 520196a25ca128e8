"""Pass: fold eval-mode batch norm into the convolution or linear layer that feeds it.

``BN(W x + b) = (W·s) x + (b·s + t)`` with ``s = γ/√(σ²+ε)``, ``t = β − μ s`` per output channel.
The folded weight and bias are new constant nodes computed from the live parameters at every call,
so training the model's parameters still trains the bounded program.
"""
from __future__ import annotations

from ..ir import BoundGraph, Node, Ref
from .dead_code import eliminate_dead_nodes


def _foldable(graph: BoundGraph, bn: Node, users: dict[str, list[str]]) -> bool:
    source = bn.operands[0]
    if not isinstance(source, Ref) or any(not isinstance(o, Ref) for o in bn.operands[1:3]):
        return False
    layer = graph[source.name]
    if layer.op not in ("conv2d", "linear") or users[layer.name] != [bn.name]:
        return False
    if layer.op == "linear" and (layer.shape is None or len(layer.shape) != 2):
        return False  # channel dimension 1 is the linear layer's output only for (batch, features)
    params = [graph[o.name].op in ("param", "constant") for o in layer.operands[1:] if isinstance(o, Ref)]
    return all(params) and isinstance(layer.operands[1], Ref)


def fold_batchnorm(graph: BoundGraph) -> BoundGraph:
    out = graph.copy()
    users = out.users()
    for bn in out:
        if bn.op != "batch_norm" or not _foldable(out, bn, users):
            continue
        layer = out[bn.operands[0].name]
        x, weight, bias = layer.operands
        stats = tuple(bn.operands[1:])
        w = Node(out.fresh_name(f"{layer.name}_folded_weight"), "bn_fold_weight", (weight,) + stats,
                 {"eps": bn.attrs["eps"]}, bn.source, out[weight.name].shape)
        b = Node(out.fresh_name(f"{layer.name}_folded_bias"), "bn_fold_bias", (bias,) + stats,
                 {"eps": bn.attrs["eps"]}, bn.source)
        folded = Node(bn.name, layer.op, (x, Ref(w.name), Ref(b.name)), dict(layer.attrs),
                      layer.source, bn.shape, bn.perturbed)
        nodes = {}
        for name, node in out.nodes.items():
            if name == bn.name:
                nodes[w.name], nodes[b.name], nodes[name] = w, b, folded
            else:
                nodes[name] = node
        out.nodes = nodes
    return eliminate_dead_nodes(out)
