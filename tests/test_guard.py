"""The model must stay the model it was compiled from: every change that would leave its output outside
the compiled bounds is refused with a clear error, never bounded as the old model."""
import pickle

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from boundgraph import BoundedModule, LinfBall, ParamRamp, UnsupportedOpError
from boundgraph.errors import ModelChangedError
from boundgraph.guard import describe_change, fingerprint
from tests.helpers import DTYPE, METHODS, assert_sound

X = torch.randn(3, 4, dtype=DTYPE)


def mlp(bias=True):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5, bias=bias), nn.ReLU(), nn.Linear(5, 3)).to(DTYPE)


class Scaled(nn.Module):
    """``forward`` reads Python attributes: a number and a flag."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3).to(DTYPE)
        self.t, self.flag = 2.0, True

    def forward(self, x):
        h = self.fc(x) * self.t
        return h.relu() if self.flag else h


def test_a_swapped_layer_is_refused():
    model = mlp()
    bm = BoundedModule(model, X)
    model[1] = nn.Identity()
    with pytest.raises(ModelChangedError, match="module '1' was a ReLU and is now a Identity"):
        bm.bounds(X, LinfBall(0.1), "crown")


def test_a_bias_added_to_a_layer_built_without_one_is_refused():
    model = mlp(bias=False)
    bm = BoundedModule(model, X)
    model[0].bias = nn.Parameter(torch.ones(5, dtype=DTYPE))
    with pytest.raises(ModelChangedError, match="parameter 'bias' of module '0' changed from None"):
        bm.bounds(X, LinfBall(0.1), "crown")


@pytest.mark.parametrize("attribute, value", [("t", 3.0), ("flag", False)])
def test_a_python_attribute_read_in_forward_that_changes_is_refused(attribute, value):
    model = Scaled()
    bm = BoundedModule(model, X)
    setattr(model, attribute, value)
    with pytest.raises(ModelChangedError, match=f"attribute '{attribute}' of the model changed"):
        bm.bounds(X, LinfBall(0.1), "crown")


def test_a_model_converted_to_another_dtype_is_refused():
    model = mlp()
    bm = BoundedModule(model, X)
    model.float()
    with pytest.raises(ModelChangedError, match="torch.float64.*torch.float32"):
        bm.bounds(X.float(), LinfBall(0.1))


def test_parameter_values_may_change_freely_and_the_bounds_follow_them():
    model = mlp()
    bm = BoundedModule(model, X)
    with torch.no_grad():
        model[0].weight.mul_(-2)
    for method in METHODS:
        assert_sound(bm, X, LinfBall(0.2), method)


class FunctionalDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3).to(DTYPE)

    def forward(self, x):
        return F.dropout(self.fc(x), 0.5, training=self.training)


class FunctionalBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3).to(DTYPE)
        self.register_buffer("mean", torch.full((3,), 5.0, dtype=DTYPE))
        self.register_buffer("var", torch.full((3,), 0.01, dtype=DTYPE))

    def forward(self, x):
        return F.batch_norm(self.fc(x), self.mean, self.var, training=self.training)


@pytest.mark.parametrize("make, reason", [(FunctionalDropout, "dropout in training mode"),
                                          (FunctionalBatchNorm, "batch norm with training=True")])
def test_functional_code_that_reads_the_training_flag_is_refused_in_training_mode(make, reason):
    model = make().eval()
    bm = BoundedModule(model, X)
    bm.bounds(X, LinfBall(0.1))  # eval mode: the compiled graph is the model
    model.train()
    with pytest.raises(ValueError, match=f"in training mode.*{reason}"):
        bm.bounds(X, LinfBall(0.1))
    model.eval()
    for method in METHODS:
        assert_sound(bm, X, LinfBall(0.1), method)


def test_training_mode_without_mode_dependent_code_is_bounded():
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).to(DTYPE)
    bm = BoundedModule(model, X)
    model.train()  # batch norm normalises with the clean batch's statistics: supported
    running = model[1].running_mean.clone()
    bm.bounds(X, LinfBall(0.1), "crown-ibp")
    torch.testing.assert_close(model[1].running_mean, running)  # the training-mode trace left no trace


def test_a_paramramp_eta_loaded_out_of_range_is_refused():
    model = nn.Sequential(nn.Linear(4, 5), ParamRamp(5), nn.Linear(5, 3)).to(DTYPE)
    bm = BoundedModule(model, X)
    state = model.state_dict()
    state["1.eta"] = torch.tensor(1.5, dtype=DTYPE)
    model.load_state_dict(state)
    for method in METHODS:
        with pytest.raises(ValueError, match=r"eta must lie in \[0, 1\].*1.5"):
            bm.bounds(X, LinfBall(0.1), method)


class BranchOnBatch(nn.Module):
    """Control flow on the batch size: torch.fx cannot trace it, torch.export specialises it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3).to(DTYPE)

    def forward(self, x):
        if x.shape[0] > 3:
            return self.fc(x) * 2
        return self.fc(x)


def test_control_flow_on_the_batch_size_is_caught():
    with pytest.raises(ValueError, match="a batch of 4.*control flow on shapes"):
        BoundedModule(BranchOnBatch(), X)  # the example's batch is 3; the check runs the graph at 4 too
    bm = BoundedModule(BranchOnBatch(), torch.randn(6, 4, dtype=DTYPE))  # both checked batches take one branch
    with pytest.raises(ValueError, match="a batch of 2.*control flow on shapes"):
        bm.bounds(torch.randn(2, 4, dtype=DTYPE), LinfBall(0.1))


def test_forward_hooks_are_refused_because_tracing_does_not_see_them():
    model = mlp()
    model[0].register_forward_hook(lambda module, args, out: out * 2)
    with pytest.raises(UnsupportedOpError, match="forward hooks"):
        BoundedModule(model, X)
    model = mlp()
    bm = BoundedModule(model, X)
    model[2].register_forward_pre_hook(lambda module, args: None)
    with pytest.raises(ModelChangedError, match="forward hooks"):
        bm.bounds(X, LinfBall(0.1))


def test_describing_a_change_names_what_changed_and_nothing_when_nothing_did():
    model = mlp()
    before = fingerprint(model)
    assert describe_change(before, fingerprint(model)) is None
    model.extra = [1, 2]
    assert "attribute 'extra' of the model changed from 'absent'" in describe_change(before, fingerprint(model))


def test_a_bounded_module_pickles_after_bounds_were_computed(tmp_path):
    model = mlp()
    bm = BoundedModule(model, X)
    expected = bm.bounds(X, LinfBall(0.1), "crown")
    copy = pickle.loads(pickle.dumps(bm))
    torch.save(bm, tmp_path / "bm.pt")
    for got in (copy.bounds(X, LinfBall(0.1), "crown"),
                torch.load(tmp_path / "bm.pt", weights_only=False).bounds(X, LinfBall(0.1), "crown")):
        torch.testing.assert_close(got.lower, expected.lower)
        torch.testing.assert_close(got.upper, expected.upper)
