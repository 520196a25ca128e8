import torch
import torch.nn as nn
from hypothesis import given, strategies as st

from boundgraph import BoundedModule, L2Ball, LinfBall, certified, evaluate, pgd_attack
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
