"""Products of two perturbed tensors: McCormick's planes enclose ``x·y`` on every box, the adaptive choice
never loses to the other plane at the box's extreme, IBP is the exact range, and models that multiply,
divide or matrix-multiply perturbed tensors (squeeze-excite gates, attention scores) are sound under every
method and exact at ε = 0."""
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st

from boundgraph import BoundedModule, LinfBall, UnsupportedOpError
from boundgraph.ir import Interval
from boundgraph.ops import LINE_STRATEGIES, RULES
from boundgraph.ops.bilinear import _plane_extreme, softmax_range
from tests.helpers import DTYPE, METHODS, Chain, assert_sound, perturbations


def _boxes(seed: int, n: int = 300):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(2, n, generator=g, dtype=DTYPE) * torch.tensor([[0.3], [3.0]], dtype=DTYPE)
    widths = torch.rand(2, n, generator=g, dtype=DTYPE) * 2
    widths[:, ::7] = 0.0
    (lx, ly), (ux, uy) = centres - widths / 2, centres + widths / 2
    return lx, ux, ly, uy, g


@given(st.integers(0, 2**16), st.sampled_from(LINE_STRATEGIES))
def test_mccormick_planes_enclose_the_product_on_every_box(seed, strategy):
    lx, ux, ly, uy, g = _boxes(seed)
    rule = RULES["product"]
    lines = rule.lines(lx, ux, ly, uy, strategy)
    interval = rule.interval(Interval(lx, ux), Interval(ly, uy))
    for k in range(60):
        s, t = torch.rand(2, lx.shape[0], generator=g, dtype=DTYPE)
        if k % 3 == 0:
            s, t = s.round(), t.round()  # corners
        x, y = lx + s * (ux - lx), ly + t * (uy - ly)
        value = x * y
        low, low_bias, high, high_bias = rule.line_values(lines, x, y)
        slack = 1e-12 * (1 + value.abs())
        assert (low + low_bias <= value + slack).all() and (high + high_bias >= value - slack).all()
        assert (interval.lower <= value + slack).all() and (interval.upper >= value - slack).all()
    corners = torch.stack([lx * ly, lx * uy, ux * ly, ux * uy])
    torch.testing.assert_close(tuple(interval), (corners.amin(0), corners.amax(0)))


@given(st.integers(0, 2**16))
def test_the_adaptive_plane_is_the_one_whose_extreme_over_the_box_is_tighter(seed):
    lx, ux, ly, uy, _ = _boxes(seed)
    rule = RULES["product"]
    chosen = rule.lines(lx, ux, ly, uy, "adaptive")
    for strategy in ("zero", "one"):
        other = rule.lines(lx, ux, ly, uy, strategy)
        assert (_plane_extreme(chosen.lower_x, chosen.lower_y, chosen.lower_bias, lx, ux, ly, uy, True) >=
                _plane_extreme(other.lower_x, other.lower_y, other.lower_bias, lx, ux, ly, uy, True) - 1e-12).all()
        assert (_plane_extreme(chosen.upper_x, chosen.upper_y, chosen.upper_bias, lx, ux, ly, uy, False) <=
                _plane_extreme(other.upper_x, other.upper_y, other.upper_bias, lx, ux, ly, uy, False) + 1e-12).all()


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, hidden: int, gate) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, channels, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(channels, hidden, 1), nn.Conv2d(hidden, channels, 1)
        self.gate = gate
        self.head = nn.Linear(channels, 2)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        scale = self.gate(self.fc2(torch.relu(self.fc1(h.mean((2, 3), keepdim=True)))))
        return self.head((h * scale).mean((2, 3)))


