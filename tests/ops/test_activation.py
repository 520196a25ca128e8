import math
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, strategies as st

from boundgraph import BoundedModule, LinfBall
from boundgraph.ir import Interval
from boundgraph.ops import LINE_STRATEGIES, RULES, SPELLINGS
from boundgraph.ops.elementwise import Elementwise
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


# ---------------------------------------------------------------- activations on the line-fitting machine

ELEMENTWISE = sorted(name for name, r in RULES.items() if isinstance(r, Elementwise))
VARIANTS = {  # attributes each activation is also checked with (its defaults always are)
    "leaky_relu": [dict(negative_slope=0.2), dict(negative_slope=1.5), dict(negative_slope=-0.5)],
    "elu": [dict(alpha=0.5), dict(alpha=2.0), dict(alpha=-0.5)],
    "gelu": [dict(approximate="tanh"), dict(approximate="tanh", cubic=0.04471504)],  # κ of float32 constants
    "softplus": [dict(beta=2.0, threshold=20.0), dict(beta=1.0, threshold=1.0)],
    "hardtanh": [dict(min_val=0.0, max_val=6.0), dict(min_val=-2.0, max_val=0.5)],
}
CASES = [(name, attrs) for name in ELEMENTWISE for attrs in [{}] + VARIANTS.get(name, [])]
DOMAIN = {"log": (1e-3, None), "sqrt": (0.0, None), "reciprocal": (1e-3, None)}


