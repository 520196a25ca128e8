import math

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st

from boundgraph import BoundedModule, LinfBall
from boundgraph.ops import RULES
from tests.helpers import DTYPE, Chain, Residual, assert_adjoint, assert_sound_all_methods, perturbations

EXPRESSIONS = {
    "add tensor": lambda a, b, c: a + b,
    "sub tensor": lambda a, b, c: a - b,
    "add constant": lambda a, b, c: a + c,
    "constant minus": lambda a, b, c: 1.5 - a,
    "torch.add alpha": lambda a, b, c: torch.add(a, b, alpha=-2.0),
    "mul constant": lambda a, b, c: a * c,
    "constant mul": lambda a, b, c: -3.0 * a,
    "div constant": lambda a, b, c: a / c,
    "neg": lambda a, b, c: -a,
    "method add": lambda a, b, c: a.add(b).sub(c).mul(2.0).div(-4.0),
    "broadcast constant": lambda a, b, c: a * c[:, :1] + c[:1, :],
}


class TwoBranches(nn.Module):
    def __init__(self, expression):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(3, 4)
        self.register_buffer("c", torch.rand(4, 4) + 0.5)
        self.expression = expression
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        a, b = torch.relu(self.a(x)), self.b(x)
        return self.head(self.expression(a, b, self.c[0] if self.expression is not EXPRESSIONS[
            "broadcast constant"] else self.c[:1]))


@pytest.mark.parametrize("name", sorted(EXPRESSIONS))
@settings(max_examples=12)  # × 14 expressions
@given(st.integers(0, 2**16), st.data())
def test_arithmetic_expressions_are_sound_for_every_method(name, seed, data):
    torch.manual_seed(seed)
    model = TwoBranches(EXPRESSIONS[name]).to(DTYPE)
    x0 = torch.randn(2, 3, dtype=DTYPE)
    assert_sound_all_methods(model, x0, data.draw(perturbations(x0)), n=8)


def test_residual_fan_out_sums_both_paths():
    torch.manual_seed(0)
    block = Residual(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)))
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), block, nn.ReLU(), nn.Linear(4, 2)).to(DTYPE)
    x0 = torch.randn(3, 3, dtype=DTYPE)
    assert_sound_all_methods(model, x0, LinfBall(0.3))


def test_add_and_mul_backward_are_transposes():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 4, generator=g, dtype=DTYPE), torch.randn(1, 4, generator=g, dtype=DTYPE)
    assert_adjoint(RULES["add"], x, (y,), dict(alpha=-2.0, shapes=((2, 3, 4), (1, 4))))
    assert_adjoint(RULES["add"], x, (y,), dict(alpha=1, shapes=((1, 4), (2, 3, 4))), perturbed=(1,))
    assert_adjoint(RULES["mul"], x, (y,), dict(shapes=((2, 3, 4), (1, 4))))
    assert_adjoint(RULES["div"], x, (y + 3,), dict(shapes=((2, 3, 4), (1, 4))))


def test_a_product_of_two_perturbed_tensors_becomes_the_bilinear_rule_only_where_both_are_perturbed():
    model = Chain([lambda t: t[:, 0] * t[:, 1]]).to(DTYPE)
    x = torch.randn(2, 3, dtype=DTYPE)
    bm = BoundedModule(model, x)
    assert [n.op for n in bm.graph].count("mul") == 1  # the model's op, as traced
    assert "product" in {n.op for n in bm.program("crown").graph}


    class Scaled(nn.Module):
        def forward(self, x, y):
            return x * y

    both = BoundedModule(Scaled(), (x, x + 1))
    assert "product" in {n.op for n in both.program("crown").graph}
    assert "product" not in {n.op for n in both.program("crown", perturbed=[0]).graph}  # y constant: linear
    lower, upper = both.bounds((x, x + 1), (LinfBall(0.1), None), "crown")
    assert ((lower <= x * (x + 1) + 1e-12) & (upper >= x * (x + 1) - 1e-12)).all()


def test_x_times_its_own_sigmoid_is_silu_with_silus_bounds_and_a_sigmoid_of_another_tensor_is_a_product():
    """``x * sigmoid(x)`` (either order; Swish as EfficientNet and ONNX exports write it) becomes SiLU's rule, so
    every method gives ``nn.SiLU``'s bounds; ``x * sigmoid(y)`` stays the bilinear product."""
    torch.manual_seed(0)
    first, last = nn.Linear(3, 4).to(DTYPE), nn.Linear(4, 2).to(DTYPE)
    x = torch.randn(2, 3, dtype=DTYPE)
    silu = BoundedModule(Chain([first, nn.SiLU(), last]), x)
    for spelled in (lambda t: t * torch.sigmoid(t), lambda t: t.sigmoid() * t):
        swish = BoundedModule(Chain([first, spelled, last]), x)
        ops = {n.op for n in swish.program("crown").graph}
        assert "silu" in ops and "product" not in ops and "sigmoid" not in ops
        for method in ("ibp", "crown-ibp", "crown", "lbp"):
            expected, found = silu.bounds(x, LinfBall(0.3), method), swish.bounds(x, LinfBall(0.3), method)
            torch.testing.assert_close(found.lower, expected.lower, rtol=0, atol=0)
            torch.testing.assert_close(found.upper, expected.upper, rtol=0, atol=0)
    other = BoundedModule(Chain([first, lambda t: t * torch.sigmoid(t.flip(-1))]), x)
    assert "product" in {n.op for n in other.program("crown").graph}


