import pytest
import torch
import torch.nn as nn

from boundgraph import BoundedModule, LinfBall
from boundgraph.ir import BoundGraph
from tests.helpers import DTYPE, assert_sound


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)
        self.bias = nn.Parameter(torch.zeros(2))  # a name the program itself also uses

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x))) + self.bias


def test_programs_are_readable_torch_code_with_source_lines():
    bm = BoundedModule(Net(), torch.randn(1, 3))
    code = str(bm.program("crown-ibp"))
    assert code.startswith("def crown_ibp_bounds(model, inputs, perturbations, C):")
    assert "fc1_weight = model.fc1.weight" in code
    assert "RELU.lines(fc1.lower, fc1.upper, 'adaptive')" in code
    assert "test_emit.py:" in code and "self.fc2(torch.relu(self.fc1(x))) + self.bias" in code
    assert "# CROWN: backward sweep from add" in code


def test_programs_are_cached_per_method_spec_and_bounds_asked_for():
    bm = BoundedModule(Net(), torch.randn(1, 3))
    assert bm.program("crown") is bm.program("crown")
    assert bm.program("crown") is not bm.program("crown", with_spec=True)
    assert bm.program("crown") is not bm.program("crown", bound_upper=False)
    assert "upper=False" in str(bm.program("crown-ibp", bound_upper=False))


def test_a_call_interprets_no_graph(monkeypatch):
    model = Net().to(DTYPE)
    x = torch.randn(2, 3, dtype=DTYPE)
    bm = BoundedModule(model, x)
    expected = {method: assert_sound(bm, x, LinfBall(0.1), method)  # compiled, one-time checks done
                for method in ("ibp", "crown-ibp", "crown")}

    def refuse(*args, **kwargs):
        raise AssertionError("the graph was walked during a call")

    monkeypatch.setattr(BoundGraph, "__iter__", refuse)
    monkeypatch.setattr(BoundGraph, "__getitem__", refuse)
    for method, bounds in expected.items():
        torch.testing.assert_close(tuple(bm.bounds(x, LinfBall(0.1), method)), tuple(bounds))


def test_a_node_named_like_a_program_variable_does_not_clash():
    model = Net().to(DTYPE)
    with torch.no_grad():
        model.bias.fill_(5.0)
    x = torch.randn(2, 3, dtype=DTYPE)
    lb, ub = assert_sound(BoundedModule(model, x), x, LinfBall(0.0), "crown")
    torch.testing.assert_close(lb, model(x))


def test_modules_named_like_python_keywords_are_read_by_getattr():
    model = nn.Sequential()
    model.add_module("lambda", nn.Linear(3, 2))
    model.add_module("class", nn.ReLU())
    model = model.to(DTYPE)
    x = torch.randn(2, 3, dtype=DTYPE)
    bm = BoundedModule(model, x)
    assert "getattr(model, 'lambda').weight" in str(bm.program("crown"))
    assert_sound(bm, x, LinfBall(0.1), "crown")


def _cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(64, 10), nn.ReLU(), nn.Linear(10, 3)).to(DTYPE).eval()
    with torch.no_grad():
        model[3].running_mean.uniform_(-0.5, 0.5)
    return model, torch.rand(3, 1, 8, 8, dtype=DTYPE)


def test_full_crown_under_a_tiny_memory_budget_gives_the_unbounded_bounds():
    """The refining sweeps take their rows in chunks that fit the budget (one row each here): same bounds, for CROWN
    and for α-CROWN, whose slopes the chunks share."""
    from boundgraph import L2Ball
    from boundgraph.emit import SWEEP_BUDGET_BYTES, set_sweep_budget

    model, x = _cnn()
    bm = BoundedModule(model, x)
    for ptb in (LinfBall(0.05, clip=(0, 1)), L2Ball(0.2)):
        for method in ("crown", "alpha-crown"):
            unbounded = bm.bounds(x, ptb, method, iterations=3)
            try:
                set_sweep_budget(1)
                bounded = bm.bounds(x, ptb, method, iterations=3)
            finally:
                set_sweep_budget(SWEEP_BUDGET_BYTES)
            torch.testing.assert_close(tuple(bounded), tuple(unbounded), rtol=1e-12, atol=1e-12, msg=f"{method} {ptb}")
    with pytest.raises(ValueError, match="at least one byte"):
        set_sweep_budget(0)


