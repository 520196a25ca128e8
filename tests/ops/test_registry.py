"""Registry-driven properties of every op's example calls (``tests/op_cases.py``): each registered rule has
calls that compile to it, a linear call alone is bounded exactly by CROWN (and by IBP where its weights are
non-negative), a monotone nonlinear call alone is bounded exactly with tight lines, and every call is sound
under every method inside a model with activations around it."""
import pytest
import torch
import torch.nn as nn

from boundgraph import Box, BoundedModule, LinfBall
from boundgraph.ops import RULES, Elementwise
from tests.helpers import DTYPE, METHODS, Chain, assert_sound
from tests.op_cases import CASES, INTERNAL

IDS = [repr(c) for c in CASES]


def _example(case, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *case.shape, generator=g, dtype=DTYPE)


def _model(case) -> nn.Module:
    torch.manual_seed(0)
    model = Chain([case.call]).to(DTYPE)
    return model.eval()


def test_every_registered_rule_has_example_calls():
    """A new rule joins these properties by getting rows in ``tests/op_cases.py``."""
    machine = {name for name, r in RULES.items() if isinstance(r, Elementwise)}  # tests/ops/test_activation.py
    own_tests = {"relu", "param_ramp"}  # tests/ops/test_activation.py, by their own lines' properties
    registered_by_tests = {name for name in RULES if name.startswith("test_")}
    missing = set(RULES) - {c.rule for c in CASES} - machine - own_tests - INTERNAL - registered_by_tests
    assert not missing, f"rules without example calls in tests/op_cases.py: {sorted(missing)}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_each_call_compiles_to_its_rule_and_computes_the_model(case):
    x = _example(case)
    model = _model(case)
    bm = BoundedModule(model, x)  # compiling checks the graph against the model at batches 2 and 3
    assert (case.becomes or case.rule) in {n.op for n in bm.graph}, str(bm.graph)
    x5 = _example(case, batch=5, seed=1)
    torch.testing.assert_close(bm.bounds(x5, LinfBall(0.0), "ibp").lower, model(x5))


def _exact(model: nn.Module, x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact range of an affine map over an L∞ ball: ``f(x) ± ε·Σ|∂f/∂x|``, per example."""
    lows, highs = [], []
    for example in x:
        jacobian = torch.autograd.functional.jacobian(lambda v: model(v[None])[0], example)
        out = model(example[None])[0]
        spread = eps * jacobian.abs().reshape(*out.shape, -1).sum(-1)
        lows.append(out - spread)
        highs.append(out + spread)
    return torch.stack(lows), torch.stack(highs)


@pytest.mark.parametrize("case", [c for c in CASES if c.linear], ids=[repr(c) for c in CASES if c.linear])
def test_a_linear_call_alone_is_bounded_exactly(case):
    x = _example(case)
    model = _model(case)
    bm = BoundedModule(model, x)
    low, high = _exact(model, x, 0.25)
    for method in ("crown", "crown-ibp", "lbp", "crown-lbp") + (("ibp",) if case.monotone else ()):
        bounds = bm.bounds(x, LinfBall(0.25), method)
        torch.testing.assert_close(tuple(bounds), (low, high), rtol=1e-9, atol=1e-9, msg=method)
    ibp = bm.bounds(x, LinfBall(0.25), "ibp")
    assert (ibp.lower <= low + 1e-9).all() and (ibp.upper >= high - 1e-9).all()


NONLINEAR = [c for c in CASES if not c.linear and c.monotone]


@pytest.mark.parametrize("case", NONLINEAR, ids=[repr(c) for c in NONLINEAR])
def test_a_monotone_nonlinear_call_alone_is_bounded_exactly_with_tight_lines(case):
    """Over a box the range of a monotone op is ``[f(l), f(u)]``: IBP attains it, and lines that meet the
    op at the ends they bound (Lyu et al.'s tight lines; max pooling's always do) attain it too."""
    x = _example(case)
    model = _model(case)
    bm = BoundedModule(model, x)
    g = torch.Generator().manual_seed(1)
    lower, upper = x - torch.rand(x.shape, generator=g, dtype=DTYPE), x + torch.rand(x.shape, generator=g, dtype=DTYPE)
    exact = (model(lower), model(upper))
    for method in METHODS:
        bounds = bm.bounds(x, Box(lower, upper), method, lines="tight")
        torch.testing.assert_close(tuple(bounds), exact, rtol=1e-9, atol=1e-9, msg=method)


class _Around(nn.Module):
    """The call between a ReLU layer and a ReLU head, so that relaxations before and after it matter."""

    def __init__(self, case, features: int) -> None:
        super().__init__()
        self.call = case.call
        self.scale = nn.Parameter(torch.randn(*case.shape) * 0.5 + 1.0)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(features, 4), nn.ReLU(), nn.Linear(4, 2))

    def forward(self, x):
        return self.head(self.call(torch.relu(x * self.scale - 0.2)))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_each_call_is_sound_for_every_method_inside_a_nonlinear_model(case):
    torch.manual_seed(1)
    x = _example(case, seed=2)
    features = _model(case)(x)[0].numel()
    model = _Around(case, features).to(DTYPE).eval()
    bm = BoundedModule(model, x)
    for method in METHODS:
        try:
            assert_sound(bm, x, LinfBall(0.3), method, n=4, seed=3, pgd=method in ("crown-ibp", "crown-lbp"))
        except ValueError as error:  # LBP's intervals are not IBP's: they may leave a piece's domain, and say so
            assert case.domain and method in ("lbp", "crown-lbp") and ("domain" in str(error) or "reach 0" in
                                                                         str(error)), str(error)
