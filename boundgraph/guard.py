"""Guards that keep a compiled graph true to the model it was compiled from.

A ``BoundedModule`` compiles its model once. Its bound programs read the parameters live, but everything
else that tracing saw is baked in: which module sits where and what it is, which parameters exist, the
Python attributes that ``forward`` reads, the modes functional code reads (``training=self.training``),
control flow on the example's shapes. A model changed behind the compiler's back would be bounded as it
was, and a stale bound is a wrong bound. So:

- ``fingerprint`` (compared at every call; ~35 µs for DM-small): the module tree, each module's type,
  the names, shapes, dtypes and devices of its parameters and buffers (absent ones included), its
  public Python attributes (any of them may steer ``forward``), and how many forward hooks it has
  (fx does not trace hooks).
- ``check_graph`` (the first time a batch size is seen): the compiled graph must compute what the model
  computes on the clean batch, which catches control flow on the batch size (``torch.export``
  specialises it to the example's) and anything else the fingerprint cannot see.
- ``training_mode_problem`` (the first time a module is in training mode): the model is traced again
  with its modules in training mode; if functional code reads the mode (``F.dropout(...,
  training=self.training)``, ``F.batch_norm``), the graphs differ and bounds are refused.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch
from torch import Tensor, nn

from .errors import ModelChangedError, UnsupportedOpError
from .ir import BoundGraph
from .passes import evaluate, mark_perturbed
from .rounding import largest_magnitude

Fingerprint = dict[str, tuple]
_MODE_AWARE_LEAVES = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)  # modes handled by bounds


class _Identity:
    """An object compared by identity (its own ``==`` may be elementwise, or costly)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Identity) and other.obj is self.obj

    __hash__ = None  # type: ignore[assignment]


_PLAIN = frozenset({bool, int, float, str, type(None), torch.dtype, torch.device})


