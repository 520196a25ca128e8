"""The mainstream vision families (``tests/families.py``: VGG, AlexNet, ResNet, DenseNet, GoogLeNet,
SqueezeNet, MobileNetV2/V3, EfficientNet, ShuffleNet, RegNet, U-Net, DCGAN's generator, ESPCN, the
style-transfer net) compile, and every method's bounds hold at sampled, corner and PGD points of the set;
CROWN-IBP is at least as tight as IBP on average over the margins of a trained-like spec."""
import pytest
import torch

from boundgraph import BoundedModule, LinfBall
from tests.families import FAMILIES, build
from tests.helpers import METHODS, assert_sound

DENSE = {"unet", "unet_transposed", "dcgan", "espcn", "style_transfer"}  # image outputs: bound a few projections


def _spec(bm: BoundedModule, x: torch.Tensor, rows: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    outputs = torch.Size(bm.output_shape).numel()
    return torch.randn(x.shape[0], rows, outputs, generator=g, dtype=x.dtype)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_is_bounded_soundly_by_every_method(name):
    model, x = build(name)
    bm = BoundedModule(model, x)
    C = _spec(bm, x) if name in DENSE else None
    for method in METHODS:
        assert_sound(bm, x, LinfBall(0.02, clip=(0, 1)), method, C, n=3, pgd=name not in DENSE and method == "crown")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_crown_ibp_is_at_least_as_tight_as_ibp_on_average(name):
    model, x = build(name)
    bm = BoundedModule(model, x)
    C = _spec(bm, x)
    ibp = bm.bounds(x, LinfBall(0.02, clip=(0, 1)), "ibp", C)
    crown_ibp = bm.bounds(x, LinfBall(0.02, clip=(0, 1)), "crown-ibp", C)
    assert (crown_ibp.upper - crown_ibp.lower).mean() <= (ibp.upper - ibp.lower).mean() * (1 + 1e-9)
