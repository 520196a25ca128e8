"""Pass: fx graph → BoundGraph of canonical ops.

Every spelling of an op (``nn.ReLU``, ``F.relu``, ``torch.relu``, ``x.relu()``, ``aten.relu``) becomes
one canonical node whose rule's ``canonicalize`` reads the call's arguments. Sub-graphs that depend on
neither the inputs nor the parameters are frozen to their example value. Queries of shapes
(``x.size(0)``) are dropped: reshapes take their target from the traced shapes. Anything else without a
rule raises ``UnsupportedOpError`` naming the node, the op and the user's source line.
"""
from __future__ import annotations

import inspect
import operator
import re
from typing import Any

import torch
from torch import fx, nn

from ..errors import UnsupportedOpError
from ..ir import BoundGraph, Node, Ref
from ..ops import RULES, SPELLINGS, Call
from ..ops.base import _spelling_name, method
from ..ops.constant import Slot
from ..trace import Traced, user_source
from .shapes import resolve


class _ShapeValue:
    """A non-tensor value computed from a tensor's shape; only reshapes may consume it (and ignore it)."""

    def __init__(self, node: str) -> None:
        self.node = node


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


def _constant_call(n: fx.Node, spelling: Any, env: dict[str, Any], source: str, value: Any) -> Node:
    """A node for a call on constants only (parameters, frozen values): any torch call will do."""
    operands: list[Any] = []

    def slot(a: fx.Node) -> Any:
        operands.append(env[a.name])
        return Slot(len(operands) - 1)

    args, kwargs = fx.node.map_arg(n.args, slot), fx.node.map_arg(n.kwargs, slot)
    fn = spelling[1] if isinstance(spelling, tuple) else spelling
    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else None
    return Node(n.name, "call", tuple(operands), {"fn": fn, "args": args, "kwargs": kwargs}, source, shape)


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
    graph = BoundGraph()
    env: dict[str, Any] = {}  # fx node name -> Ref, frozen literal, or _ShapeValue
    static: set[str] = set()  # fx nodes whose value depends on neither inputs nor parameters
    param_nodes: dict[str, str] = {}  # model attribute path -> node name
    input_dependent: set[str] = set()  # fx nodes whose value depends on a model input

    def param(path: str, source: str = "") -> Ref:
        if path not in param_nodes:
            node = graph.add(Node(graph.fresh_name(_identifier(path)), "param", attrs={"path": path},
                                 source=source, shape=tuple(resolve(model, path).shape)))
            param_nodes[path] = node.name
        return Ref(param_nodes[path])

    def frozen(name: str, value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        node = graph.add(Node(graph.fresh_name(name), "constant", attrs={"value": value.detach()},
                              shape=tuple(value.shape)))
        return Ref(node.name)

    def shape_of(operand: Any) -> tuple[int, ...] | None:
        if isinstance(operand, Ref):
            return graph[operand.name].shape
        return None

    output: Any = None
    missing: list[UnsupportedOpError] = []  # every op that cannot be bounded, reported together
    order = {n.name: i for i, n in enumerate(traced.gm.graph.nodes)}
    rebind: dict[str, str] = {}  # tensor written in place -> the in-place node, for the reads after it
    for n in traced.gm.graph.nodes:
        for written, by in list(rebind.items()):
            env[written] = env[by]
            del rebind[written]
        value = traced.values.get(n.name)
        source = user_source(n.meta.get("stack_trace"))
        if n.op == "placeholder":
            if n.name in traced.inputs:
                input_dependent.add(n.name)
                env[n.name] = Ref(graph.add(Node(n.name, "input", attrs={"index": traced.inputs.index(n.name)},
                                                 shape=tuple(value.shape))).name)
            elif n.name in traced.params:
                env[n.name] = param(traced.params[n.name])
            else:
                env[n.name] = frozen(n.name, traced.constants[n.name])
                static.add(n.name)
        elif n.op == "get_attr":
            if _has_attr(model, n.target):
                env[n.name] = param(n.target, source)
            else:
                env[n.name] = frozen(n.name, value)
                static.add(n.name)
        elif n.op == "output":
            output = n.args[0]
            if isinstance(output, (tuple, list)) and len(output) == 1:
                output = output[0]
        else:
            deps = [a.name for a in n.all_input_nodes]
            spelling = _spelling(n, traced.gm)
            if all(d in static for d in deps):
                env[n.name] = frozen(n.name, value)
                static.add(n.name)
                continue
            if any(d in input_dependent for d in deps):
                input_dependent.add(n.name)
            rule_name = SPELLINGS.get(spelling)
            module = traced.gm.get_submodule(n.target) if n.op == "call_module" else None
            written = _written_operand(n, spelling, module)
            if written is not None:  # later reads of the tensor an in-place op writes see its result
                _check_in_place(n, written, traced, order, source)
                rebind[written.name] = n.name
            if rule_name is None and n.name not in input_dependent and n.op != "call_module":
                graph.add(_constant_call(n, spelling, env, source, value))
                env[n.name] = Ref(n.name)
                continue
            if rule_name is None and not isinstance(value, torch.Tensor):
                env[n.name] = _ShapeValue(n.name)
                continue
            args = fx.node.map_arg(n.args, lambda a: env[a.name])
            kwargs = fx.node.map_arg(n.kwargs, lambda a: env[a.name])
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else None
            try:
                if rule_name is None:
                    raise UnsupportedOpError(n.name, _spelling_name(spelling), source,
                                             "no bound rule is registered for this op")
                call = Call(n.name, spelling, tuple(args), dict(kwargs), module, source, shape, shape_of,
                            lambda attr, m=n.target, s=source: None if getattr(resolve(model, m), attr) is None
                            else param(f"{m}.{attr}", s))
                operands, attrs = RULES[rule_name].canonicalize(call)
                if any(isinstance(o, _ShapeValue) for o in operands) or any(
                        isinstance(v, (_ShapeValue, Ref)) for v in attrs.values()):
                    raise call.fail("a value computed from a tensor (or its shape) is used where this op needs "
                                    "a constant; only reshapes may take shapes")
            except UnsupportedOpError as error:  # noted, and the rest of the model still canonicalised
                error.module = _module_path(n, traced.gm)
                missing.append(error)
                rule_name, operands, attrs = "unsupported", tuple(a for a in args if isinstance(a, Ref)), {}
            graph.add(Node(n.name, rule_name, tuple(operands), attrs, source, shape,
                           module=n.target if module is not None else ""))
            env[n.name] = Ref(n.name)
    if missing:
        note = (f"(torch.fx could not trace the model: {traced.fx_error}; torch.export traced it into aten ops)"
                if traced.how == "export" else "")
        raise UnsupportedOpError.several(missing, note)
    if not isinstance(output, fx.Node) or not isinstance(env.get(output.name), Ref):
        raise UnsupportedOpError("output", "output", "", "the model must return a single tensor that depends "
                                                         "on its inputs")
    graph.output = env[output.name].name
    return graph
