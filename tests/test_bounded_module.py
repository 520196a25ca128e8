import copy

import pytest
import torch
import torch.nn as nn

from boundgraph import Box, BoundedModule, L2Ball, LinfBall
from tests.helpers import DTYPE, METHODS, assert_sound, random_spec


def mlp(dtype=DTYPE, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3)).to(dtype)


def test_calling_the_bounded_module_is_calling_the_model():
    model = mlp()
    x = torch.randn(5, 4, dtype=DTYPE)
    bm = BoundedModule(model, x[:1])
    torch.testing.assert_close(bm(x), model(x))


def test_bounds_follow_the_live_parameters_and_train_them():
    model = mlp()
    x = torch.randn(3, 4, dtype=DTYPE)
    bm = BoundedModule(model, x)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for method in METHODS:
        before = bm.bounds(x, LinfBall(0.1), method=method).lower.detach().clone()
        optimizer.zero_grad()
        loss = -bm.bounds(x, LinfBall(0.1), method=method).lower.sum()
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        optimizer.step()
        after = bm.bounds(x, LinfBall(0.1), method=method).lower
        assert not torch.allclose(before, after)
        assert_sound(bm, x, LinfBall(0.1), method)


def test_state_dict_and_parameters_are_the_models():
    model = mlp()
    bm = BoundedModule(model, torch.randn(1, 4, dtype=DTYPE))
    assert [p for p in bm.parameters()] == [p for p in model.parameters()]
    assert set(bm.state_dict()) == {f"model.{k}" for k in model.state_dict()}


def test_ibp_through_a_fused_spec_equals_ibp_of_the_model_with_c_multiplied_into_its_last_layer():
    model = mlp()
    x = torch.randn(2, 4, dtype=DTYPE)
    C = random_spec(2, 5, 3, seed=1)
    fused = BoundedModule(model, x).bounds(x, LinfBall(0.2), method="ibp", C=C)
    for b in range(2):
        folded = copy.deepcopy(model)
        last = nn.Linear(6, 5).to(DTYPE)
        with torch.no_grad():
            last.weight.copy_(C[b] @ model[4].weight)
            last.bias.copy_(C[b] @ model[4].bias)
        folded[4] = last
        expected = BoundedModule(folded, x[b:b + 1]).bounds(x[b:b + 1], LinfBall(0.2), method="ibp")
        torch.testing.assert_close(fused.lower[b], expected.lower[0])
        torch.testing.assert_close(fused.upper[b], expected.upper[0])


def test_ibp_through_a_fused_spec_is_inside_ibp_followed_by_interval_arithmetic_with_c():
    model = mlp()
    x = torch.randn(2, 4, dtype=DTYPE)
    C = random_spec(2, 5, 3, seed=2)
    bm = BoundedModule(model, x)
    fused = bm.bounds(x, LinfBall(0.2), method="ibp", C=C)
    lower, upper = bm.bounds(x, LinfBall(0.2), method="ibp")
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    mid, rad = torch.einsum("bso,bo->bs", C, centre), torch.einsum("bso,bo->bs", C.abs(), radius)
    assert (fused.lower >= mid - rad - 1e-9).all() and (fused.upper <= mid + rad + 1e-9).all()


def test_bounds_are_differentiable_gradcheck_in_float64():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).to(DTYPE)
    x = torch.randn(2, 3, dtype=DTYPE)
    bm = BoundedModule(model, x)
    names = [name for name, _ in bm.named_parameters()]
    for method in METHODS:
        def bounds(x, *params):
            out = torch.func.functional_call(bm, dict(zip(names, params)), (x,),
                                             {"perturbation": LinfBall(0.05), "method": method})
            return out.lower, out.upper

        params = [p.detach().clone().requires_grad_(True) for p in bm.parameters()]
        assert torch.autograd.gradcheck(bounds, (x.clone().requires_grad_(True), *params))


def test_forward_with_a_perturbation_returns_bounds():
    model = mlp()
    x = torch.randn(2, 4, dtype=DTYPE)
    bm = BoundedModule(model, x)
    torch.testing.assert_close(bm(x, perturbation=LinfBall(0.1), method="crown"),
                               bm.bounds(x, LinfBall(0.1), method="crown"))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(3, 4), nn.Linear(2, 4), nn.Linear(4, 2)

    def forward(self, x, y):
        return self.head(torch.relu(self.a(x) - self.b(y)))


