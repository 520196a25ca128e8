import pytest

from boundgraph.schedules import Constant, FollowEps, LinearRamp, SmoothedRamp


def test_linear_ramp_at_start_mid_and_end():
    ramp = LinearRamp(0.0, 0.4, start=10, length=50)
    assert [ramp.value(s) for s in (0, 10, 35, 60, 100)] == pytest.approx([0, 0, 0.2, 0.4, 0.4])


def test_smoothed_ramp_is_power_four_to_the_mid_point_then_linear_with_matching_slope():
    ramp = SmoothedRamp(0.4, start=10, length=40)  # mid-point at step 30
    at_mid = 0.4 * 0.5 / (0.5 + 4 * 0.5)
    assert ramp.value(10) == 0 and ramp.value(0) == 0
    assert ramp.value(20) == pytest.approx(at_mid / 16)  # half-way to the mid-point: (1/2)^4
    assert ramp.value(30) == pytest.approx(at_mid)
    assert ramp.value(50) == pytest.approx(0.4) and ramp.value(80) == pytest.approx(0.4)
    h = 1e-4
    left = (ramp.value(30) - ramp.value(30 - h)) / h
    right = (ramp.value(30 + h) - ramp.value(30)) / h
    assert left == pytest.approx(right, rel=1e-3)
    values = [ramp.value(s / 10) for s in range(0, 600)]
    assert all(b >= a for a, b in zip(values, values[1:]))


def test_kappa_and_beta_follow_eps_from_one_to_their_end_value():
    eps = LinearRamp(0.0, 0.4, start=10, length=50)
    kappa, beta = FollowEps(eps, 0.4, end=0.5), FollowEps(eps, 0.4, end=0.0)
    assert [kappa.value(s) for s in (0, 35, 60)] == pytest.approx([1.0, 0.75, 0.5])
    assert [beta.value(s) for s in (0, 35, 60)] == pytest.approx([1.0, 0.5, 0.0])
    assert Constant(0.3).value(7) == 0.3
