"""Pooling: averages (linear, non-negative weights) and maxima (their lines), over random configurations:
kernel, stride (≠ kernel), padding, dilation, ceil_mode, adaptive sizes that do not divide the input."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, strategies as st

from boundgraph import BoundedModule, LinfBall
from boundgraph.ir import Interval
from boundgraph.ops import RULES
from tests.helpers import DTYPE, Chain, assert_sound_all_methods, perturbations


@st.composite
def pool_configs(draw):
    """``(kernel, stride, padding, dilation, ceil_mode, size)`` that torch accepts."""
    k = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    size = draw(st.integers(dilation * (k - 1) + 1, 8))
    return k, draw(st.integers(1, 3)), draw(st.integers(0, k // 2)), dilation, draw(st.booleans()), size


@st.composite
def max_pools(draw):
    """A max pool of any kind, as a module or a function, and the input shape it takes."""
    kind = draw(st.sampled_from(["max2d", "max1d", "adaptive", "amax"]))
    if kind == "adaptive":
        size = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
        return nn.AdaptiveMaxPool2d((draw(st.integers(1, 7)), draw(st.integers(1, 7)))), (2, *size)
    if kind == "amax":
        return (lambda t: t.amax(dim=(1, 3))), (3, 4, 5)
    k, stride, padding, dilation, ceil, size = draw(pool_configs())
    if kind == "max1d":
        return nn.MaxPool1d(k, stride, padding, dilation, ceil_mode=ceil), (2, size)
    return nn.MaxPool2d(k, stride, padding, dilation, ceil_mode=ceil), (2, size, size + 1)


def _node(bm, op: str):
    return next(n for n in bm.graph if n.op == op)


def _random_box(shape, seed: int, width: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(2, *shape, generator=g, dtype=DTYPE)
    radius = torch.rand(2, *shape, generator=g, dtype=DTYPE) * width
    radius[torch.rand(radius.shape, generator=g) < 0.2] = 0.0  # degenerate coordinates
    return centre - radius, centre + radius, g


@given(max_pools(), st.integers(0, 2**16))
def test_max_pool_lines_and_interval_enclose_the_maximum_on_random_boxes(pool, seed):
    """At corners and random points of the box: ``lower line ≤ max ≤ upper line``, and the interval is
    exactly ``[max l, max u]``."""
    module, shape = pool
    model = Chain([module]).to(DTYPE)
    lower, upper, g = _random_box(shape, seed)
    bm = BoundedModule(model, lower)
    node = next(n for n in bm.graph if n.op in ("max_pool", "adaptive_max_pool", "amax"))
    rule = RULES[node.op]
    lines = rule.lines(lower, upper, "adaptive", **node.attrs)
    interval = rule.interval(Interval(lower, upper), **node.attrs)
    torch.testing.assert_close(tuple(interval), (model(lower), model(upper)))
    for k in range(40):
        t = torch.rand(lower.shape, generator=g, dtype=DTYPE)
        if k % 2:
            t = t.round()  # a corner
        z = lower + t * (upper - lower)
        value = model(z)
        below, below_bias, above, above_bias = rule.line_values(lines, z)
        assert (below + below_bias <= value + 1e-12).all()
        assert (above + above_bias >= value - 1e-12).all()


@given(max_pools(), st.integers(0, 2**16))
def test_max_pool_upper_line_lies_below_the_constant_upper_bound_and_meets_it_at_the_top(pool, seed):
    """The chord of ``max(x_j, m)`` is never above ``max u`` (DeepPoly's and auto_LiRPA's constant upper
    bound) on the box, equals it at ``x_j = u_j``, and the lower line equals ``max l`` at ``x_j = l_j``:
    CROWN through a max pool is never looser than those relaxations, nor than IBP."""
    module, shape = pool
    model = Chain([module]).to(DTYPE)
    lower, upper, _ = _random_box(shape, seed)
    bm = BoundedModule(model, lower)
    node = next(n for n in bm.graph if n.op in ("max_pool", "adaptive_max_pool", "amax"))
    lines = RULES[node.op].lines(lower, upper, "adaptive", **node.attrs)
    top = model(upper)
    at_low = lower.flatten(1).gather(1, lines.upper_index).view_as(top)
    at_high = upper.flatten(1).gather(1, lines.upper_index).view_as(top)
    assert (lines.upper_slope * at_low + lines.upper_bias <= top + 1e-12).all()
    torch.testing.assert_close(lines.upper_slope * at_high + lines.upper_bias, top)
    assert ((0 <= lines.upper_slope) & (lines.upper_slope <= 1)).all()
    bottom = lower.flatten(1).gather(1, lines.lower_index).view_as(top)
    torch.testing.assert_close(bottom, model(lower))


def test_a_dominating_element_makes_the_lines_exact():
    lower = torch.tensor([[[[3.0, 0.0], [-1.0, 1.0]]]], dtype=DTYPE)
    upper = lower + torch.tensor([[[[1.0, 2.5], [0.5, 1.0]]]], dtype=DTYPE)  # 3 ≥ every other upper bound
    bm = BoundedModule(nn.MaxPool2d(2).to(DTYPE), lower)
    node = _node(bm, "max_pool")
    lines = RULES["max_pool"].lines(lower, upper, "adaptive", **node.attrs)
    assert lines.lower_index.item() == lines.upper_index.item() == 0
    assert lines.upper_slope.item() == 1.0 and lines.upper_bias.item() == 0.0
    upper[0, 0, 0, 1] = 3.5  # now it does not dominate: the chord of max(x, 3.5) over [3, 4]
    lines = RULES["max_pool"].lines(lower, upper, "adaptive", **node.attrs)
    assert lines.upper_slope.item() == 0.5 and lines.upper_bias.item() == 2.0


@given(max_pools(), st.integers(0, 2**16), st.data())
def test_max_pool_nets_are_sound_for_every_method(pool, seed, data):
    module, shape = pool
    torch.manual_seed(seed)
    features = Chain([module])(torch.zeros(1, *shape))[0].numel()
    conv = nn.Conv1d(shape[0], shape[0], 1) if len(shape) == 2 else nn.Conv2d(shape[0], shape[0], 1)
    model = Chain([conv, nn.ReLU(), module, nn.Flatten(), nn.Linear(features, 2)]).to(DTYPE)
    x0 = torch.randn(2, *shape, dtype=DTYPE)
    assert_sound_all_methods(model, x0, data.draw(perturbations(x0)), n=6)


def test_windows_entirely_in_the_padding_are_refused():
    with __import__("pytest").raises(ValueError, match="entirely in the padding"):
        BoundedModule(Chain([lambda t: F.max_pool1d(t, 2, 1, 1, dilation=2)]), torch.randn(1, 1, 1))


def test_max_pool_lipschitz_constant_counts_overlapping_windows():
    bm = BoundedModule(nn.MaxPool2d(3, stride=1), torch.randn(1, 1, 6, 6))
    assert RULES["max_pool"].lipschitz_of(**_node(bm, "max_pool").attrs) == math.sqrt(9)
    bm = BoundedModule(nn.MaxPool2d(2), torch.randn(1, 1, 6, 6))
    assert RULES["max_pool"].lipschitz_of(**_node(bm, "max_pool").attrs) == 1.0


@given(pool_configs(), st.booleans(), st.sampled_from([None, 2]), st.integers(0, 2**16), st.data())
def test_avg_pools_are_sound_for_every_method(config, count_include_pad, divisor, seed, data):
    k, stride, padding, _, ceil, size = config
    torch.manual_seed(seed)
    pool = nn.AvgPool2d(k, stride, padding, ceil_mode=ceil, count_include_pad=count_include_pad,
                        divisor_override=divisor)
    adaptive = nn.AdaptiveAvgPool2d((data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))))
    out = adaptive(pool(torch.zeros(1, 2, size, size))).shape[1:].numel()
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), pool, adaptive, nn.Flatten(), nn.Linear(out, 2)).to(DTYPE)
    x0 = torch.randn(2, 1, size, size, dtype=DTYPE)
    assert_sound_all_methods(model, x0, data.draw(perturbations(x0)), n=6)


def test_functional_avg_pool_is_sound():
    torch.manual_seed(0)
    model = Chain([nn.Conv2d(1, 2, 3), lambda t: F.avg_pool2d(F.relu(t), 2), nn.Flatten(), nn.Linear(8, 2)])
    assert_sound_all_methods(model.to(DTYPE), torch.randn(2, 1, 6, 6, dtype=DTYPE), LinfBall(0.1))
