"""What a rule is, the registry of rules by canonical name, and shared tensor helpers.

A rule is a stateless object; a node of the IR names its rule by ``op``. Operands reach a rule as
``Interval`` (perturbed, in ``interval``), ``None`` (perturbed, in ``backward``), or a tensor or
number (constant). ``A`` coefficients are ``(batch, specs, *node_shape)``; biases ``(batch, specs)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional

import torch
from torch import Tensor, nn

from ..errors import UnsupportedOpError
from ..ir import Interval, LinearBounds, PerExample, Ref

RULES: dict[str, "Rule"] = {}
SPELLINGS: dict[Any, str] = {}
LINE_STRATEGIES = ("adaptive", "tight", "zero", "one")
_REQUIRED = object()


def method(name: str) -> tuple[str, str]:
    """The spelling of a tensor method, e.g. ``x.relu()`` is ``method("relu")``."""
    return ("method", name)


def rule(name: str, spellings: tuple = ()):
    """Register a rule class under its canonical ``name`` and every user-level spelling of it:
    ``nn.Module`` classes, functions (``torch``/``F``/``operator``/``aten`` overloads), ``method(...)``."""

    def register(cls: type) -> type:
        instance = cls()
        instance.name = name
        RULES[name] = instance
        for spelling in spellings:
            SPELLINGS[spelling] = name
        return cls

    return register


@dataclass
class Call:
    """One traced call, as a rule's ``canonicalize`` sees it."""

    node: str
    spelling: Any
    args: tuple
    kwargs: dict
    module: Optional[nn.Module]
    source: str
    out_shape: Optional[tuple[int, ...]]
    operand_shape: Callable[[Any], Optional[tuple[int, ...]]]
    module_param: Callable[[str], Optional[Ref]]
    out_dtype: Optional[torch.dtype] = None
    out_device: Optional[torch.device] = None
    example: Any = None  # the call's traced value
    operand_dtype: Callable[[Any], Optional[torch.dtype]] = lambda operand: None
    sequence_first: bool = False  # its sequence operands were (sequence, batch, …) transposes of batch-first tensors,
    # given here as those tensors; its first result must be given as (sequence, batch, …) too (batch_first=False)

    def arg(self, index: int, name: str, default: Any = _REQUIRED) -> Any:
        if index < len(self.args):
            return self.args[index]
        if name in self.kwargs:
            return self.kwargs[name]
        if default is _REQUIRED:
            raise self.fail(f"missing argument {name!r}")
        return default

    def param(self, attr: str) -> Optional[Ref]:
        """The module's parameter or buffer ``attr`` as an operand (read live at every call)."""
        return self.module_param(attr)

    def fail(self, reason: str) -> UnsupportedOpError:
        return UnsupportedOpError(self.node, _spelling_name(self.spelling), self.source, reason)


@dataclass
class Several:
    """What ``canonicalize`` returns for a call with several tensor results (``split``, ``chunk``,
    ``unbind``): one canonical node per result, ``(op, operands, attrs)`` each, in order. ``assemble`` builds
    the call's result from the nodes' references where it is not their tuple, with ``examples`` the nodes'
    example values (``nn.LSTM``'s ``(output, (h_n, c_n))``, with ``h_n`` one node per layer)."""

    pieces: list
    assemble: Optional[Callable[[list], Any]] = None
    examples: Optional[list] = None


class Parts(list):
    """A stack of nodes that the user's tensor keeps on a dimension before the batch (``h_n`` of a recurrent
    layer: one node per layer and direction); only indexing (``h_n[-1]``) may take it apart."""


def _spelling_name(spelling: Any) -> str:
    if isinstance(spelling, tuple):
        return f"Tensor.{spelling[1]}"
    if isinstance(spelling, type):
        return f"{spelling.__module__}.{spelling.__qualname__}"
    return str(getattr(spelling, "__name__", spelling))


