"""Passes for batch norm: training mode's batch statistics, and folding into the layer before.

``use_batch_statistics``: a batch norm in training mode normalises with the statistics of the batch.
Bounds use those of the clean batch (as Shi et al. 2021 and auto_LiRPA do): the pass adds a clean,
unperturbed copy of everything that feeds the norm, and takes its per-channel mean and variance as
the norm's statistics, so gradients reach the parameters through them as in ``model(x)``.

``fold_batchnorm``: fold batch norm into the convolution that feeds it.

``BN(W x + b) = (W·s) x + (b·s + t)`` with ``s = γ/√(σ²+ε)``, ``t = β − μ s`` per output channel.
The folded weight and bias are new constant nodes computed from the live parameters at every call,
so training the model's parameters still trains the bounded program.

Folding changes no bound: ``|W·s| = |W|·|s|`` for a per-channel ``s``, so IBP's radius is the same either way,
and CROWN's coefficients compose exactly. It changes the cost. The fold passes over the weight, forward and
backward, and the norm left in place passes over the layer's output. A convolution's weight is smaller
than its output (CNN7's 128×64×3×3 weight against 32×128×16×16 outputs), but a linear layer's is larger
(CNN7's 32768×512 weight against 32×512 outputs, where each pass over the weight took ~30 ms, a tenth of a plain
step). So a norm after a linear layer stays a per-feature affine node.
"""
from __future__ import annotations

from ..ir import BoundGraph, Node, Ref
from .dead_code import eliminate_dead_nodes


def _foldable(graph: BoundGraph, bn: Node, users: dict[str, list[str]]) -> bool:
    source = bn.operands[0]
    if not isinstance(source, Ref) or any(not isinstance(o, Ref) for o in bn.operands[1:3]):
        return False
    layer = graph[source.name]
    if layer.op not in ("conv1d", "conv2d", "conv3d") or users[layer.name] != [bn.name]:
        return False
    params = [graph[o.name].op in ("param", "constant") for o in layer.operands[1:] if isinstance(o, Ref)]
    return all(params) and isinstance(layer.operands[1], Ref)


def use_batch_statistics(graph: BoundGraph, norms: set[str]) -> BoundGraph:
    """Rewire the batch norms named in ``norms`` to the statistics of the clean batch."""
    if not norms:
        return graph
    feeding: set[str] = set()
    for name in norms:
        feeding |= graph.ancestors(graph[name].operands[0].name)
    out = BoundGraph(output=graph.output)
    taken = set(graph.nodes)

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in taken:
            name, k = f"{base}{k}", k + 1
        taken.add(name)
        return name

    clean = {name: fresh(f"{name}_clean") for name in graph.nodes  # node -> its clean twin
             if name in feeding and graph[name].op not in ("param", "constant")}
    statistics: dict[str, tuple[Ref, Ref]] = {}  # clean node -> its batch mean and variance

    def with_statistics(node: Node, clean_input: str) -> Node:
        if clean_input not in statistics:
            mean = out.add(Node(fresh(f"{clean_input}_mean"), "bn_batch_mean", (Ref(clean_input),)))
            var = out.add(Node(fresh(f"{clean_input}_var"), "bn_batch_var", (Ref(clean_input),)))
            statistics[clean_input] = (Ref(mean.name), Ref(var.name))
        operands = list(node.operands)
        operands[1:3] = statistics[clean_input]
        return Node(node.name, node.op, tuple(operands), dict(node.attrs), node.source, node.shape, node.perturbed,
                    node.module)

    for node in graph:
        out.add(with_statistics(node, clean[node.operands[0].name]) if node.name in norms else node)
        if node.name in clean:
            attrs = dict(node.attrs, clean=True) if node.op == "input" else dict(node.attrs)
            operands = tuple(Ref(clean.get(o.name, o.name)) if isinstance(o, Ref) else o for o in node.operands)
            twin = Node(clean[node.name], node.op, operands, attrs, node.source, node.shape, module=node.module)
            out.add(with_statistics(twin, operands[0].name) if node.name in norms else twin)
    return out


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
