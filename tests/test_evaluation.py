import copy

import torch
import torch.nn as nn
from hypothesis import given, strategies as st

from boundgraph import Box, BoundedModule, L2Ball, LinfBall, certified, evaluate, margin_spec, pgd_attack
from tests.helpers import DTYPE


def small_classifier(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).to(DTYPE)


@given(st.integers(0, 2**16), st.sampled_from(["linf", "l2"]), st.floats(0.01, 0.5))
def test_pgd_never_breaks_an_example_a_method_certified(seed, norm, eps):
    model = small_classifier(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(32, 4, generator=g, dtype=DTYPE)
    y = model(x).argmax(1)  # every example correct at x, so only robustness decides
    ptb = LinfBall(eps, clip=(0, 1)) if norm == "linf" else L2Ball(eps)
    bm = BoundedModule(model, x)
    adversarial = pgd_attack(model, x, y, ptb, steps=20, generator=g)
    assert (ptb.project(x, adversarial) - adversarial).abs().max() < 1e-9  # stays inside the set
    broken = model(adversarial).argmax(1) != y
    for method in ("ibp", "crown-ibp", "crown"):
        assert not (broken & certified(bm, x, y, ptb, method)).any()


def test_pgd_finds_the_adversarial_example_of_a_linear_classifier():
    model = nn.Linear(2, 2).to(DTYPE)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
        model.bias.zero_()
    x, y = torch.tensor([[0.05, 0.0]], dtype=DTYPE), torch.tensor([0])
    assert model(pgd_attack(model, x, y, LinfBall(0.1), steps=10)).argmax(1).item() == 1
    assert model(pgd_attack(model, x, y, LinfBall(0.01), steps=10)).argmax(1).item() == 0


def test_evaluate_reports_ordered_error_rates():
    model = small_classifier(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 4, generator=g, dtype=DTYPE)
    y = torch.randint(0, 3, (40,), generator=g)
    bm = BoundedModule(model, x)
    batches = [(x[:20], y[:20]), (x[20:], y[20:])]
    errors = evaluate(bm, batches, LinfBall(0.05), pgd_steps=10)
    assert set(errors) == {"clean", "pgd", "verified ibp", "verified crown-ibp", "verified crown", "verified"}
    assert errors["clean"] <= errors["pgd"] <= errors["verified"] <= errors["verified crown"] <= 100
    assert errors["verified"] <= min(errors["verified ibp"], errors["verified crown-ibp"])
    assert 0 <= errors["clean"] <= 100


@torch.no_grad()
def test_a_float32_margin_that_rounding_alone_makes_positive_is_not_certified():
    """Margins placed within float32 rounding of zero: whatever sign float32 gives them, an example is
    certified only if its float64 margin is positive too (and at least one float32 sign was wrong)."""
    torch.manual_seed(0)
    y, ptb, wrong_signs = torch.tensor([0]), LinfBall(0.01), 0
    for _ in range(60):
        model, x = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)), torch.rand(1, 8)
        exact = BoundedModule(copy.deepcopy(model).double(), x.double())
        model[2].bias[0] -= float(exact.bounds(x.double(), ptb, "crown", margin_spec(y, 2, torch.float64),
                                               bound_upper=False).lower) + float(torch.rand(1)) * 4e-8  # near 0
        exact = BoundedModule(copy.deepcopy(model).double(), x.double())
        truth = float(exact.bounds(x.double(), ptb, "crown", margin_spec(y, 2, torch.float64), bound_upper=False).lower)
        bm = BoundedModule(model, x)
        rounded = float(bm.bounds(x, ptb, "crown", margin_spec(y, 2, torch.float32), bound_upper=False).lower)
        wrong_signs += rounded > 0 >= truth
        assert bool(certified(bm, x, y, ptb, "crown")) <= (truth > 0)
    assert wrong_signs > 0  # the test met the case it is about


def test_float64_margins_need_more_than_rounding_too():
    model = nn.Linear(2, 2).to(DTYPE)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([1e-14, 0.0], dtype=DTYPE))
    x, y = torch.zeros(1, 2, dtype=DTYPE), torch.tensor([0])
    bm = BoundedModule(model, x)
    assert bm.bounds(x, LinfBall(0.1), "ibp", margin_spec(y, 2, DTYPE)).lower.item() > 0
    assert not certified(bm, x, y, LinfBall(0.1), "ibp").any()
    with torch.no_grad():
        model.bias[0] = 1e-6
    assert certified(bm, x, y, LinfBall(0.1), "ibp").all()


def test_per_example_sets_are_selected_with_their_examples_for_the_float64_recheck():
    x = torch.rand(4, 3)
    ball = LinfBall(torch.tensor([0.1, 0.2, 0.3, 0.4]), clip=(torch.zeros(4, 3), torch.ones(4, 3)))
    picked = ball.select(x, torch.tensor([1, 3]))
    torch.testing.assert_close(picked.eps, torch.tensor([0.2, 0.4]))
    assert picked.clip[0].shape == (2, 3)
    box = Box(x - 0.1, x + 0.1).select(x, torch.tensor([2]))
    torch.testing.assert_close(box.lower, x[2:3] - 0.1)
