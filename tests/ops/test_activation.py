import pytest
import torch
import torch.nn as nn
from hypothesis import given, strategies as st

from boundgraph import BoundedModule
from boundgraph.ops import LINE_STRATEGIES, RULES
from tests.helpers import DTYPE, Chain, METHODS, assert_sound, perturbations, relu_spelling


@given(st.integers(0, 2**16), st.sampled_from(LINE_STRATEGIES))
def test_relu_lines_enclose_relu_on_the_interval(seed, strategy):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(50, generator=g, dtype=DTYPE), torch.randn(50, generator=g, dtype=DTYPE)
    lower, upper = torch.minimum(a, b), torch.maximum(a, b)
    lines = RULES["relu"].lines(lower, upper, strategy)
    for t in torch.linspace(0, 1, 21, dtype=DTYPE):
        z = lower + t * (upper - lower)
        relu = z.clamp(min=0)
        lower_bias = 0 if lines.lower_bias is None else lines.lower_bias
        assert (lines.lower_slope * z + lower_bias <= relu + 1e-12).all()
        assert (lines.upper_slope * z + lines.upper_bias >= relu - 1e-12).all()


def test_relu_lines_are_exact_on_stable_neurons():
    lower = torch.tensor([0.5, -3.0], dtype=DTYPE)
    upper = torch.tensor([2.0, -1.0], dtype=DTYPE)
    lines = RULES["relu"].lines(lower, upper, "adaptive")
    assert lines.lower_slope.tolist() == [1.0, 0.0] and lines.upper_slope.tolist() == [1.0, 0.0]
    assert lines.upper_bias.tolist() == [0.0, 0.0]


@given(st.integers(0, 3), st.integers(1, 4), st.integers(0, 2**16), st.sampled_from(LINE_STRATEGIES), st.data())
def test_relu_every_spelling_is_sound_for_every_method(spelling, width, seed, strategy, data):
    torch.manual_seed(seed)
    model = Chain([nn.Linear(3, width), relu_spelling(spelling), nn.Linear(width, 2)]).to(DTYPE)
    x0 = torch.randn(2, 3, dtype=DTYPE)
    ptb = data.draw(perturbations(x0))
    bm = BoundedModule(model, x0)
    assert [n.op for n in bm.graph].count("relu") == 1
    for method in METHODS:
        assert_sound(bm, x0, ptb, method, lines=strategy)


def test_relu_upper_line_is_sound_on_very_narrow_unstable_intervals():
    lower = torch.tensor([-1e-14, -3e-300], dtype=DTYPE)
    upper = torch.tensor([1e-14, 1e-300], dtype=DTYPE)
    lines = RULES["relu"].lines(lower, upper, "adaptive")
    assert (lines.upper_slope * upper + lines.upper_bias >= upper).all()
    assert torch.isfinite(lines.upper_slope).all()


# ---------------------------------------------------------------- ParamRamp (Lyu et al. 2021)

