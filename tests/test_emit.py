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
