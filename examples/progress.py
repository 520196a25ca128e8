"""What a training run prints as it goes: numbers with significant digits, durations, and the ETA of the
whole run from the measured time per step of each kind of step."""
from __future__ import annotations

import math
from typing import Hashable, Iterable


def significant(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits, so a small ε is never shown as 0.0000 (0 stays 0)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    return f"{value:.{digits}g}"


def duration(seconds: float) -> str:
    """``seconds`` as 42s, 7m05s or 3h02m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Eta:
    """The time left of a run whose steps come in kinds of different cost (natural steps, CROWN-IBP steps,
    IBP steps): each kind's mean measured time per step, times the steps of that kind still to come. A kind
    not yet measured makes the estimate a lower bound (it counts as the cheapest kind measured)."""

    def __init__(self) -> None:
        self.seconds: dict[Hashable, float] = {}
        self.steps: dict[Hashable, int] = {}

    def record(self, kind: Hashable, seconds: float, steps: int = 1) -> None:
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds
        self.steps[kind] = self.steps.get(kind, 0) + steps

    def per_step(self, kind: Hashable) -> float | None:
        return self.seconds[kind] / self.steps[kind] if self.steps.get(kind) else None

    def left(self, segments: list[tuple[int, int, Hashable]], done: int) -> tuple[float, bool]:
        """Seconds left after the first ``done`` steps of a run laid out as ``segments`` (``(first, end,
        kind)``: steps ``first … end − 1`` are of that kind), and whether every kind to come was measured (else
        the figure is a lower bound)."""
        known = [self.per_step(kind) for kind in self.steps]
        floor = min(known) if known else 0.0
        total, exact = 0.0, True
        for first, end, kind in segments:
            count = end - max(first, done)
            if count <= 0:
                continue
            cost = self.per_step(kind)
            if cost is None:
                exact, cost = False, floor
            total += cost * count
        return total, exact

    def describe(self, segments: list[tuple[int, int, Hashable]], done: int) -> str:
        seconds, exact = self.left(segments, done)
        return f"{'' if exact else '≥ '}{duration(seconds)}"


def segments(kinds: Iterable[Hashable]) -> list[tuple[int, int, Hashable]]:
    """Runs of equal kinds: ``[(first, end, kind), …]`` for the kinds of steps 0, 1, …"""
    out: list[tuple[int, int, Hashable]] = []
    for step, kind in enumerate(kinds):
        if out and out[-1][2] == kind:
            out[-1] = (out[-1][0], step + 1, kind)
        else:
            out.append((step, step + 1, kind))
    return out