def _summary(value: Any) -> Any:
    """What of an attribute's value the fingerprint keeps: plain values themselves, a tensor's
    (shape, dtype, device), containers element by element, any other object by identity."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is tuple or kind is list:
        return (kind.__name__,) + tuple(map(_summary, value))
    if isinstance(value, Tensor):
        return ("tensor", value.shape, value.dtype, value.device)
    if isinstance(value, dict):
        return ("dict",) + tuple((k, _summary(v)) for k, v in value.items())
    if isinstance(value, (bool, int, float, str)):  # subclasses (enums, named tuples' fields)
        return value
    return _Identity(value)


def _tensors(named: dict) -> tuple:
    return tuple([(name, None if t is None else (t.shape, t.dtype, t.device)) for name, t in named.items()])


def fingerprint(model: nn.Module) -> Fingerprint:
    """Everything about ``model`` that its compiled graph depends on, besides parameter values and modes."""
    prints = {}
    for path, module in model.named_modules():
        state = module.__dict__
        prints[path] = (type(module), _tensors(state["_parameters"]), _tensors(state["_buffers"]),
                        tuple([(k, _summary(v)) for k, v in state.items() if k[0] != "_" and k != "training"]),
                        len(state["_forward_hooks"]) + len(state["_forward_pre_hooks"]))
    return prints


def describe_change(compiled: Fingerprint, now: Fingerprint) -> Optional[str]:
    """The first difference between two fingerprints, in words (None if they are equal)."""
    if compiled == now:
        return None
    for path in list(compiled) + [p for p in now if p not in compiled]:
        where = f"module '{path}'" if path else "the model"
        if path not in now:
            return f"{where} was removed"
        if path not in compiled:
            return f"{where} was added"
        (kind, params, buffers, attrs, hooks), (kind2, params2, buffers2, attrs2, hooks2) = compiled[path], now[path]
        if kind is not kind2:
            return f"{where} was a {kind.__name__} and is now a {kind2.__name__}"
        for what, old, new in (("parameter", params, params2), ("buffer", buffers, buffers2), ("attribute", attrs, attrs2)):
            old, new = dict(old), dict(new)
            for name in old.keys() | new.keys():
                if old.get(name, "absent") != new.get(name, "absent"):
                    return f"{what} '{name}' of {where} changed from {_show(old.get(name, 'absent'))} to " \
                           f"{_show(new.get(name, 'absent'))}"
        if hooks != hooks2:
            return f"{where} had {hooks} forward hooks and now has {hooks2}"
    return "the model changed"


def _show(summary: Any) -> str:
    if isinstance(summary, tuple) and len(summary) == 3 and isinstance(summary[0], torch.Size):
        shape, dtype, device = summary
        return f"shape {tuple(shape)}, {dtype}, {device}"
    if isinstance(summary, _Identity):
        return f"another {type(summary.obj).__name__}"
    return repr(summary)


def check_fingerprint(compiled: Fingerprint, model: nn.Module) -> None:
    change = describe_change(compiled, fingerprint(model))
    if change is not None:
        raise ModelChangedError(f"the model changed after it was compiled: {change}. The compiled bound programs "
                                "would bound the old model; build a new BoundedModule for the changed one")


def refuse_hooks(model: nn.Module) -> None:
    """fx traces ``forward`` without the modules' forward hooks, so a hook that changes an input, a
    weight (``nn.utils.spectral_norm``, ``weight_norm``) or an output would be bounded as absent."""
    for path, module in model.named_modules():
        if module._forward_hooks or module._forward_pre_hooks:
            raise UnsupportedOpError(path or type(model).__name__, "forward hook", "",
                                     "the module has forward hooks, which tracing does not see (a hook may change an "
                                     "input, a weight or an output); remove them, or use torch.nn.utils.parametrize "
                                     "(e.g. parametrizations.spectral_norm), which bounds follow")


@contextlib.contextmanager
def modes(model: nn.Module, training: bool, keep: tuple = ()) -> Iterator[None]:
    """Every module of ``model`` in training (or eval) mode, except instances of ``keep`` (left in
    eval mode), restored afterwards."""
    saved = {m: m.training for m in model.modules()}
    try:
        for m in saved:
            m.training = training and not isinstance(m, keep)
        yield
    finally:
        for m, flag in saved.items():
            m.training = flag


def _clone(inputs: tuple) -> tuple:
    return tuple(x.clone() for x in inputs)  # a model that writes into its input must not change ours


def check_graph(graph: BoundGraph, model: nn.Module, inputs: tuple, what: str) -> Tensor:
    """Raise ``ValueError`` unless ``graph`` computes what ``model`` computes on ``inputs`` (eval mode);
    return the model's output."""
    with torch.no_grad(), modes(model, training=False):
        expected = model(*_clone(inputs))
        if not isinstance(expected, Tensor):
            raise UnsupportedOpError("output", "output", "", "the model must return a single tensor")
        try:
            values = evaluate(graph, model, inputs)
        except Exception as error:  # noqa: BLE001  (a shape error of the user's model, say it so)
            raise ValueError(f"the compiled graph cannot run on {what}: {type(error).__name__}: {error}") from error
        got = values[graph.output]
        if got.shape == expected.shape and _agree(expected, got, values):
            return expected
        if not torch.equal(expected.nan_to_num(), model(*_clone(inputs)).nan_to_num()):
            raise ValueError("the model is not deterministic: two calls of forward on the same input gave different "
                             "outputs. A random op (dropout in training mode, torch.rand in forward) has no sound "
                             "bound, nor has state that forward changes: call model.eval(), or remove it")
        difference = (expected - got).abs().max() if got.shape == expected.shape else \
            f"shape {tuple(got.shape)} instead of {tuple(expected.shape)}"
        raise ValueError(f"the compiled graph does not compute what the model computes on {what} (max difference "
                         f"{difference}). Its forward depends on something tracing could not follow: control flow on "
                         "shapes (torch.export, which traces what torch.fx cannot, specialises it to the example's), "
                         "Python state, an in-place op on an aliased tensor. If none applies, it is a bug in "
                         "boundgraph; please report it with the model")