class Scores(nn.Module):
    """Attention's bilinear core without softmax: ``(q kᵀ) v`` and a division by a perturbed norm."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.head = nn.Linear(d, 2)

    def forward(self, x):
        scores = self.q(x) @ self.k(x).transpose(-2, -1) / 2.0
        mixed = torch.tanh(scores) @ self.v(x)
        return self.head((mixed / (1.0 + (x * x).sum(-1, keepdim=True))).mean(1))


@settings(max_examples=12)
@given(st.sampled_from(["se-sigmoid", "se-hardsigmoid", "scores"]), st.integers(0, 2**16), st.data())
def test_models_with_products_of_perturbed_tensors_are_sound_for_every_method(kind, seed, data):
    torch.manual_seed(seed)
    if kind == "scores":
        model, x = Scores(4), torch.randn(2, 3, 4, dtype=DTYPE)
    else:
        model = SqueezeExcite(3, 2, torch.sigmoid if kind == "se-sigmoid" else nn.Hardsigmoid())
        x = torch.randn(2, 2, 4, 4, dtype=DTYPE)
    model = model.to(DTYPE)
    bm = BoundedModule(model, x)
    ptb = data.draw(perturbations(x))
    for method in METHODS + ("alpha-crown",):
        try:
            assert_sound(bm, x, ptb, method, n=6)
        except ValueError as error:  # a method whose bounds of the divisor reach 0 refuses, clearly
            assert kind == "scores" and "reciprocal: its input's bounds reach 0" in str(error), str(error)


def test_products_are_exact_where_the_set_is_one_point():
    torch.manual_seed(0)
    model = Scores(4).to(DTYPE)
    x = torch.randn(3, 3, 4, dtype=DTYPE)
    bm = BoundedModule(model, x)
    for method in METHODS:
        bounds = bm.bounds(x, LinfBall(0.0), method)
        torch.testing.assert_close(tuple(bounds), (model(x), model(x)), rtol=1e-12, atol=1e-12)


def test_a_perturbed_divisor_whose_bounds_reach_zero_is_refused_at_bound_time():
    model = Chain([nn.Linear(3, 3), lambda t: t / t.flip(1)]).to(DTYPE)
    x = torch.randn(2, 3, dtype=DTYPE)
    bm = BoundedModule(model, x)
    with pytest.raises(ValueError, match="reciprocal: its input's bounds reach 0"):
        bm.bounds(x, LinfBall(100.0), "crown")


def test_matrix_products_of_unlike_ranks_are_refused_when_compiled():
    class Unlike(nn.Module):
        def forward(self, x):
            return x[:, None] @ x.transpose(1, 2)[:, :, :2]  # (B, 1, 3, 4) @ (B, 4, 2): ranks differ

    with pytest.raises(UnsupportedOpError, match="product of two perturbed matrices"):
        BoundedModule(Unlike(), torch.randn(2, 3, 4))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**16), st.sampled_from([1e-3, 1.0, 30.0, 1e4]))
def test_softmax_range_is_the_exact_range_of_each_element_over_the_box(seed, scale):
    """Every point's softmax lies in it, and the corner that maximises x_i and minimises the others (or the
    reverse) meets it: it is the exact range, finite however wide the box (no exp overflows)."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(4, 6, generator=g, dtype=DTYPE) * scale
    radius = torch.rand(4, 6, generator=g, dtype=DTYPE) * scale
    box = Interval(centre - radius, centre + radius)
    low, high = softmax_range(box, 1)
    assert torch.isfinite(low).all() and torch.isfinite(high).all()
    for _ in range(50):
        point = box.lower + torch.rand(4, 6, generator=g, dtype=DTYPE) * (box.upper - box.lower)
        value = point.softmax(1)
        assert (low <= value * (1 + 1e-12) + 1e-300).all() and (value <= high * (1 + 1e-12) + 1e-300).all()
    eye = torch.eye(6, dtype=torch.bool)
    for i in range(6):  # corners: x_i high, the others low; and the reverse
        best = torch.where(eye[i], box.upper, box.lower).softmax(1)[:, i]
        worst = torch.where(eye[i], box.lower, box.upper).softmax(1)[:, i]
        torch.testing.assert_close(high[:, i], best, rtol=1e-9, atol=1e-300)
        torch.testing.assert_close(low[:, i], worst, rtol=1e-9, atol=1e-300)


def test_softmax_of_scores_too_wide_for_exp_is_bounded_finitely_and_soundly():
    """Scores whose bounds reach 1e4 (exp overflows in float32 and float64) still give finite bounds of the
    attention weights under every method: the shift by the maximum keeps e ≤ 1 and Σe ≥ 1."""
    class Wide(nn.Module):
        def forward(self, x):
            return torch.softmax(1e4 * x, dim=-1) @ x.transpose(-1, -2)

    x = torch.randn(2, 4, 5, dtype=DTYPE)
    bm = BoundedModule(Wide(), x)
    for method in METHODS:
        lower, upper = bm.bounds(x, LinfBall(0.1), method)
        assert torch.isfinite(lower).all() and torch.isfinite(upper).all(), method
        assert_sound(bm, (x,), (LinfBall(0.1),), method, n=3)


@pytest.mark.parametrize("dim", [-1, 2])
def test_a_constant_minus_infinity_mask_added_before_a_softmax_bounds_finitely_and_soundly_unless_a_row_is_masked(
        dim):
    """``softmax(s + m)`` with a constant ``m`` that is ``−inf`` where a score is masked (an ONNX export's attention
    mask): ``m``'s ``−inf`` is taken as ``−max/4`` (``_finite_mask``), so every method's bounds are finite and hold,
    and the masked weights' upper bounds are 0. A row masked throughout is NaN in the model: its bounds are not
    finite. The mask (3, 4) has a lower rank than the scores (2, 3, 4) and a column masked throughout: its rows are
    found along the softmax's dimension counted from the scores' end (counted against the mask's own rank, the
    positive dimension once picked its columns, kept that column at ``−inf`` and left every bound infinite)."""
    mask = torch.zeros(3, 4, dtype=DTYPE)
    mask[0, 1:] = -float("inf")
    mask[1:, 3] = -float("inf")  # a column masked throughout, which is no row

    class Masked(nn.Module):
        def __init__(self, mask):
            super().__init__()
            self.register_buffer("mask", mask)
            self.scores = nn.Linear(4, 4).to(DTYPE)

        def forward(self, x):
            return torch.softmax(self.scores(x) + self.mask, dim=dim)

    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, dtype=DTYPE)
    bm = BoundedModule(Masked(mask), x)
    for method in METHODS:
        lower, upper = bm.bounds(x, LinfBall(0.1), method)
        assert torch.isfinite(lower).all() and torch.isfinite(upper).all(), method
        assert (upper[:, 0, 1:] == 0).all() and (upper[:, 1:, 3] == 0).all() and (lower[:, 0, 0] > 0.9).all(), method
        assert_sound(bm, (x,), (LinfBall(0.1),), method, n=8)
    mask[1] = -float("inf")
    lower, upper = BoundedModule(Masked(mask), x).bounds(x, LinfBall(0.1), "crown")
    assert not torch.isfinite(lower[:, 1]).any() or not torch.isfinite(upper[:, 1]).any()


@pytest.mark.parametrize("equation, message", [("b...d,bkd->bk", "ellipsis"), ("bii->bi", "repeat"),
                                               ("bij,bkj->ikb", "batch subscript")])
def test_einsum_that_it_cannot_lay_out_is_refused_when_compiled(equation, message):
    class Uses(nn.Module):
        def forward(self, x):
            operands = (x, x) if "," in equation else (x[:, :, :4],)
            return torch.einsum(equation, *operands)

    with pytest.raises(UnsupportedOpError, match=message):
        BoundedModule(Uses(), torch.randn(2, 4, 5, dtype=DTYPE))
