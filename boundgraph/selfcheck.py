"""``check``: the test suite's weapon for users who register their own rules, or doubt ours.

It samples points of the perturbation set (the centre, uniformly random points, corners of a box or
points of an L2 sphere, and points found by projected gradient steps that push each output bound's
coordinate against its bound), evaluates the compiled graph at each (the function the bounds are
about; ``BoundedModule`` checks it computes the model) and compares every value with its bound: the
output's, and every intermediate interval the program computed on the way. A rule whose bounds are
wrong shows up at its own node, the first one in the report, before the error reaches the output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from .bounded_module import BOUND_METHODS, BoundedModule, unwrap
from .ir import Interval
from .passes import evaluate
from .perturbation import Perturbation

ROUNDING = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-1}


@dataclass
class Worst:
    """The worst sampled case of one bound: ``amount`` is ``bound − value`` for a lower bound and
    ``value − bound`` for an upper one (positive: the bound is violated, by more than rounding when it
    also exceeds ``tolerance``)."""

    where: str  # "output" or a node name
    op: str
    source: str
    side: str  # "lower" or "upper"
    amount: float
    tolerance: float
    point: str  # which sample: "centre", "random 4", "corner 3", "pgd lower 2"
    index: tuple  # the example, then the element of the node

    @property
    def violated(self) -> bool:
        return self.amount > self.tolerance


@dataclass
class CheckReport:
    """What ``check`` found: the worst case of every bound it compared, nodes in graph order."""

    method: str
    points: int
    worst: list
    bounds: Interval  # what ``bm.bounds`` returned

    @property
    def violations(self) -> list:
        return [w for w in self.worst if w.violated]

    @property
    def sound(self) -> bool:
        return not self.violations

    def __str__(self) -> str:
        verdict = "no violation" if self.sound else f"{len(self.violations)} violated bound(s)"
        rows = [f"{self.method}: {self.points} points, {len(self.worst)} bounds compared: {verdict}"]
        shown = self.violations or sorted(self.worst, key=lambda w: -w.amount / (w.tolerance or 1))[:3]
        for w in shown:
            where = "output" if w.where == "output" else f"node '{w.where}' ({w.op})"
            what = w.side if "line" in w.side else f"{w.side} bound"
            rows.append(f"  {'VIOLATED' if w.violated else 'closest '} {what} of {where}: "
                        f"{w.amount:+.3g} (tolerance {w.tolerance:.2g}) at {w.point}, index {w.index}"
                        + (f"  [{w.source}]" if w.source else ""))
        return "\n".join(rows)


def _tolerance(bound: Tensor) -> Tensor:
    scale = ROUNDING.get(bound.dtype, 1e-2)
    return scale * (1 + bound.detach().abs().nan_to_num(posinf=0.0, neginf=0.0))


def _pgd(output_at, perturbations: tuple, inputs: tuple, target: Tensor, steps: int) -> tuple:
    """Points of the set (every perturbed input moved) that minimise ``target · output`` per example (summed
    over the output's elements), by projected steepest-descent steps from the centre, long then short."""
    point = tuple(x.detach().clone() for x in inputs)
    moving = [i for i, p in enumerate(perturbations) if p is not None]
    for step in range(steps):
        point = tuple(v.requires_grad_(True) if i in moving else v for i, v in enumerate(point))
        objective = (output_at(point) * target).sum()
        grads = torch.autograd.grad(objective, [point[i] for i in moving])
        fraction = 2.0 / steps if step < steps // 2 else 0.5 / steps
        with torch.no_grad():
            moved = list(v.detach() for v in point)
            for i, grad in zip(moving, grads):
                p, x = perturbations[i], inputs[i]
                moved[i] = p.project(x, moved[i] - p.ascent(grad, x, fraction))
        point = tuple(moved)
    return point


def check(bm: Union[BoundedModule, Any], x: Union[Tensor, Sequence[Tensor]],
          perturbation: Union[Perturbation, Sequence[Optional[Perturbation]]], method: str = "crown-ibp",
          C: Optional[Tensor] = None, *, points: int = 32, pgd_steps: int = 20, seed: int = 0,
          tolerance: Optional[float] = None, **options: Any) -> CheckReport:
    """Sample ``points`` points of the perturbation set around ``x`` (plus its centre, plus, with
    ``pgd_steps``, one PGD point per output element and side) and report the worst violation of every
    bound ``bm.bounds(x, perturbation, method, C, **options)`` computes: the output's and each
    intermediate interval's (``alpha-crown`` and ``beta < 1`` report the output only).

    ``tolerance``: the relative rounding slack, ``tolerance·(1 + |bound|)``; by default 1e-9 in float64,
    1e-4 in float32 (see README, "Floating point")."""
    bounded = unwrap(bm)
    if method not in BOUND_METHODS:
        raise ValueError(f"check compares sound bounds; {method!r} is not a bound method {BOUND_METHODS}")
    bound = bounded.bounds(x, perturbation, method, C, **options)
    inputs = bounded._check_inputs(x)
    perturbations = bounded._check_perturbations(perturbation, inputs)
    program, intervals, relaxations = _intermediates(bounded, inputs, perturbations, C, method, options)
    graph = program.graph

    def values_at(point: tuple) -> dict:
        return evaluate(graph, bounded.core, point, C, clean=inputs)

    def output_at(point: tuple) -> Tensor:
        return values_at(point)[graph.output].reshape(inputs[0].shape[0], -1)

    detached = lambda interval: Interval(*(None if t is None else t.detach() for t in interval))  # noqa: E731
    targets = {"output": detached(bound)} | {name: detached(v) for name, v in intervals.items()}
    worst: dict[tuple, Worst] = {}

    def record(name: str, side: str, amount: Tensor, limit: Tensor, label: str) -> None:
        """Keep the worst ``amount`` (by how far it exceeds its tolerance) of one bound of one node."""
        allowed = _tolerance(limit) if tolerance is None else tolerance * (1 + limit.abs())
        allowed = allowed.expand_as(amount)
        excess = torch.nan_to_num(amount - allowed, nan=math.inf).flatten()
        at = int(excess.argmax())
        known = worst.get((name, side))
        if known is None or float(excess[at]) > known.amount - known.tolerance:
            node = graph[name] if name != "output" else None
            worst[(name, side)] = Worst(name, node.op if node else "output", node.source if node else "", side,
                                        float(amount.flatten()[at]), float(allowed.flatten()[at]), label,
                                        tuple(int(i) for i in torch.unravel_index(torch.tensor(at), amount.shape)))

    def visit(point: tuple, label: str) -> None:
        with torch.no_grad():
            values = values_at(point)
        for name, interval in targets.items():
            value = values[graph.output if name == "output" else name]
            if interval.lower is not None:
                record(name, "lower", interval.lower - value.reshape(interval.lower.shape), interval.lower, label)
            if interval.upper is not None:
                record(name, "upper", value.reshape(interval.upper.shape) - interval.upper, interval.upper, label)
        for name, lines in relaxations.items():  # σ(z) between its lines, at the pre-activation's value z
            z, out = values[graph[name].operands[0].name], values[name]
            below = lines.lower_slope * z + (0 if lines.lower_bias is None else lines.lower_bias)
            record(name, "lower line", below - out, below, label)
            above = lines.upper_slope * z + lines.upper_bias
            record(name, "upper line", out - above, above, label)

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        samples = [None if p is None else p.sample(v, points, generator) for v, p in zip(inputs, perturbations)]
    visit(inputs, "centre")
    for k in range(points):
        visit(tuple(v if s is None else s[k] for v, s in zip(inputs, samples)),
              f"{'corner' if k % 2 else 'random'} {k}")
    some = bound.lower if bound.lower is not None else bound.upper
    elements = some.reshape(some.shape[0], -1).shape[1]
    for element in range(elements if pgd_steps else 0):
        for side, sign in (("lower", 1.0), ("upper", -1.0)):
            if getattr(bound, side) is not None:
                target = torch.zeros_like(some.reshape(some.shape[0], -1))
                target[:, element] = sign
                visit(_pgd(output_at, perturbations, inputs, target, pgd_steps), f"pgd {side} {element}")
    order = {name: k for k, name in enumerate(graph.nodes)}
    ranked = sorted(worst.values(), key=lambda w: (order.get(w.where, len(order)), w.side))
    return CheckReport(method, 1 + points + (2 * elements if pgd_steps else 0), ranked, bound)


def _intermediates(bm: BoundedModule, inputs: tuple, perturbations: tuple, C: Optional[Tensor], method: str,
                   options: dict) -> tuple:
    """The program ``bounds`` ran (with the intervals it computes on the way, by node), or, where those
    are not one program's (α-CROWN, β-mixing), the plain CROWN program and no intervals; and the lines
    of every nonlinear node."""
    plain = method in ("alpha-crown",) or options.get("beta", 1.0) < 1.0
    program = bm.program("crown" if method == "alpha-crown" else method,
                         perturbed=[i for i, p in enumerate(perturbations) if p is not None], with_spec=C is not None,
                         lines=options.get("lines", "adaptive"), intermediates=True,
                         batch_statistics=[name for name, module in bm._norms if module.training])
    if plain:
        return program, {}, {}
    _, intervals, relaxations = program(bm.core, inputs, perturbations, C)
    source = {n.name for n in program.graph if n.op == "input"}
    detached = {k: type(v)(*(None if t is None else t.detach() for t in v)) for k, v in relaxations.items()}
    return program, {k: v for k, v in intervals.items() if k not in source}, detached
