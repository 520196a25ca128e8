"""Models where perturbed tensors meet (``tests/sequence_models.py``: a BERT-style encoder on embeddings with an
integer padding mask, a minGPT block, a small ViT, LSTM and GRU classifiers on image rows, squeeze-excite and
ConvNeXt blocks): they compile with torch.fx, every method's bounds hold at sampled, corner and PGD points (or
LBP refuses clearly where its intervals leave a piece's domain), and every method is exact at ε = 0."""
import pytest
import torch

from boundgraph import BoundedModule, LinfBall
from tests.helpers import METHODS, assert_sound
from tests.sequence_models import MODELS, build

_LBP = ("lbp", "crown-lbp")  # their intervals are not IBP's: 1/Σexp and the norms' rsqrt may be refused


def _perturb(inputs: tuple, eps: float) -> tuple:
    return (LinfBall(eps),) + (None,) * (len(inputs) - 1)  # BERT's integer mask is not perturbed


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_is_bounded_soundly_by_every_method(name):
    model, inputs = build(name)
    bm = BoundedModule(model, inputs)
    assert bm.traced_by == "fx"
    for method in METHODS:
        try:
            assert_sound(bm, inputs, _perturb(inputs, 0.01), method, n=3, pgd=method == "crown")
        except ValueError as error:
            assert method in _LBP and ("domain" in str(error) or "reach 0" in str(error)), str(error)


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
