"""``check``: the test suite's weapon for users who register their own rules, or doubt ours.

It samples points of the perturbation set (the centre, uniformly random points, corners of a box or
points of an L2 sphere, and points found by projected gradient steps that push each output element
against its bound), evaluates the compiled graph at each (the function the bounds are about;
``BoundedModule`` checks that it computes the model) and compares every value with its bound: the
output's, every intermediate interval the program computed on the way, and every nonlinear node's
lines. A rule whose bounds are wrong shows up at its own node, first in the report.

Bounds are computed rounding to nearest (README, "Floating point"). Below float64, a violation can be
rounding: each is then re-checked at the same point on a float64 copy of the model, and reported as
rounding where the float64 bounds hold there.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from .bounded_module import BOUND_METHODS, BoundedModule, unwrap
from .rounding import largest_magnitude, rounding_scale
from .ir import Interval
from .ops import RULES
from .passes import evaluate
from .perturbation import Box, Perturbation

ROUNDING = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-1}
RESIDUAL_FACTOR = 10.0  # × a bound's own rounding at one point of the set, added to its tolerance, up to
RESIDUAL_CAP = {torch.float64: 1e-4, torch.float32: 1e-2}  # × (1 + the example's scale)


@dataclass
class Worst:
    """The worst sampled case of one bound: ``amount`` is ``bound − value`` for a lower bound and
    ``value − bound`` for an upper one (positive: the bound is violated, by more than rounding when it
    also exceeds ``tolerance``)."""

    where: str  # "output" or a node name
    op: str
    source: str
    side: str  # "lower", "upper", "lower line", "upper line"
    amount: float
    tolerance: float
    point: str  # which sample: "centre", "random 4", "corner 3", "pgd lower 2"
    index: tuple  # the example, then the element of the node
    at: tuple = field(default=(), repr=False)  # the inputs of that sample
    rounding: bool = False  # violated here, but not on a float64 copy of the model at the same point

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
    comparisons: int = 0  # scalar comparisons of a value with a bound or a line

    @property
    def violations(self) -> list:
        """Violated bounds that rounding does not explain."""
        return [w for w in self.worst if w.violated and not w.rounding]

    @property
    def rounding(self) -> list:
        """Bounds violated in the model's dtype but holding on its float64 copy at the same point."""
        return [w for w in self.worst if w.violated and w.rounding]

    @property
    def sound(self) -> bool:
        return not self.violations

    def __str__(self) -> str:
        verdict = "no violation" if self.sound else f"{len(self.violations)} violated bound(s)"
        if self.rounding:
            verdict += f", {len(self.rounding)} beyond tolerance by rounding only (they hold in float64)"
        rows = [f"{self.method}: {self.points} points, {len(self.worst)} bounds compared: {verdict}"]
        shown = self.violations + self.rounding or sorted(self.worst, key=lambda w: -w.amount / (w.tolerance or 1))[:3]
        for w in shown:
            where = "output" if w.where == "output" else f"node '{w.where}' ({w.op})"
            what = w.side if "line" in w.side else f"{w.side} bound"
            state = "rounding" if w.rounding else ("VIOLATED" if w.violated else "closest ")
            rows.append(f"  {state} {what} of {where}: {w.amount:+.3g} (tolerance {w.tolerance:.2g}) at {w.point}, "
                        f"index {w.index}" + (f"  [{w.source}]" if w.source else ""))
        return "\n".join(rows)


def _magnitude(*terms: Optional[Tensor]) -> Tensor:
    """The size rounding is relative to: the largest magnitude among the terms (an interval's two ends
    and the value, or a line's slope·z, bias and value), infinities ignored."""
    present = [t.detach().abs().nan_to_num(posinf=0.0, neginf=0.0) for t in terms if t is not None]
    size = present[0]
    for t in present[1:]:
        size = torch.maximum(size, t)
    return size