class Rule:
    """Base of all rules. ``perturbable`` lists the operand positions that may be perturbed."""

    name = ""
    perturbable: tuple[int, ...] = (0,)
    reduces_batch = False  # its value is one for the whole batch (batch statistics), not one per example

    def canonicalize(self, call: Call) -> "tuple[tuple, dict] | Several":
        """Operands and attributes of the canonical node for one traced spelling (or ``Several`` nodes)."""
        return (call.arg(0, "input"),), {}

    def specialize(self, attrs: dict, operand_shapes: list, out_shape: tuple[int, ...]) -> dict:
        """Add what depends on shapes (known once the example input has been propagated)."""
        return attrs

    def check(self, perturbed: tuple[bool, ...]) -> Optional[str]:
        """Why this rule cannot bound a node with these perturbed operands, or None."""
        bad = [i for i, p in enumerate(perturbed) if p and i not in self.perturbable]
        if bad:
            return f"operand(s) {bad} depend on the perturbed input; only {list(self.perturbable)} may"
        return None

    def expand(self, node: Any, perturbed: tuple[bool, ...], build: "Expansion") -> Optional[list]:
        """The nodes that compute ``node`` another way when these of its operands are perturbed (a product of
        two perturbed tensors becomes the bilinear rule's, a layer norm its pieces), made with ``build``;
        None keeps the node."""
        return None

    def forward(self, *operands: Any, **attrs: Any) -> Tensor:
        raise NotImplementedError

    def interval(self, *operands: Any, **attrs: Any) -> Interval:
        raise NotImplementedError

    def backward(self, A: Tensor, *operands: Any, **attrs: Any) -> tuple[tuple, Any]:
        """Pass ``A`` back through a node linear in its perturbed operands: one ``A`` per
        operand (None for constants) and the bias ``A·(constant part)``, ``(batch, specs)`` or 0."""
        raise NotImplementedError

    def forward_linear(self, *operands: Any, **attrs: Any) -> LinearBounds:
        """LBP (Lyu et al. 2021) through a node affine in its perturbed operands, ``z = L(x) + c``:
        ``W'_l = L⁺W_l + L⁻W_u``, ``b'_l = L⁺b_l + L⁻b_u + c`` (upper mirrored). That is this op's own
        interval rule applied to the biases, and to the coefficients with each input element's slice
        as one more example (then less ``c = op(0)``, which the coefficients must not carry).
        Coefficient pairs are not ordered elementwise, so an affine rule's ``interval`` must be written
        as ``L⁺l + L⁻u`` (or centre and radius), never with an elementwise min/max of ``l`` and ``u``."""
        first = next(o for o in operands if isinstance(o, LinearBounds))
        batch, n = first.lower_bias.shape[0], first.lower_coef.shape[1]
        # coefficients shared by the batch (first dimension 1, as LBP starts) stay shared unless an
        # operand is per example
        per_example = any(isinstance(o, PerExample) and o.value.shape[0] == batch for o in operands) or any(
            isinstance(o, LinearBounds) and o.lower_coef.shape[0] != 1 for o in operands)
        rows = batch if per_example else 1
        coefs, biases, zeros = [], [], []
        for o in operands:
            if isinstance(o, LinearBounds):
                coefs.append(Interval(*(c.expand(rows, *c.shape[1:]).flatten(0, 1)
                                        for c in (o.lower_coef, o.upper_coef))))
                biases.append(Interval(o.lower_bias, o.upper_bias))
                zeros.append(o.lower_bias.new_zeros(rows, *o.lower_bias.shape[1:]))
            elif isinstance(o, PerExample):
                coefs.append(o.value.repeat_interleave(n, 0) if o.value.shape[0] == batch else o.value)
                biases.append(o.value)
                zeros.append(o.value)
            else:
                coefs.append(o)
                biases.append(o)
                zeros.append(o)
        bias = self.interval(*biases, **attrs)
        coef = self.interval(*coefs, **attrs)
        offset = self.forward(*zeros, **attrs).unsqueeze(1)

        def unfold(t: Tensor) -> Tensor:
            return t.reshape(rows, n, *t.shape[1:]) - offset

        return LinearBounds(unfold(coef.lower), bias.lower, unfold(coef.upper), bias.upper)


