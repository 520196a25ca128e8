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


def test_batched_spec_weight_linear_is_the_transpose():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, generator=g, dtype=DTYPE)
    C = torch.randn(2, 5, 3, generator=g, dtype=DTYPE)
    W, b = torch.randn(3, 4, generator=g, dtype=DTYPE), torch.randn(3, generator=g, dtype=DTYPE)
    weight, bias = RULES["spec_weight"].forward(C, W), RULES["spec_bias"].forward(C, b)
    torch.testing.assert_close(RULES["linear"].forward(x, weight, bias),
                               torch.einsum("bso,bo->bs", C, F.linear(x, W, b)))
    assert_adjoint(RULES["linear"], x, (weight, bias), {})


def test_functional_linear_with_parameter_views_is_sound():
    torch.manual_seed(1)
    x0 = torch.randn(2, 3, dtype=DTYPE)
    from boundgraph import LinfBall
    assert_sound_all_methods(FunctionalLinear(3, 4), x0, LinfBall(0.2))
