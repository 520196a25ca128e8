import torch
import torch.nn as nn

from boundgraph.passes import canonicalize, mark_perturbed
from boundgraph.trace import trace


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 2), nn.Linear(4, 2)

    def forward(self, x, y):
        return self.a(x) + self.b(y)


def test_only_nodes_downstream_of_perturbed_inputs_are_marked():
    model = TwoInputs()
    graph = canonicalize(trace(model, (torch.randn(1, 3), torch.randn(1, 4))), model)
    marked = mark_perturbed(graph, [1])
    perturbed = {n.name for n in marked if n.perturbed}
    assert perturbed == {"y", "b", "add"}
    assert not any(n.perturbed for n in mark_perturbed(graph, []))