def _ramp_case(seed: int):
    """Intervals in all six regions relative to the kinks 0 and r (r sometimes 0 or negative)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(60, generator=g, dtype=DTYPE) * 2
    r[:5] = 0.0
    r[5:8] = -0.5
    a, b = torch.randn(60, generator=g, dtype=DTYPE) * 2, torch.randn(60, generator=g, dtype=DTYPE) * 2
    lower, upper = torch.minimum(a, b), torch.maximum(a, b)
    eta = torch.rand((), generator=g, dtype=DTYPE) * 0.5
    return lower, upper, r, eta


@given(st.integers(0, 2**16), st.sampled_from(LINE_STRATEGIES))
def test_param_ramp_lines_enclose_the_ramp_in_all_six_regions(seed, strategy):
    lower, upper, r, eta = _ramp_case(seed)
    rule = RULES["param_ramp"]
    lines = rule.lines(lower, upper, strategy, r, eta)
    for t in torch.linspace(0, 1, 41, dtype=DTYPE):
        z = lower + t * (upper - lower)
        value = rule.forward(z, r, eta)
        assert (lines.lower_slope * z + lines.lower_bias <= value + 1e-12).all()
        assert (lines.upper_slope * z + lines.upper_bias >= value - 1e-12).all()


@given(st.integers(0, 2**16))
def test_param_ramp_tight_lines_meet_the_ramp_at_the_ends_they_bound(seed):
    lower, upper, r, eta = _ramp_case(seed)
    rule = RULES["param_ramp"]
    lines = rule.lines(lower, upper, "tight", r, eta)
    assert torch.allclose(lines.lower_slope * lower + lines.lower_bias, rule.forward(lower, r, eta))
    assert torch.allclose(lines.upper_slope * upper + lines.upper_bias, rule.forward(upper, r, eta))


def test_param_ramp_is_eta_z_then_z_then_saturating():
    from boundgraph.nn import ParamRamp
    ramp = ParamRamp(1, eta=0.1, r=2.0).to(DTYPE)
    z = torch.tensor([[-1.0], [1.0], [3.0]], dtype=DTYPE)
    assert ramp(z).flatten().tolist() == pytest.approx([-0.1, 1.0, 0.1 * 3 + 0.9 * 2])


def _ramp_net(kind: int, width: int, eta: float, g: torch.Generator) -> nn.Module:
    from boundgraph.nn import ParamRamp
    if kind == 0:
        layers = [nn.Linear(3, width), ParamRamp(width, eta), nn.Linear(width, width), ParamRamp(width, eta),
                  nn.Linear(width, 2)]
    else:
        layers = [nn.Unflatten(1, (3, 1, 1)), nn.Conv2d(3, width, 1), ParamRamp(width, eta), nn.Flatten(),
                  nn.Linear(width, 2)]
    model = nn.Sequential(*layers).to(DTYPE)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ParamRamp):
                m.r.copy_(torch.rand(width, generator=g, dtype=DTYPE) * 1.5 - 0.2)
    return model


@given(st.integers(0, 1), st.integers(1, 5), st.floats(0.0, 0.5), st.integers(0, 2**16),
       st.sampled_from(LINE_STRATEGIES), st.data())
def test_param_ramp_nets_are_sound_for_every_method(kind, width, eta, seed, strategy, data):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = _ramp_net(kind, width, eta, g)
    x0 = torch.randn(2, 3, generator=g, dtype=DTYPE)
    ptb = data.draw(perturbations(x0))
    bm = BoundedModule(model, x0)
    assert [n.op for n in bm.graph].count("param_ramp") == (2 if kind == 0 else 1)
    for method in METHODS:
        assert_sound(bm, x0, ptb, method, lines=strategy)


def test_param_ramp_bounds_train_r_and_follow_eta():
    from boundgraph import LinfBall
    from boundgraph.nn import ParamRamp, set_eta
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = _ramp_net(0, 4, 0.1, g)
    ramps = [m for m in model.modules() if isinstance(m, ParamRamp)]
    with torch.no_grad():
        for m in ramps:
            m.r.fill_(0.2)  # small: some neurons saturate
    x0 = torch.randn(2, 3, generator=g, dtype=DTYPE)
    bm = BoundedModule(model, x0)
    for method in ("ibp", "crown-ibp", "crown-lbp"):
        model.zero_grad()
        lower = bm.bounds(x0, LinfBall(1.0), method).lower
        lower.sum().backward()
        assert all(m.r.grad is not None for m in ramps), method
        assert sum(m.r.grad.abs().sum() for m in ramps) > 0, method
    before = bm.bounds(x0, LinfBall(1.0), "ibp").lower
    set_eta(model, 0.5)
    assert torch.allclose(bm(x0), model(x0))
    assert not torch.allclose(bm.bounds(x0, LinfBall(1.0), "ibp").lower, before)


def test_init_ramps_puts_r_at_the_mean_positive_activation():
    from boundgraph.nn import ParamRamp, init_ramps
    model = nn.Sequential(nn.Identity(), ParamRamp(2))
    x = torch.tensor([[1.0, -1.0], [3.0, -2.0], [-1.0, -5.0]])
    init_ramps(model, x)
    assert model[1].r.tolist() == [2.0, 1.0]  # mean of 1 and 3; never positive → 1