def random_intervals(name: str, seed: int, n: int = 400):
    """Intervals of every kind: wide, narrow, degenerate, around breakpoints, far in the tails (for the
    activations with a domain: inside it, the reciprocal's on both sides of 0)."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(n, generator=g, dtype=DTYPE) * torch.tensor([0.5, 3.0, 30.0], dtype=DTYPE).repeat(n)[:n]
    width = torch.rand(n, generator=g, dtype=DTYPE) * torch.tensor([1e-9, 0.1, 2.0, 20.0], dtype=DTYPE).repeat(n)[:n]
    width[::17] = 0.0
    lower, upper = centre - width / 2, centre + width / 2
    if name in DOMAIN:
        low = DOMAIN[name][0]
        shift = torch.where(lower < low, low - lower, torch.zeros_like(lower))
        lower, upper = lower + shift, upper + shift
        if name == "reciprocal":
            flip = torch.arange(n) % 2 == 0
            lower, upper = torch.where(flip, -upper, lower), torch.where(flip, -lower, upper)
    return lower, upper


def assert_enclosed(name: str, attrs: dict, lower, upper, fractions):
    """The rule's adaptive lines and its interval enclose σ at ``lower + t·(upper − lower)`` for every ``t`` of
    ``fractions``; returns the lines."""
    rule = RULES[name]
    lines = rule.lines(lower, upper, "adaptive", **attrs)
    interval = rule.interval(Interval(lower, upper), **attrs)
    for t in fractions:
        z = lower + t * (upper - lower)
        value = rule.forward(z, **attrs)
        slack = 1e-9 * (1 + value.abs() + (lines.upper_slope * z).abs())
        assert (lines.lower_slope * z + lines.lower_bias <= value + slack).all(), f"{name} lower line at t={t}"
        assert (lines.upper_slope * z + lines.upper_bias >= value - slack).all(), f"{name} upper line at t={t}"
        assert (interval.lower <= value + slack).all() and (interval.upper >= value - slack).all(), name
    return lines


@pytest.mark.parametrize("name, attrs", CASES, ids=[f"{n}{a or ''}" for n, a in CASES])
def test_lines_and_intervals_enclose_the_activation_on_a_dense_grid(name, attrs):
    lower, upper = random_intervals(name, seed=len(name))
    lines = assert_enclosed(name, attrs, lower, upper, torch.linspace(0, 1, 401, dtype=DTYPE))
    assert torch.isfinite(lines.lower_slope).all() and torch.isfinite(lines.upper_bias).all()


@pytest.mark.parametrize("name, attrs", CASES, ids=[f"{n}{a or ''}" for n, a in CASES])
def test_lines_and_intervals_hold_on_intervals_that_end_at_a_breakpoint(name, attrs):
    """An interval that starts or ends exactly at a breakpoint meets only one side of it: that side's limit
    counts (``sign`` on ``[0, u]`` is 1 just right of 0; found by ``benchmarks/fuzz.py``, a bias-free layer)."""
    rule = RULES[name]
    breakpoints = [p for p in rule.pieces(**attrs)[0] if name not in DOMAIN or p > DOMAIN[name][0]]
    if not breakpoints:
        return
    widths = torch.tensor([1e-9, 1e-3, 0.5, 3.0], dtype=DTYPE)
    lower = torch.cat([torch.full_like(widths, p) for p in breakpoints] + [p - widths for p in breakpoints])
    upper = torch.cat([p + widths for p in breakpoints] + [torch.full_like(widths, p) for p in breakpoints])
    assert_enclosed(name, attrs, lower, upper,
                    torch.cat([torch.linspace(0, 1, 401, dtype=DTYPE), torch.tensor([1e-7, 1 - 1e-7], dtype=DTYPE)]))


@pytest.mark.parametrize("name, attrs", CASES, ids=[f"{n}{a or ''}" for n, a in CASES])
def test_declared_derivative_curvature_and_lipschitz_constant_match_the_function(name, attrs):
    """σ' is autograd's (away from kinks), the sign of σ'' agrees with the declared pieces, and the
    Lipschitz constant is at least every |σ'| (the machine's soundness rests on these)."""
    rule = RULES[name]
    breakpoints, curvatures = rule.pieces(**attrs)
    z = torch.linspace(-40, 40, 40001, dtype=DTYPE)
    if name in DOMAIN:
        z = z[z > (DOMAIN[name][0] if name != "reciprocal" else 0)] if name != "reciprocal" else z[z.abs() > 1e-3]
    near = torch.zeros_like(z, dtype=torch.bool)
    for point in breakpoints + ((attrs.get("threshold", 20.0) / attrs.get("beta", 1.0),) if name == "softplus" else ()):
        near |= (z - point).abs() < 1e-3
    z = z[~near].requires_grad_(True)
    (grad,) = torch.autograd.grad(rule.forward(z, **attrs).sum(), z)
    z = z.detach()
    torch.testing.assert_close(rule.derivative(z, **attrs), grad, rtol=1e-6, atol=1e-9)
    step = 1e-5 * (1 + z.abs())  # σ'' by central differences of the (checked) σ'
    second = (rule.derivative(z + step, **attrs) - rule.derivative(z - step, **attrs)) / (2 * step)
    piece = torch.bucketize(z, torch.tensor(breakpoints, dtype=DTYPE))
    declared = torch.tensor(curvatures, dtype=DTYPE)[piece]
    assert ((second * declared >= -1e-9) | (declared == 0)).all(), f"{name}: σ'' against the declared curvature"
    assert ((second.abs() < 1e-9) | (declared != 0)).all(), f"{name}: curved where declared linear"
    constant = rule.lipschitz_of(**attrs)
    if constant is not None:
        assert grad.abs().max() <= constant * (1 + 1e-12)


def function_of(name: str):
    """A torch or torch.nn.functional function spelled as the rule ``name`` (from the registry)."""
    return next(s for s, r in SPELLINGS.items() if r == name and getattr(s, "__module__", "") in (
        "torch", "torch.nn.functional", "torch._C._nn") and not isinstance(s, type)
        and not getattr(s, "__name__", "_").endswith("_"))


@pytest.mark.parametrize("name, attrs", CASES, ids=[f"{n}{a or ''}" for n, a in CASES])
def test_models_with_the_activation_are_sound_for_every_method(name, attrs):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(3, 6), nn.Linear(6, 2)

        def forward(self, x):
            h = self.fc1(x)
            if name in DOMAIN:  # keep the input inside the domain
                h = torch.exp(h) + 0.5
            if "cubic" in attrs:  # no torch function takes GELU's κ: the spelt-out form the rewrite reads it from
                beta = math.sqrt(2 / math.pi)
                return self.fc2(0.5 * h * (1 + torch.tanh(beta * (h + attrs["cubic"] * h ** 3))))
            return self.fc2(function_of(name)(h, **attrs))

    torch.manual_seed(len(name))
    x = torch.randn(2, 3, dtype=DTYPE)
    model = Net().to(DTYPE)
    bm = BoundedModule(model, x)
    graph = bm.program("crown").graph
    assert name in {n.op for n in graph}
    assert all(n.attrs.get(key) == value for n in graph if n.op == name for key, value in attrs.items())
    for method in METHODS:
        assert_sound(bm, x, LinfBall(0.3), method, n=8)


SPELLINGS_OF = {
    "sigmoid": [nn.Sigmoid(), torch.sigmoid, F.sigmoid, lambda t: t.sigmoid()],
    "tanh": [nn.Tanh(), torch.tanh, F.tanh, lambda t: t.tanh()],
    "leaky_relu": [nn.LeakyReLU(0.1), lambda t: F.leaky_relu(t, 0.1)],
    "elu": [nn.ELU(0.7), lambda t: F.elu(t, 0.7)],
    "gelu": [nn.GELU(), nn.GELU("tanh"), F.gelu, lambda t: F.gelu(t, approximate="tanh")],
    "silu": [nn.SiLU(), F.silu],
    "softplus": [nn.Softplus(2.0), lambda t: F.softplus(t, 2.0)],
    "hardtanh": [nn.Hardtanh(-2, 2), nn.ReLU6(), F.relu6, lambda t: F.hardtanh(t, -0.5, 0.5)],
    "hardswish": [nn.Hardswish(), F.hardswish],
    "hardsigmoid": [nn.Hardsigmoid(), F.hardsigmoid],
    "abs": [torch.abs, lambda t: t.abs()],
    "sign": [torch.sign, lambda t: t.sign(), torch.sgn],
    "erf": [torch.erf, torch.special.erf, lambda t: t.erf()],
    "exp": [torch.exp, lambda t: t.exp()],
}


@pytest.mark.parametrize("name", sorted(SPELLINGS_OF))
def test_every_spelling_of_an_activation_is_its_rule_with_its_arguments(name):
    spellings = SPELLINGS_OF[name]
    model = Chain([nn.Linear(3, 4)] + spellings + [nn.Linear(4, 2)]).to(DTYPE)
    x = torch.randn(2, 3, dtype=DTYPE) * 0.3
    bm = BoundedModule(model, x)  # compiling checks the graph computes the model, parameters included
    assert [n.op for n in bm.graph].count(name) == len(spellings)
    assert_sound(bm, x, LinfBall(0.2), "crown", n=4)


@pytest.mark.parametrize("name, make", [("log", lambda t: torch.log(t)), ("sqrt", torch.sqrt),
                                        ("reciprocal", torch.reciprocal)])
def test_inputs_that_can_leave_the_domain_are_refused_clearly(name, make):
    torch.manual_seed(0)
    x = torch.randn(2, 2, dtype=DTYPE)
    clamped = BoundedModule(Chain([nn.Linear(2, 2), lambda t: t.clamp(-1, 1) + 2.0, make]).to(DTYPE), x)
    for method in METHODS:  # inside the domain, whatever the radius
        assert_sound(clamped, x, LinfBall(100.0), method, n=4)
    shifted = BoundedModule(Chain([nn.Linear(2, 2), lambda t: t + 5.0, make]).to(DTYPE), x)
    shifted.bounds(x, LinfBall(0.01), "crown")
    with pytest.raises(ValueError, match=f"{name}: its input's"):
        shifted.bounds(x, LinfBall(100.0), "crown-ibp")


def test_an_activation_registered_from_user_code_is_bounded_by_every_method(monkeypatch):
    """The README's example: σ, σ' and the pieces are all a new activation needs."""
    class Softsign(Elementwise):
        lipschitz = 1.0

        def function(self, z):
            return z / (1 + z.abs())

        def derivative(self, z):
            return 1 / (1 + z.abs()) ** 2

        def pieces(self):
            return (0.0,), (1, -1)

    softsign = Softsign()
    softsign.name = "softsign"
    monkeypatch.setitem(RULES, "softsign", softsign)  # what @rule("softsign", spellings=...) does, undone after
    monkeypatch.setitem(SPELLINGS, nn.Softsign, "softsign")
    monkeypatch.setitem(SPELLINGS, F.softsign, "softsign")
    model = Chain([nn.Linear(3, 5), nn.Softsign(), nn.Linear(5, 5), F.softsign, nn.Linear(5, 2)]).to(DTYPE)
    x = torch.randn(2, 3, dtype=DTYPE)
    bm = BoundedModule(model, x)
    assert [n.op for n in bm.graph].count("softsign") == 2
    for method in METHODS + ("alpha-crown",):
        assert_sound(bm, x, LinfBall(0.5), method, n=8)


@pytest.mark.parametrize("exponent", [2, 3, 4, 5, 0.5, 1.5, 2.5, -0.5, -1.0, -2.0])
def test_powers_enclose_z_to_the_p_inside_their_domain(exponent):
    """``z ** p``: integer exponents on the whole line (odd ones change curvature at 0), the others on
    ``z ≥ 0`` (``z > 0`` below 0), convex or concave by ``p``; every spelling (``**``, ``pow``, ``square``,
    ``rsqrt``) is the one rule."""
    rule = RULES["pow"]
    lower, upper = random_intervals("pow", seed=int(10 * abs(exponent)))
    if exponent != int(exponent) or exponent < 0:
        lower, upper = lower.abs() + 1e-2, lower.abs() + 1e-2 + (upper - lower)
    lines = rule.lines(lower, upper, "adaptive", exponent=float(exponent))
    interval = rule.interval(Interval(lower, upper), exponent=float(exponent))
    for t in torch.linspace(0, 1, 201, dtype=DTYPE):
        z = lower + t * (upper - lower)
        value = rule.forward(z, exponent=float(exponent))
        slack = 1e-9 * (1 + value.abs() + (lines.upper_slope * z).abs() + (lines.lower_slope * z).abs())
        assert (lines.lower_slope * z + lines.lower_bias <= value + slack).all()
        assert (lines.upper_slope * z + lines.upper_bias >= value - slack).all()
        assert (interval.lower <= value + slack).all() and (interval.upper >= value - slack).all()


def test_every_spelling_of_a_power_is_one_rule_and_domains_are_refused():
    model = Chain([nn.Linear(3, 3), lambda t: t ** 2 + torch.pow(t, 3) + t.square(), lambda t: torch.rsqrt(t * t + 1.0),
                   nn.Linear(3, 2)]).to(DTYPE)
    x = torch.randn(2, 3, dtype=DTYPE)
    bm = BoundedModule(model, x)
    assert [n.op for n in bm.graph].count("pow") == 4
    for method in METHODS:
        assert_sound(bm, x, LinfBall(0.3), method, n=6)
    root = BoundedModule(Chain([nn.Linear(3, 3), lambda t: t ** 0.5]).to(DTYPE), x.abs() + 5)
    with pytest.raises(ValueError, match=r"z \*\* 0.5's domain"):
        root.bounds(x, LinfBall(100.0), "ibp")