class Expansion:
    """Builds the nodes a rule's ``expand`` returns: ``add`` one (perturbed, from the node's source and module;
    its shape found by running its rule on zeros, its attributes specialised), ``finish`` with the node's own
    name; ``shape(operand)`` is an operand's shape (batch first), None for a literal; ``source(operand)`` the
    node that computes it (None for a literal or a node made by this expansion)."""

    def __init__(self, node: Any, shape_of: Callable[[Ref], Optional[tuple]], fresh: Callable[[str], str],
                 perturbed_of: Callable[[Ref], bool] = lambda ref: False,
                 node_of: Callable[[Ref], Any] = lambda ref: None) -> None:
        self.node, self.shape_of, self.fresh, self.perturbed_of = node, shape_of, fresh, perturbed_of
        self.node_of = node_of
        self.nodes: list = []
        self.shapes: dict[str, tuple] = {}
        self.perturbed: dict[str, bool] = {}

    def is_perturbed(self, ref: Ref) -> bool:
        return self.perturbed[ref.name] if ref.name in self.perturbed else self.perturbed_of(ref)

    def source(self, operand: Any) -> Any:
        return self.node_of(operand) if isinstance(operand, Ref) and operand.name not in self.shapes else None

    def shape(self, operand: Any) -> Optional[tuple]:
        if not isinstance(operand, Ref):
            return None
        return self.shapes[operand.name] if operand.name in self.shapes else self.shape_of(operand)

    def add(self, op: str, operands: tuple, attrs: Optional[dict] = None, suffix: str = "", name: str = "",
            perturbed: bool = True) -> Ref:
        from ..ir import Node
        shapes = [self.shape(o) for o in operands]
        with torch.no_grad():
            dummies = [torch.zeros(s, dtype=torch.float64) if s is not None else o for o, s in zip(operands, shapes)]
            dummies = [o if not isinstance(o, Ref) else d for o, d in zip(operands, dummies)]
            out_shape = tuple(RULES[op].forward(*dummies, **(attrs or {})).shape)
        attrs = RULES[op].specialize(dict(attrs or {}), shapes, out_shape)
        name = name or self.fresh(f"{self.node.name}_{suffix or op}")
        node = Node(name, op, tuple(operands), attrs, self.node.source, out_shape, perturbed, self.node.module)
        flags = tuple(isinstance(o, Ref) and self.is_perturbed(o) for o in operands)
        inner = Expansion(node, self.shape, self.fresh, self.is_perturbed)
        expanded = RULES[op].expand(node, flags, inner) if perturbed else None  # e.g. a matmul of two perturbed
        self.nodes.extend(expanded or [node])
        self.shapes[name] = out_shape
        self.perturbed[name] = perturbed
        return Ref(name)

    def finish(self, op: str, operands: tuple, attrs: Optional[dict] = None) -> list:
        """The last node, named as the node it replaces; all the nodes made."""
        self.add(op, operands, attrs, name=self.node.name)
        return self.nodes


class Lines(NamedTuple):
    """Elementwise linear bounds ``lower_slope·z + lower_bias ≤ σ(z) ≤ upper_slope·z + upper_bias``
    (``lower_bias`` None when it is zero everywhere)."""

    lower_slope: Tensor
    lower_bias: Optional[Tensor]
    upper_slope: Tensor
    upper_bias: Tensor


