"""Models where perturbed tensors meet (``tests/sequence_models.py``: a BERT-style encoder on embeddings with an
integer padding mask, a minGPT block, a small ViT, LSTM and GRU classifiers on image rows, squeeze-excite and
ConvNeXt blocks): they compile with torch.fx, every method's bounds hold at sampled, corner and PGD points,
every method is exact at ε = 0; CROWN-IBP and CROWN are no looser than IBP."""
import pytest
import torch
import torch.nn as nn

from boundgraph import BoundedModule, LinfBall, UnsupportedOpError
from tests.helpers import METHODS, assert_sound
from tests.sequence_models import MODELS, build


def _perturb(inputs: tuple, eps: float) -> tuple:
    return (LinfBall(eps),) + (None,) * (len(inputs) - 1)  # BERT's integer mask is not perturbed


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_is_bounded_soundly_by_every_method(name):
    model, inputs = build(name)
    bm = BoundedModule(model, inputs)
    assert bm.traced_by == "fx"
    for method in METHODS:
        assert_sound(bm, inputs, _perturb(inputs, 0.01), method, n=3, pgd=method == "crown")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_crown_ibp_and_crown_are_no_looser_than_ibp_on_average(name):
    """CROWN-IBP's last sweep starts from IBP's own intervals, and a linear bound of the output concretised over
    the box is at most IBP's where the relaxations are tight; CROWN refines those intervals further."""
    model, inputs = build(name)
    bm = BoundedModule(model, inputs)
    width = {}
    for method in ("ibp", "crown-ibp", "crown"):
        lower, upper = bm.bounds(inputs, _perturb(inputs, 0.01), method)
        width[method] = float((upper - lower).detach().mean())
    assert width["crown-ibp"] <= width["ibp"] * (1 + 1e-9), width
    assert width["crown"] <= width["crown-ibp"] * (1 + 1e-9), width


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_method_is_exact_where_the_set_is_one_point(name):
    model, inputs = build(name)
    bm = BoundedModule(model, inputs)
    out = model(*inputs)
    for method in METHODS:
        bounds = bm.bounds(inputs, _perturb(inputs, 0.0), method)
        torch.testing.assert_close(tuple(bounds), (out, out), rtol=1e-9, atol=1e-9, msg=method)


def test_a_padded_token_changes_nothing_and_the_mask_is_not_perturbed():
    model, (x, mask) = build("bert")
    bm = BoundedModule(model, (x, mask))
    moved = x.clone()
    moved[-1, -2:] += 3.0  # the padded tokens of the second example
    lower, upper = bm.bounds((x, mask), (LinfBall(0.0), None), "crown")
    torch.testing.assert_close(model(moved, mask), model(x, mask))
    torch.testing.assert_close(lower, model(moved, mask))
    with pytest.raises(ValueError, match="only floating-point inputs can be perturbed"):
        bm.bounds((x, mask), (LinfBall(0.01), LinfBall(0.01)), "ibp")


def test_a_sequence_first_module_on_the_models_own_input_is_refused_with_the_fix():
    class Direct(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(6, 3)

        def forward(self, x):
            return self.lstm(x)[0][-1]

    with pytest.raises(UnsupportedOpError, match=r"batch_first=False.*x.transpose\(0, 1\)"):
        BoundedModule(Direct().double(), torch.randn(5, 2, 6, dtype=torch.float64))
