"""Pass: fx graph → BoundGraph of canonical ops.

Every spelling of an op (``nn.ReLU``, ``F.relu``, ``torch.relu``, ``x.relu()``, ``aten.relu``) becomes
one canonical node whose rule's ``canonicalize`` reads the call's arguments. Sub-graphs that depend on
neither the inputs nor the parameters are frozen to their example value. Queries of shapes
(``x.size(0)``) are dropped: reshapes take their target from the traced shapes. Anything else without a
rule raises ``UnsupportedOpError`` naming the node, the op and the user's source line.
"""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import fx, nn

from ..errors import HOW_TO_REGISTER, UnsupportedOpError
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
    for n in traced.gm.graph.nodes:
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
            if rule_name is None and n.name not in input_dependent and n.op != "call_module":
                graph.add(_constant_call(n, spelling, env, source, value))
                env[n.name] = Ref(n.name)
                continue
            if rule_name is None:
                if not isinstance(value, torch.Tensor):
                    env[n.name] = _ShapeValue(n.name)
                    continue
                raise UnsupportedOpError(n.name, _spelling_name(spelling), source,
                                         "no bound rule is registered for this op. " + HOW_TO_REGISTER)
            module = traced.gm.get_submodule(n.target) if n.op == "call_module" else None
            args = fx.node.map_arg(n.args, lambda a: env[a.name])
            kwargs = fx.node.map_arg(n.kwargs, lambda a: env[a.name])
            call = Call(n.name, spelling, tuple(args), dict(kwargs), module, source,
                        tuple(value.shape) if isinstance(value, torch.Tensor) else None, shape_of,
                        lambda attr, m=n.target, s=source: None if getattr(resolve(model, m), attr) is None
                        else param(f"{m}.{attr}", s))
            operands, attrs = RULES[rule_name].canonicalize(call)
            if any(isinstance(o, _ShapeValue) for o in operands) or any(
                    isinstance(v, (_ShapeValue, Ref)) for v in attrs.values()):
                raise call.fail("a value computed from a tensor (or its shape) is used where this op needs "
                                "a constant; only reshapes may take shapes")
            graph.add(Node(n.name, rule_name, tuple(operands), attrs, source,
                           tuple(value.shape) if isinstance(value, torch.Tensor) else None,
                           module=n.target if module is not None else ""))
            env[n.name] = Ref(n.name)
    if not isinstance(output, fx.Node) or not isinstance(env.get(output.name), Ref):
        raise UnsupportedOpError("output", "output", "", "the model must return a single tensor that depends "
                                                         "on its inputs")
    graph.output = env[output.name].name
    return graph