class Nonlinear(Rule):
    """An elementwise nonlinearity σ of its first operand (further operands are constants, e.g. learnt
    parameters), monotone non-decreasing unless ``interval`` says otherwise.

    CROWN (Zhang et al. 2018) passes a lower-bound coefficient through σ by its lines:
    ``A ← A⁺·lower_slope + A⁻·upper_slope``, ``bias += A⁺·lower_bias + A⁻·upper_bias``.
    LBP (Lyu et al. 2021) pushes forward linear bounds through the same lines (``forward_linear``).
    ``lipschitz``: the largest slope of σ (GloRo), None when unknown (``lipschitz_of`` when it depends
    on the node's attributes).
    """

    lipschitz: Optional[float] = None
    inputs = 1  # how many leading operands are relaxed (perturbed, their bounds given to ``lines``); 2: products

    def relaxed(self, operands: tuple) -> tuple:
        """The operands whose bounds the lines take (the rest are constants)."""
        return operands[:self.inputs]

    def lipschitz_of(self, **attrs: Any) -> Optional[float]:
        """The largest |σ'| for these attributes (GloRo); None when σ has none."""
        return self.lipschitz

    def forward(self, x: Tensor, *constants: Any, **attrs: Any) -> Tensor:
        raise NotImplementedError

    def interval(self, x: Interval, *constants: Any, **attrs: Any) -> Interval:
        return Interval(self.forward(x.lower, *constants, **attrs), self.forward(x.upper, *constants, **attrs))

    def lines(self, lower: Tensor, upper: Tensor, strategy: str, *constants: Any, **attrs: Any) -> Lines:
        raise NotImplementedError

    def with_alpha(self, lines: Lines, lower: Tensor, upper: Tensor, alphas: dict, key, rows=None) -> Lines:
        """α-CROWN (Xu et al. 2021): these lines with the lower slope an optimisable ``alphas[key]`` where the
        rule allows a family of lower lines; ``alphas[key]`` is created from ``lines`` on first use (with ``rows``,
        one per row of the sweep: the lower slope is then ``(batch, rows, *shape)``). A rule
        without such a family keeps CROWN's lines (still sound; α-CROWN then optimises the others)."""
        return lines

    def forward_linear(self, x: LinearBounds, lines: Lines) -> LinearBounds:  # type: ignore[override]
        """``σ(z) ≥ s_l z + t_l ≥ s_l⁺(W_l x + b_l) + s_l⁻(W_u x + b_u) + t_l``; the upper bound mirrored."""
        lower_slope, lower_bias, upper_slope, upper_bias = lines
        lower_coef, lower_b = _scale_pair(x.lower_coef, x.lower_bias, x.upper_coef, x.upper_bias, lower_slope)
        upper_coef, upper_b = _scale_pair(x.upper_coef, x.upper_bias, x.lower_coef, x.lower_bias, upper_slope)
        if lower_bias is not None:
            lower_b = lower_b + lower_bias
        return LinearBounds(lower_coef, lower_b, upper_coef, upper_b + upper_bias)

    def deviation(self, x: Interval, *constants: Any, **attrs: Any) -> Interval:
        """SingleProp (Boopathy et al. 2021), *not a bound*: the clean value ``c`` (the interval's centre)
        goes through σ exactly and the deviation ``v`` (its radius) is scaled by the slope of CROWN's
        upper line on ``[c − v, c + v]`` (Fast-Lin's ``g``): ``[σ(c) − s v, σ(c) + s v]``."""
        centre, radius = x.centre_radius()
        slope = self.lines(x.lower, x.upper, "adaptive", *constants, **attrs).upper_slope
        value, spread = self.forward(centre, *constants, **attrs), slope * radius
        return Interval(value - spread, value + spread)

    def unstable(self, lower: Tensor, upper: Tensor, **attrs: Any) -> Tensor:
        """Where tighter input bounds could tighten the lines (full CROWN refines only those), over the input;
        the node's attributes are given, not its constant operands (they may be computed after the sweep)."""
        return torch.ones_like(lower, dtype=torch.bool)

    def line_values(self, lines: Lines, z: Tensor) -> tuple:
        """The lines at a value ``z`` of the input, as ``(lower slope term, lower bias, upper slope term, upper
        bias)`` in the output's shape (``boundgraph.check`` compares σ(z) with their sums)."""
        return lines.lower_slope * z, lines.lower_bias, lines.upper_slope * z, lines.upper_bias

    def backward(self, A: Tensor, lines: Lines, **attrs: Any) -> tuple[tuple, Any]:  # type: ignore[override]
        new_A, bias = through_lines(A, *lines)
        return (new_A,), bias


def through_lines(A: Tensor, lower_slope: Tensor, lower_bias: Optional[Tensor], upper_slope: Tensor,
                  upper_bias: Tensor) -> tuple[Tensor, Tensor]:
    """``A' = A⁺·s_l + A⁻·s_u``, ``bias = A⁺·b_l + A⁻·b_u``: by the hand-written ``_ThroughLines`` eagerly, by
    plain ops under ``torch.compile`` (which fuses their passes, and traces no ``autograd.Function`` whose inputs
    repeat)."""
    if not torch.compiler.is_compiling():
        return _ThroughLines.apply(A, lower_slope, lower_bias, upper_slope, upper_bias)
    return _apply_lines(A, lower_slope, lower_bias, upper_slope, upper_bias)


def _apply_lines(A: Tensor, lower_slope: Tensor, lower_bias: Optional[Tensor], upper_slope: Tensor,
                 upper_bias: Tensor) -> tuple[Tensor, Tensor]:
    """``through_lines``'s values (``_ThroughLines`` adds its own vector–Jacobian product to them)."""
    positive = A.clamp(min=0)  # A⁻ = A − A⁺: one elementwise pass serves both
    new_A = (A * upper_slope.unsqueeze(1)).addcmul_(positive, _per_row(lower_slope, A) - upper_slope.unsqueeze(1))
    bias = spec_dot(A, upper_bias) - spec_dot(positive, upper_bias)
    if lower_bias is not None:
        bias = bias + spec_dot(positive, lower_bias)
    return new_A, bias


