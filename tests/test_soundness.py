"""The central property: for random models built from every supported op, random inputs, radii and
specifications, every sampled point of the perturbation set (random, corners, PGD extremes) has its
output inside the bounds of every method."""
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st

from boundgraph import BoundedModule, LinfBall, ParamRamp
from tests.helpers import METHODS, assert_sound, cases, cnns, mlps, perturbations, random_spec
from tests.random_models import SEQUENCE_FAMILIES


@settings(max_examples=max(60, settings.default.max_examples))
@given(cases())
def test_every_bound_of_every_method_holds_on_random_models_of_every_family(case):
    """Small, deep, wide and DAG MLPs, CNNs, activation-free and float32-overflowing nets; ParamRamp and two
    activations in a row; batch norm training; extreme weights; clipped, per-example and degenerate sets."""
    bm = BoundedModule(case.model, case.x0)
    for method in METHODS:
        assert_sound(bm, case.x0, case.perturbation, method, case.C, n=8)


@settings(max_examples=10, deadline=None)
@given(cases(SEQUENCE_FAMILIES))
def test_every_bound_of_every_method_holds_on_random_sequence_models(case):
    """Attention of three spellings (causal or not), layer norm, GELU feed-forward, GRU / LSTM, softmax gates and
    log-softmax, stacked at random, on random perturbation sets and specifications."""
    bm = BoundedModule(case.model, case.x0)
    for method in METHODS:
        assert_sound(bm, case.x0, case.perturbation, method, case.C, n=4)


@given(st.one_of(mlps(), cnns()), st.integers(1, 4), st.integers(0, 2**16), st.data())
def test_bounds_of_specifications_contain_every_sampled_margin(model_and_input, specs, seed, data):
    model, x0 = model_and_input
    ptb = data.draw(perturbations(x0))
    bm = BoundedModule(model, x0)
    C = random_spec(x0.shape[0], specs, bm.output_shape[0], seed)
    for method in METHODS:
        assert_sound(bm, x0, ptb, method, C=C, n=8)


@given(mlps(), st.data())
def test_lower_only_and_upper_only_equal_the_halves_of_both(model_and_input, data):
    model, x0 = model_and_input
    ptb = data.draw(perturbations(x0))
    bm = BoundedModule(model, x0)
    for method in METHODS:
        lb, ub = bm.bounds(x0, ptb, method=method)
        lb_only, none = bm.bounds(x0, ptb, method=method, bound_upper=False)
        none2, ub_only = bm.bounds(x0, ptb, method=method, bound_lower=False)
        assert none is None and none2 is None
        torch.testing.assert_close(lb_only, lb)
        torch.testing.assert_close(ub_only, ub)


def assert_inside_or_vacuous(bm, x, ptb, method):
    """Every bound either holds at the centre point (up to float32 rounding) or is vacuous (−inf / +inf):
    never finite and wrong."""
    lower, upper = bm.bounds(x, ptb, method)
    out = bm(x)
    rounding = 1e-5 * out.abs()
    assert not lower.isnan().any() and not upper.isnan().any(), f"{method}: NaN bounds (must be vacuous ±inf)"
    assert ((lower <= out + rounding) | (lower == float("-inf"))).all(), f"{method}: lower {lower} above {out}"
    assert ((upper >= out - rounding) | (upper == float("inf"))).all(), f"{method}: upper {upper} below {out}"
    return lower, upper


def test_an_interval_that_overflows_makes_the_bounds_vacuous_never_finite_and_wrong():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    bm = BoundedModule(model, torch.randn(2, 4))
    x = torch.full((1, 4), 3e38)
    for method in METHODS + ("alpha-crown",):
        assert_inside_or_vacuous(bm, x, LinfBall(0.1), method)


def test_a_deep_float32_network_with_huge_weights_gives_vacuous_or_true_bounds():
    torch.manual_seed(1)
    layers, width = [], 4
    for _ in range(17):
        layers += [nn.Linear(width, 16), nn.ReLU()]
        width = 16
    model = nn.Sequential(*layers, nn.Linear(16, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(300)
    x = torch.randn(1, 4)
    bm = BoundedModule(model, x)
    for method in METHODS:
        lower, upper = assert_inside_or_vacuous(bm, x, LinfBall(0.5), method)
        assert torch.isinf(lower).all() and torch.isinf(upper).all()  # every intermediate bound overflows


def test_a_nan_parameter_of_an_activation_makes_the_bounds_vacuous():
    model = nn.Sequential(nn.Linear(3, 4), ParamRamp(4), nn.Linear(4, 2)).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    bm = BoundedModule(model, x)
    with torch.no_grad():
        model[1].r[0] = float("nan")
    for method in METHODS:
        lower, upper = bm.bounds(x, LinfBall(0.1), method)
        assert (lower == float("-inf")).all() and (upper == float("inf")).all(), method
