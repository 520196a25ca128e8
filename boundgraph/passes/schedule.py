"""Pass: decide which node gets which bound, by which method, in which order.

- ``ibp`` (Gowal et al. 2018): an interval for every perturbed node, the output's included.
- ``crown-ibp`` (Zhang et al. 2020): intervals only for what the nonlinear nodes' inputs need, then
  one backward CROWN sweep from the output.
- ``crown`` (Zhang et al. 2018): as crown-ibp, and every nonlinear node's input is also bounded by a
  CROWN sweep of its own (intersected with its interval) before anything after it is bounded; the
  sweep has rows only for the neurons whose lines tighter bounds could change (unstable ReLUs).
- ``lbp`` (Lyu et al. 2021): forward linear bounds in the input for every perturbed node, concretised
  where a nonlinear node needs its input's bounds, and at the output.
- ``crown-lbp`` (Lyu et al. 2021): LBP for the nonlinear nodes' inputs, then one backward CROWN sweep.
- A ``terminal`` output rule (a loss that ends the program, ``boundgraph/ops/loss.py``) is swept like any
  nonlinear node; its rule's ``finish`` maps the sweep's bounds back, and LBP takes its interval.
- ``singleprop`` (Boopathy et al. 2021): IBP's pass with SingleProp's transfer through nonlinear nodes
  (a training regulariser, not a bound).

The schedule is a straight list of steps; the emitter turns each into a line or two of torch code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir import BoundGraph
from ..ops import Nonlinear, Rule

METHODS = ("ibp", "crown-ibp", "crown", "lbp", "crown-lbp", "singleprop")
BOUND_METHODS = ("ibp", "crown-ibp", "crown", "lbp", "crown-lbp")  # sound bounds (singleprop is not one)
FORWARD_ONLY = ("ibp", "lbp", "singleprop")  # no backward sweep: the output's bounds come from the pass


@dataclass
class Step:
    kind: str  # "value" | "interval" | "lines" | "sweep" | "linear" | "concretize"
    node: str
    order: list[str] = field(default_factory=list)  # sweep: nodes in reverse topological order
    consumers: list[str] = field(default_factory=list)  # sweep of a pre-activation: its nonlinear users


@dataclass
class Schedule:
    method: str
    output: str
    steps: list[Step]
    with_ibp: bool = False  # the output's IBP interval too (for β·CROWN-IBP + (1−β)·IBP), from the same pass


def schedule(graph: BoundGraph, rules: dict[str, Rule], method: str, with_ibp: bool = False) -> Schedule:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    topo = list(graph.nodes)
    live = graph.ancestors(graph.output)
    nonlinear = [n for n in topo if n in live and graph[n].perturbed and isinstance(rules.get(n), Nonlinear)]
    pre_activations = {o.name for n in nonlinear for o in _relaxed(graph, rules, n)}

    if method in ("lbp", "crown-lbp"):
        return _linear_schedule(graph, method, topo, live, nonlinear, pre_activations,
                                sweep_from(graph, rules, topo, nonlinear), getattr(rules.get(graph.output), "terminal",
                                                                                  False))
    if method in ("ibp", "singleprop") or with_ibp:
        need_interval = {n for n in live if graph[n].perturbed}
    else:
        need_interval = set()
        for p in pre_activations:
            need_interval |= {a for a in graph.ancestors(p) if graph[a].perturbed}

    sweep = sweep_from(graph, rules, topo, nonlinear)
    steps: list[Step] = []
    for name in topo:
        node = graph[name]
        if name not in live:
            continue
        if not node.perturbed:
            steps.append(Step("value", name))
            continue
        if name in need_interval or node.op == "input":
            steps.append(Step("interval", name))
        if method not in FORWARD_ONLY and name in nonlinear:  # before a sweep from this node, which needs them
            steps.append(Step("lines", name))
        if method == "crown" and name in pre_activations and node.op != "input":
            steps.append(sweep(name))
    if method not in FORWARD_ONLY and graph[graph.output].perturbed:
        steps.append(sweep(graph.output))
    return Schedule(method, graph.output, steps, with_ibp and method not in FORWARD_ONLY)


def _relaxed(graph: BoundGraph, rules: dict[str, Rule], name: str) -> list:
    """The operands of a nonlinear node whose bounds its lines need."""
    return [o for o in rules[name].relaxed(graph[name].operands)]


def sweep_from(graph: BoundGraph, rules: dict[str, Rule], topo: list[str], nonlinear: list[str]):
    def sweep(target: str) -> Step:
        cone = graph.ancestors(target)
        order = [n for n in reversed(topo) if n in cone and graph[n].perturbed]
        consumers = [n for n in nonlinear if target in {o.name for o in _relaxed(graph, rules, n)}]
        return Step("sweep", target, order, consumers)
    return sweep


def _linear_schedule(graph: BoundGraph, method: str, topo: list[str], live: set[str], nonlinear: list[str],
                     pre_activations: set[str], sweep, terminal: bool = False) -> Schedule:
    """LBP's steps; a ``terminal`` output (a loss that ends the program) gets its interval from its input's."""
    perturbed_inputs = [n for n in graph.inputs() if n.perturbed]
    if len(perturbed_inputs) != 1:
        raise ValueError(f"{method} keeps linear bounds in one perturbed input; "
                         f"{len(perturbed_inputs)} inputs are perturbed here")
    output = graph.output
    concrete = set(pre_activations) | ({output} if method == "lbp" and not terminal else set())
    need_linear: set[str] = set()
    for name in concrete:
        need_linear |= {a for a in graph.ancestors(name) if graph[a].perturbed}
    steps: list[Step] = []
    for name in topo:
        if name not in live:
            continue
        if not graph[name].perturbed:
            steps.append(Step("value", name))
            continue
        if name in nonlinear and not (terminal and name == output and method == "lbp"):
            steps.append(Step("lines", name))
        if terminal and name == output:
            steps.append(Step("interval", name))
        elif name in need_linear:
            steps.append(Step("linear", name))
        elif graph[name].op == "input":  # the final sweep concretises at the input (no activation before it)
            steps.append(Step("interval", name))
        if name in concrete:
            steps.append(Step("concretize", name))
    if method == "crown-lbp" and graph[output].perturbed:
        steps.append(sweep(output))
    return Schedule(method, output, steps)
