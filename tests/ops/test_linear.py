import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, strategies as st

from boundgraph.ops import RULES
from tests.helpers import DTYPE, assert_adjoint, assert_sound_all_methods, perturbations


class FunctionalLinear(nn.Module):
    """``F.linear`` on weights computed from parameters (a transpose and a scaling: constants)."""

    def __init__(self, d, k):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d, k, dtype=DTYPE))
        self.bias = nn.Parameter(torch.randn(k, dtype=DTYPE))

    def forward(self, x):
        return F.linear(F.relu(x), self.weight.t() * 0.5, self.bias)


@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 3), st.integers(0, 2**16), st.data())
def test_linear_bounds_contain_every_sampled_output(d, k, batch, seed, data):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, k), nn.ReLU(), nn.Linear(k, 2)).to(DTYPE)
    x0 = torch.randn(batch, d, dtype=DTYPE)
    assert_sound_all_methods(model, x0, data.draw(perturbations(x0)))


@given(st.integers(0, 2**16), st.booleans())
def test_linear_backward_is_the_transpose(seed, with_bias):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, generator=g, dtype=DTYPE)
    W, b = torch.randn(3, 4, generator=g, dtype=DTYPE), torch.randn(3, generator=g, dtype=DTYPE)
    assert_adjoint(RULES["linear"], x, (W, b if with_bias else None), {}, seed=seed)


def test_the_fused_specification_layer_is_c_times_the_layer_and_its_backward_the_transpose():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, generator=g, dtype=DTYPE)
    C = torch.randn(2, 5, 3, generator=g, dtype=DTYPE)
    W, b = torch.randn(3, 4, generator=g, dtype=DTYPE), torch.randn(3, generator=g, dtype=DTYPE)
    torch.testing.assert_close(RULES["spec_linear"].forward(x, C, W, b),
                               torch.einsum("bso,bo->bs", C, F.linear(x, W, b)))
    assert_adjoint(RULES["spec_linear"], x, (C, W, b), {})


@given(st.integers(1, 40), st.integers(1, 4), st.booleans(), st.integers(0, 2**16))
def test_the_fused_specifications_ibp_is_exact_whether_examples_share_their_c_or_not(batch, classes, shared, seed):
    """IBP of ``C(Wx + b)`` over a box is exact, ``C(Wc + b) ± |CW| r``, whether examples with equal ``C`` are
    grouped (a margin specification: one per label) or each has its own ``C``; the bounds are attained."""
    from boundgraph import margin_spec
    from boundgraph.ir import Interval

    g = torch.Generator().manual_seed(seed)
    classes += 1
    d = 6
    W, b = torch.randn(classes, d, generator=g, dtype=DTYPE), torch.randn(classes, generator=g, dtype=DTYPE)
    y = torch.randint(0, classes, (batch,), generator=g)
    C = margin_spec(y, classes, DTYPE) if shared else torch.randn(batch, classes - 1, classes, generator=g, dtype=DTYPE)
    lower = torch.randn(batch, d, generator=g, dtype=DTYPE)
    upper = lower + torch.rand(batch, d, generator=g, dtype=DTYPE)
    bounds = RULES["spec_linear"].interval(Interval(lower, upper), C, W, b)
    weight = torch.matmul(C, W)  # (batch, specs, d): each row's worst corner is where its signs say
    worst_low = torch.where(weight > 0, lower.unsqueeze(1), upper.unsqueeze(1))
    worst_high = torch.where(weight > 0, upper.unsqueeze(1), lower.unsqueeze(1))
    torch.testing.assert_close(bounds.lower, (weight * worst_low).sum(-1) + torch.matmul(C, b), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(bounds.upper, (weight * worst_high).sum(-1) + torch.matmul(C, b), rtol=1e-9, atol=1e-9)


def test_functional_linear_with_parameter_views_is_sound():
    torch.manual_seed(1)
    x0 = torch.randn(2, 3, dtype=DTYPE)
    from boundgraph import LinfBall
    assert_sound_all_methods(FunctionalLinear(3, 4), x0, LinfBall(0.2))
