"""Pass: propagate shapes by running every node on the example input, and specialise each rule to
its shapes (output padding of transposed convolutions, reshape sources, broadcast shapes).

The concrete run doubles as a check of canonicalisation: every node must have the shape the tracer
saw, and the graph's output must equal the model's.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..ir import SOURCE_KINDS, BoundGraph, Node, Ref
from ..ops import RULES


def resolve(model: nn.Module, path: str) -> Any:
    value: Any = model
    for part in path.split("."):
        value = getattr(value, part)
    return value


def operand_value(values: dict[str, Any], operand: Any) -> Any:
    return values[operand.name] if isinstance(operand, Ref) else operand


def evaluate(graph: BoundGraph, model: nn.Module, inputs: tuple, C: Tensor | None = None,
             clean: tuple | None = None) -> dict[str, Any]:
    """The concrete value of every node of ``graph`` on ``inputs`` (the model's own semantics); the clean
    copies of inputs that batch statistics come from (``use_batch_statistics``) take ``clean``."""
    values: dict[str, Any] = {}
    for node in graph:
        if node.op == "input" and node.attrs.get("clean") and clean is not None:
            values[node.name] = clean[node.attrs["index"]]
        elif node.op in SOURCE_KINDS:
            values[node.name] = source_value(node, model, inputs, C)
        else:
            operands = [operand_value(values, o) for o in node.operands]
            values[node.name] = RULES[node.op].forward(*operands, **node.attrs)
    return values


def propagate_shapes(graph: BoundGraph, model: nn.Module, inputs: tuple) -> BoundGraph:
    out = graph.copy()
    values: dict[str, Any] = {}
    with torch.no_grad():
        for node in out:
            if node.op in SOURCE_KINDS:
                values[node.name] = source_value(node, model, inputs)
            else:
                operands = [operand_value(values, o) for o in node.operands]
                value = RULES[node.op].forward(*operands, **node.attrs)
                if node.shape is not None and tuple(value.shape) != node.shape:
                    raise RuntimeError(f"internal error: node {node.name} ({node.op}) has shape "
                                       f"{tuple(value.shape)}, the traced model {node.shape}")
                shapes = [tuple(v.shape) if isinstance(v, Tensor) else None for v in operands]
                node.attrs = RULES[node.op].specialize(node.attrs, shapes, tuple(value.shape))
                values[node.name] = value
            if isinstance(values[node.name], Tensor):
                node.shape = tuple(values[node.name].shape)
    return out


def source_value(node: Node, model: nn.Module, inputs: tuple, C: Tensor | None = None) -> Any:
    """The value of an ``input``, ``param``, ``constant``, ``spec`` or ``batch`` node."""
    if node.op == "input":
        return inputs[node.attrs["index"]]
    if node.op == "param":
        return resolve(model, node.attrs["path"])
    if node.op == "spec":
        return C
    if node.op == "batch":
        return inputs[0].shape[0]
    return node.attrs["value"]
