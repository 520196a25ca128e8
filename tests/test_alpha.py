"""α-CROWN: sound for every α it tries, and never looser than CROWN (its first iterate is CROWN)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, strategies as st

import torch.nn as nn

from boundgraph import BoundedModule, LinfBall, margin_spec
from boundgraph.alpha import alpha_crown
from tests.helpers import assert_sound, cnns, mlps, perturbations, random_spec


def check(model, x0, ptb, C=None):
    bm = BoundedModule(model, x0)
    crown = bm.bounds(x0, ptb, "crown", C=C)
    alpha = alpha_crown(bm, x0, ptb, C=C, iterations=8, bound_upper=True)
    assert (alpha.lower >= crown.lower - 1e-9).all() and (alpha.upper <= crown.upper + 1e-9).all()
    assert_sound(bm, x0, ptb, "alpha-crown", C=C, n=8, iterations=8)
    return crown, alpha


@given(mlps(), st.data())
def test_alpha_crown_is_sound_and_at_least_as_tight_as_crown_on_random_mlps(model_x0, data):
    model, x0 = model_x0
    check(model, x0, data.draw(perturbations(x0)))


@given(cnns(), st.data())
def test_alpha_crown_is_sound_and_at_least_as_tight_as_crown_on_random_cnns(model_x0, data):
    model, x0 = model_x0
    C = random_spec(x0.shape[0], 2, model(x0).shape[1], 0)
    check(model, x0, data.draw(perturbations(x0)), C)


def test_alpha_crown_improves_on_crown_on_a_wide_net():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 3)).double()
    from boundgraph import LinfBall
    x0 = torch.randn(4, 4, dtype=torch.float64)
    crown, alpha = check(model, x0, LinfBall(0.5))
    assert (alpha.lower - crown.lower).mean() > 1e-3


def test_activations_without_optimisable_lines_keep_crowns_lines_and_relus_are_still_optimised():
    from boundgraph.nn import ParamRamp
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), ParamRamp(16), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2)).double()
    x0 = torch.randn(2, 2, dtype=torch.float64)
    check(model, x0, LinfBall(0.5))


def test_alpha_crown_is_a_method_of_bounds_with_both_sides_by_default():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    x = torch.randn(2, 4, dtype=torch.float64)
    bm = BoundedModule(model, x)
    both = bm.bounds(x, LinfBall(0.2), "alpha-crown")
    lower_only = alpha_crown(bm, x, LinfBall(0.2))
    assert both.upper is not None and lower_only.upper is None
    torch.testing.assert_close(both.lower, lower_only.lower)
    assert_sound(bm, x, LinfBall(0.2), "alpha-crown", iterations=5)


def test_alpha_crown_bounds_batch_norm_in_training_mode_with_the_clean_batch_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).double()
    with torch.no_grad():
        model[1].running_mean.fill_(3.0)
        model[1].running_var.fill_(0.01)
    x = torch.randn(6, 4, dtype=torch.float64)
    bm = BoundedModule(model, x)
    model.train()
    crown = bm.bounds(x, LinfBall(0.05), "crown")
    alpha = bm.bounds(x, LinfBall(0.05), "alpha-crown", iterations=5)
    # both bound the network normalised by the clean batch's statistics (not the running ones)
    assert (alpha.lower <= crown.upper + 1e-9).all() and (alpha.lower >= crown.lower - 1e-9).all()


def test_alpha_crown_runs_under_inference_mode_and_no_grad():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(2, 4)
    bm = BoundedModule(model, x)
    expected = alpha_crown(bm, x, LinfBall(0.2), iterations=3)
    for context in (torch.inference_mode, torch.no_grad):
        with context():
            got = alpha_crown(bm, x.clone(), LinfBall(torch.full((2,), 0.2)), iterations=3)
        torch.testing.assert_close(got.lower, expected.lower)


def test_each_sweep_has_its_own_slopes_and_the_last_one_per_specification_row():
    """α-CROWN (as the peer keeps them): one α per (ReLU, start node) and per row: an intermediate sweep's for
    every neuron's lower and upper row (``[I; −I]``), the output's sweep's per spec row."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.ReLU(), torch.nn.Linear(6, 5), torch.nn.ReLU(),
                                torch.nn.Linear(5, 4)).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    bm = BoundedModule(model, x)
    C = margin_spec(torch.tensor([0, 2]), 4, torch.float64)
    program = bm.program("crown", with_spec=True, lines="alpha", bound_upper=False)
    alphas: dict = {}
    program(bm.core, (x,), (LinfBall(1.0),), C, alphas)
    relus = [n.name for n in bm.graph if n.op == "relu"]
    output = program.graph.output
    assert set(alphas) >= {(relus[0], output), (relus[1], output)}
    assert alphas[(relus[1], output)].shape == (2, 3, 5) and alphas[(relus[0], output)].shape == (2, 3, 6)
    starts = {start for _, start in alphas}
    assert len(starts) >= 2, alphas.keys()  # the second ReLU's input has a sweep (and slopes of the first) of its own
    assert all(alphas[key].shape == (2, 2 * 5, 6) for key in alphas if key[0] == relus[0] and key[1] != output)


def test_alpha_crown_optimises_examples_in_chunks_that_fit_the_budget_with_the_same_bounds(monkeypatch):
    """The slopes grow with the batch: under a small budget the examples are optimised a few at a time (each
    example's slopes are its own), with per-example radii and specifications cut alongside."""
    import boundgraph.alpha as alpha_module
    from boundgraph.emit import SWEEP_BUDGET_BYTES, set_sweep_budget

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    ptb = LinfBall(torch.linspace(0.1, 0.6, 6, dtype=torch.float64))  # one radius per example
    C = margin_spec(y, 3, torch.float64)
    bm = BoundedModule(model, x)
    whole = bm.bounds(x, ptb, "alpha-crown", C, iterations=5)
    import boundgraph.bounded_module as bounded_module

    monkeypatch.setattr(bounded_module, "CROWN_CPU_ELEMENTS", 10**12)  # chunks by memory alone, as on a GPU
    sizes = []
    real_chunk = alpha_module._optimized_chunk
    monkeypatch.setattr(alpha_module, "_optimized_chunk",
                        lambda bm, inputs, *rest: sizes.append(inputs[0].shape[0]) or real_chunk(bm, inputs, *rest))
    per_example = alpha_module._bytes_per_example(
        bm, (x,), (ptb,), C, dict(perturbed=[0], bound_lower=True, bound_upper=False, lines="alpha",
                                  batch_statistics=(), loss_fusion=False))
    assert per_example > 0
    monkeypatch.setattr(alpha_module, "_bytes_per_example", lambda *args: per_example)  # as under the usual budget
    try:
        set_sweep_budget(2 * per_example // alpha_module.ALPHA_BUDGET_SWEEPS + 1)  # two examples at a time
        chunked = bm.bounds(x, ptb, "alpha-crown", C, iterations=5)
        assert sizes == [2, 2, 2]
        assert_sound(bm, x, ptb, "alpha-crown", C, n=8)  # sampled points inside the chunked bounds
    finally:
        set_sweep_budget(SWEEP_BUDGET_BYTES)
    torch.testing.assert_close(tuple(chunked), tuple(whole), rtol=1e-10, atol=1e-10)
