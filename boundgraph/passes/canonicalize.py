"""Pass: fx graph → BoundGraph of canonical ops.

Every spelling of an op (``nn.ReLU``, ``F.relu``, ``torch.relu``, ``x.relu()``, ``aten.relu``) becomes
one canonical node whose rule's ``canonicalize`` reads the call's arguments. What a call computes decides
how it is kept:

- from nothing the model can change (literals, ``torch.ones(3)``, arithmetic on fixed sizes): frozen to
  its example value;
- from parameters, buffers or the batch size only (``gamma.reshape(1, -1, 1, 1)``, ``torch.zeros(b, 16)``,
  ``cls_token.expand(b, -1, -1)``): a ``call`` node, computed exactly at every call of a bound program, no
  bound rule needed;
- from the values of integer or boolean inputs only (token ids, masks: they cannot be perturbed): a
  ``call`` node too;
- from a floating-point input (which may be perturbed): the op's rule, or an ``UnsupportedOpError``.

Shapes are constants except the batch size: a query of a shape (``x.shape``, ``x.size(2)``, ``x.dim()``)
is its example value, with the batch size a ``batch`` node read from the inputs at every call, so Python
arithmetic on shapes (``n_h * n_w``, ``x2.size(2) - x1.size(2)``) folds into constants and
``x.new_zeros(b, c)`` follows the batch. A Python value computed from a tensor's *values* (``x.item()``)
is refused where it is used. Every op that cannot be bounded is reported in one error, each naming the
node, the op, the module path and the user's source line.
"""
from __future__ import annotations

import builtins
import inspect
import math
import operator
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from ..errors import UnsupportedOpError
from ..ir import BoundGraph, Node, Ref
from ..ops import RULES, SPELLINGS, Call
from ..ops.base import Parts, Several, _spelling_name, method
from ..ops.structure import permutation_dims
from ..ops.constant import Slot
from ..trace import Traced, user_source
from .shapes import resolve


_ADDMM = (torch.addmm, method("addmm"), torch.ops.aten.addmm.default)
_ROW_LINEAR = (torch.nn.functional.linear, torch.ops.aten.linear.default)  # the function: a module's weight is its own


def _swap_first(value: Any) -> Any:
    """A sequence-first module's example result as its batch-first node holds it: the first tensor transposed."""
    if isinstance(value, torch.Tensor):
        return value.transpose(0, 1)
    if isinstance(value, tuple) and value and isinstance(value[0], torch.Tensor):
        return (value[0].transpose(0, 1),) + tuple(value[1:])
    return value


@dataclass(frozen=True)
class _Folded:
    """``x.view(-1, *rest)`` of a batch-first ``x``: the batch folded with the dimensions ``lead`` after it into
    rows (Hugging Face's ``Conv1D``: ``addmm(b, x.view(-1, d), W).view(*x.shape[:-1], n)``). Only a row-wise
    affine map by constants (``addmm``, ``mm`` / ``matmul`` by a weight, ``linear``), which is computed on ``x``
    itself, and a reshape that unfolds the rows again may consume it (``error`` says so otherwise)."""

    source: Ref
    lead: tuple
    error: Any


@dataclass(frozen=True)
class _Permuted:
    """A permutation that moved the batch off dimension 0 (``error`` says so): only indexing its new first
    dimension, which brings the batch back first, may consume it (timm's ``qkv.permute(2, 0, 3, 1, 4)``, then
    ``unbind(0)`` or ``qkv[0]``)."""

    source: Ref
    dims: tuple
    error: Any


@dataclass(frozen=True)
class _Opaque:
    """A Python value computed from a tensor's values (``x.item()``): no constant a rule could take."""

    node: str


def _identifier(text: str) -> str:
    name = re.sub(r"\W", "_", text)
    return name if name and not name[0].isdigit() else f"_{name}"


def _has_attr(model: nn.Module, path: str) -> bool:
    try:
        resolve(model, path)
        return True
    except AttributeError:
        return False


def _module_path(n: fx.Node, gm: fx.GraphModule) -> str:
    """``features.3 (MaxPool2d)``: the user's module a node was called in (or is), if any."""
    if n.op == "call_module":
        return f"{n.target} ({type(gm.get_submodule(n.target)).__name__})"
    stack = n.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, kind = list(stack.values())[-1]
    return f"{path} ({getattr(kind, '__name__', kind)})"


