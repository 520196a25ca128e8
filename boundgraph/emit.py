"""Emit a bound program: a schedule becomes straight-line torch code, compiled once.

The program is a plain Python function ``(model, inputs, perturbations, C) -> (lower, upper)`` (or
``(CROWN bounds, IBP bounds)`` when its schedule asks for both) with
one or two lines per step and a comment naming each node's op and source line; ``str(program)`` is
its code. It calls the rules' methods directly, so a call does no graph interpretation, and it reads
the model's parameters by attribute at every call, so it always bounds the live model.
"""
from __future__ import annotations

import itertools
import keyword
import linecache
import math
from typing import Any, Callable

import torch
from torch import Tensor

from .ir import BoundGraph, Interval, LinearBounds, PerExample, Ref
from .ops import RULES, Nonlinear, Rule
from .patches import patches_alpha, patches_concretize, patches_conv, patches_lines, patches_start, window_sizes
from .passes.schedule import Schedule, Step

_counter = itertools.count()
_AFFINE = ("linear", "spec_linear", "conv1d", "conv2d", "conv3d")  # one such layer of the input: IBP exact on a box


def identity_start(like: Tensor, shape: tuple[int, ...], lower: bool, upper: bool) -> Tensor:
    """The first ``A`` of a sweep that bounds every element of a node: ``[I; −I]`` rows (those asked
    for) over the node's elements, shared by the batch: ``(batch, rows, *shape)``."""
    n = math.prod(shape)
    eye = torch.eye(n, dtype=like.dtype, device=like.device)
    rows = torch.cat([eye, -eye]) if lower and upper else (eye if lower else -eye)
    return rows.reshape(rows.shape[0], *shape).unsqueeze(0).expand(like.shape[0], *rows.shape[:1], *shape)


def split_bounds(bound: Tensor, shape: tuple[int, ...], lower: bool, upper: bool) -> Interval:
    """Undo ``identity_start``: lower bounds of the ``I`` rows, minus lower bounds of the ``−I`` rows."""
    n, batch = math.prod(shape), bound.shape[0]
    low = bound[:, :n].reshape(batch, *shape) if lower else None
    high = -bound[:, bound.shape[1] - n:].reshape(batch, *shape) if upper else None
    return Interval(low, high)


def unstable_rows(*masks: Tensor) -> Tensor:
    """``(batch, k)``: for each example, the indices of the (flattened) neurons unstable in it, first in index
    order, padded with some of its stable ones up to ``k``, the most any example has: the rows a refining sweep
    bounds. Per example, not the union over the batch: the union of a batch's unstable neurons was most of the
    layer, and one image at a time ran DM-small's CROWN 16× faster than batches of 64 (1.2 s vs 19 s for 64
    images, one thread). A padded row bounds a stable neuron: sound, and ``refine`` keeps the tighter bound."""
    mask = masks[0]
    for other in masks[1:]:
        mask = mask | other
    mask = mask.flatten(1)
    k = int(mask.sum(1).max()) if mask.numel() else 0
    return torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)[:, :k]


SWEEP_BUDGET_BYTES = 2**28  # the largest coefficient tensor a refining sweep builds (``set_sweep_budget``)


def set_sweep_budget(budget_bytes: int) -> None:
    """Bound the coefficient tensors of full CROWN's refining sweeps by ``budget_bytes`` each: their rows are taken
    in chunks that fit (the peak is a few such tensors). The bounds do not change; smaller chunks take longer."""
    global SWEEP_BUDGET_BYTES
    if budget_bytes < 1:
        raise ValueError(f"the sweep budget must be at least one byte, got {budget_bytes}")
    SWEEP_BUDGET_BYTES = int(budget_bytes)