class _ThroughLines(torch.autograd.Function):
    """``A' = A⁺·s_l + A⁻·s_u`` and ``bias = A⁺·b_l + A⁻·b_u`` (summed per spec row), with a hand-written
    vector–Jacobian product: it makes about 8 passes over ``A`` where autograd's chain makes 11, and
    skips the slopes' gradients when they need none (ReLU's lower slope is piecewise constant). The lower
    slope may have one value per row too, ``(batch, rows, *shape)`` (α-CROWN's per-spec slopes).

    The branch ``A ≥ 0`` is chosen by ``lerp`` with a 0/1 float mask, exact for finite values: a ``where`` on
    a sign pattern as random as ``A``'s mispredicts its branch on a CPU and took 16 ms against 2.6 ms for
    ``ge`` into a float mask and ``lerp`` ((128, 9, 16, 13, 13) floats, one thread)."""

    @staticmethod
    def forward(ctx, A, lower_slope, lower_bias, upper_slope, upper_bias):
        new_A, bias = _apply_lines(A, lower_slope, lower_bias, upper_slope, upper_bias)
        ctx.save_for_backward(A, lower_slope, lower_bias, upper_slope, upper_bias)
        return new_A, bias

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_A, grad_bias):
        A, lower_slope, lower_bias, upper_slope, upper_bias = ctx.saved_tensors
        needs = ctx.needs_input_grad
        per_row = grad_bias.reshape(*grad_bias.shape, *([1] * (A.dim() - 2)))
        d_A = d_ls = d_lb = d_us = d_ub = None
        if needs[0]:
            negative_branch = (grad_A * upper_slope.unsqueeze(1)).addcmul_(per_row, upper_bias.unsqueeze(1))
            positive_branch = grad_A * _per_row(lower_slope, A)
            if lower_bias is not None:
                positive_branch.addcmul_(per_row, lower_bias.unsqueeze(1))
            d_A = torch.lerp(negative_branch, positive_branch, torch.ge(A, 0, out=torch.empty_like(A)))
        if needs[3] or needs[4]:
            negative = A.clamp(max=0)
            d_us = _over_rows(grad_A * negative) if needs[3] else None
            d_ub = _rows_weighted(grad_bias, negative).view_as(upper_bias) if needs[4] else None
        if needs[1] or needs[2]:
            positive = A.clamp(min=0)
            d_ls = None
            if needs[1]:
                d_ls = grad_A * positive if lower_slope.dim() == A.dim() else _over_rows(grad_A * positive)
            d_lb = _rows_weighted(grad_bias, positive).view_as(lower_bias) if needs[2] else None
        return d_A, d_ls, d_lb, d_us, d_ub


def _per_row(slope: Tensor, A: Tensor) -> Tensor:
    """A slope ``(batch, *shape)`` broadcast over ``A``'s rows, or one already given per row."""
    return slope if slope.dim() == A.dim() else slope.unsqueeze(1)


def _over_rows(t: Tensor) -> Tensor:
    """``Σ_rows t`` of a ``(batch, rows, ...)`` tensor; one row (loss fusion) is a view, not a strided reduction."""
    return t[:, 0] if t.shape[1] == 1 else t.sum(1)


def _rows_weighted(weights: Tensor, t: Tensor) -> Tensor:
    """``Σ_rows weights[:, row]·t[:, row]`` (``(batch, rows)`` and ``(batch, rows, ...)``): ``(batch, ...)``."""
    if t.shape[1] == 1:
        return t[:, 0] * weights.view(weights.shape[0], *([1] * (t.dim() - 2)))
    return torch.matmul(weights.unsqueeze(1), t.flatten(2)).view(t.shape[0], *t.shape[2:])


def _scale_pair(coef: Tensor, bias: Tensor, other_coef: Tensor, other_bias: Tensor,
                slope: Tensor) -> tuple[Tensor, Tensor]:
    """``slope⁺·(coef, bias) + slope⁻·(other_coef, other_bias)``, slopes broadcast over the input slices;
    one pass when no slope is negative (monotone σ)."""
    if not torch.compiler.is_compiling() and bool((slope >= 0).all()):
        return coef * slope.unsqueeze(1), bias * slope
    positive, negative = slope.clamp(min=0), slope.clamp(max=0)
    return (coef * positive.unsqueeze(1) + other_coef * negative.unsqueeze(1),
            bias * positive + other_bias * negative)


