import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, strategies as st

from boundgraph import BoundedModule, LinfBall
from boundgraph.ops import RULES
from tests.helpers import DTYPE, METHODS, randomize_bn, assert_adjoint, assert_sound, assert_sound_all_methods, perturbations


@given(st.integers(0, 2**16), st.booleans(), st.data())
def test_batchnorm2d_after_relu_is_bounded_by_its_own_rule(seed, affine, data):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(2, affine=affine)
    if affine:
        randomize_bn(bn, g)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), bn, nn.Flatten(), nn.Linear(2 * 3 * 3, 2)).to(DTYPE).eval()
    x0 = torch.randn(2, 1, 5, 5, dtype=DTYPE)
    assert "batch_norm" in [n.op for n in BoundedModule(model, x0).graph]  # not foldable: relu in between
    assert_sound_all_methods(model, x0, data.draw(perturbations(x0)))


@given(st.integers(0, 2**16), st.data())
def test_batchnorm1d_after_a_linear_layer_is_sound(seed, data):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), randomize_bn(nn.BatchNorm1d(4), g), nn.ReLU(), nn.Linear(4, 2))
    model = model.to(DTYPE).eval()
    x0 = torch.randn(3, 3, dtype=DTYPE)
    assert "batch_norm" in [n.op for n in BoundedModule(model, x0).graph]  # not folded (passes.batchnorm)
    assert_sound_all_methods(model, x0, data.draw(perturbations(x0)))


def test_functional_batch_norm_with_running_stats_is_sound():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 4)
            self.register_buffer("mean", torch.randn(4))
            self.register_buffer("var", torch.rand(4) + 0.5)

        def forward(self, x):
            return F.batch_norm(torch.relu(self.fc(x)), self.mean, self.var, training=False, eps=1e-3)

    from boundgraph import LinfBall
    assert_sound_all_methods(Net().to(DTYPE), torch.randn(2, 3, dtype=DTYPE), LinfBall(0.2))


def test_batchnorm_backward_is_the_transpose():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, generator=g, dtype=DTYPE)
    stats = [torch.randn(3, generator=g, dtype=DTYPE), torch.rand(3, generator=g, dtype=DTYPE) + 0.1,
             torch.randn(3, generator=g, dtype=DTYPE), torch.randn(3, generator=g, dtype=DTYPE)]
    assert_adjoint(RULES["batch_norm"], x, tuple(stats), dict(eps=1e-5, ndim=4))


def frozen_to_batch_statistics(model, x):
    """An eval-mode copy of ``model`` whose norms use the statistics ``x``'s batch gives them: the
    function that bounds in training mode cover."""
    import copy
    frozen = copy.deepcopy(model).train()
    captured = {}
    hooks = [m.register_forward_hook(lambda m, inp, out: captured.__setitem__(m, inp[0].detach()))
             for m in frozen.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        frozen(x)
    for h in hooks:
        h.remove()
    for m, h in captured.items():
        dims = [0] + list(range(2, h.dim()))
        m.running_mean.copy_(h.mean(dims))
        m.running_var.copy_(h.var(dims, unbiased=False))
    return frozen.eval()


@given(st.integers(0, 2**16), st.data())
def test_batchnorm_in_training_mode_bounds_the_net_normalised_by_the_clean_batch(seed, data):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 3), nn.ReLU(),
                          nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 2 * 2, 4), nn.BatchNorm1d(4), nn.ReLU(),
                          nn.Linear(4, 2)).to(DTYPE).train()
    x0 = torch.randn(5, 1, 6, 6, dtype=DTYPE)
    ptb = data.draw(perturbations(x0))
    bm = BoundedModule(model, x0)
    frozen = frozen_to_batch_statistics(model, x0)
    reference = BoundedModule(frozen, x0)
    for method in METHODS:
        lb, ub = assert_sound(bm, x0, ptb, method, n=6, seed=seed)  # the graph normalised by the clean batch
        expected = reference.bounds(x0, ptb, method=method)
        torch.testing.assert_close((lb, ub), tuple(expected))  # the same bounds as the frozen net's
        assert_sound(reference, x0, ptb, method, n=6, seed=seed, pgd=False)


def test_training_mode_bounds_send_gradients_through_the_batch_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).to(DTYPE).train()
    x = torch.randn(6, 3, dtype=DTYPE)
    bm = BoundedModule(model, x)
    running = model[1].running_mean.clone()
    bm.bounds(x, LinfBall(0.1), method="crown-ibp").lower.sum().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0
    assert torch.equal(model[1].running_mean, running)  # bounds leave the running statistics alone
    assert "BN_BATCH_VAR.forward(" in str(bm.program("crown-ibp", batch_statistics=["_1"]))
