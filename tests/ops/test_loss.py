"""Loss fusion (``boundgraph/ops/loss.py``): the fused cross entropy is an upper bound of the worst-case loss for every
method, on random models of every family (batch norm training included), equals the margins' loss where the method's
intervals are the margins' bounds, never overflows, trains, and mixes with IBP and the natural loss as documented."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings

from boundgraph import BoundedModule, LinfBall, check, margin_spec, robust_loss
from boundgraph.losses import worst_case_logits
from tests.helpers import DTYPE, METHODS, assert_sound, cases, random_spec


def _spec(bm: BoundedModule, x: torch.Tensor, seed: int) -> torch.Tensor:
    """Rows ``e_j − e_y`` of random labels for a logits output, random rows for any other output."""
    outputs = math.prod(bm.output_shape)
    if len(bm.output_shape) == 1 and outputs > 1:
        y = torch.randint(0, outputs, (x.shape[0],), generator=torch.Generator().manual_seed(seed))
        return -margin_spec(y, outputs, x.dtype)
    return random_spec(x.shape[0], 3, outputs, seed).to(x.dtype)


@settings(max_examples=30, deadline=None)
@given(cases())
def test_the_fused_loss_bounds_the_loss_at_every_sampled_point_for_every_method(case):
    """``log(1 + Σ_i exp((C·f(x'))_i))`` lies inside the fused bounds at random points, corners and PGD's extremes,
    and so does every interval and line on the way (the fused node's lines: between exp's chords and tangents)."""
    bm = BoundedModule(case.model, case.x0)
    C = _spec(bm, case.x0, 0)
    for method in METHODS:
        assert_sound(bm, case.x0, case.perturbation, method, C, n=8, loss_fusion=True)


def _model(seed: int = 0, scale: float = 1.0, dtype=DTYPE):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 5)).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(7, 6, generator=g, dtype=dtype)
    y = torch.randint(0, 5, (7,), generator=g)
    return model, x, y, BoundedModule(model, x)


def test_ibp_and_lbp_fused_losses_are_the_losses_of_their_margins():
    """Their output interval is the fused node's exact range over the margins' box: ``CE(−m, y)`` with m their
    margins' lower bounds."""
    model, x, y, bm = _model()
    for method in ("ibp", "lbp"):
        torch.testing.assert_close(robust_loss(bm, x, y, LinfBall(0.2), method, fused=True),
                                   robust_loss(bm, x, y, LinfBall(0.2), method), msg=method)


@pytest.mark.parametrize("seed", range(4))
def test_fused_crown_is_no_looser_than_crowns_margins_and_fused_crown_ibp_no_looser_than_ibp(seed):
    """Full CROWN bounds every margin before the fused node (its range then is CE(−m_crown)); CROWN-IBP's fused bound
    is intersected with the range over IBP's margins (IBP's loss)."""
    model, x, y, bm = _model(seed)
    ptb = LinfBall(0.15)
    per_example = lambda method, fused: (robust_loss(bm, x, y, ptb, method, fused=True, return_margins=True)[1][:, 0]
                                         if fused else F.cross_entropy(worst_case_logits(
                                             robust_loss(bm, x, y, ptb, method, return_margins=True)[1], y), y,
                                             reduction="none"))
    assert (per_example("crown", True) <= per_example("crown", False) + 1e-9).all()
    assert (per_example("crown-ibp", True) <= per_example("ibp", False) + 1e-9).all()
    assert (per_example("crown-ibp", True) >= F.cross_entropy(model(x), y, reduction="none") - 1e-9).all()


def test_the_fused_program_sweeps_one_row():
    model, x, y, bm = _model()
    program = bm.program("crown-ibp", with_spec=True, bound_lower=False, loss_fusion=True)
    code = str(program)
    assert "identity_start(input_1_x, (1,), lower=False, upper=True)" in code, code
    assert "FUSED_CROSS_ENTROPY.finish" in code
    bound = bm.bounds(x, LinfBall(0.1), "crown-ibp", -margin_spec(y, 5, DTYPE), bound_lower=False, loss_fusion=True)
    assert bound.lower is None and bound.upper.shape == (7, 1)


def test_the_fused_loss_of_huge_logits_is_finite_and_sound_in_float32():
    """Margins' intervals ~1e5 wide: ``exp`` of them overflows float32, the shifted lines do not."""
    model, x, y, bm = _model(scale=40.0, dtype=torch.float32)
    ptb = LinfBall(0.5)
    assert float(model(x).detach().abs().max()) > 1e3
    for method in ("ibp", "crown-ibp", "crown", "crown-lbp"):
        loss, bound = robust_loss(bm, x, y, ptb, method, fused=True, return_margins=True)
        assert torch.isfinite(bound).all() and float(bound.detach().min()) > 100, method
        report = check(bm, x, ptb, method, -margin_spec(y, 5), points=16, loss_fusion=True)
        assert report.sound, str(report)
        model.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters()), method


def test_the_fused_loss_is_differentiable_and_trains():
    """Its gradient is the finite differences' (in a parameter of every layer), and Adam on it lowers it."""
    model, x, y, bm = _model(seed=3)
    ptb = LinfBall(0.05)
    g = torch.Generator().manual_seed(0)
    for layer in (0, 2, 4):
        weight = model[layer].weight
        model.zero_grad()
        robust_loss(bm, x, y, ptb, "crown-ibp", fused=True).backward()
        direction = torch.randn(weight.shape, generator=g, dtype=DTYPE)
        values = []
        for step in (1e-6, -1e-6):
            with torch.no_grad():
                weight.add_(step * direction)
                values.append(float(robust_loss(bm, x, y, ptb, "crown-ibp", fused=True)))
                weight.sub_(step * direction)
        difference = (values[0] - values[1]) / 2e-6
        assert abs(float((weight.grad * direction).sum()) - difference) < 1e-5 * (1 + abs(difference)), layer
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    first = float(robust_loss(bm, x, y, ptb, "crown-ibp", fused=True).detach())
    for _ in range(40):
        loss = robust_loss(bm, x, y, ptb, "crown-ibp", fused=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(robust_loss(bm, x, y, ptb, "crown-ibp", fused=True).detach()) < 0.5 * first


def test_beta_mixes_the_fused_bounds_and_kappa_the_natural_loss():
    model, x, y, bm = _model(seed=1)
    ptb, beta, kappa = LinfBall(0.1), 0.3, 0.6
    C = -margin_spec(y, 5, DTYPE)
    crown_ibp = bm.bounds(x, ptb, "crown-ibp", C, bound_lower=False, loss_fusion=True).upper
    ibp = bm.bounds(x, ptb, "ibp", C, bound_lower=False, loss_fusion=True).upper
    expected = kappa * F.cross_entropy(model(x), y) + (1 - kappa) * (beta * crown_ibp + (1 - beta) * ibp).mean()
    torch.testing.assert_close(robust_loss(bm, x, y, ptb, "crown-ibp", beta=beta, kappa=kappa, fused=True), expected)


def test_batch_norm_in_training_mode_normalises_the_fused_bound_by_the_clean_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).to(DTYPE)
    x = torch.randn(6, 4, dtype=DTYPE)
    y = torch.randint(0, 3, (6,))
    bm = BoundedModule(model, x)
    model.train()
    for method in METHODS:
        assert_sound(bm, x, LinfBall(0.1), method, -margin_spec(y, 3, DTYPE), n=8, loss_fusion=True)
    loss = robust_loss(bm, x, y, LinfBall(0.1), "crown-ibp", fused=True)
    loss.backward()
    assert model[1].weight.grad is not None and torch.isfinite(model[1].weight.grad).all()


def test_what_cannot_be_fused_is_refused_clearly():
    model, x, y, bm = _model()
    with pytest.raises(ValueError, match="singleprop"):
        robust_loss(bm, x, y, LinfBall(0.1), "singleprop", fused=True)
    with pytest.raises(ValueError, match="alpha-crown"):
        bm.bounds(x, LinfBall(0.1), "alpha-crown", -margin_spec(y, 5, DTYPE), loss_fusion=True)
    with pytest.raises(ValueError, match="give C"):
        bm.bounds(x, LinfBall(0.1), "crown-ibp", loss_fusion=True)
    image = nn.Sequential(nn.Conv2d(1, 2, 3))
    picture = torch.randn(2, 1, 5, 5)
    with pytest.raises(ValueError, match="logits output"):
        robust_loss(BoundedModule(image, picture), picture, torch.tensor([0, 1]), LinfBall(0.1), fused=True)
