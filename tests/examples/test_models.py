import pytest
import torch

from boundgraph import BoundedModule, LinfBall
from examples.models import MODELS
from tests.helpers import assert_sound


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", [(1, 28), (3, 32)])
def test_every_zoo_model_builds_compiles_and_is_soundly_bounded(name, shape):
    channels, size = shape
    torch.manual_seed(0)
    model = MODELS[name](channels, size, 10).eval()
    x = torch.rand(2, channels, size, size)
    bm = BoundedModule(model, x)
    assert model(x).shape == (2, 10)
    for method in ("ibp", "crown-ibp"):
        assert_sound(bm, x, LinfBall(0.001, clip=(0, 1)), method, n=4, pgd=False)


def test_cnn7_folds_the_batch_norms_of_its_convolutions_and_keeps_the_linear_layers():
    model = MODELS["cnn7"](3, 32, 10).eval()
    ops = [n.op for n in BoundedModule(model, torch.rand(1, 3, 32, 32)).graph]
    assert ops.count("bn_fold_weight") == 5 and ops.count("batch_norm") == 1
