"""GloRo: globally-robust networks (Leino et al., ICML 2021).

With ``K`` an upper bound on the L2 Lipschitz constant of the features ``h`` feeding the last linear
layer ``y = Wh + b`` (``boundgraph.passes.lipschitz``), the margin ``y_j − y_i`` changes by at most
``K_ij·‖δ‖₂`` with ``K_ij = K·‖w_j − w_i‖₂``. GloRo adds a bottom logit ``y_⊥ = max_{i≠j}(y_i + ε·K_ij)``
(``j`` the predicted class) and trains with cross entropy over the ``classes + 1`` logits: a point the
network classifies as ``j`` with ``y_j > y_⊥`` is robust within L2 radius ε. The certified radius is
``min_{i≠j}(y_j − y_i)/K_ij``; VRA (verified-robust accuracy) counts points correct and certified.
If the model does not end in a linear layer, ``K_ij = √2·K_output``.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bounded_module import BoundedModule, unwrap
from .passes import attach_rules, mark_perturbed
from .passes.lipschitz import constant_values, lipschitz_constants


def pairwise_lipschitz(bm: BoundedModule, iterations: int = 1, exact: bool = False) -> Tensor:
    """``K_ij`` (``classes × classes``, zero diagonal): an upper bound on the L2 Lipschitz constant of
    ``y_i − y_j``. ``exact=False``: power iteration (``iterations`` steps per call, iterates kept on
    ``bm`` between calls: GloRo's training estimate); ``exact=True``: exact layer norms (certificates)."""
    bm = unwrap(bm)
    bm.check_model()
    if any(module.training for _, module in bm._norms):
        raise ValueError("GloRo bounds the Lipschitz constant of the network with batch norm's running statistics; "
                         "in training mode batch norm divides by each batch's statistics, which no global bound "
                         "covers: call model.eval() on the batch norms, or train without batch norm")
    if "_lipschitz_graph" not in bm.__dict__:  # compiled once per model, like its bound programs
        graph = mark_perturbed(bm.graph, [0])
        bm.__dict__["_lipschitz_graph"] = graph, attach_rules(graph)
    graph, rules = bm.__dict__["_lipschitz_graph"]
    out = graph[graph.output]
    head = out.op == "linear" and graph[out.operands[0].name].perturbed and not graph[out.operands[1].name].perturbed
    upto = out.operands[0].name if head else graph.output
    iterates = bm.__dict__.setdefault("_lipschitz_iterates", {})
    K = lipschitz_constants(graph, rules, bm.core, iterates, iterations, exact, upto)[upto]
    if not head:
        classes = bm.output_shape[0]
        eye = torch.eye(classes)
        return (2 ** 0.5) * K * (1 - eye)
    weight_node = out.operands[1].name
    weight = constant_values(graph, rules, bm.core, graph.ancestors(weight_node))[weight_node]
    if exact:
        weight = weight.double()
    diff = weight.unsqueeze(0) - weight.unsqueeze(1)  # (classes, classes, features)
    return K * diff.pow(2).sum(-1).clamp(min=1e-30).sqrt() * (1 - torch.eye(weight.shape[0], dtype=weight.dtype))


def gloro_logits(bm: BoundedModule, x: Tensor, eps: float, iterations: int = 1, exact: bool = False,
                 K: Tensor | None = None) -> Tensor:
    """``(batch, classes + 1)``: the model's logits and the bottom logit ``max_{i≠j}(y_i + ε·K_ij)``."""
    y = bm(x)
    K = pairwise_lipschitz(bm, iterations, exact) if K is None else K
    K = K.to(y.dtype)
    predicted = y.argmax(1)
    reach = y + eps * K[predicted]  # (batch, classes): y_i + ε K_{j i}
    reach = reach.masked_fill(F.one_hot(predicted, y.shape[1]).bool(), float("-inf"))
    return torch.cat([y, reach.max(1, keepdim=True).values], 1)


def certified_radius(bm: BoundedModule, x: Tensor, K: Tensor | None = None) -> Tensor:
    """Per example, ``min_{i≠j}(y_j − y_i)/K_ij`` for the predicted class ``j`` (exact norms by default):
    no L2 perturbation smaller than this changes the prediction."""
    K = pairwise_lipschitz(bm, exact=True) if K is None else K
    with torch.no_grad():
        y = bm(x).to(K.dtype)
        predicted = y.argmax(1)
        gaps = (y.gather(1, predicted.unsqueeze(1)) - y) / K[predicted]
        return gaps.masked_fill(F.one_hot(predicted, y.shape[1]).bool(), float("inf")).min(1).values


class GloroLoss(nn.Module):
    """Cross entropy over the GloRo logits (the label is never ⊥): ``GloroLoss(eps)(bm, x, y)``."""

    def __init__(self, eps: float, iterations: int = 1) -> None:
        super().__init__()
        self.eps, self.iterations = eps, iterations

    def forward(self, bm: BoundedModule, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(gloro_logits(bm, x, self.eps, self.iterations), y)


@torch.no_grad()
def vra(bm: BoundedModule, batches: Iterable[tuple[Tensor, Tensor]], eps: float) -> dict[str, float]:
    """Clean accuracy and verified-robust accuracy (correct and certified radius > ε), in percent,
    with exact layer norms."""
    K = pairwise_lipschitz(bm, exact=True)
    correct = certified = total = 0
    for x, y in batches:
        right = bm(x).argmax(1) == y
        correct += int(right.sum())
        certified += int((right & (certified_radius(bm, x, K) > eps)).sum())
        total += len(y)
    return {"clean accuracy": 100.0 * correct / max(total, 1), "vra": 100.0 * certified / max(total, 1)}