class _Comparator:
    """The bounds one program computed for a batch (output, intervals, lines), compared with the graph's
    values at any point of the set; keeps the worst case of each bound."""

    def __init__(self, bm: BoundedModule, inputs: tuple, perturbations: tuple, C: Optional[Tensor], method: str,
                 options: dict, rtol: float, residual: Optional[dict] = None) -> None:
        self.bm, self.inputs, self.C, self.rtol = bm, inputs, C, rtol
        self.residual = residual or {}  # (node, side) -> this computation's own rounding at one point
        self.bounds = bm.bounds(inputs, perturbations, method, C, **options)
        program, intervals, self.relaxations = _intermediates(bm, inputs, perturbations, C, method, options)
        self.graph = program.graph
        detached = lambda interval: Interval(*(None if t is None else t.detach() for t in interval))  # noqa: E731
        self.targets = {"output": detached(self.bounds)} | {name: detached(v) for name, v in intervals.items()}
        self.batch = inputs[0].shape[0]
        self.scale = torch.maximum(  # every method is judged against the same scale: IBP's intervals too
            rounding_scale(bm, inputs, perturbations, C) - 1,
            largest_magnitude(self.batch, [end for interval in self.targets.values() for end in interval]))
        self.worst: dict[tuple, Worst] = {}
        self.comparisons = 0

    def values_at(self, point: tuple) -> dict:
        """Every node's value at ``point`` (batch statistics from the clean inputs, as the bounds use)."""
        return evaluate(self.graph, self.bm.core, point, self.C, clean=self.inputs)

    def residuals(self, point: tuple) -> dict:
        """``|bound − value|`` of every interval at ``point``, for bounds computed over the set ``{point}``:
        pure rounding, as exact arithmetic would make them equal."""
        with torch.no_grad():
            values = self.values_at(point)
        found = {}
        for name, interval in self.targets.items():
            for side, end in zip(("lower", "upper"), interval):
                if end is not None:
                    value = values[self.graph.output if name == "output" else name].reshape(end.shape)
                    found[(name, side)] = (end - value).abs().nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
        return found

    def output_at(self, point: tuple) -> Tensor:
        return self.values_at(point)[self.graph.output]

    def record(self, name: str, side: str, amount: Tensor, magnitude: Tensor, label: str, point: tuple,
               scale: Tensor) -> None:
        size = torch.maximum(magnitude, scale.view(-1, *([1] * (magnitude.dim() - 1)))) if magnitude.dim() else magnitude
        allowed = (self.rtol * (1 + size)).expand_as(amount)
        if (name, side) in self.residual:  # capped, so that a rule wrong at a single point is not excused
            cap = RESIDUAL_CAP.get(amount.dtype, 1.0) * (1 + scale.view(-1, *([1] * (amount.dim() - 1))))
            allowed = allowed + torch.minimum(RESIDUAL_FACTOR * self.residual[(name, side)].reshape(amount.shape),
                                              cap.expand_as(amount))
        self.comparisons += amount.numel()
        excess = torch.nan_to_num(amount - allowed, nan=math.inf).flatten()
        at = int(excess.argmax())
        known = self.worst.get((name, side))
        if known is None or float(excess[at]) > known.amount - known.tolerance:
            node = self.graph[name] if name != "output" else None
            self.worst[(name, side)] = Worst(
                name, node.op if node else "output", node.source if node else "", side, float(amount.flatten()[at]),
                float(allowed.flatten()[at]), label, tuple(int(i) for i in torch.unravel_index(torch.tensor(at),
                                                                                                amount.shape)), point)

    def visit(self, point: tuple, label: str) -> None:
        with torch.no_grad():
            values = self.values_at(point)
        scale = torch.maximum(self.scale, largest_magnitude(self.batch, values.values()))
        for name, interval in self.targets.items():
            some = interval.lower if interval.lower is not None else interval.upper
            value = values[self.graph.output if name == "output" else name].reshape(some.shape)
            size = _magnitude(interval.lower, interval.upper, value)
            if interval.lower is not None:
                self.record(name, "lower", interval.lower - value, size, label, point, scale)
            if interval.upper is not None:
                self.record(name, "upper", value - interval.upper, size, label, point, scale)
        for name, lines in self.relaxations.items():  # σ(z) between its lines, at the pre-activation's value z
            rule = RULES[self.graph[name].op]
            z, out = [values[o.name] for o in rule.relaxed(self.graph[name].operands)], values[name]
            slope_z, bias, upper_z, upper_bias = rule.line_values(lines, *z)
            below = slope_z + (0 if bias is None else bias)
            self.record(name, "lower line", below - out, _magnitude(slope_z, bias, out), label, point, scale)
            self.record(name, "upper line", out - (upper_z + upper_bias), _magnitude(upper_z, upper_bias, out), label,
                        point, scale)


