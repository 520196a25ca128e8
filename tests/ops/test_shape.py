import torch
import torch.nn as nn
from hypothesis import given, strategies as st

from boundgraph import BoundedModule, LinfBall
from boundgraph.ops import RULES
from tests.helpers import DTYPE, Chain, assert_adjoint, assert_sound_all_methods, perturbations

FLATTENS = [nn.Flatten(), lambda t: t.flatten(1), lambda t: torch.flatten(t, 1), lambda t: t.view(t.size(0), -1),
            lambda t: t.reshape(t.shape[0], -1), lambda t: torch.reshape(t, (-1, 12))]


@given(st.integers(0, len(FLATTENS) - 1), st.integers(0, 2**16), st.data())
def test_every_reshape_spelling_is_one_sound_reshape(spelling, seed, data):
    torch.manual_seed(seed)
    model = Chain([nn.Conv2d(3, 3, 1), nn.ReLU(), FLATTENS[spelling], nn.Linear(12, 2)]).to(DTYPE)
    x0 = torch.randn(2, 3, 2, 2, dtype=DTYPE)
    bm = BoundedModule(model, x0)
    assert [n.op for n in bm.graph].count("reshape") == 1
    assert_sound_all_methods(model, x0, data.draw(perturbations(x0)))


def test_reshape_keeps_working_for_other_batch_sizes():
    model = Chain([lambda t: t.view(t.size(0), -1), nn.Linear(4, 2)]).to(DTYPE)
    bm = BoundedModule(model, torch.randn(1, 2, 2, dtype=DTYPE))
    x = torch.randn(5, 2, 2, dtype=DTYPE)
    lb, ub = bm.bounds(x, LinfBall(0.1), method="crown")
    assert lb.shape == (5, 2) and (lb <= model(x)).all() and (model(x) <= ub).all()


def test_reshape_backward_is_the_transpose():
    x = torch.randn(2, 3, 4, dtype=DTYPE)
    assert_adjoint(RULES["reshape"], x, (), dict(shape=(12,), in_shape=(3, 4)))


def test_identity_and_eval_dropout_change_nothing():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.ReLU(), nn.Identity(), nn.Linear(4, 2)).to(DTYPE)
    model.eval()
    x0 = torch.randn(2, 3, dtype=DTYPE)
    bounds = assert_sound_all_methods(model, x0, LinfBall(0.1))
    plain = nn.Sequential(model[0], model[2], model[4])
    for method, (lb, ub) in bounds.items():
        lb2, ub2 = BoundedModule(plain, x0).bounds(x0, LinfBall(0.1), method=method)
        torch.testing.assert_close((lb, ub), (lb2, ub2))