def _spelling(n: fx.Node, gm: fx.GraphModule) -> Any:
    if n.op == "call_module":
        return type(gm.get_submodule(n.target))
    if n.op == "call_method":
        return method(n.target)
    return n.target


def _walk(value: Any):
    """Every leaf of a nested argument (tuples, lists, dicts, slices)."""
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _walk(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, slice):
        yield from _walk((value.start, value.stop, value.step))
    else:
        yield value


def _slotted(value: Any, operands: list) -> Any:
    """``value`` with every ``Ref`` replaced by a ``Slot`` into ``operands`` (appended to it)."""
    if isinstance(value, Ref):
        operands.append(value)
        return Slot(len(operands) - 1)
    if isinstance(value, (tuple, list)):
        return type(value)(_slotted(v, operands) for v in value)
    if isinstance(value, dict):
        return {k: _slotted(v, operands) for k, v in value.items()}
    if isinstance(value, slice):
        return slice(*(_slotted(v, operands) for v in (value.start, value.stop, value.step)))
    return value


# ---- shape queries, Python arithmetic on their results, value-independent tensor creators -----------------

_SHAPE_ATTRIBUTES = {"shape", "ndim", "dtype", "device", "is_cuda", "layout", "is_floating_point"}
_SHAPE_METHODS = {"size", "dim", "ndimension", "numel", "nelement", "get_device", "is_floating_point",
                  "is_contiguous", "element_size"}
_aten = torch.ops.aten
_LIKE = {torch.zeros_like: torch.zeros, torch.ones_like: torch.ones, torch.empty_like: torch.zeros,
         torch.full_like: torch.full, _aten.zeros_like.default: torch.zeros, _aten.ones_like.default: torch.ones,
         _aten.empty_like.default: torch.zeros, _aten.full_like.default: torch.full}
_NEW = {method("new_zeros"): torch.zeros, method("new_ones"): torch.ones, method("new_empty"): torch.zeros,
        method("new_full"): torch.full, _aten.new_zeros.default: torch.zeros, _aten.new_ones.default: torch.ones,
        _aten.new_empty.default: torch.zeros, _aten.new_full.default: torch.full}
_CREATORS = {**_LIKE, **_NEW}  # value-independent: only the operand's shape, dtype and device matter


