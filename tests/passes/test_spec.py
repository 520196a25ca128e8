import torch
import torch.nn as nn

from boundgraph.passes import canonicalize, evaluate, fuse_spec, mark_perturbed, propagate_shapes
from boundgraph.trace import trace
from tests.helpers import Chain


def compiled(model, x):
    graph = propagate_shapes(canonicalize(trace(model, (x,)), model), model, (x,))
    return mark_perturbed(graph, [0])


def test_spec_is_fused_into_the_last_linear_layer():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 5))
    x, C = torch.randn(2, 3), torch.randn(2, 6, 5)
    fused = fuse_spec(compiled(model, x))
    ops = [n.op for n in fused]
    assert ops.count("linear") == 1 and ops.count("spec_linear") == 1
    torch.testing.assert_close(evaluate(fused, model, (x,), C)[fused.output], torch.einsum("bso,bo->bs", C, model(x)))


def test_spec_after_a_nonlinear_output_is_a_batched_linear_layer():
    model = Chain([nn.Conv2d(1, 2, 3), nn.ReLU()])
    x = torch.randn(2, 1, 4, 4)
    C = torch.randn(2, 3, 8)
    fused = fuse_spec(compiled(model, x))
    assert fused[fused.output].op == "linear" and "reshape" in [n.op for n in fused]
    expected = torch.einsum("bso,bo->bs", C, model(x).flatten(1))
    torch.testing.assert_close(evaluate(fused, model, (x,), C)[fused.output], expected)
