import torch
import torch.nn as nn

from boundgraph.passes import canonicalize, evaluate, fold_batchnorm, propagate_shapes
from boundgraph.trace import trace
from tests.helpers import randomize_bn


def compiled(model, x):
    return propagate_shapes(canonicalize(trace(model, (x,)), model), model, (x,))


def test_batchnorm_after_conv_is_folded_and_computes_the_same():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), randomize_bn(nn.BatchNorm2d(3), g), nn.ReLU()).eval()
    x = torch.randn(2, 2, 5, 5)
    graph = compiled(model, x)
    folded = fold_batchnorm(graph)
    ops = [n.op for n in folded]
    assert "batch_norm" not in ops and ops.count("conv2d") == 1
    assert {"bn_fold_weight", "bn_fold_bias"} <= set(ops)
    torch.testing.assert_close(evaluate(folded, model, (x,))[folded.output], model(x))


def test_folded_weights_follow_the_live_parameters():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), randomize_bn(nn.BatchNorm2d(3), g)).eval()
    x = torch.randn(2, 2, 5, 5)
    folded = fold_batchnorm(compiled(model, x))
    assert "bn_fold_weight" in [n.op for n in folded]
    with torch.no_grad():
        model[1].weight.mul_(3.0)
        model[0].bias.add_(1.0)
    torch.testing.assert_close(evaluate(folded, model, (x,))[folded.output], model(x))


def test_batchnorm_after_a_linear_layer_stays_a_per_feature_affine_with_the_folded_bounds():
    """Not folded (its weight is larger than its output), and IBP gives the bounds of the folded layer:
    ``|W·s| r = |s| (|W| r)``."""
    from boundgraph import BoundedModule, LinfBall
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), randomize_bn(nn.BatchNorm1d(4), g)).eval().double()
    x = torch.randn(3, 5, dtype=torch.float64)
    assert "batch_norm" in [n.op for n in fold_batchnorm(compiled(model, x))]
    bn = model[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Linear(5, 4).double()
    with torch.no_grad():
        fused.weight.copy_(model[0].weight * scale[:, None])
        fused.bias.copy_((model[0].bias - bn.running_mean) * scale + bn.bias)
    ball = LinfBall(0.1)
    with torch.no_grad():
        lower, upper = BoundedModule(model, x)(x, perturbation=ball, method="ibp")
        expected = BoundedModule(fused, x)(x, perturbation=ball, method="ibp")
    torch.testing.assert_close((lower, upper), tuple(expected))


def test_batchnorm_with_a_shared_input_is_not_folded():
    g = torch.Generator().manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.bn = nn.Linear(3, 4), randomize_bn(nn.BatchNorm1d(4), g)

        def forward(self, x):
            h = self.fc(x)
            return self.bn(h) + h

    model = Net().eval()
    x = torch.randn(2, 3)
    assert "batch_norm" in [n.op for n in fold_batchnorm(compiled(model, x))]
