"""``boundgraph.check``, the users' self-check: it passes sound bounds, finds a wrong rule at its own node,
and tells float32 rounding from a wrong bound."""
import pytest
import torch
import torch.nn as nn

from boundgraph import BoundedModule, L2Ball, LinfBall, check
from boundgraph.ops import RULES
from tests.helpers import DTYPE, METHODS
from tests.random_models import Seeded, random_case


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).to(DTYPE)


@pytest.mark.parametrize("method", METHODS + ("alpha-crown",))
def test_sound_bounds_pass_and_every_interval_and_line_is_compared(method):
    x = torch.rand(2, 4, dtype=DTYPE)
    report = check(BoundedModule(mlp(), x), x, L2Ball(0.4, clip=(0, 1)), method, points=8, pgd_steps=5)
    assert report.sound and report.points == 1 + 8 + 2 * 3
    assert report.comparisons > 0 and {w.where for w in report.worst} >= {"output"}
    if method in ("crown", "crown-ibp"):
        assert {("_1", "upper line"), ("_0", "lower")} <= {(w.where, w.side) for w in report.worst}


def test_a_wrong_rule_is_reported_at_its_own_node_first(monkeypatch):
    relu, original = RULES["relu"], RULES["relu"].lines

    def halved_upper_lines(lower, upper, strategy):  # a buggy rule: its upper lines cut through σ
        lines = original(lower, upper, strategy)
        return lines._replace(upper_bias=lines.upper_bias * 0.5)

    monkeypatch.setattr(relu, "lines", halved_upper_lines)
    x = torch.rand(2, 4, dtype=DTYPE)
    report = check(BoundedModule(mlp(), x), x, LinfBall(0.3), "crown", points=16, pgd_steps=5)
    assert not report.sound
    first = report.violations[0]
    assert (first.where, first.op, first.side) == ("_1", "relu", "upper line")
    assert "VIOLATED upper line of node '_1' (relu)" in str(report)


def test_float32_excess_is_told_apart_as_rounding_by_a_float64_recheck():
    """A deep float32 net with weights ×30–300 (the fuzzer's overflow family, seed 62) cancels huge values: at
    a tolerance of 1e-30 (far below float32 rounding) its bounds miss sampled values, and on the model's
    float64 copy each one holds at the same point; a float64 model gets no such excuse."""
    case = random_case(Seeded(62), ("overflow",))
    assert case.x0.dtype == torch.float32 and case.C is not None  # else: pick a new seed (its search is trivial)
    report = check(BoundedModule(case.model, case.x0), case.x0, case.perturbation, "lbp", case.C, points=16,
                   pgd_steps=10, seed=62, tolerance=1e-30)
    assert report.sound and report.rounding, str(report)
    assert "beyond tolerance by rounding only" in str(report)
    model, x = case.model.double(), case.x0.double()
    strict = check(BoundedModule(model, x), x, case.perturbation, "lbp", case.C.double(), points=16, pgd_steps=10,
                   seed=62, tolerance=1e-30)
    assert not strict.rounding and not strict.sound  # float64: a violation is a violation


def test_a_rule_wrong_even_at_a_single_point_is_not_excused_as_rounding(monkeypatch):
    linear, original = RULES["linear"], RULES["linear"].interval

    def shifted(x, weight, bias):  # a buggy rule: its interval misses the exact value by 0.01
        interval = original(x, weight, bias)
        return type(interval)(interval.lower + 0.01, interval.upper + 0.01)

    monkeypatch.setattr(linear, "interval", shifted)
    x = torch.rand(2, 4, dtype=DTYPE)
    report = check(BoundedModule(mlp(), x), x, LinfBall(0.1), "ibp", points=8, pgd_steps=0)
    assert not report.sound and report.violations[0].where == "_0"
