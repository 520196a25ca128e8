"""α-CROWN: sound for every α it tries, and never looser than CROWN (its first iterate is CROWN)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, strategies as st

from boundgraph import BoundedModule
from boundgraph.alpha import alpha_crown
from tests.helpers import assert_sound, cnns, mlps, perturbations, random_spec


class _AlphaAsMethod:
    """``bm.bounds``-shaped access to α-CROWN, so the shared soundness check can sample against it."""

    def __init__(self, bm):
        self.bm = bm

    def bounds(self, x, ptb, method=None, C=None, **options):
        return alpha_crown(self.bm, x, ptb, C=C, iterations=8, bound_upper=True)

    def __call__(self, x):
        return self.bm(x)


def check(model, x0, ptb, C=None):
    bm = BoundedModule(model, x0)
    crown = bm.bounds(x0, ptb, "crown", C=C)
    alpha = alpha_crown(bm, x0, ptb, C=C, iterations=8, bound_upper=True)
    assert (alpha.lower >= crown.lower - 1e-9).all() and (alpha.upper <= crown.upper + 1e-9).all()
    assert_sound(_AlphaAsMethod(bm), x0, ptb, "alpha-crown", C=C, n=8)
    return crown, alpha


@given(mlps(), st.data())
def test_alpha_crown_is_sound_and_at_least_as_tight_as_crown_on_random_mlps(model_x0, data):
    model, x0 = model_x0
    check(model, x0, data.draw(perturbations(x0)))


@given(cnns(), st.data())
def test_alpha_crown_is_sound_and_at_least_as_tight_as_crown_on_random_cnns(model_x0, data):
    model, x0 = model_x0
    C = random_spec(x0.shape[0], 2, model(x0).shape[1], 0)
    check(model, x0, data.draw(perturbations(x0)), C)


def test_alpha_crown_improves_on_crown_on_a_wide_net():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 3)).double()
    from boundgraph import LinfBall
    x0 = torch.randn(4, 4, dtype=torch.float64)
    crown, alpha = check(model, x0, LinfBall(0.5))
    assert (alpha.lower - crown.lower).mean() > 1e-3


def test_alpha_crown_refuses_activations_without_optimisable_lines():
    from boundgraph import LinfBall
    from boundgraph.nn import ParamRamp
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), ParamRamp(3), torch.nn.Linear(3, 2))
    x0 = torch.randn(2, 2)
    with pytest.raises(NotImplementedError, match="param_ramp: no optimisable lower lines"):
        alpha_crown(BoundedModule(model, x0), x0, LinfBall(0.5))
