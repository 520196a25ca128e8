"""Schedules for certified training (Gowal et al. 2018; Zhang et al. 2020): small objects whose
``value(step)`` gives a hyper-parameter at a training step (count steps in batches or epochs, as long
as one schedule's numbers agree).

- ``LinearRamp``: ``start_value`` until ``start``, linear to ``end_value`` over ``length`` steps, then flat.
- ``SmoothedRamp``: 0 until ``start``; ``a·t⁴`` up to the ramp's mid-point, then linear to ``end_value``,
  joined with equal value and slope (so ε grows gently while the bounds are loose, then steadily).
- ``FollowEps``: κ and β of CROWN-IBP follow ε: ``(ε_max − ε(1 − end))/ε_max``, 1 while ε = 0 (the
  warm-up trains on the natural loss alone) down to ``end`` once ε = ε_max.
"""
from __future__ import annotations

from dataclasses import dataclass


class Schedule:
    def value(self, step: float) -> float:
        raise NotImplementedError


@dataclass
class Constant(Schedule):
    constant: float

    def value(self, step: float) -> float:
        return self.constant


@dataclass
class LinearRamp(Schedule):
    start_value: float
    end_value: float
    start: float
    length: float

    def value(self, step: float) -> float:
        if self.length <= 0:
            return self.end_value if step >= self.start else self.start_value
        t = min(max((step - self.start) / self.length, 0.0), 1.0)
        return self.start_value + t * (self.end_value - self.start_value)


@dataclass
class SmoothedRamp(Schedule):
    end_value: float
    start: float
    length: float
    mid: float = 0.5  # where the power-4 part hands over to the linear part, as a fraction of the ramp
    power: float = 4.0

    def value(self, step: float) -> float:
        if self.length <= 0:
            return self.end_value if step >= self.start else 0.0
        t = min(max((step - self.start) / self.length, 0.0), 1.0)
        p, k = self.mid, self.power
        at_mid = self.end_value * p / (p + k * (1 - p))  # value and slope agree at the mid-point
        if t <= p:
            return at_mid * (t / p) ** k
        return at_mid + (self.end_value - at_mid) * (t - p) / (1 - p)


@dataclass
class FollowEps(Schedule):
    eps: Schedule
    eps_max: float
    end: float

    def value(self, step: float) -> float:
        if self.eps_max <= 0:
            return 1.0
        return (self.eps_max - self.eps.value(step) * (1 - self.end)) / self.eps_max