def _pgd(output_at, perturbations: tuple, inputs: tuple, target: Tensor, steps: int) -> tuple:
    """Points of the set (every perturbed input moved) that minimise ``target · output`` per example (summed
    over the output's elements), by projected steepest-descent steps from the centre, long then short."""
    point = tuple(x.detach().clone() for x in inputs)
    moving = [i for i, p in enumerate(perturbations) if p is not None]
    for step in range(steps):
        point = tuple(v.requires_grad_(True) if i in moving else v for i, v in enumerate(point))
        objective = (output_at(point).reshape(target.shape) * target).sum()
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
    bound ``bm.bounds(x, perturbation, method, C, **options)`` computes: the output's, each intermediate
    interval's and each nonlinear node's lines (``alpha-crown`` and ``beta < 1``: the output's only).

    ``tolerance``: the relative rounding slack, ``tolerance·(1 + m)`` with ``m`` the larger of the
    magnitudes in the comparison (the interval's ends and the value; a line's ``slope·z``, bias and
    ``σ(z)``) and the example's rounding scale (the largest end of any interval the program computed and
    the largest value of any node: rounding is relative to the values that cancel, not to what is left);
    by default 1e-9 in float64, 1e-4 in float32; plus 10× the bound's own rounding measured where the set
    shrinks to a single point (exact arithmetic gives the value there; what is left is rounding that
    cancellation inside the computation caused, e.g. batch norm dividing by a two-example batch's tiny
    variance), at most 1e-4 (float64) or 1e-2 (float32) of the example's scale, so that a rule wrong even
    at a single point is still caught (a ``tolerance`` given replaces all of this). Below float64, violations are re-checked on a float64 copy of the
    model at the same points; those that hold there are reported as rounding."""
    bounded = unwrap(bm)
    if method not in BOUND_METHODS:
        raise ValueError(f"check compares sound bounds; {method!r} is not a bound method {BOUND_METHODS}")
    inputs = bounded._check_inputs(x)
    perturbations = bounded._check_perturbations(perturbation, inputs)
    rtol = ROUNDING.get(inputs[0].dtype, 1e-2) if tolerance is None else tolerance
    # the computation's own rounding, measured where the set shrinks to one of its points (exact there)
    centre = tuple(v if p is None else p.project(v, v) for v, p in zip(inputs, perturbations))
    single = tuple(None if p is None else Box(c, c) for p, c in zip(perturbations, centre))  # (default tolerance)
    residual = None if tolerance is not None else _Comparator(bounded, inputs, single, C, method, options,
                                                               rtol).residuals(centre)
    comparator = _Comparator(bounded, inputs, perturbations, C, method, options, rtol, residual)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        samples = [None if p is None else p.sample(v, points, generator) for v, p in zip(inputs, perturbations)]
    comparator.visit(inputs, "centre")
    for k in range(points):
        comparator.visit(tuple(v if s is None else s[k] for v, s in zip(inputs, samples)),
                         f"{'corner' if k % 2 else 'random'} {k}")
    some = comparator.bounds.lower if comparator.bounds.lower is not None else comparator.bounds.upper
    flat = some.reshape(some.shape[0], -1)
    for element in range(flat.shape[1] if pgd_steps else 0):
        for side, sign in (("lower", 1.0), ("upper", -1.0)):
            if getattr(comparator.bounds, side) is not None:
                target = torch.zeros_like(flat)
                target[:, element] = sign
                comparator.visit(_pgd(comparator.output_at, perturbations, inputs, target, pgd_steps),
                                 f"pgd {side} {element}")
    order = {name: k for k, name in enumerate(comparator.graph.nodes)}
    worst = sorted(comparator.worst.values(), key=lambda w: (order.get(w.where, len(order)), w.side))
    violated = [w for w in worst if w.violated]
    if violated and inputs[0].dtype != torch.float64:
        _explain_by_rounding(bounded, inputs, perturbations, C, method, options, violated)
    return CheckReport(method, 1 + points + (2 * flat.shape[1] if pgd_steps else 0), worst, comparator.bounds,
                       comparator.comparisons)


def _explain_by_rounding(bm: BoundedModule, inputs: tuple, perturbations: tuple, C: Optional[Tensor], method: str,
                         options: dict, violated: list) -> None:
    """Mark as rounding each violation that a float64 copy of the model, bounded the same way, does not
    have at the same point."""
    model = copy.deepcopy(bm.core).double()
    wide = lambda t: t if t is None or not t.is_floating_point() else t.double()  # noqa: E731
    inputs64 = tuple(wide(v) for v in inputs)
    twin = BoundedModule(model, inputs64)
    comparator = _Comparator(twin, inputs64, perturbations, wide(C), method, options, ROUNDING[torch.float64])
    for w in violated:  # the float32 point, moved into the float64 set (a float32 corner may lie an ulp outside)
        comparator.worst = {}
        point = tuple(wide(v) if p is None else p.project(x, wide(v))
                      for v, p, x in zip(w.at, perturbations, inputs64))
        comparator.visit(point, w.point)
        again = comparator.worst.get((w.where, w.side))
        w.rounding = again is not None and not again.violated


def _intermediates(bm: BoundedModule, inputs: tuple, perturbations: tuple, C: Optional[Tensor], method: str,
                   options: dict) -> tuple:
    """The program ``bounds`` ran, with the intervals it computes on the way and every nonlinear node's
    lines, by node; where those are not one program's (α-CROWN, β-mixing), no intervals and no lines."""
    plain = method == "alpha-crown" or options.get("beta", 1.0) < 1.0
    program = bm.program("crown" if method == "alpha-crown" else method,
                         perturbed=[i for i, p in enumerate(perturbations) if p is not None], with_spec=C is not None,
                         lines=options.get("lines", "adaptive"), intermediates=True,
                         batch_statistics=bm.training_norms(), loss_fusion=options.get("loss_fusion", False))
    if plain:
        return program, {}, {}
    _, intervals, relaxations = program(bm.core, inputs, perturbations, C)
    source = {n.name for n in program.graph if n.op == "input"}
    detached = {k: type(v)(*(None if t is None else t.detach() for t in v)) for k, v in relaxations.items()}
    return program, {k: v for k, v in intervals.items() if k not in source}, detached
