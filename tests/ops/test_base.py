import torch
from hypothesis import given, strategies as st

from boundgraph.ops import Lines, Nonlinear
from boundgraph.ops.base import spec_dot, spec_sum, unbroadcast
from tests.helpers import DTYPE


def reference(A, ls, lb, us, ub):
    """The same map written plainly, for autograd to differentiate."""
    positive, negative = A.clamp(min=0), A.clamp(max=0)
    new_A = positive * ls.unsqueeze(1) + negative * us.unsqueeze(1)
    return new_A, spec_sum(positive * lb.unsqueeze(1) + negative * ub.unsqueeze(1))


@given(st.integers(0, 2**16))
def test_backward_through_lines_matches_the_plain_formula_and_its_gradients(seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(2, 3, 4, 2, generator=g, dtype=DTYPE, requires_grad=True)
    ls, lb, us, ub = (torch.randn(2, 4, 2, generator=g, dtype=DTYPE, requires_grad=True) for _ in range(4))
    (new_A,), bias = Nonlinear().backward(A, Lines(ls, lb, us, ub))
    expected_A, expected_bias = reference(A, ls, lb, us, ub)
    torch.testing.assert_close((new_A, bias), (expected_A, expected_bias))
    assert torch.autograd.gradcheck(lambda *t: Nonlinear().backward(t[0], Lines(*t[1:]))[0][0].sum(1).sum()
                                    + Nonlinear().backward(t[0], Lines(*t[1:]))[1].sum(), (A, ls, lb, us, ub))
    weights = torch.randn(2, 3, 4, 2, generator=g, dtype=DTYPE)
    assert torch.autograd.gradcheck(lambda *t: (Nonlinear().backward(t[0], Lines(*t[1:]))[0][0] * weights).sum()
                                    + Nonlinear().backward(t[0], Lines(*t[1:]))[1].pow(2).sum(), (A, ls, lb, us, ub))


def test_spec_dot_and_unbroadcast():
    A = torch.arange(12.0).reshape(1, 2, 2, 3)
    x = torch.ones(1, 2, 3)
    torch.testing.assert_close(spec_dot(A, x), torch.tensor([[15.0, 51.0]]))
    torch.testing.assert_close(unbroadcast(A, (1, 1, 3)), A.sum(2, keepdim=True))
    torch.testing.assert_close(unbroadcast(A, (1, 3)), A.sum(2))


@given(st.integers(0, 2**16), st.sampled_from([(3, 3), (1, 3), (3, 1)]), st.integers(1, 4))
def test_spec_dot_is_the_per_row_inner_product_with_its_first_and_second_derivatives(seed, batches, rows):
    """``spec_dot`` by its hand-written ``_SpecDot`` (or broadcast over a batch of one) equals
    ``Σ_i A[b, k, i] x[b, i]``, and autograd checks its gradient and the gradient of that gradient."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(batches[0], rows, 2, 3, generator=g, dtype=DTYPE, requires_grad=True)
    x = torch.randn(batches[1], 2, 3, generator=g, dtype=DTYPE, requires_grad=True)
    expected = (A * x.unsqueeze(1)).flatten(2).sum(-1)
    torch.testing.assert_close(spec_dot(A, x), expected)
    assert torch.autograd.gradcheck(spec_dot, (A, x))
    assert torch.autograd.gradgradcheck(spec_dot, (A, x))
