"""Full CROWN's sweeps by windows (``boundgraph/patches.py``): the same bounds as the dense sweeps, used where the
emitter says (box inputs, conv/elementwise chains with small windows), dense elsewhere."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import boundgraph.emit as emit
from boundgraph import BoundedModule, L2Ball, LinfBall, margin_spec
from tests.helpers import DTYPE, assert_sound


def both(model, x, ptb, method, C, monkeypatch, **options):
    """The bounds as emitted, and with every sweep dense (the reference)."""
    with torch.no_grad():
        got = BoundedModule(model, x).bounds(x, ptb, method, C, **options)
        with monkeypatch.context() as patch:
            patch.setattr(emit._Emitter, "patch_plan", lambda self, step: None)
            want = BoundedModule(model, x).bounds(x, ptb, method, C, **options)
    return got, want


MODELS = {
    # DM-small's shape: stride 2, no padding
    "strided": lambda: nn.Sequential(nn.Conv2d(1, 4, 4, 2), nn.ReLU(), nn.Conv2d(4, 6, 4, 1), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(6 * 6 * 6, 10)),
    # padding everywhere: windows reach past the maps' edges
    "padded": lambda: nn.Sequential(nn.Conv2d(1, 3, 3, 1, 1), nn.ReLU(), nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(),
                                    nn.Conv2d(4, 5, 3, 1, 2), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 12 * 12, 10)),
    # a convolution straight into another (no lines between), non-square kernels, a smooth activation
    "mixed": lambda: nn.Sequential(nn.Conv2d(1, 3, (3, 2), 1, (1, 0)), nn.Conv2d(3, 4, 3, 2, 1), nn.Sigmoid(),
                                   nn.Conv2d(4, 4, 2, 1, 1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 11 * 11, 10)),
}


def model_and_input(name: str, batch: int = 2):
    torch.manual_seed(0)
    model = MODELS[name]().to(DTYPE).eval()
    return model, torch.rand(batch, 1, 20, 20, dtype=DTYPE)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("method", ["crown", "alpha-crown"])
def test_window_sweeps_equal_dense_sweeps(name, method, monkeypatch):
    """α-CROWN from its starting slopes (0 iterations): after Adam steps the two trajectories part by up to 5e-5
    here, since Adam's normalised step turns a gradient of rounding size (one sum order against another) into a
    full step; both are α-CROWN bounds (``test_window_sweeps_are_sound``)."""
    model, x = model_and_input(name)
    assert "patches_start" in str(BoundedModule(model, x).program("crown"))  # the path under test is taken
    C = margin_spec(torch.tensor([0, 7]), 10, DTYPE)
    options = {"iterations": 0} if method == "alpha-crown" else {}
    got, want = both(model, x, LinfBall(0.05, clip=(0.0, 1.0)), method, C, monkeypatch, **options)
    assert torch.allclose(got.lower, want.lower, atol=1e-9, rtol=1e-9)
    assert torch.allclose(got.upper, want.upper, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("method", ["crown", "alpha-crown"])
def test_window_sweeps_are_sound(name, method):
    model, x = model_and_input(name, batch=2)
    assert_sound(BoundedModule(model, x), x, LinfBall(0.05, clip=(0.0, 1.0)), method, n=32)


def test_emitter_takes_windows_for_box_inputs_and_dense_sweeps_otherwise(monkeypatch):
    model, x = model_and_input("strided")
    code = str(BoundedModule(model, x).program("crown"))
    assert "patches_start" in code and "if perturbations[0].box:" in code
    # an L2 ball is not a box: the dense branch runs, and gives the dense bounds
    got, want = both(model, x, L2Ball(0.5), "crown", None, monkeypatch)
    assert torch.allclose(got.lower, want.lower, atol=1e-9) and torch.allclose(got.upper, want.upper, atol=1e-9)


def test_windows_as_large_as_the_map_stay_dense():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 5, 1, 2), nn.ReLU(), nn.Conv2d(2, 2, 5, 1, 2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2 * 6 * 6, 3)).to(DTYPE)
    x = torch.rand(2, 1, 6, 6, dtype=DTYPE)
    assert "patches_start" not in str(BoundedModule(model, x).program("crown"))


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 3), st.integers(1, 2), st.integers(0, 2), st.integers(2, 4), st.integers(1, 2),
       st.integers(0, 1), st.integers(0, 10_000))
def test_random_chains_equal_dense(k1, s1, p1, k2, s2, p2, seed):
    """Any kernel, stride and padding of two convolutions: windows give the dense bounds (nan-free, float64)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 3, k1, s1, p1), nn.ReLU(), nn.Conv2d(3, 4, k2, s2, p2), nn.ReLU()).to(DTYPE)
    x = torch.rand(1, 2, 14, 11, dtype=DTYPE)
    if "patches_start" not in str(BoundedModule(model, x).program("crown")):
        return  # windows as large as their maps: dense (``test_windows_as_large_as_the_map_stay_dense``)
    mp = pytest.MonkeyPatch()
    try:
        got, want = both(model, x, LinfBall(0.1, clip=(0.0, 1.0)), "crown", None, mp)
    finally:
        mp.undo()
    assert torch.allclose(got.lower, want.lower, atol=1e-9, rtol=1e-9)
    assert torch.allclose(got.upper, want.upper, atol=1e-9, rtol=1e-9)
