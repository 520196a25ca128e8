import torch
import torch.nn as nn

from boundgraph.passes import canonicalize, evaluate, propagate_shapes
from boundgraph.trace import trace


def test_shapes_and_transposed_convolution_padding_are_propagated():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.ReLU(), nn.Flatten())
    x = torch.randn(4, 1, 8, 8)
    graph = propagate_shapes(canonicalize(trace(model, (x,)), model), model, (x,))
    conv = next(n for n in graph if n.op == "conv2d")
    assert conv.shape == (4, 2, 3, 3)
    assert conv.attrs["output_padding"] == (1, 1)  # (3-1)*2 + 3 = 7, the input is 8
    reshape = next(n for n in graph if n.op == "reshape")
    assert reshape.attrs == {"shape": (18,), "in_shape": (2, 3, 3)}


def test_evaluating_the_graph_reproduces_the_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3).eval(), nn.ReLU(),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(12, 5))
    x = torch.randn(3, 2, 4, 4)
    graph = propagate_shapes(canonicalize(trace(model, (x,)), model), model, (x,))
    torch.testing.assert_close(evaluate(graph, model, (x,))[graph.output], model(x))
