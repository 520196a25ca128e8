"""GloRo (Leino et al. 2021): the Lipschitz pass bounds every observed difference quotient, the
certified radius is never beaten by a PGD-L2 attack, and what it cannot bound it refuses."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import given

from boundgraph import BoundedModule, L2Ball, UnsupportedOpError, pgd_attack
from boundgraph.gloro import GloroLoss, certified_radius, gloro_logits, pairwise_lipschitz, vra
from boundgraph.ops import Lines, Nonlinear, rule
from tests.helpers import DTYPE, cnns, mlps


def assert_k_bounds_observed_quotients(model, x0, pairs=400, seed=0):
    bm = BoundedModule(model, x0)
    K = pairwise_lipschitz(bm, exact=True)
    g = torch.Generator().manual_seed(seed)
    classes = K.shape[0]
    worst = torch.zeros_like(K)
    for scale in (1e-3, 0.1, 1.0, 5.0):
        a = x0[:1] + torch.randn(pairs, *x0.shape[1:], generator=g, dtype=DTYPE) * 3
        b = a + torch.randn(a.shape, generator=g, dtype=DTYPE) * scale
        with torch.no_grad():
            ya, yb = model(a), model(b)
        distance = (a - b).flatten(1).norm(dim=1).view(-1, 1, 1)
        change = ((ya - yb).unsqueeze(2) - (ya - yb).unsqueeze(1)).abs() / distance  # |Δ(y_i − y_j)|/‖δ‖
        worst = torch.maximum(worst, change.max(0).values)
    assert (worst <= K * (1 + 1e-9) + 1e-12).all(), f"observed {worst} above K {K}"
    assert classes == model(x0).shape[1]
    return K, worst


@given(mlps())
def test_k_bounds_every_observed_difference_quotient_of_random_mlps(model_x0):
    assert_k_bounds_observed_quotients(*model_x0)


@given(cnns())
def test_k_bounds_every_observed_difference_quotient_of_random_cnns(model_x0):
    assert_k_bounds_observed_quotients(*model_x0)


def test_k_is_exact_for_a_single_linear_layer():
    torch.manual_seed(0)
    model = nn.Linear(5, 4).to(DTYPE)
    x0 = torch.randn(2, 5, dtype=DTYPE)
    K = pairwise_lipschitz(BoundedModule(model, x0), exact=True)
    w = model.weight
    for i in range(4):
        for j in range(4):
            assert K[i, j].item() == pytest.approx((w[i] - w[j]).norm().item() * (i != j), rel=1e-5)


def test_power_iteration_converges_to_the_exact_norms_and_keeps_its_iterates():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(27, 6), nn.ReLU(),
                          nn.Linear(6, 3)).to(DTYPE)
    bm = BoundedModule(model, torch.randn(2, 1, 7, 7, dtype=DTYPE))
    first = pairwise_lipschitz(bm, iterations=1)
    for _ in range(100):
        estimate = pairwise_lipschitz(bm, iterations=1)  # one step per call, continuing from the last
    exact = pairwise_lipschitz(bm, exact=True)
    assert (first <= exact * (1 + 1e-9)).all()
    torch.testing.assert_close(estimate, exact, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_the_certified_radius_is_never_beaten_by_pgd_l2(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).to(DTYPE)
    x = torch.randn(64, 4, dtype=DTYPE)
    bm = BoundedModule(model, x)
    radius = certified_radius(bm, x)
    predicted = model(x).argmax(1)
    adversarial = pgd_attack(model, x, predicted, L2Ball(radius * 0.999), steps=100, restarts=3)
    assert ((adversarial - x).norm(dim=1) <= radius + 1e-9).all()
    assert (model(adversarial).argmax(1) == predicted).all()
    # and GloRo's bottom logit agrees: certified at ε exactly when the radius exceeds ε
    ordered = radius.sort().values
    eps = ((ordered[31] + ordered[32]) / 2).item()  # between two radii: no ties
    logits = gloro_logits(bm, x, eps, exact=True)
    torch.testing.assert_close(logits[:, :3], model(x))
    assert ((logits.argmax(1) != 3) == (radius > eps)).all()


def test_gloro_loss_trains_k_through_the_parameters_and_vra_counts():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    x = torch.randn(256, 2)
    y = (x[:, 0] > 0).long()
    x = x + (y.float() * 2 - 1).unsqueeze(1) * torch.tensor([1.0, 0.0])  # a margin of 2 between classes
    bm = BoundedModule(model, x)
    loss_fn = GloroLoss(eps=0.3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    before = vra(bm, [(x, y)], 0.3)["vra"]
    for _ in range(300):
        optimizer.zero_grad()
        loss = loss_fn(bm, x, y)
        loss.backward()
        optimizer.step()
    after = vra(bm, [(x, y)], 0.3)
    assert after["vra"] > max(before, 80.0) and after["clean accuracy"] >= after["vra"]


class _NoLipschitz(nn.Module):
    def forward(self, x):
        return torch.tanh(x)


@rule("test_tanh_without_lipschitz", spellings=(_NoLipschitz,))
class _TanhRule(Nonlinear):
    def forward(self, x):
        return torch.tanh(x)

    def lines(self, lower, upper, strategy):
        return Lines(torch.zeros_like(lower), torch.tanh(lower), torch.zeros_like(lower), torch.tanh(upper))


def test_an_op_without_a_lipschitz_bound_is_refused_not_assumed_one():
    model = nn.Sequential(nn.Linear(2, 3), _NoLipschitz(), nn.Linear(3, 2))
    bm = BoundedModule(model, torch.randn(2, 2))
    with pytest.raises(UnsupportedOpError, match="test_tanh_without_lipschitz.*Lipschitz"):
        pairwise_lipschitz(bm)


class NormalisedHead(nn.Module):
    """A head whose weight is computed from a parameter (rows of unit norm)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.ReLU())
        self.w = nn.Parameter(torch.randn(3, 6))

    def forward(self, x):
        return nn.functional.linear(self.body(x), self.w / self.w.norm(dim=1, keepdim=True))


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3), nn.BatchNorm1d(3)).eval(),
    NormalisedHead,
])
def test_a_head_computed_from_parameters_or_followed_by_batch_norm_has_its_lipschitz_bounds(make):
    torch.manual_seed(0)
    model = make().to(DTYPE)
    if isinstance(model, nn.Sequential):
        with torch.no_grad():
            model[3].running_var.uniform_(0.2, 2.0)
            model[3].weight.normal_()
    assert_k_bounds_observed_quotients(model, torch.randn(2, 4, dtype=DTYPE))


def test_batch_norm_in_training_mode_is_refused_not_bounded_with_running_statistics():
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).to(DTYPE)
    bm = BoundedModule(model, torch.randn(2, 4, dtype=DTYPE))
    model.train()
    with pytest.raises(ValueError, match="batch norm"):
        pairwise_lipschitz(bm)
    model.eval()
    assert pairwise_lipschitz(bm).shape == (3, 3)
