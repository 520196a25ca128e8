import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from boundgraph import BoundedModule, LinfBall, margin_spec, robust_loss, worst_case_logits
from tests.helpers import DTYPE


def test_margin_spec_rows_are_true_class_minus_each_other_class():
    y = torch.tensor([2, 0])
    C = margin_spec(y, 3)
    logits = torch.tensor([[1.0, 2.0, 5.0], [4.0, 1.0, -1.0]])
    margins = torch.einsum("bso,bo->bs", C, logits)
    torch.testing.assert_close(margins, torch.tensor([[4.0, 3.0], [3.0, 5.0]]))


def test_worst_case_logits_put_zero_at_the_true_class_and_minus_the_margins_elsewhere():
    logits = worst_case_logits(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([1, 0]))
    torch.testing.assert_close(logits, torch.tensor([[-1.0, 0.0, -2.0], [0.0, -3.0, -4.0]]))


def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3)).to(DTYPE)
    x = torch.randn(4, 2, dtype=DTYPE)
    y = torch.tensor([0, 1, 2, 1])
    return model, x, y, BoundedModule(model, x)


def test_robust_loss_equals_the_hand_computed_crown_ibp_formula():
    model, x, y, bm = tiny()
    ptb, beta, kappa = LinfBall(0.1), 0.3, 0.6
    C = margin_spec(y, 3, DTYPE)
    crown_ibp = bm.bounds(x, ptb, "crown-ibp", C=C).lower
    ibp = bm.bounds(x, ptb, "ibp", C=C).lower
    margin = beta * crown_ibp + (1 - beta) * ibp
    worst = torch.zeros(4, 3, dtype=DTYPE)
    for b in range(4):
        others = [j for j in range(3) if j != y[b]]
        worst[b, others] = -margin[b]
    expected = kappa * F.cross_entropy(model(x), y) + (1 - kappa) * F.cross_entropy(worst, y)
    torch.testing.assert_close(robust_loss(bm, x, y, ptb, "crown-ibp", beta=beta, kappa=kappa), expected)
    ibp_only = F.cross_entropy(worst_case_logits(ibp, y), y)
    torch.testing.assert_close(robust_loss(bm, x, y, ptb, "ibp"), ibp_only)


def test_worst_case_cross_entropy_bounds_the_cross_entropy_of_every_perturbed_input():
    model, x, y, bm = tiny()
    ptb = LinfBall(0.2)
    bound = robust_loss(bm, x, y, ptb, "crown-ibp", beta=1.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        point = x + (torch.rand(x.shape, generator=g, dtype=DTYPE) * 2 - 1) * 0.2
        per_example = F.cross_entropy(model(point), y, reduction="none")
        worst = F.cross_entropy(worst_case_logits(bm.bounds(x, ptb, "crown-ibp", C=margin_spec(y, 3, DTYPE),
                                                              bound_upper=False).lower, y), y, reduction="none")
        assert (per_example <= worst + 1e-9).all()
    assert bound.item() > 0


def test_margin_spec_is_built_in_the_dtype_asked_for():
    assert margin_spec(torch.tensor([0, 3]), 4, torch.float64).dtype == torch.float64
    assert margin_spec(torch.tensor([0, 3]), 4).dtype == torch.get_default_dtype()


def test_crown_lbp_loss_mixes_with_ibp_by_beta():
    model, x, y, bm = tiny()
    ptb, C = LinfBall(0.1), margin_spec(y, 3, DTYPE)
    mixed = bm.bounds(x, ptb, "crown-lbp", C=C, beta=0.25).lower
    expected = 0.25 * bm.bounds(x, ptb, "crown-lbp", C=C).lower + 0.75 * bm.bounds(x, ptb, "ibp", C=C).lower
    torch.testing.assert_close(mixed, expected)
    loss, margins = robust_loss(bm, x, y, ptb, "crown-lbp", beta=0.25, return_margins=True)
    torch.testing.assert_close(margins, mixed)


# ---------------------------------------------------------------- SingleProp (Boopathy et al. 2021)

def singleprop_margins(bm, x, y, ptb):
    return robust_loss(bm, x, y, ptb, "singleprop", return_margins=True)[1]


def test_singleprop_is_a_regulariser_not_a_bound_method():
    model, x, y, bm = tiny()
    with pytest.raises(ValueError, match="not sound bounds"):
        bm.bounds(x, LinfBall(0.1), "singleprop")


def test_singleprop_deviation_is_centred_on_the_clean_output_by_hand():
    """One hidden layer by hand: ``V₁ = |W₁|ε``; through ReLU ``V₁ ← s·V₁`` with s the slope of CROWN's
    upper line on ``[z − V₁, z + V₁]`` (1 active, 0 inactive, ``u/(u−l)`` unstable); ``V₂ = |W₂|V₁``."""
    model, x, y, bm = tiny()
    eps = 0.3
    out = bm.deviations(x, LinfBall(eps))
    W1, b1, W2, b2 = model[0].weight, model[0].bias, model[2].weight, model[2].bias
    z = x @ W1.T + b1
    v = eps * W1.abs().sum(1).expand_as(z)
    lo, hi = z - v, z + v
    slope = torch.where(lo >= 0, torch.ones_like(z), torch.where(hi <= 0, torch.zeros_like(z), hi / (hi - lo)))
    centre, v2 = torch.relu(z) @ W2.T + b2, (slope * v) @ W2.abs().T
    torch.testing.assert_close(out.lower, centre - v2)
    torch.testing.assert_close(out.upper, centre + v2)
    torch.testing.assert_close((out.lower + out.upper) / 2, model(x))


def test_singleprop_equals_ibp_on_a_linear_network():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).to(DTYPE)
    x = torch.randn(3, 3, dtype=DTYPE)
    bm = BoundedModule(model, x)
    got = bm(x, deviations=LinfBall(0.2))
    want = bm.bounds(x, LinfBall(0.2), "ibp")
    torch.testing.assert_close(got.lower, want.lower)
    torch.testing.assert_close(got.upper, want.upper)


def test_singleprop_loss_is_one_extra_pass_and_trains():
    model, x, y, bm = tiny()
    loss = robust_loss(bm, x, y, LinfBall(0.1), "singleprop", kappa=0.5)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert "RELU.deviation" in str(bm.program("singleprop"))  # the nonlinear transfer is SingleProp's


@pytest.mark.parametrize("y, message", [(torch.tensor([0.0, 1.0, 2.0, 1.0]), "integer tensor"),
                                        (torch.tensor([0, 3, 1, 1]), r"in \[0, 3\)"),
                                        (torch.tensor([-1, 0, 1, 2]), r"in \[0, 3\)"),
                                        (torch.tensor([0]), r"shape \(4,\)")])
def test_labels_that_are_not_class_indices_of_the_batch_are_refused(y, message):
    model, x, _, bm = tiny()
    with pytest.raises(ValueError, match=message):
        robust_loss(bm, x, y, LinfBall(0.1))