def _agree(expected: Tensor, got: Tensor, values: dict) -> bool:
    """Whether the graph's output equals the model's up to rounding: within 1e-4 of the larger of the
    output and the example's largest intermediate value (folding a batch norm into the layer before it
    changes how values that cancel are rounded). Entries both overflowed (inf, NaN) say nothing."""
    scale = largest_magnitude(expected.shape[0], values.values()).to(expected)
    scale = torch.maximum(expected.detach().abs().nan_to_num(nan=0.0, posinf=0.0, neginf=0.0),
                          scale.view(-1, *([1] * (expected.dim() - 1))))
    close = (expected - got).abs() <= 1e-5 + 1e-4 * scale
    return bool((close | (~torch.isfinite(expected) & ~torch.isfinite(got))).all())


def check_batch_dimension(graph: BoundGraph, model: nn.Module, inputs: tuple) -> tuple:
    """Check that every tensor computed from the inputs keeps the batch on dimension 0, by running the
    graph on the example with its first example repeated (batch ``B + 1``), and that the graph still
    computes the model there. Returns that bigger batch."""
    batch = inputs[0].shape[0]
    bigger = tuple(torch.cat([x, x[:1]]) for x in inputs)
    try:
        with torch.no_grad(), modes(model, training=False):
            values = evaluate(graph, model, bigger)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"the model does not run on a batch of {batch + 1} (the example plus a copy of its first "
                         f"example): example_input must have the batch on dimension 0, e.g. x.unsqueeze(0) for a "
                         f"single example ({type(error).__name__}: {error})") from error
    floating = [i for i, x in enumerate(inputs) if x.is_floating_point()]  # integer inputs are never perturbed
    for node in mark_perturbed(graph, floating):
        if not node.perturbed or node.shape is None:
            continue
        shape = tuple(values[node.name].shape)
        if shape != (batch + 1,) + tuple(node.shape[1:]):
            where = f" at {node.source}" if node.source else ""
            raise ValueError(f"node '{node.name}' ({node.op}){where} does not keep the batch on dimension 0: "
                             f"shape {tuple(node.shape)} for a batch of {batch}, {shape} for {batch + 1}. Every "
                             "tensor computed from the input must have the batch first (a broadcast against a "
                             "buffer with more dimensions moves it)")
    check_graph(graph, model, bigger, f"a batch of {batch + 1}")
    return bigger


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and a.dtype == b.dtype
                and bool(torch.equal(a, b)))
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) or isinstance(b, dict):
        return type(a) is type(b) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001  (an operand without a plain equality)
        return a is b


def first_difference(a: BoundGraph, b: BoundGraph) -> Optional[str]:
    """The first node where two graphs differ, in words, or None."""
    for x, y in zip(list(a), list(b)):
        if (x.name, x.op) != (y.name, y.op) or not _same(x.operands, y.operands) or not _same(x.attrs, y.attrs):
            where = f" at {x.source}" if x.source else ""
            return f"node '{x.name}' ({x.op}){where} differs"
    if len(a.nodes) != len(b.nodes) or a.output != b.output:
        return "the graphs have different nodes"
    return None


def training_mode_problem(model: nn.Module, inputs: tuple, compiled: BoundGraph) -> Optional[str]:
    """Why ``model`` in training mode computes what ``compiled`` (traced in eval mode) does not, or None.
    Batch norms and dropouts stay in eval mode for this trace: bounds handle their modes themselves."""
    from .passes import canonicalize, eliminate_dead_nodes
    from .trace import trace

    buffers = {name: b.clone() for name, b in model.named_buffers()}
    try:
        with modes(model, training=True, keep=_MODE_AWARE_LEAVES):
            graph = eliminate_dead_nodes(canonicalize(trace(model, _clone(inputs)), model))
    except UnsupportedOpError as error:
        return str(error)
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
    return first_difference(compiled, graph)