class _Canonicalizer:
    def __init__(self, traced: Traced, model: nn.Module) -> None:
        self.traced, self.model = traced, model
        self.graph = BoundGraph()
        self.env: dict[str, Any] = {}  # fx node -> Ref, literal (maybe holding Refs to int nodes), _Opaque
        self.params: dict[str, str] = {}  # model attribute path -> node name
        self.varying: set[str] = set()  # IR nodes that depend on an input's values
        self.perturbable: set[str] = set()  # ... on a floating-point input's values (they may be perturbed)
        self.dtypes: dict[str, torch.dtype] = {}
        self.examples: dict[str, torch.Tensor] = {}
        self.batch_node: str | None = None
        self.missing: list[UnsupportedOpError] = []

    # ---- IR nodes -------------------------------------------------------------------------------------
    def add(self, node: Node, value: Any = None) -> Ref:
        self.graph.add(node)
        refs = node.refs()
        if node.op == "input" or any(r in self.varying for r in refs):
            self.varying.add(node.name)
        if any(r in self.perturbable for r in refs) or (node.op == "input" and isinstance(value, torch.Tensor)
                                                          and value.is_floating_point()):
            self.perturbable.add(node.name)
        if isinstance(value, torch.Tensor):
            self.dtypes[node.name] = value.dtype
            self.examples[node.name] = value
            node.shape = tuple(value.shape)
        return Ref(node.name)

    def param(self, path: str, source: str = "") -> Ref:
        if path not in self.params:
            value = resolve(self.model, path)
            self.params[path] = self.add(Node(self.graph.fresh_name(_identifier(path)), "param", attrs={"path": path},
                                              source=source), value).name
        return Ref(self.params[path])

    def frozen(self, name: str, value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        return self.add(Node(self.graph.fresh_name(name), "constant", attrs={"value": value.detach()}), value)

    def batch(self) -> Ref:
        if self.batch_node is None:
            self.batch_node = self.add(Node(self.graph.fresh_name("batch"), "batch")).name
        return Ref(self.batch_node)

    def call(self, name: str, fn: Any, args: tuple, kwargs: dict, source: str, value: Any, module: str = "") -> Ref:
        """A node that calls ``fn`` on its operands exactly (nothing in it may be perturbed)."""
        operands: list = []
        args, kwargs = _slotted(args, operands), _slotted(kwargs, operands)
        return self.add(Node(self.graph.fresh_name(name), "call", tuple(operands), {"fn": fn, "args": args,
                                                                                   "kwargs": kwargs},
                             source, module=module), value)

    def is_tensor_node(self, ref: Ref) -> bool:
        return self.graph[ref.name].shape is not None

    # ---- the pass -------------------------------------------------------------------------------------
    def run(self) -> BoundGraph:
        traced = self.traced
        order = {n.name: i for i, n in enumerate(traced.gm.graph.nodes)}
        rebind: dict[str, str] = {}  # tensor written in place -> the in-place node, for the reads after it
        output: Any = None
        for n in traced.gm.graph.nodes:
            for written, by in list(rebind.items()):
                self.env[written] = self.env[by]
                del rebind[written]
            value = traced.values.get(n.name)
            source = user_source(n.meta.get("stack_trace"))
            if n.op == "placeholder":
                if n.name in traced.inputs:
                    index = traced.inputs.index(n.name)
                    self.env[n.name] = self.add(Node(n.name, "input", attrs={"index": index}), value)
                elif n.name in traced.params:
                    self.env[n.name] = self.param(traced.params[n.name])
                else:  # torch.export's constants; forward's optional arguments at their defaults
                    self.env[n.name] = self.frozen(n.name, traced.constants[n.name])
            elif n.op == "get_attr":
                self.env[n.name] = self.param(n.target, source) if _has_attr(self.model, n.target) \
                    else self.frozen(n.name, value)
            elif n.op == "output":
                output = n.args[0]
                if isinstance(output, (tuple, list)) and len(output) == 1:
                    output = output[0]
            else:
                module = traced.gm.get_submodule(n.target) if n.op == "call_module" else None
                spelling = _spelling(n, traced.gm)
                written = _written_operand(n, spelling, module)
                if written is not None:  # later reads of the tensor an in-place op writes see its result
                    _check_in_place(n, written, traced, order, source)
                    rebind[written.name] = n.name
                self.env[n.name] = self.node(n, spelling, module, value, source)
        if self.missing:
            note = (f"(torch.fx could not trace the model: {traced.fx_error}; torch.export traced it into aten ops)"
                    if traced.how == "export" else "")
            raise UnsupportedOpError.several(self.missing, note)
        result = self.env.get(output.name) if isinstance(output, fx.Node) else None
        if isinstance(result, (_Permuted, _Folded)):  # returned with the batch moved or folded: that op's error
            raise result.error
        if not isinstance(result, Ref) or result.name not in self.varying or not self.is_tensor_node(result):
            what = type(traced.values.get(output.name) if isinstance(output, fx.Node) else output).__name__
            raise UnsupportedOpError("output", "output", "", f"the model must return a single tensor that depends on "
                                     f"its inputs; it returns a {what} (wrap the model to select the tensor to bound)")
        self.graph.output = result.name
        return self.graph

    def node(self, n: fx.Node, spelling: Any, module: nn.Module | None, value: Any, source: str) -> Any:
        """The env entry of one call: a new node's Ref, a literal, or a container of them."""
        args = fx.node.map_arg(n.args, lambda a: self.env[a.name])
        kwargs = fx.node.map_arg(n.kwargs, lambda a: self.env[a.name])
        if spelling in (operator.getitem, builtins.getattr) and not isinstance(args[0], (Ref, _Opaque, _Permuted,
                                                                                     _Folded)):
            if any(isinstance(v, (Ref, _Opaque)) for v in _walk(args[1])):  # an element of a Python container
                return _Opaque(n.name)
            return args[0][args[1]] if spelling is operator.getitem else getattr(args[0], args[1])
        folded = [a for a in _walk((args, kwargs)) if isinstance(a, _Folded)]
        if folded:
            return self.through_rows(n, spelling, args, kwargs, folded[0], source, value)
        permuted = [a for a in _walk((args, kwargs)) if isinstance(a, _Permuted)]
        if permuted:
            return self.take_apart(n, spelling, args, kwargs, permuted[0], source, value)
        stacked = [a for a in list(args) + list(kwargs.values()) if isinstance(a, Parts)]
        if stacked:
            error = UnsupportedOpError(n.name, _spelling_name(spelling), source, "takes a recurrent layer's whole "
                                       "h_n / c_n, which stacks layers and directions before the batch: index it "
                                       "(h_n[-1]) or use the layer's output sequence")
            error.module = _module_path(n, self.traced.gm)
            self.missing.append(error)
            return _Opaque(n.name)
        leaves = list(_walk((args, kwargs)))
        refs = [v for v in leaves if isinstance(v, Ref)]
        opaque = [v for v in leaves if isinstance(v, _Opaque)]
        if opaque and not isinstance(value, torch.Tensor) and not _tensors(value):
            return _Opaque(n.name)
        if opaque:
            error = UnsupportedOpError(n.name, _spelling_name(spelling), source, f"an argument is a Python value "
                                       f"computed from the values of a tensor that may be perturbed (node "
                                       f"'{opaque[0].node}'): it has no single value over the perturbation set")
            error.module = _module_path(n, self.traced.gm)
            self.missing.append(error)
            return self.add(Node(n.name, "unsupported", tuple(refs), {}, source), value)
        query = self.shape_query(n, spelling, args, value)
        if query is not None:
            return query
        if not refs and n.op != "call_module":
            return self.frozen(n.name, value)  # nothing the model can change: its example value
        perturbable = any(r.name in self.perturbable for r in refs)
        if not isinstance(value, torch.Tensor) and not _tensors(value):
            # a Python value: arithmetic on shapes is computed at every call; a perturbable tensor's value is opaque
            if perturbable:
                return _Opaque(n.name)
            return self.call(n.name, _callable(spelling, module), args, kwargs, source, value)
        if perturbable and spelling in _CREATORS:
            return self.create(n, spelling, args, kwargs, source, value)
        rule_name = SPELLINGS.get(spelling)
        if not perturbable:  # parameters, the batch size, integer inputs: computed exactly
            return self.call(n.name, _callable(spelling, module), args, kwargs, source, value,
                             n.target if module is not None else "")
        return self.bounded(n, spelling, module, rule_name, args, kwargs, source, value)

    def take_apart(self, n: fx.Node, spelling: Any, args: tuple, kwargs: dict, p: _Permuted, source: str,
                   value: Any = None) -> Any:
        """``p[i]``, ``p.select(0, i)``, ``p.unbind(0)``: a selection of the source along the dimension that the
        permutation put first, then the rest of the permutation, which must keep the batch first."""
        name = spelling[1] if isinstance(spelling, tuple) else getattr(spelling, "__name__", "")
        index = args[1] if spelling is operator.getitem else None
        if name == "select" and args[0] is p and (args[1] if len(args) > 1 else kwargs.get("dim")) in (0,):
            index = args[2] if len(args) > 2 else kwargs.get("index")
        if isinstance(index, tuple) and len(index) == 1:
            index = index[0]
        if args[0] is p and name == "unbind" and (args[1] if len(args) > 1 else kwargs.get("dim", 0)) == 0:
            length = self.examples[p.source.name].shape[p.dims[0]]
            return tuple(self.take(p, i, n, source) for i in range(length))
        if args[0] is p and isinstance(index, int):
            return self.take(p, index, n, source)
        if SPELLINGS.get(spelling) == "permute" and args[0] is p:  # composed with the permutation that moved the batch
            dims = [p.dims[d] for d in permutation_dims(spelling, args, kwargs, len(p.dims))]
            if dims[0] != 0:
                return _Permuted(p.source, tuple(dims), p.error)
            if dims == sorted(dims):
                return p.source
            return self.add(Node(n.name, "permute", (p.source,), dict(dims=tuple(dims)), source), value)
        module = resolve(self.model, n.target) if n.op == "call_module" else None
        if getattr(module, "batch_first", True) is False and all(
                q.dims[:2] == (1, 0) and q.dims[2:] == tuple(range(2, len(q.dims)))
                for q in _walk((args, kwargs)) if isinstance(q, _Permuted)):
            # nn.MultiheadAttention / nn.LSTM / ... with batch_first=False on x.transpose(0, 1) of batch-first x
            unwrap = lambda a: a.source if isinstance(a, _Permuted) else a  # noqa: E731
            args, kwargs = fx.node.map_aggregate(args, unwrap), fx.node.map_aggregate(kwargs, unwrap)
            swapped = _swap_first(value)
            result = self.bounded(n, spelling, module, SPELLINGS.get(spelling), args, kwargs, source, swapped,
                                  sequence_first=True)
            error = UnsupportedOpError(n.name, _spelling_name(spelling), source, "its output is (sequence, batch, "
                                       "…) (batch_first=False): transpose it back (.transpose(0, 1)) or index its "
                                       "first dimension before any other op")
            error.module = _module_path(n, self.traced.gm)
            first = result[0] if isinstance(result, tuple) and result else result
            if not isinstance(first, Ref):
                return result
            rank = len(self.graph[first.name].shape)
            moved = _Permuted(first, (1, 0) + tuple(range(2, rank)), error)
            return moved if first is result else (moved,) + tuple(result[1:])
        p.error.module = p.error.module or _module_path(n, self.traced.gm)
        self.missing.append(p.error)
        return _Opaque(n.name)

    def through_rows(self, n: fx.Node, spelling: Any, args: tuple, kwargs: dict, p: _Folded, source: str,
                     value: Any) -> Any:
        """A row-wise affine map of folded rows, computed on the batch-first tensor (and folded again), or the
        reshape that unfolds them; anything else is the fold's error."""
        if isinstance(value, torch.Tensor) and (spelling in _ADDMM or (args and args[0] is p)):
            rows = (self.examples[p.source.name].shape[0],) + p.lead
            unfolded = value.reshape(rows + tuple(value.shape[1:])) if value.shape[0] == math.prod(rows) else None
            constant = lambda r: not (isinstance(r, Ref) and r.name in self.perturbable)  # noqa: E731
            kind = SPELLINGS.get(spelling)
            if kind == "reshape" and tuple(value.shape[:len(rows)]) == rows:  # unfolded: the batch first again
                shape = tuple(value.shape[1:])
                if shape == tuple(self.graph[p.source.name].shape[1:]):
                    return p.source
                return self.add(Node(n.name, "reshape", (p.source,), dict(shape=shape), source), value)
            node = None
            if spelling in _ADDMM and len(args) >= 3 and args[1] is p and constant(args[0]) and constant(args[2]) \
                    and kwargs.get("alpha", 1) == 1 and kwargs.get("beta", 1) == 1:
                product = self.add(Node(self.graph.fresh_name(f"{n.name}_product"), "matmul", (p.source, args[2]),
                                        {}, source), unfolded)
                node = Node(n.name, "add", (product, args[0]), dict(alpha=1), source)
            elif kind == "matmul" and len(args) >= 2 and constant(args[1]):
                node = Node(n.name, "matmul", (p.source, args[1]), {}, source)
            elif spelling in _ROW_LINEAR and len(args) >= 2 and constant(args[1]):
                bias = args[2] if len(args) > 2 else kwargs.get("bias")
                if constant(bias):
                    node = Node(n.name, "linear", (p.source, args[1], bias), {}, source)
            if node is not None and unfolded is not None:
                return _Folded(self.add(node, unfolded), p.lead, p.error)
        p.error.module = p.error.module or _module_path(n, self.traced.gm)
        self.missing.append(p.error)
        return _Opaque(n.name)

    def take(self, p: _Permuted, i: int, n: fx.Node, source: str) -> Any:
        first, rest = p.dims[0], p.dims[1:]
        order = [d - 1 if d > first else d for d in rest]
        if order[0] != 0:
            p.error.module = p.error.module or _module_path(n, self.traced.gm)
            self.missing.append(p.error)
            return _Opaque(n.name)
        example = self.examples[p.source.name].select(first, i)
        picked = self.add(Node(self.graph.fresh_name(f"{n.name}_take"), "index", (p.source,),
                               dict(index=(slice(None),) * first + (i,)), source), example)
        if order == sorted(order):
            return picked
        return self.add(Node(self.graph.fresh_name(f"{n.name}_order"), "permute", (picked,), dict(dims=tuple(order)),
                             source), example.permute(order))

    def shape_query(self, n: fx.Node, spelling: Any, args: tuple, value: Any) -> Any:
        """``x.shape``, ``x.size(d)``, ``x.dim()``, ...: example values, the batch size read at every call."""
        if spelling is builtins.getattr and isinstance(args[1], str) and args[1] in _SHAPE_ATTRIBUTES:
            what = args[1]
        elif isinstance(spelling, tuple) and spelling[1] in _SHAPE_METHODS:
            what = spelling[1]
        elif spelling is builtins.len or spelling is torch.numel:
            what = "len" if spelling is builtins.len else "numel"
        elif spelling is _aten.sym_size.int:  # torch.export's x.size(d) on a dynamic batch
            what = "size"
        elif spelling is _aten.sym_numel.default:
            what = "numel"
        else:
            return None
        x = args[0]
        if not isinstance(x, Ref) or not self.is_tensor_node(x):
            return None
        if x.name not in self.varying:
            return value  # a parameter's or constant's shape is fixed (the guard checks it)
        if what == "shape" or (what == "size" and len(args) == 1 and not n.kwargs):
            return (self.batch(),) + tuple(value[1:])
        if what in ("size", "len"):
            dim = args[1] if len(args) > 1 else n.kwargs.get("dim", 0)
            rank = len(self.graph[x.name].shape)
            return self.batch() if what == "len" or dim % rank == 0 else value
        if what in ("numel", "nelement"):
            return self.call(n.name, operator.mul, (self.batch(), value // self.graph[x.name].shape[0]), {}, "",
                             value)
        return value

    def create(self, n: fx.Node, spelling: Any, args: tuple, kwargs: dict, source: str, value: Any) -> Ref:
        """``zeros_like(x)``, ``x.new_zeros(shape)``, ...: a tensor of ``x``'s dtype and device, its shape that
        of ``x`` (batch size included) or the one given, made at every call."""
        fn, like = _CREATORS[spelling], args[0]
        kwargs = dict(kwargs, dtype=value.dtype, device=value.device)
        for key in ("memory_format", "layout", "pin_memory"):
            kwargs.pop(key, None)
        if spelling in _NEW:  # x.new_zeros(size, ...) / x.new_full(size, fill_value)
            size = args[1] if len(args) > 1 else kwargs.pop("size")
            rest = args[2:]
        else:
            size = (self.batch(),) + tuple(value.shape[1:]) if like.name in self.varying else tuple(value.shape)
            rest = args[1:]
        listed = isinstance(size, (tuple, list)) and not isinstance(size, Ref)
        size = tuple(size) if listed else (size,) + tuple(a for a in rest if isinstance(a, (int, Ref)))
        rest = tuple(a for a in rest if not isinstance(a, (int, Ref))) if fn is not torch.full else rest[:1]
        return self.call(n.name, fn, (size,) + tuple(rest), kwargs, source, value)

    def bounded(self, n: fx.Node, spelling: Any, module: nn.Module | None, rule_name: str | None, args: tuple,
                kwargs: dict, source: str, value: Any, sequence_first: bool = False) -> Any:
        """A node of a perturbable tensor: its rule's canonical node(s), or a noted error."""
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else None
        after = [r for r in _walk((args, kwargs)) if isinstance(r, Ref) and self.graph[r.name].op == "unsupported"
                 and self.graph[r.name].shape is None]
        if after:  # a part of an unsupported node's tuple result (its shapes unknown here): its error is the one
            return self.add(Node(n.name, "unsupported", tuple(after), {}, source), value)
        try:
            if rule_name is None:
                raise UnsupportedOpError(n.name, _spelling_name(spelling), source, "no bound rule is registered for "
                                                                                    "this op")
            call = Call(n.name, spelling, tuple(args), dict(kwargs), module, source, shape,
                        lambda o: self.graph[o.name].shape if isinstance(o, Ref) else None,
                        lambda attr, m=n.target, s=source: None if resolve(self.model, f"{m}.{attr}") is None
                        else self.param(f"{m}.{attr}", s),
                        out_dtype=getattr(value, "dtype", None), out_device=getattr(value, "device", None),
                        example=value,
                        operand_dtype=lambda o: self.dtypes.get(o.name) if isinstance(o, Ref) else None,
                        sequence_first=sequence_first)
            result = RULES[rule_name].canonicalize(call)
            pieces = result.pieces if isinstance(result, Several) else [(rule_name, *result)]
            for _, operands, attrs in pieces:
                constant = [v for v in _walk(attrs) if isinstance(v, (Ref, _Opaque))]
                if constant or any(isinstance(o, _Opaque) for o in _walk(operands)):
                    raise call.fail("a value computed from a tensor (or from the batch size) is used where this op "
                                    "needs a constant")
        except UnsupportedOpError as error:  # noted, and the rest of the model still canonicalised
            error.module = _module_path(n, self.traced.gm)
            if getattr(error, "permutation", None) is not None and isinstance(error.permutation[0], Ref):
                return _Permuted(error.permutation[0], error.permutation[1], error)  # unless taken apart later
            if getattr(error, "fold", None) is not None and isinstance(error.fold[0], Ref):
                return _Folded(error.fold[0], error.fold[1], error)  # unless unfolded later
            self.missing.append(error)
            return self.add(Node(n.name, "unsupported", tuple(r for r in _walk(args) if isinstance(r, Ref)), {},
                                 source, module=n.target if module is not None else ""), value)
        path = n.target if module is not None else ""
        if not isinstance(result, Several):
            operands, attrs = result
            return self.add(Node(n.name, rule_name, tuple(operands), attrs, source, module=path), value)
        several = isinstance(value, (tuple, list))
        values = result.examples if result.examples is not None else value if several else [value]
        refs = [self.add(Node(self.graph.fresh_name(f"{n.name}_{i}") if several else n.name, op, tuple(operands),
                              attrs, source, module=path), piece)
                for i, ((op, operands, attrs), piece) in enumerate(zip(result.pieces, values))]
        if result.assemble is not None:
            return result.assemble(refs)
        if not several:
            return refs[0]
        try:  # the call's own kind of tuple (torch.return_types.max has .values and .indices)
            return type(value)(refs)
        except TypeError:
            return tuple(refs)


def _tensors(value: Any) -> bool:
    """Whether ``value`` is a (nested) container of tensors (``split``'s pieces; attention's output and, maybe,
    None; a recurrent layer's ``(output, (h_n, c_n))``)."""
    leaves = list(_walk(value)) if isinstance(value, (tuple, list)) else []
    return any(isinstance(v, torch.Tensor) for v in leaves) and all(isinstance(v, torch.Tensor) or v is None
                                                                    for v in leaves)


def _callable(spelling: Any, module: nn.Module | None) -> Any:
    """What a ``call`` node calls: the module itself, a method's name, or the function."""
    if module is not None:
        return module
    return spelling[1] if isinstance(spelling, tuple) else spelling


_IN_PLACE_OPERATORS = (operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                       operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor, operator.imatmul)


def _written_operand(n: fx.Node, spelling: Any, module: nn.Module | None) -> fx.Node | None:
    """The tensor an in-place call writes into (its first operand), or None: a module with
    ``inplace=True``, ``x.relu_()``/``torch.relu_``, ``x += y``, ``F.relu(x, inplace=True)``."""
    target = n.args[0] if n.args else None
    if not isinstance(target, fx.Node):
        return None
    if module is not None:
        in_place = bool(getattr(module, "inplace", False))
    else:
        name = spelling[1] if isinstance(spelling, tuple) else getattr(spelling, "__name__", "")
        in_place = spelling in _IN_PLACE_OPERATORS or (name.endswith("_") and not name.startswith("_"))
        if not in_place and callable(spelling):
            try:
                in_place = bool(inspect.signature(spelling).bind_partial(*n.args, **n.kwargs).arguments.get("inplace"))
            except (TypeError, ValueError):  # builtins without a signature, arguments it does not bind
                in_place = bool(n.kwargs.get("inplace", False))
    return target if in_place else None


def _storage(value: Any) -> int | None:
    return value.untyped_storage().data_ptr() if isinstance(value, torch.Tensor) else None


def _check_in_place(n: fx.Node, written: fx.Node, traced: Traced, order: dict[str, int], source: str) -> None:
    """An in-place op is followed by rebinding the tensor it writes; that is exact unless another tensor
    made before it shares the memory (a view, an alias: found by storage on the example) and is read
    after it, or the memory is a parameter's, which forward would change at every call."""
    memory = _storage(traced.values.get(written.name))
    if memory is None:
        return
    for other in traced.gm.graph.nodes:
        if order[other.name] >= order[n.name]:
            break
        if other is not written and _storage(traced.values.get(other.name)) != memory:
            continue
        if other.op == "get_attr" or other.name in traced.params:
            raise UnsupportedOpError(n.name, "in-place", source, f"writes in place into the model's own tensor "
                                     f"'{other.target}': forward would change the model at every call")
        if other is not written and any(order[user.name] > order[n.name] for user in other.users):
            raise UnsupportedOpError(n.name, "in-place", source, f"writes in place into a tensor that '{other.name}' "
                                     "shares memory with (a view or alias) and is read again later; tracing cannot "
                                     "follow that: write the op out of place")


def canonicalize(traced: Traced, model: nn.Module) -> BoundGraph:
    return _Canonicalizer(traced, model).run()
