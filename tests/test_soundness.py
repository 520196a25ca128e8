"""The central property: for random models built from every supported op, random inputs, radii and
specifications, every sampled point of the perturbation set (random, corners, PGD extremes) has its
output inside the bounds of every method."""
import torch
from hypothesis import given, strategies as st

from boundgraph import BoundedModule
from tests.helpers import METHODS, assert_sound, cnns, mlps, perturbations, random_spec


@given(st.one_of(mlps(), cnns()), st.data())
def test_bounds_contain_every_sampled_output(model_and_input, data):
    model, x0 = model_and_input
    ptb = data.draw(perturbations(x0))
    bm = BoundedModule(model, x0)
    for method in METHODS:
        assert_sound(bm, x0, ptb, method, n=8)


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
