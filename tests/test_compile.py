"""``BoundedModule(..., compile=...)``: programs run through ``torch.compile`` give the eager programs' bounds and
gradients, and a backend that cannot compile falls back to eager with a warning."""
import pytest
import torch
import torch.nn as nn
from torch._dynamo import register_backend

from boundgraph import BoundedModule, LinfBall, margin_spec, robust_loss
from tests.helpers import DTYPE


def _model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.ZeroPad2d(1), nn.AvgPool2d(2),
                          nn.Flatten(), nn.Linear(27, 8), nn.ReLU(), nn.Linear(8, 4)).to(DTYPE)  # a pad: autograd's transpose
    x = torch.rand(5, 1, 6, 6, dtype=DTYPE)
    y = torch.tensor([0, 1, 2, 3, 1])
    return model, x, y


def _bounds_and_gradients(bm, model, x, y, methods=("ibp", "crown-ibp", "crown", "crown-lbp"), fusions=(False, True)):
    found = {}
    for method in methods:
        bounds = bm.bounds(x, LinfBall(0.05), method, margin_spec(y, 4, DTYPE))
        found[method] = tuple(b.detach() for b in bounds)
    for fused in fusions:
        model.zero_grad()
        loss = robust_loss(bm, x, y, LinfBall(0.05), "crown-ibp", beta=0.5, fused=fused)
        loss.backward()
        found[f"loss fused={fused}"] = (loss.detach(),) + tuple(p.grad.clone() for p in model.parameters())
    return found


@pytest.mark.parametrize("backend, methods, fusions", [("aot_eager", ("ibp", "crown-ibp", "crown", "crown-lbp"), (False, True)),
                                                       ("inductor", (), (True,))])  # inductor: one program (slow)
def test_compiled_programs_give_the_eager_programs_bounds_and_gradients(backend, methods, fusions):
    model, x, y = _model()
    model.train()  # batch norm normalises by the batch: its program too
    eager = _bounds_and_gradients(BoundedModule(model, x), model, x, y, methods, fusions)
    compiled = _bounds_and_gradients(BoundedModule(model, x, compile=backend), model, x, y, methods, fusions)
    for key, values in eager.items():
        for a, b in zip(values, compiled[key]):
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-10, msg=key)


@register_backend
def boundgraph_test_failing(graph_module, example_inputs):
    raise RuntimeError("no compiler here")


def test_a_backend_that_cannot_compile_falls_back_to_eager_with_a_warning():
    model, x, y = _model()
    model.eval()
    expected = BoundedModule(model, x).bounds(x, LinfBall(0.05), "crown-ibp")
    bm = BoundedModule(model, x, compile="boundgraph_test_failing")
    with pytest.warns(RuntimeWarning, match="could not compile this bound program"):
        bounds = bm.bounds(x, LinfBall(0.05), "crown-ibp")
    torch.testing.assert_close(tuple(bounds), tuple(expected))
    torch.testing.assert_close(tuple(bm.bounds(x, LinfBall(0.05), "crown-ibp")), tuple(expected))  # eager, quietly


def test_compile_takes_a_flag_or_a_backend_name():
    model, x, _ = _model()
    with pytest.raises(ValueError, match="compile must be"):
        BoundedModule(model, x, compile=3)


def test_a_compiled_program_turns_an_overflow_into_vacuous_bounds_never_finite_and_wrong():
    """Under compile the NaN guard marks whole examples (one reduction each): where eager bounds are vacuous the
    compiled ones are too, and elsewhere they are eager's or vacuous."""
    torch.manual_seed(0)
    model = nn.Sequential(*[layer for _ in range(12) for layer in (nn.Linear(8, 8), nn.ReLU())], nn.Linear(8, 3))
    with torch.no_grad():
        for layer in model[::2]:
            layer.weight.mul_(3000.0)
            layer.bias.zero_()
    x = torch.randn(4, 8) * 1e-30
    ball = LinfBall(torch.tensor([0.0, 0.5, 0.5, 0.5]))  # the first example's bounds stay finite
    eager_bm, compiled_bm = BoundedModule(model, x), BoundedModule(model, x, compile="aot_eager")
    for method in ("ibp", "crown-ibp"):
        eager, compiled = eager_bm.bounds(x, ball, method), compiled_bm.bounds(x, ball, method)
        assert torch.isinf(eager.lower[1:]).all()
        if method == "ibp":
            assert torch.isfinite(compiled.lower[0]).all()
        for mine, theirs, infinity in ((compiled.lower, eager.lower, -float("inf")),
                                       (compiled.upper, eager.upper, float("inf"))):
            assert not mine.isnan().any()
            assert ((mine == theirs) | (mine == infinity)).all(), method
            assert (mine[theirs == infinity] == infinity).all(), method