def test_a_product_with_erf_of_another_tensor_or_without_the_one_stays_a_product():
    torch.manual_seed(0)
    first = nn.Linear(3, 4).to(DTYPE)
    x = torch.randn(2, 3, dtype=DTYPE)
    for spelled in (lambda t: t * (1.0 + torch.erf(t.flip(-1) / 1.5)), lambda t: t * (2.0 + torch.erf(t / 1.5)),
                    lambda t: t * torch.erf(t / 1.5)):
        assert "product" in {n.op for n in BoundedModule(Chain([first, spelled]), x).program("crown").graph}


@pytest.mark.parametrize("spelled, same_as, inner_op", [
    # k·x·(1 + erf(d·x)) = t·GELU(s·x), s = √2·d (ops/arithmetic._erf_gelu, an exact identity)
    (lambda t: 0.5 * t * (1.0 + torch.erf(t / math.sqrt(2.0))), nn.GELU(), "erf"),  # BERT's first gelu
    (lambda t: t * (torch.erf(t * 0.7071067811865476) + 1) * 0.5, nn.GELU(), "erf"),
    (lambda t: t * 0.5 * (1.0 + torch.erf(t / 1.4142135381698608)), None, "erf"),  # float32's √2 (ONNX)
    (lambda t: t * (1.0 + torch.erf(0.8 * t)), None, "erf"),  # any d
    (lambda t: 3.0 * t * (1.0 + torch.erf(t * -1.3)), None, "erf"),
    # GPT-2's NewGELUActivation, and a rescaled one (s = 2: a = 2β, b = 4κ) (ops/arithmetic._tanh_gelu)
    (lambda t: 0.5 * t * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (t + 0.044715 * torch.pow(t, 3.0)))),
     nn.GELU(approximate="tanh"), "tanh"),
    (lambda t: t * (1.0 + torch.tanh((0.044715 * 4.0 * t ** 3 + t) * (2 * math.sqrt(2.0 / math.pi)))), None, "tanh"),
    # as an ONNX export writes it: float32 constants (κ' = κ·(1 − 3.5e-8)) and x³ as x·(x·x)
    (lambda t: 0.5 * (t * (1.0 + torch.tanh(0.7978845834732056 * (t + 0.044714998453855515 * (t * (t * t)))))),
     None, "tanh"),
])
def test_a_spelt_out_gelu_is_a_scaled_gelu_rule_sound_and_tight(spelled, same_as, inner_op):
    """GELU written out, ``k·x·(1 + erf(d·x))`` or ``k·x·(1 + tanh(a(x + b x³)))`` with GELU's ratio of ``a`` and
    ``b``, becomes ``t·GELU(s·x)``, not the bilinear product: where it is ``nn.GELU`` exactly (``same_as``) every
    method gives that module's bounds, and every method's bounds hold on sampled points."""
    torch.manual_seed(0)
    first, last = nn.Linear(3, 4).to(DTYPE), nn.Linear(4, 2).to(DTYPE)
    x = torch.randn(2, 3, dtype=DTYPE)
    model = Chain([first, spelled, last])
    bm = BoundedModule(model, x)
    ops = {n.op for n in bm.program("crown").graph}
    assert "gelu" in ops and "product" not in ops and inner_op not in ops
    if same_as is not None:
        gelu = BoundedModule(Chain([first, same_as, last]), x)
        for method in ("ibp", "crown-ibp", "crown", "lbp"):
            torch.testing.assert_close(tuple(bm.bounds(x, LinfBall(0.3), method)),
                                       tuple(gelu.bounds(x, LinfBall(0.3), method)), rtol=1e-12, atol=1e-12)
    assert_sound_all_methods(model, x, LinfBall(0.3))


@pytest.mark.parametrize("spelled, exponent", [(lambda t: t * (t * t), 3.0), (lambda t: (t * t) * t, 3.0),
                                               (lambda t: t ** 3 * t, 4.0), (lambda t: t * t.pow(2.0) * t, 4.0)])
def test_a_product_of_a_tensor_and_its_integer_power_is_the_next_power_and_sound(spelled, exponent):
    """``x · xⁿ`` (either order, integer ``n ≥ 1``; how an ONNX export writes ``x³``) is the ``pow`` rule with exponent
    ``n + 1``, not the bilinear product, and every method's bounds hold on sampled points."""
    torch.manual_seed(0)
    first = nn.Linear(3, 4).to(DTYPE)
    x = torch.randn(2, 3, dtype=DTYPE)
    model = Chain([first, spelled, nn.Linear(4, 2).to(DTYPE)])
    graph = BoundedModule(model, x).program("crown").graph
    assert "product" not in {n.op for n in graph}
    assert exponent in {n.attrs.get("exponent") for n in graph if n.op == "pow"}
    assert_sound_all_methods(model, x, LinfBall(0.3))


def test_a_tanh_of_a_cubic_that_is_not_gelus_stays_a_product():
    """``x·(1 + tanh(a(x + b x³)))`` with ``(a/β)² ≠ b/κ`` is no scaled GELU: the bilinear product bounds it."""
    torch.manual_seed(0)
    first = nn.Linear(3, 4).to(DTYPE)
    x = torch.randn(2, 3, dtype=DTYPE)
    spelled = lambda t: t * (1.0 + torch.tanh(0.8 * (t + 0.05 * torch.pow(t, 3.0))))  # noqa: E731
    bm = BoundedModule(Chain([first, spelled]), x)
    assert "product" in {n.op for n in bm.program("crown").graph}
    assert_sound_all_methods(Chain([first, spelled]), x, LinfBall(0.3))