def row_chunks(rows: Tensor, like: Tensor, width: int) -> tuple:
    """``rows`` (``(batch, k)``, the neurons a sweep bounds) in chunks of columns whose ``[I; −I]`` coefficients,
    ``(batch, 2·chunk, width)`` at the widest node of the sweep, fit ``SWEEP_BUDGET_BYTES``; at least one row
    per chunk."""
    per_row = 2 * like.shape[0] * width * like.element_size()
    return rows.split(max(1, SWEEP_BUDGET_BYTES // per_row), dim=1) if rows.numel() else ()


def rows_start(like: Tensor, shape: tuple[int, ...], rows: Tensor) -> Tensor:
    """``[I; −I]`` restricted to each example's ``rows``: ``(batch, 2·k, *shape)``."""
    batch, k, n = rows.shape[0], rows.shape[1], math.prod(shape)
    pick = torch.zeros(batch, k, n, dtype=like.dtype, device=like.device)
    pick.scatter_(2, rows.unsqueeze(2), 1.0)
    return torch.cat([pick, -pick], 1).reshape(batch, 2 * k, *shape)


def row_ids(chunk: Tensor, neurons: int) -> Tensor:
    """The ``[I; −I]`` rows of ``rows_start(…, chunk)`` as ids among all ``2·neurons`` rows of a sweep: a neuron's
    lower row is its index, its upper row ``neurons`` + its index (α per row, ``ReLU.with_alpha``)."""
    return torch.cat([chunk, chunk + neurons], 1)


ALPHA_ROWS_ELEMENTS = 2**24  # per example: the most α elements kept per row of an intermediate dense sweep


def refine(bounds: Interval, bound: Tensor, rows: Tensor) -> Interval:
    """Intersect ``bounds`` with CROWN's bounds of each example's ``rows`` (lower rows, then negated upper rows);
    a neuron that appears twice in a row (padding) keeps the tightest. NaN stays NaN."""
    k = rows.shape[1]
    lower = bounds.lower.flatten(1).scatter_reduce(1, rows, bound[:, :k], "amax")
    upper = bounds.upper.flatten(1).scatter_reduce(1, rows, -bound[:, k:], "amin")
    return Interval(lower.view_as(bounds.lower), upper.view_as(bounds.upper))


def nan_where_unbounded(x: Interval, result: Any, *constants: Any) -> Any:
    """``result`` (the interval or the lines of a nonlinear node on ``x``) with NaN wherever ``x`` is not
    a finite interval (an infinite or NaN width: overflow, or NaN from an earlier one), and everywhere if
    a constant operand (a learnt ramp, η) is not finite.

    A saturating σ would turn such an interval into finite, wrong numbers: ReLU's lines call a NaN
    neuron dead (every comparison with NaN is false) and clamp ``[−inf, −inf]`` to ``[0, 0]``, although
    the overflowed sum behind it may hide any value. NaN reaches every bound computed from it (``0·NaN``
    is NaN), and the program's output turns it into a vacuous ±inf (``vacuous``)."""
    floating = [c for c in constants if isinstance(c, Tensor) and c.is_floating_point()]
    if torch.compiler.is_compiling():  # no data-dependent branch: a compiled program stays one graph
        return _nan_per_example(x, result, floating)
    if any(not bool(torch.isfinite(c).all()) for c in floating):
        return type(result)(*(t if t is None or not t.is_floating_point() else torch.full_like(t, math.nan)
                              for t in result))
    if x.lower.device.type == "cpu" and _finite_widths(x):
        return result  # the common case, decided by two reductions instead of four elementwise passes
    bad = ~torch.isfinite(x.upper - x.lower)
    per_example = bad.reshape(bad.shape[0], -1).any(1)

    def mark(t: Any) -> Any:
        if t is None or not t.is_floating_point():
            return t  # positions of a window's element (max pooling): its slopes and biases carry the NaN
        if t.shape == bad.shape:
            return torch.where(bad, math.nan, t)
        return torch.where(per_example.view(-1, *([1] * (t.dim() - 1))), math.nan, t)  # not elementwise: whole examples

    return type(result)(*(mark(t) for t in result))


def _nan_per_example(x: Interval, result: Any, constants: list) -> Any:
    """``nan_where_unbounded`` without branches (under ``torch.compile``): NaN wherever a width is not finite, in
    the results of the interval's shape (inductor fuses that mask into the pass that computes them), and over a
    whole example in the others (one reduction per example, vacuous where the widths sum past the largest float,
    never wrong); everything where a constant is not finite. (A per-example reduction for every result was 3–4
    times slower: inductor gathered the channels-last convolution outputs one scalar at a time.)"""
    widths = (x.upper - x.lower).detach()
    bad = ~torch.isfinite(widths)
    constant_bad = None
    for c in constants:
        c_bad = ~torch.isfinite(c.detach()).all()
        constant_bad = c_bad if constant_bad is None else constant_bad | c_bad
    per_example = None

    def mark(t: Any) -> Any:
        nonlocal per_example
        if t is None or not t.is_floating_point():
            return t
        if t.shape == bad.shape:
            where = bad if constant_bad is None else bad | constant_bad
        else:
            if per_example is None:
                per_example = ~torch.isfinite(widths.reshape(widths.shape[0], -1).sum(1))
                if constant_bad is not None:
                    per_example = per_example | constant_bad
            where = per_example.view(-1, *([1] * (t.dim() - 1)))
        return torch.where(where, math.nan, t)

    return type(result)(*(mark(t) for t in result))


def _finite_widths(x: Interval) -> bool:
    """Whether every width ``u − l`` is finite: it lies between ``min u − max l`` and ``max u − min l``."""
    lower_min, lower_max = torch.aminmax(x.lower.detach())
    upper_min, upper_max = torch.aminmax(x.upper.detach())
    return bool(torch.isfinite(upper_max - lower_min) & torch.isfinite(upper_min - lower_max))


def vacuous(bounds: Interval) -> Interval:
    """Bounds with every lower bound that is not a finite number made −inf, every such upper bound +inf:
    an overflow can make a result vacuous, never finite and wrong (a lower bound of +inf would be
    wrong too, as the overflowed sum behind it may be any value)."""
    lower, upper = bounds
    return Interval(None if lower is None else torch.where(torch.isfinite(lower), lower, -math.inf),
                    None if upper is None else torch.where(torch.isfinite(upper), upper, math.inf))


def linear_start(x: Tensor) -> LinearBounds:
    """LBP's bounds of the input itself: ``I·x + 0`` on both sides, the coefficient shared by the batch
    (``(1, n_x, *shape)``), so that the ops before the first nonlinearity run once, not once per example."""
    n = x[0].numel()
    eye = torch.eye(n, dtype=x.dtype, device=x.device).reshape(1, n, *x.shape[1:])
    zero = torch.zeros_like(x)
    return LinearBounds(eye, zero, eye, zero)


def concretize_linear(bounds: LinearBounds, perturbation: Any, x: Tensor) -> Interval:
    """The interval of a node from its linear bounds in ``x``: each side minimised (maximised) over the
    perturbation set by its dual norm, exactly as CROWN concretises at the input."""
    n = bounds.lower_coef.shape[1]

    def rows(coef: Tensor) -> Tensor:  # (batch or 1, n_x, *shape) → (batch or 1, n_z, *x_shape)
        return coef.reshape(coef.shape[0], n, -1).transpose(1, 2).reshape(coef.shape[0], -1, *x.shape[1:])

    lower = perturbation.concretize(rows(bounds.lower_coef), x).view_as(bounds.lower_bias) + bounds.lower_bias
    upper = bounds.upper_bias - perturbation.concretize(rows(-bounds.upper_coef), x).view_as(bounds.upper_bias)
    return Interval(lower, upper)


def compiled(fn: Callable, backend: str) -> Callable:
    """``fn`` through ``torch.compile`` with ``backend`` (compiled on its first call, then cached by torch per input
    shape); if the backend cannot compile it (no C++ compiler for inductor, an unsupported op), a warning says so
    and ``fn`` runs eagerly from then on. Errors of the program itself (a refused input) pass through."""
    import warnings

    from torch._dynamo.exc import BackendCompilerFailed

    state = {"fn": torch.compile(fn, backend=backend)}

    def run(*args):
        try:
            return state["fn"](*args)
        except BackendCompilerFailed as error:
            if state["fn"] is fn:
                raise
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            warnings.warn(f"torch.compile (backend {backend!r}) could not compile this bound program ({reason}); it "
                          "runs eagerly", RuntimeWarning, stacklevel=3)
            state["fn"] = fn
            return fn(*args)

    return run


class BoundProgram:
    """A compiled bound program; call it, or print it to read it. ``compile(backend)`` runs it through
    ``torch.compile`` from then on."""

    def __init__(self, name: str, code: str, fn: Callable, graph: BoundGraph, intermediates: bool = False) -> None:
        self.name, self.code, self.fn, self.graph, self.intermediates = name, code, fn, graph, intermediates

    def __call__(self, model, inputs: tuple, perturbations: tuple, C: Tensor | None = None,
                 alphas: dict | None = None):
        """The bounds (``(CROWN bounds, IBP bounds)`` for a program made ``with_ibp``); a program made with
        ``intermediates`` returns them with a dict of every interval it computed on the way and a dict of
        every nonlinear node's lines, by node."""
        result = self.fn(model, inputs, perturbations, C) if alphas is None else self.fn(
            model, inputs, perturbations, C, alphas)
        extra = ()
        if self.intermediates:
            result, *extra = result
        result = vacuous(result) if isinstance(result, Interval) else tuple(vacuous(r) for r in result)
        return (result, *extra) if extra else result

    def compile(self, backend: str = "inductor") -> "BoundProgram":
        """Run this program through ``torch.compile`` (``compiled``); returns it."""
        self.fn = compiled(self.fn, backend)
        return self

    def __str__(self) -> str:
        return self.code

    def __repr__(self) -> str:
        return f"<BoundProgram {self.name}: {self.code.count(chr(10))} lines>"


def _plain(value: Any) -> bool:
    """Whether ``repr(value)`` is Python source that evaluates back to ``value``, type and all."""
    if type(value) is float:
        return math.isfinite(value)  # repr(inf) is not Python
    if type(value) in (int, bool, str, type(None)):
        return True
    if type(value) in (tuple, list):
        return all(_plain(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False


def _attribute_path(root: str, path: str) -> str:
    expr = root
    for part in path.split("."):
        plain = part.isidentifier() and not keyword.iskeyword(part)
        expr = f"{expr}.{part}" if plain else f"getattr({expr}, {part!r})"
    return expr


_HELPERS = {"identity_start": identity_start, "split_bounds": split_bounds, "unstable_rows": unstable_rows,
            "rows_start": rows_start, "refine": refine, "Interval": Interval, "linear_start": linear_start,
            "concretize_linear": concretize_linear, "PerExample": PerExample,
            "nan_where_unbounded": nan_where_unbounded, "row_chunks": row_chunks, "row_ids": row_ids,
            "patches_start": patches_start, "patches_lines": patches_lines, "patches_alpha": patches_alpha,
            "patches_conv": patches_conv, "patches_concretize": patches_concretize}
_RESERVED = {"model", "inputs", "perturbations", "C", "alphas", "bias", "b", "bound", "_", "CONSTANTS", "None", "True",
             "False", "len", "P"} | set(_HELPERS) | set(keyword.kwlist)


def _derived(var: str) -> list[str]:
    return [var, f"{var}_x", f"{var}_lines", f"{var}_crown", f"{var}_rows", f"{var}_lin", f"A_{var}", f"{var}_alpha",
            f"{var}_chunk"]


def variable_names(graph: BoundGraph) -> dict[str, str]:
    """A Python variable per node: its own name unless that (or a name derived from it) is taken."""
    taken = set(_RESERVED) | {name.upper() for name in RULES}
    names: dict[str, str] = {}
    for node in graph:
        var, k = node.name, 0
        while any(d in taken for d in _derived(var)):
            k += 1
            var = f"{node.name}_{k}"
        names[node.name] = var
        taken.update(_derived(var))
    return names


class _Emitter:
    def __init__(self, graph: BoundGraph, rules: dict[str, Rule], sched: Schedule,
                 bound_lower: bool, bound_upper: bool, lines: str, intermediates: bool = False) -> None:
        self.intermediates = intermediates
        self.graph, self.rules, self.sched = graph, rules, sched
        self.v = variable_names(graph)
        self.taken = {d for var in self.v.values() for d in _derived(var)}
        self.bound_lower, self.bound_upper, self.strategy = bound_lower, bound_upper, lines
        self.body: list[str] = []
        self.indent = 1
        self.globals: dict[str, Any] = dict(_HELPERS, CONSTANTS={})
        self.temp = itertools.count()
        self.per_example = {n.name for n in graph if n.op in ("input", "spec", "batch")}  # one value per example
        for node in graph:
            if any(r in self.per_example for r in node.refs()) and not getattr(rules.get(node.name), "reduces_batch",
                                                                               False):
                self.per_example.add(node.name)
        first = next(n for n in graph.inputs() if n.perturbed)
        self.like = f"{self.v[first.name]}_x"

    def line(self, text: str) -> None:
        self.body.append("    " * self.indent + text)

    def rule(self, node_name: str) -> str:
        op = self.graph[node_name].op
        name = op.upper()
        self.globals[name] = self.rules[node_name]
        return name

    def literal(self, value: Any) -> str:
        if _plain(value):
            return repr(value)
        key = f"k{len(self.globals['CONSTANTS'])}"
        self.globals["CONSTANTS"][key] = value
        return f"CONSTANTS[{key!r}]"

    def operand(self, operand: Any, backward: bool = False) -> str:
        if isinstance(operand, Ref):
            return "None" if backward and self.graph[operand.name].perturbed else self.v[operand.name]
        return self.literal(operand)

    def call_args(self, node_name: str, backward: bool = False, skip: int = 0, linear: bool = False) -> str:
        """The node's operands (from the ``skip``-th on) and attributes as call arguments; perturbed
        operands as None (``backward``) or as their linear bounds (``linear``)."""
        node = self.graph[node_name]
        args = []
        for o in node.operands[skip:]:
            perturbed = isinstance(o, Ref) and self.graph[o.name].perturbed
            if linear and perturbed:
                args.append(f"{self.v[o.name]}_lin")
            elif linear and isinstance(o, Ref) and o.name in self.per_example and self.graph[o.name].shape:
                args.append(f"PerExample({self.v[o.name]})")
            else:
                args.append(self.operand(o, backward))
        args += [f"{k}={self.literal(v)}" for k, v in node.attrs.items()]
        return ", ".join(args)

    def comment(self, node_name: str) -> None:
        node = self.graph[node_name]
        operands = ", ".join(self.v[o.name] if isinstance(o, Ref) else repr(o) for o in node.operands)
        self.line(f"# {node.op}({operands})" + (f"    [{node.source}]" if node.source else ""))

    def value(self, step: Step) -> None:
        node, var = self.graph[step.node], self.v[step.node]
        if node.op == "input":
            self.line(f"{var} = inputs[{node.attrs['index']}]")
        elif node.op == "param":
            self.line(f"{var} = {_attribute_path('model', node.attrs['path'])}")
        elif node.op == "constant":
            self.globals["CONSTANTS"][var] = node.attrs["value"]
            self.line(f"{var} = CONSTANTS[{var!r}]")
        elif node.op == "spec":
            self.line(f"{var} = C")
        elif node.op == "batch":
            self.line(f"{var} = inputs[0].shape[0]")
        else:
            self.line(f"{var} = {self.rule(node.name)}.forward({self.call_args(node.name)})")

    def interval(self, step: Step) -> None:
        node, var = self.graph[step.node], self.v[step.node]
        if node.op == "input":
            i = node.attrs["index"]
            self.line(f"{var}_x = inputs[{i}]")
            self.line(f"{var} = perturbations[{i}].interval({var}_x)")
            return
        self.comment(node.name)
        call = f"{self.rule(node.name)}.interval({self.call_args(node.name)})"
        if isinstance(self.rules[node.name], Nonlinear):
            if self.sched.method == "singleprop":  # a regulariser, not a bound
                call = f"{self.rule(node.name)}.deviation({self.call_args(node.name)})"
            else:
                call = self.guarded(node.name, call)
        self.line(f"{var} = {call}")

    def relaxed(self, node_name: str) -> list[str]:
        """The variables of a nonlinear node's relaxed operands (those whose bounds its lines take)."""
        node = self.graph[node_name]
        return [self.v[o.name] for o in self.rules[node_name].relaxed(node.operands)]

    def guarded(self, node_name: str, call: str) -> str:
        """``call`` (a nonlinear node's interval or lines) made NaN where an input it relaxes is unbounded."""
        node = self.graph[node_name]
        count = len(self.relaxed(node_name))
        constants = "".join(f", {self.operand(o)}" for o in node.operands[count:] if isinstance(o, Ref))
        for i, pre in enumerate(self.relaxed(node_name)):
            call = f"nan_where_unbounded({pre}, {call}{constants if i == 0 else ''})"
        return call

    def attr_args(self, node_name: str) -> str:
        """``, name=value`` for every attribute of a node."""
        return "".join(f", {k}={self.literal(v)}" for k, v in self.graph[node_name].attrs.items())

    def rest_args(self, node_name: str) -> str:
        """``, <constant operands and attributes>`` of a nonlinear node (its relaxed operands left out)."""
        rest = self.call_args(node_name, skip=len(self.relaxed(node_name)))
        return f", {rest}" if rest else ""

    def lines(self, step: Step) -> None:
        node, var = self.graph[step.node], self.v[step.node]
        bounds = ", ".join(f"{p}.lower, {p}.upper" for p in self.relaxed(node.name))
        strategy = "adaptive" if self.strategy == "alpha" else self.strategy
        call = f"{self.rule(node.name)}.lines({bounds}, {strategy!r}{self.rest_args(node.name)})"
        self.line(f"{var}_lines = {self.guarded(node.name, call)}")

    def linear(self, step: Step) -> None:
        node, var = self.graph[step.node], self.v[step.node]
        if node.op == "input":
            self.line(f"{var}_x = inputs[{node.attrs['index']}]")
            self.line(f"{var}_lin = linear_start({var}_x)")
            return
        self.comment(node.name)
        if isinstance(self.rules[node.name], Nonlinear):
            args = "".join(f"{p}_lin, " for p in self.relaxed(node.name)) + f"{var}_lines"
        else:
            args = self.call_args(node.name, linear=True)
        self.line(f"{var}_lin = {self.rule(node.name)}.forward_linear({args})")

    def concretize(self, step: Step) -> None:
        var = self.v[step.node]
        source = next(n for n in self.graph.inputs() if n.perturbed)
        call = f"concretize_linear({var}_lin, perturbations[{source.attrs['index']}], {self.v[source.name]}_x)"
        if getattr(self.rules.get(step.node), "refines", False):  # a range the node is known to lie in
            call = f"{self.rule(step.node)}.interval({call}{self.attr_args(step.node)})"
        self.line(f"{var} = {call}")

    def temporary(self, var: str) -> str:
        while True:
            name = f"A_{var}_{next(self.temp)}"
            if name not in self.taken:
                return name

    def sweep(self, step: Step) -> None:
        target, t = self.graph[step.node], self.v[step.node]
        final = step.node == self.sched.output
        lower, upper = (self.bound_lower, self.bound_upper) if final else (True, True)
        shape = repr(tuple(target.shape[1:])) if target.shape is not None else "(C.shape[1],)"
        if final:
            self.line(f"# CROWN: backward sweep from {t}")
            self.line(f"A_{t} = identity_start({self.like}, {shape}, lower={lower}, upper={upper})")
        else:
            masks = ", ".join(f"{self.rule(c)}.unstable({t}.lower, {t}.upper{self.attr_args(c)})"
                              for c in step.consumers)  # attributes only: constant operands may come later
            self.line(f"# CROWN: backward sweep from {t}, for its unstable neurons only, in chunks that fit the budget")
            exact = self.exact_by_ibp(step)  # (its guard's indent is undone below)
            if exact is not None:  # one affine map of the input: over a box IBP's interval is its exact range
                self.line(f"if not perturbations[{exact}].box:")
                self.indent += 1
            self.line(f"{t}_rows = unstable_rows({masks})")
            patched = self.patch_sweep(step)
            width = max(math.prod(self.graph[n].shape[1:]) for n in step.order if self.graph[n].shape is not None)
            self.line(f"for {t}_chunk in row_chunks({t}_rows, {self.like}, {width}):")
            self.indent += 1
            self.line(f"A_{t} = rows_start({self.like}, {shape}, {t}_chunk)")
        self.line("bias = 0")
        reached, terms = {target.name}, []
        for name in step.order:
            node, var = self.graph[name], self.v[name]
            if node.op == "input":
                terms.append(f"perturbations[{node.attrs['index']}].concretize(A_{var}, {var}_x)")
                continue
            rule = self.rule(name)
            if isinstance(self.rules[name], Nonlinear) and self.strategy == "alpha":
                # α-CROWN: lower slopes of their own for each sweep (start node), and for each row of the last
                pre = self.v[node.operands[0].name]
                rows, index = (f"A_{var}.shape[1]" if final else "None"), ""
                neurons = math.prod(target.shape[1:]) if target.shape is not None else 0
                if (not final and getattr(self.rules[name], "alpha_rows", False) and node.shape is not None
                        and 2 * neurons * math.prod(node.shape[1:]) <= ALPHA_ROWS_ELEMENTS):
                    rows, index = f"{2 * neurons}", f", index=row_ids({t}_chunk, {neurons})"
                self.line(f"{var}_alpha = {rule}.with_alpha({var}_lines, {pre}.lower, {pre}.upper, alphas, "
                          f"({name!r}, {step.node!r}), {rows}{index})")
                call = f"{rule}.backward(A_{var}, {var}_alpha{self.attr_args(name)})"
            elif isinstance(self.rules[name], Nonlinear):
                call = f"{rule}.backward(A_{var}, {var}_lines{self.attr_args(name)})"
            else:
                call = f"{rule}.backward(A_{var}, {self.call_args(name, backward=True)})"
            targets, sums = [], []
            operands = self.rules[name].relaxed(node.operands) if isinstance(self.rules[name], Nonlinear) \
                else node.operands
            for o in operands:
                if isinstance(o, Ref) and self.graph[o.name].perturbed:
                    into = self.v[o.name]
                    if o.name in reached:
                        tmp = self.temporary(into)
                        targets.append(tmp)
                        sums.append(f"A_{into} = A_{into} + {tmp}")
                    else:
                        targets.append(f"A_{into}")
                        reached.add(o.name)
                else:
                    targets.append("_")
            self.line(f"({', '.join(targets)},), b = {call}")
            self.line("bias = bias + b")
            for line in sums:
                self.line(line)
            self.line(f"del A_{var}")
        self.line(f"bound = bias + {' + '.join(terms)}")
        if final:
            self.line(f"{t}_crown = split_bounds(bound, {shape}, lower={lower}, upper={upper})")
            if getattr(self.rules.get(step.node), "terminal", False):  # its lines bound a transform of it
                self.line(f"{t}_crown = {self.rule(step.node)}.finish({t}_crown, {t}_lines)")
        else:
            self.line(f"{t} = refine({t}, bound, {t}_chunk)")
            self.indent -= 1 + (exact is not None) + patched

    def patch_plan(self, step: Step):
        """The steps of a sweep by windows (``boundgraph.patches``), or None where it must be dense: the sweep's
        target and every node down to the perturbed input form one chain of ``conv2d`` (groups 1, dilation 1,
        constant kernel) and one-input elementwise nodes with plain lines, on ``(C, H, W)`` maps, and every
        window is at most half its map (else dense maps are no larger)."""
        graph = self.graph
        order = [graph[name] for name in step.order]
        if len(order) < 3 or order[0].op != "conv2d" or order[-1].op != "input":
            return None
        for node, below in zip(order, order[1:]):
            perturbed = [o.name for o in node.operands if isinstance(o, Ref) and graph[o.name].perturbed]
            if perturbed != [below.name] or node.shape is None or len(node.shape) != 4:
                return None
            rule = self.rules[node.name]
            if node.op == "conv2d":
                weight = node.operands[1]
                if (node.operands[0] != Ref(below.name) or node.attrs["groups"] != 1
                        or tuple(node.attrs["dilation"]) != (1, 1) or not isinstance(weight, Ref)
                        or graph[weight.name].op not in ("param", "constant") or len(graph[weight.name].shape) != 4):
                    return None
            elif not (isinstance(rule, Nonlinear) and rule.inputs == 1 and type(rule).backward is Nonlinear.backward
                      and below.shape == node.shape):
                return None
        if len(order[-1].shape) != 4:
            return None
        def kernel(node) -> tuple[int, int]:
            return tuple(graph[node.operands[1].name].shape[-2:])

        chain = [("conv", (kernel(n), tuple(n.attrs["stride"]))) if n.op == "conv2d" else ("lines", ())
                 for n in order[1:-1]]
        sizes = window_sizes(chain, kernel(order[0]))
        maps = [n.shape[1:] for n in order[1:]]  # the map each window lies on: the input of each step
        if any(h * w > 0.5 * m[1] * m[2] for (h, w), m in zip(sizes, maps)):
            return None
        return [(n, m, size) for n, m, size in zip(order, maps, sizes)], order[-1]

    def patch_sweep(self, step: Step) -> bool:
        """Emit the sweep by windows where ``patch_plan`` allows it, under ``if`` the input's set is a box; the
        dense loop that follows is then its ``else`` (returns whether it opened one)."""
        plan = self.patch_plan(step)
        if plan is None:
            return False
        plan, source = plan
        t, like = self.v[step.node], self.like
        width = max(m[0] * h * w for _, m, (h, w) in plan)
        self.line(f"if perturbations[{source.attrs['index']}].box:  # rows as windows (boundgraph.patches)")
        self.indent += 1
        self.line(f"for {t}_chunk in row_chunks({t}_rows, {like}, {width}):")
        self.indent += 1
        target = plan[0][0]
        weight, bias = (self.operand(o) for o in target.operands[1:3])
        self.line(f"P, bias = patches_start({t}_chunk, {weight}, {bias}, {tuple(target.shape[1:])!r}, "
                  f"{tuple(target.attrs['stride'])!r}, {tuple(target.attrs['padding'])!r})")
        for node, _, _ in plan[1:]:
            var = self.v[node.name]
            if node.op == "conv2d":
                weight, bias = (self.operand(o) for o in node.operands[1:3])
                self.line(f"P, b = patches_conv(P, {weight}, {bias}, {tuple(node.shape[2:])!r}, "
                          f"{tuple(node.attrs['stride'])!r}, {tuple(node.attrs['padding'])!r})")
            else:
                lines, own = f"{var}_lines", ""
                pre = self.v[node.operands[0].name]
                if self.strategy == "alpha" and getattr(self.rules[node.name], "alpha_rows", False):
                    neurons = math.prod(target.shape[1:])
                    self.line(f"{var}_alpha = patches_alpha({var}_lines.lower_slope, {self.rule(node.name)}.unstable("
                              f"{pre}.lower, {pre}.upper), alphas, ({node.name!r}, {step.node!r}), P, "
                              f"row_ids({t}_chunk, {neurons}), {2 * neurons})")
                    own = f", lower_rows={var}_alpha"
                elif self.strategy == "alpha":
                    self.line(f"{var}_alpha = {self.rule(node.name)}.with_alpha({var}_lines, {pre}.lower, "
                              f"{pre}.upper, alphas, ({node.name!r}, {step.node!r}), None)")
                    lines = f"{var}_alpha"
                self.line(f"P, b = patches_lines(P, *{lines}, like={pre}.lower{own})")
            self.line("bias = bias + b")
        self.line(f"bound = bias + patches_concretize(P, {self.v[source.name]})")
        self.line(f"{t} = refine({t}, bound, {t}_chunk)")
        self.indent -= 2
        self.line("else:")
        self.indent += 1
        return True

    def exact_by_ibp(self, step: Step):
        """The input's index if the sweep's target is one linear layer or convolution of that input alone, else None."""
        target = self.graph[step.node]
        perturbed = [o for o in target.operands if isinstance(o, Ref) and self.graph[o.name].perturbed]
        if (len(step.order) == 2 and target.op in _AFFINE and len(perturbed) == 1
                and self.graph[perturbed[0].name].op == "input"):
            return self.graph[perturbed[0].name].attrs["index"]
        return None

    def program(self, name: str) -> BoundProgram:
        for step in self.sched.steps:
            getattr(self, step.kind)(step)
        out, var = self.graph[self.sched.output], self.v[self.sched.output]
        low = f"{var}.lower" if self.bound_lower else "None"
        high = f"{var}.upper" if self.bound_upper else "None"
        if not out.perturbed:
            result = f"Interval({var}, {var})"
        elif self.sched.method in ("ibp", "lbp", "singleprop"):
            result = f"Interval({low}, {high})"
        elif self.sched.with_ibp:
            result = f"{var}_crown, Interval({low}, {high})"
        else:
            result = f"{var}_crown"
        if self.intermediates:  # every interval and every line computed on the way (boundgraph.check)
            order = list(self.graph.nodes).index
            named = sorted({step.node for step in self.sched.steps if step.kind in ("interval", "concretize")},
                           key=order)
            lined = sorted({step.node for step in self.sched.steps if step.kind == "lines"}, key=order)
            intervals = ", ".join(f"{n!r}: {self.v[n]}" for n in named)
            relaxations = ", ".join(f"{n!r}: {self.v[n]}_lines" for n in lined)
            result = f"({result}), {{{intervals}}}, {{{relaxations}}}"
        self.line(f"return {result}")
        fname = name.replace("-", "_") + "_bounds"
        signature = "model, inputs, perturbations, C" + (", alphas" if self.strategy == "alpha" else "")
        code = f"def {fname}({signature}):\n" + "\n".join(self.body) + "\n"
        filename = f"<boundgraph {fname} #{next(_counter)}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        exec(compile(code, filename, "exec"), self.globals)  # noqa: S102  (our own generated code)
        return BoundProgram(name, code, self.globals[fname], self.graph, self.intermediates)


def emit(graph: BoundGraph, rules: dict[str, Rule], sched: Schedule, *, bound_lower: bool = True,
         bound_upper: bool = True, lines: str = "adaptive", intermediates: bool = False) -> BoundProgram:
    return _Emitter(graph, rules, sched, bound_lower, bound_upper, lines, intermediates).program(sched.method)