def test_a_batch_sweeps_each_examples_own_unstable_neurons_and_bounds_as_the_examples_do_one_by_one():
    """A refining sweep bounds, for each example, the neurons unstable in it, padded with stable ones to the
    batch's largest count (not the union over the batch): the whole batch's program gives each example the
    output bounds it gets alone, also with padding (examples whose counts differ, radii per example) and under
    a one-row budget; a padded row may tighten a stable neuron's interval, never loosen it or change which
    neurons are unstable."""
    from boundgraph.emit import SWEEP_BUDGET_BYTES, set_sweep_budget, unstable_rows

    model, _ = _cnn()
    x = torch.rand(4, 1, 8, 8, dtype=DTYPE, generator=torch.Generator().manual_seed(3))
    ptb = LinfBall(torch.tensor([0.002, 0.05, 0.01, 0.1], dtype=DTYPE), clip=(0, 1))
    bm = BoundedModule(model, x)
    program = bm.program("crown", intermediates=True)
    alone = [program(bm.core, (x[i:i + 1],), (ptb.select(x, torch.tensor([i])),), None) for i in range(4)]
    tightened = 0
    for budget in (SWEEP_BUDGET_BYTES, 1):
        try:
            set_sweep_budget(budget)
            output, intervals, _ = program(bm.core, (x,), (ptb,), None)
        finally:
            set_sweep_budget(SWEEP_BUDGET_BYTES)
        for i, (one_output, one_intervals, _) in enumerate(alone):
            torch.testing.assert_close(tuple(t[i:i + 1] for t in output), tuple(one_output), rtol=1e-12, atol=1e-12)
            for name, interval in one_intervals.items():  # a padded row tightens a stable neuron: still stable
                lower, upper = (t[i:i + 1] for t in intervals[name])
                assert bool((lower >= interval.lower - 1e-12).all() and (upper <= interval.upper + 1e-12).all()), name
                assert torch.equal((lower < 0) & (upper > 0), (interval.lower < 0) & (interval.upper > 0)), name
                tightened += int(((lower > interval.lower + 1e-9) | (upper < interval.upper - 1e-9)).sum())
    counts = [int(((t.lower < 0) & (t.upper > 0)).flatten(1).sum(1).unique().numel()) for t in intervals.values()]
    assert max(counts) > 1 and tightened > 0  # counts differ within a layer: rows were padded, and they refined
    mask = torch.tensor([[True, False, True, False], [False, False, False, True]])
    assert unstable_rows(mask).tolist() == [[0, 2], [3, 0]]  # its own first, then stable ones as padding


def test_the_first_layer_is_bounded_by_ibp_over_a_box_and_by_a_sweep_otherwise():
    """One linear layer of the input: IBP's interval is its exact range over a box (L∞ ball, clipped or not), so the
    sweep runs only for other sets (an L2 ball), where it is tighter."""
    from boundgraph import L2Ball

    model, x = _cnn()
    bm = BoundedModule(model, x)
    code = str(bm.program("crown"))
    assert "if not perturbations[0].box:" in code, code
    report_box = assert_sound(bm, x, LinfBall(0.05), "crown")
    assert report_box is not None
    _, intervals, _ = bm.program("crown", intermediates=True)(bm.core, (x,), (L2Ball(0.3),))
    ibp = bm.program("ibp", intermediates=True)(bm.core, (x,), (L2Ball(0.3),))[1]
    first = next(n.name for n in bm.graph if n.op == "conv2d")
    assert (intervals[first].upper - intervals[first].lower < ibp[first].upper - ibp[first].lower - 1e-9).any()