def affine_interval(x: Interval, apply: Callable[[Tensor, Tensor, Optional[Tensor]], Tensor], weight: Tensor,
                    bias: Optional[Tensor], halve_output: bool = False) -> Interval:
    """IBP of an affine map ``apply(x, weight, bias)`` linear in ``weight`` (Gowal et al. 2018): ``Wc + b ± |W|r``,
    computed as ``(W/2)(u + l) + b ± |W/2|(u − l)`` (halving is exact in binary floating point; two passes and
    their backward fewer than forming the centre and radius), or with ``halve_output`` as
    ``(W(u + l))/2 + b ± (|W|(u − l))/2``: the ½ on the map's output where it is smaller than the weight (a
    linear layer's batch rows fewer than its inputs)."""
    total, width = x.sum_width()
    if halve_output:
        mid = apply(total, weight, None) * 0.5
        if bias is not None:
            mid = mid + bias
        rad = apply(width, weight.abs(), None) * 0.5
    else:
        half = weight * 0.5
        mid = apply(total, half, bias)
        rad = apply(width, half.abs(), None)
    return Interval(mid - rad, mid + rad)


def is_number(value: Any) -> bool:
    """A Python number given to an op (``int`` or ``float``; not ``bool``, which torch takes as a mask)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def spec_dot(A: Tensor, x: Tensor) -> Tensor:
    """Per-example inner products of each spec row of ``A`` (``(batch, specs, ...)``) with ``x``
    (``(batch, ...)``): ``(batch, specs)``, as the batched row-times-matrix product ``xᵀ Aᵀ`` (``_SpecDot``)."""
    if A.shape[1] == 1:  # one row (loss fusion): a product and a sum beat a batched matrix-vector product ~4x
        return (A.reshape(A.shape[0], -1) * x.reshape(x.shape[0], -1)).sum(1, keepdim=True)
    A, x = A.reshape(A.shape[0], A.shape[1], -1), x.reshape(x.shape[0], -1)
    if A.shape[0] != x.shape[0]:  # one side broadcast over the batch
        return torch.matmul(A, x.unsqueeze(-1)).squeeze(-1)
    if torch.compiler.is_compiling():
        return torch.bmm(x.unsqueeze(1), A.transpose(1, 2)).squeeze(1)
    return _SpecDot.apply(A, x)


class _SpecDot(torch.autograd.Function):
    """``out[b, k] = Σ_i A[b, k, i] x[b, i]`` by ``bmm(xᵀ, Aᵀ)``: on this project's CPU 4-5x faster than the
    batched matrix-vector product ``A x`` ((128, 9, 3200), one thread: 0.9 ms against 4.5 ms). Its gradient is
    written out so that ``∂/∂A = g xᵀ`` is a contiguous outer product (autograd's would be ``Aᵀ``-strided);
    the backward is itself differentiable."""

    @staticmethod
    def forward(ctx, A: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(A, x)
        return torch.bmm(x.unsqueeze(1), A.transpose(1, 2)).squeeze(1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        A, x = ctx.saved_tensors
        d_A = grad.unsqueeze(-1) * x.unsqueeze(1) if ctx.needs_input_grad[0] else None
        d_x = torch.bmm(grad.unsqueeze(1), A).squeeze(1) if ctx.needs_input_grad[1] else None
        return d_A, d_x


def spec_sum(t: Tensor) -> Tensor:
    """Sum a ``(batch, specs, ...)`` tensor to ``(batch, specs)``."""
    return t.reshape(t.shape[0], t.shape[1], -1).sum(-1)


def unbroadcast(A: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Sum ``A`` (``(batch, specs, *out)``) down to an operand broadcast from ``(batch, *shape[1:])``."""
    target = tuple(shape[1:])
    extra = A.dim() - 2 - len(target)
    if extra > 0:
        A = A.sum(dim=tuple(range(2, 2 + extra)))
    dims = tuple(i + 2 for i, n in enumerate(target) if n == 1 and A.shape[i + 2] != 1)
    return A.sum(dim=dims, keepdim=True) if dims else A


def constant_times_A(A: Tensor, constant: Any) -> Tensor:
    """``spec_sum(A · constant)`` with ``constant`` broadcast like an operand of shape ``(batch, ...)``."""
    if isinstance(constant, Tensor):
        return spec_sum(A * constant.unsqueeze(1) if constant.dim() == A.dim() - 1 else A * constant)
    return spec_sum(A) * constant