@pytest.mark.parametrize("which", ["first", "second", "both"])
def test_several_inputs_with_one_or_more_perturbed(which):
    torch.manual_seed(0)
    model = TwoInputs().to(DTYPE)
    x, y = torch.randn(3, 3, dtype=DTYPE), torch.randn(3, 2, dtype=DTYPE)
    bm = BoundedModule(model, (x, y))
    ptb = {"first": (LinfBall(0.2), None), "second": (None, L2Ball(0.3)),
           "both": (LinfBall(0.2), Box(y - 0.1, y + 0.3))}[which]
    g = torch.Generator().manual_seed(0)
    for method in METHODS:
        if which == "both" and method in ("lbp", "crown-lbp"):  # linear bounds in one input only
            with pytest.raises(ValueError, match="one perturbed input; 2 inputs are perturbed"):
                bm.bounds((x, y), ptb, method=method)
            continue
        lb, ub = bm.bounds((x, y), ptb, method=method)
        for _ in range(50):
            points = []
            for value, p in zip((x, y), ptb):
                if p is None:
                    points.append(value)
                else:
                    low, high = p.interval(value)
                    point = low + torch.rand(value.shape, generator=g, dtype=DTYPE) * (high - low)
                    if isinstance(p, L2Ball):
                        delta = point - value
                        point = value + delta * torch.clamp(0.3 / delta.norm(dim=1, keepdim=True), max=1)
                    points.append(point)
            out = model(*points)
            assert (out >= lb - 1e-9).all() and (out <= ub + 1e-9).all()


def test_per_example_radius_tensor_matches_one_call_per_example():
    model = mlp()
    x = torch.randn(3, 4, dtype=DTYPE)
    eps = torch.tensor([0.0, 0.1, 0.3], dtype=DTYPE)
    bm = BoundedModule(model, x)
    for method in METHODS:
        together = bm.bounds(x, LinfBall(eps), method=method)
        for i in range(3):
            alone = bm.bounds(x[i:i + 1], LinfBall(float(eps[i])), method=method)
            torch.testing.assert_close(together.lower[i], alone.lower[0])
    zero = bm.bounds(x[:1], LinfBall(0.0), method="crown")
    torch.testing.assert_close(zero.lower, model(x[:1]))
    torch.testing.assert_close(zero.upper, model(x[:1]))


def test_float32_models_are_bounded_in_float32():
    model = mlp(torch.float32)
    x = torch.randn(4, 4)
    bm = BoundedModule(model, x)
    for method in METHODS:
        lb, ub = assert_sound(bm, x, LinfBall(0.05, clip=(-3, 3)), method)
        assert lb.dtype == torch.float32


def test_a_data_parallel_wrapper_is_traced_through():
    model = mlp()
    bm = BoundedModule(nn.DataParallel(model), torch.randn(1, 4, dtype=DTYPE))
    x = torch.randn(2, 4, dtype=DTYPE)
    assert bm.core is model
    assert_sound(bm, x, LinfBall(0.1), "crown-ibp")


def test_beta_mixes_in_ibp_from_the_same_pass():
    model = mlp()
    x = torch.randn(3, 4, dtype=DTYPE)
    C = random_spec(3, 2, 3, seed=3)
    bm = BoundedModule(model, x)
    crown_ibp = bm.bounds(x, LinfBall(0.1), "crown-ibp", C=C)
    ibp = bm.bounds(x, LinfBall(0.1), "ibp", C=C)
    mixed = bm.bounds(x, LinfBall(0.1), "crown-ibp", C=C, beta=0.4)
    torch.testing.assert_close(mixed.lower, 0.4 * crown_ibp.lower + 0.6 * ibp.lower)
    torch.testing.assert_close(mixed.upper, 0.4 * crown_ibp.upper + 0.6 * ibp.upper)
    torch.testing.assert_close(tuple(bm.bounds(x, LinfBall(0.1), "crown-ibp", C=C, beta=0.0)), tuple(ibp))
    code = str(bm.program("crown-ibp", with_spec=True, with_ibp=True))
    assert code.count("LINEAR.interval(") == str(bm.program("ibp", with_spec=True)).count("LINEAR.interval(")
    with pytest.raises(ValueError, match="beta"):
        bm.bounds(x, LinfBall(0.1), "crown-ibp", beta=1.5)
