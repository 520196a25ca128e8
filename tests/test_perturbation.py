import itertools

import pytest

import torch
from hypothesis import given, strategies as st

from boundgraph import Box, L2Ball, LinfBall
from tests.helpers import DTYPE


def corners(lower, upper):
    d = lower.numel()
    for signs in itertools.product([0, 1], repeat=d):
        mask = torch.tensor(signs, dtype=DTYPE)
        yield lower + mask * (upper - lower)


@given(st.integers(1, 4), st.integers(0, 2**16), st.floats(0, 1), st.booleans())
def test_linf_concretisation_is_the_exact_minimum_over_the_corners(d, seed, eps, clip):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, d, generator=g, dtype=DTYPE)
    A = torch.randn(1, 3, d, generator=g, dtype=DTYPE)
    ptb = LinfBall(eps, clip=(0.0, 1.0) if clip else None)
    lower, upper = ptb.interval(x)
    exact = torch.stack([A[0] @ c for c in corners(lower[0], upper[0])]).min(0).values
    torch.testing.assert_close(ptb.concretize(A, x)[0], exact)
    box = Box(lower, upper)
    torch.testing.assert_close(box.concretize(A, x)[0], exact)


@given(st.integers(1, 5), st.integers(0, 2**16), st.floats(0, 2))
def test_l2_concretisation_is_attained_at_the_dual_point(d, seed, eps):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, d, generator=g, dtype=DTYPE)
    A = torch.randn(2, 3, d, generator=g, dtype=DTYPE)
    bound = L2Ball(eps).concretize(A, x)
    for s in range(3):
        a = A[:, s]
        best = x - eps * a / a.norm(dim=1, keepdim=True)
        torch.testing.assert_close(bound[:, s], (a * best).sum(1))


@given(st.integers(1, 4), st.integers(0, 2**16), st.floats(0, 2))
def test_clipped_l2_is_at_least_as_tight_as_ball_or_box_and_still_sound(d, seed, eps):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, d, generator=g, dtype=DTYPE)
    A = torch.randn(1, 2, d, generator=g, dtype=DTYPE)
    clipped = L2Ball(eps, clip=(0.0, 1.0))
    bound = clipped.concretize(A, x)
    assert (bound >= L2Ball(eps).concretize(A, x) - 1e-12).all()
    assert (bound >= Box(*clipped.interval(x)).concretize(A, x) - 1e-12).all()
    for _ in range(200):
        delta = torch.randn(1, d, generator=g, dtype=DTYPE)
        point = (x + delta * eps * torch.rand(1, generator=g, dtype=DTYPE) / delta.norm()).clamp(0, 1)
        assert ((A[0] @ point[0]) >= bound[0] - 1e-9).all()


def test_interval_hull_of_each_set():
    x = torch.tensor([[0.05, 0.5]], dtype=DTYPE)
    torch.testing.assert_close(tuple(LinfBall(0.1, clip=(0, 1)).interval(x)),
                               (torch.tensor([[0.0, 0.4]], dtype=DTYPE), torch.tensor([[0.15, 0.6]], dtype=DTYPE)))
    torch.testing.assert_close(tuple(L2Ball(0.2).interval(x)), (x - 0.2, x + 0.2))


@given(st.integers(1, 5), st.integers(0, 2**16), st.floats(0, 1), st.sampled_from(["linf", "l2", "l2-clip", "box"]))
def test_projection_lands_in_the_set_and_keeps_points_already_there(d, seed, eps, kind):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, d, generator=g, dtype=DTYPE)
    ptb = {"linf": LinfBall(eps, clip=(0, 1)), "l2": L2Ball(eps), "l2-clip": L2Ball(eps, clip=(0, 1)),
           "box": Box(x - eps, x + eps / 2)}[kind]
    far = x + 3 * torch.randn(3, d, generator=g, dtype=DTYPE)
    inside = ptb.project(x, far)
    lower, upper = ptb.interval(x)
    assert (inside >= lower - 1e-12).all() and (inside <= upper + 1e-12).all()
    if isinstance(ptb, L2Ball):
        assert ((inside - x).norm(dim=1) <= eps + 1e-12).all()
    torch.testing.assert_close(ptb.project(x, inside), inside)
    step = ptb.ascent(torch.randn(3, d, generator=g, dtype=DTYPE), x, 0.5)
    assert torch.isfinite(step).all()


def test_per_channel_clip_tensors_accept_inputs_inside_them_and_refuse_those_outside():
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1), torch.tensor([0.2, 0.3, 0.25]).view(3, 1, 1)
    clip = ((0 - mean) / std, (1 - mean) / std)
    x = (torch.rand(2, 3, 5, 5) - mean) / std
    for ptb in (LinfBall(0.05, clip=clip), L2Ball(0.5, clip=clip)):
        ptb.check(x)
        lower, upper = ptb.interval(x)
        assert (lower >= clip[0] - 1e-6).all() and (upper <= clip[1] + 1e-6).all()
    outside = x.clone()
    outside[0, 2, 1, 1] = clip[1][2, 0, 0] + 0.1
    with pytest.raises(ValueError, match="outside the clip domain"):
        LinfBall(0.05, clip=clip).check(outside)
    with pytest.raises(ValueError, match="do not broadcast"):
        LinfBall(0.05, clip=(torch.zeros(4, 1, 1), 1)).check(x)
