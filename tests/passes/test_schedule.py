import pytest
import torch
import torch.nn as nn

from boundgraph import BoundedModule, LinfBall, ParamRamp
from boundgraph.passes import attach_rules, canonicalize, mark_perturbed, propagate_shapes, schedule
from boundgraph.trace import trace
from tests.helpers import DTYPE, assert_sound


def scheduled(method):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(1, 3)
    graph = mark_perturbed(propagate_shapes(canonicalize(trace(model, (x,)), model), model, (x,)), [0])
    return schedule(graph, attach_rules(graph), method)


def kinds(sched, kind):
    return [s.node for s in sched.steps if s.kind == kind]


def test_ibp_bounds_every_node_by_intervals_and_sweeps_nothing():
    sched = scheduled("ibp")
    assert kinds(sched, "sweep") == [] and kinds(sched, "interval")[-1] == sched.output


def test_crown_ibp_is_intervals_up_to_the_last_activation_then_one_sweep():
    sched = scheduled("crown-ibp")
    assert kinds(sched, "sweep") == [sched.output]
    assert sched.output not in kinds(sched, "interval")  # the output comes from CROWN alone
    assert len(kinds(sched, "lines")) == 2


def test_crown_sweeps_from_every_pre_activation_then_the_output():
    sched = scheduled("crown")
    assert kinds(sched, "sweep") == ["_0", "_2", sched.output]
    sweep = next(s for s in sched.steps if s.kind == "sweep" and s.node == "_2")
    assert sweep.order == ["_2", "_1", "_0", "input_1"]


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown method"):
        scheduled("alpha-beta-gamma")


@pytest.mark.parametrize("first, second", [("relu", "ramp"), ("ramp", "relu"), ("relu", "relu")])
def test_full_crown_through_two_activations_in_a_row_is_sound(first, second):
    make = {"relu": lambda: nn.ReLU(), "ramp": lambda: ParamRamp(5)}
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), make[first](), make[second](), nn.Linear(5, 3)).to(DTYPE)
    x = torch.randn(2, 4, dtype=DTYPE)
    bm = BoundedModule(model, x)
    assert_sound(bm, x, LinfBall(0.3), "crown")
    assert_sound(bm, x, LinfBall(0.3), "alpha-crown", iterations=3)


@pytest.mark.parametrize("model", [nn.Linear(4, 3), nn.Flatten(), nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))])
def test_crown_lbp_on_a_model_without_activations_is_exact(model):
    model = model.to(DTYPE)
    x = torch.randn(2, 4, dtype=DTYPE)
    bm = BoundedModule(model, x)
    exact = bm.bounds(x, LinfBall(0.1), "ibp" if isinstance(model, nn.Flatten) else "crown")
    for method in ("lbp", "crown-lbp"):
        got = bm.bounds(x, LinfBall(0.1), method)
        torch.testing.assert_close(got.lower, exact.lower)
        torch.testing.assert_close(got.upper, exact.upper)
