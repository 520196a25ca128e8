import torch
import torch.nn as nn
from hypothesis import given, strategies as st

from boundgraph import BoundedModule
from boundgraph.ops import LINE_STRATEGIES, RULES
from tests.helpers import DTYPE, Chain, METHODS, assert_sound, perturbations, relu_spelling


@given(st.integers(0, 2**16), st.sampled_from(LINE_STRATEGIES))
def test_relu_lines_enclose_relu_on_the_interval(seed, strategy):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(50, generator=g, dtype=DTYPE), torch.randn(50, generator=g, dtype=DTYPE)
    lower, upper = torch.minimum(a, b), torch.maximum(a, b)
    lines = RULES["relu"].lines(lower, upper, strategy)
    for t in torch.linspace(0, 1, 21, dtype=DTYPE):
        z = lower + t * (upper - lower)
        relu = z.clamp(min=0)
        lower_bias = 0 if lines.lower_bias is None else lines.lower_bias
        assert (lines.lower_slope * z + lower_bias <= relu + 1e-12).all()
        assert (lines.upper_slope * z + lines.upper_bias >= relu - 1e-12).all()


def test_relu_lines_are_exact_on_stable_neurons():
    lower = torch.tensor([0.5, -3.0], dtype=DTYPE)
    upper = torch.tensor([2.0, -1.0], dtype=DTYPE)
    lines = RULES["relu"].lines(lower, upper, "adaptive")
    assert lines.lower_slope.tolist() == [1.0, 0.0] and lines.upper_slope.tolist() == [1.0, 0.0]
    assert lines.upper_bias.tolist() == [0.0, 0.0]


@given(st.integers(0, 3), st.integers(1, 4), st.integers(0, 2**16), st.sampled_from(LINE_STRATEGIES), st.data())
def test_relu_every_spelling_is_sound_for_every_method(spelling, width, seed, strategy, data):
    torch.manual_seed(seed)
    model = Chain([nn.Linear(3, width), relu_spelling(spelling), nn.Linear(width, 2)]).to(DTYPE)
    x0 = torch.randn(2, 3, dtype=DTYPE)
    ptb = data.draw(perturbations(x0))
    bm = BoundedModule(model, x0)
    assert [n.op for n in bm.graph].count("relu") == 1
    for method in METHODS:
        assert_sound(bm, x0, ptb, method, lines=strategy)


def test_relu_upper_line_is_sound_on_very_narrow_unstable_intervals():
    lower = torch.tensor([-1e-14, -3e-300], dtype=DTYPE)
    upper = torch.tensor([1e-14, 1e-300], dtype=DTYPE)
    lines = RULES["relu"].lines(lower, upper, "adaptive")
    assert (lines.upper_slope * upper + lines.upper_bias >= upper).all()
    assert torch.isfinite(lines.upper_slope).all()
