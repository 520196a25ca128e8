"""ONNX graphs whose tensors carry the batch elsewhere than first, rewritten per example with the batch first.

The exporter writes ``nn.MultiheadAttention`` (and any code on ``x.transpose(0, 1)``) in the sequence-first
layout: the batch sits on dimension 1 of ``(sequence, batch, features)``, or is merged with the heads in
``(sequence, batch·heads, d)``, or with the sequence in ``(sequence·batch, features)``. No symbolic trace of such a
graph keeps the batch first, which ``BoundedModule`` needs. But each example is computed on its own, so the graph
at batch 1 *is* the per-example function: a tensor of shape ``S`` there (its batch, of size 1, inside ``S``)
becomes, for a batch of ``B``, the ``(B, *S)`` stack of the per-example tensors.

``lift_off_batch`` finds the nodes whose output is not batch-first (from the shapes recorded at batch 1 and 2: a
batch-first tensor is ``(1, *rest)`` and ``(2, *rest)``) and the nodes that read them, and rewrites each as its
per-example op on the ``(B, *S)`` stacks: axes shifted by one, reshapes to ``(-1, *S)``, broadcasting operands
of several ranks aligned after the batch. Any other tensor read by such an op enters as its stack (``_ToStack``:
the batch's dimension moved first; a batch-first ``(B, *rest)`` becomes ``(B, 1, *rest)``); a per-example op whose
output is batch-first leaves as ``reshape(-1, *rest)``, and an op without a per-example form here reads its stacked
operands back in their own layout (``_FromStack``). ``load`` checks the rewritten graph's outputs against the
original's at batch 1 and 2.
"""
from __future__ import annotations

import operator
from typing import Any, Optional

import torch
from torch import nn


class _Permute(nn.Module):
    def __init__(self, dims: tuple) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: Any) -> Any:
        return x.permute(self.dims)


class _Cat(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *pieces: Any) -> Any:
        return torch.cat(pieces, self.dim)


class _Gemm(nn.Module):
    """ONNX ``Gemm`` (``α·A·B + β·C``, ``B`` transposed where ``trans_b``) on a stack of ``A``: ``matmul``."""

    def __init__(self, alpha: float, beta: float, trans_b: bool) -> None:
        super().__init__()
        self.alpha, self.beta, self.trans_b = alpha, beta, trans_b

    def forward(self, a: Any, b: Any, c: Any = None) -> Any:
        product = a @ (b.transpose(0, 1) if self.trans_b else b)
        product = product if self.alpha == 1 else product * self.alpha
        return product if c is None else product + (c if self.beta == 1 else c * self.beta)


def _shapes(node: Any) -> tuple:
    """``(shape at batch 1, shape at batch 2)`` of a node's tensor output, or ``(None, None)``."""
    meta = node.meta.get("tensor_meta")
    once = tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None
    return once, node.meta.get("shape_twice")


def _batch_first(node: Any) -> Optional[bool]:
    """True where the node's tensor carries the batch first, False where elsewhere, None where unknown."""
    once, twice = _shapes(node)
    if once is None or twice is None or len(once) != len(twice):
        return None
    return _batch_axis(node) == 0


def _per_example(module: Any, node: Any, rank: int) -> Optional[tuple]:
    """``(kind, target)`` of the per-example op of ``node`` on ``(B, *S)`` stacks (``rank = len(S)`` of its first
    operand), or None where this file has no such op for it."""
    from onnx2torch.node_converters import binary_math_operations as onnx_math
    from onnx2torch.node_converters.cast import OnnxCast
    from onnx2torch.node_converters.concat import OnnxConcat
    from onnx2torch.node_converters.functions import OnnxFunction
    from onnx2torch.node_converters.activations import OnnxErf
    from onnx2torch.node_converters.gemm import OnnxGemm
    from onnx2torch.node_converters.layer_norm import OnnxLayerNorm
    from onnx2torch.node_converters.matmul import OnnxMatMul
    from onnx2torch.node_converters.transpose import OnnxTranspose
    from onnx2torch.node_converters.unsqueeze import OnnxUnsqueezeStaticAxes
    from onnx2torch.node_converters.where import OnnxWhere

    from .onnx import _Expand, _Reshape, _Slice, _Split, _Squeeze, _Take, _Unsqueeze

    if node.op == "call_function":
        if node.target in (operator.add, operator.sub, operator.mul, operator.truediv, torch.where):
            return "call_function", node.target
        return None
    if node.op != "call_module":
        return None
    m = module.get_submodule(node.target)
    once = _shapes(node)[0]
    if isinstance(m, (onnx_math.OnnxBinaryMathOperation, OnnxMatMul, OnnxErf, OnnxCast, OnnxWhere, nn.Linear,
                      nn.LayerNorm)) and getattr(m, "broadcast", 0) != 1:
        return "call_module", m  # along the last dimensions, or broadcast from the right
    if isinstance(m, OnnxFunction):  # an elementwise function (tanh, ...)
        return "call_module", m
    if isinstance(m, OnnxLayerNorm):
        lifted = OnnxLayerNorm(m.axis + 1 if m.axis >= 0 else m.axis, m.epsilon)
    elif isinstance(m, nn.Softmax):
        lifted = nn.Softmax(m.dim + 1 if m.dim >= 0 else m.dim)
    elif isinstance(m, _Reshape) and once is not None:
        lifted = _Reshape((-1,) + once)
    elif isinstance(m, OnnxTranspose) and m.perm is not None:
        lifted = _Permute((0,) + tuple(p % rank + 1 for p in m.perm))
    elif isinstance(m, _Squeeze):
        lifted = _Squeeze(tuple(a % rank + 1 for a in m.axes))
    elif isinstance(m, (_Unsqueeze, OnnxUnsqueezeStaticAxes)) and once is not None:
        axes = m.axes if isinstance(m, _Unsqueeze) else tuple(a % len(once) for a in m._axes)
        lifted = _Unsqueeze(tuple(a + 1 for a in axes), len(once) + 1)
    elif isinstance(m, _Take):
        lifted = _Take(m.axis + 1, m.index)
    elif isinstance(m, _Split):
        lifted = _Split(m.sections, m.dim % rank + 1)
    elif isinstance(m, _Slice):
        lifted = _Slice((slice(None),) + tuple(m.index), tuple(f % rank + 1 for f in m.flip))
    elif isinstance(m, _Expand) and once is not None:
        lifted = _Expand(tuple(once))
    elif isinstance(m, OnnxGemm) and not m.trans_a:
        lifted = _Gemm(m.alpha, m.beta, m.trans_b)
    elif isinstance(m, OnnxConcat):
        lifted = _Cat(m.axis % rank + 1)
    else:
        return None
    return "call_module", lifted


def _batch_axis(node: Any) -> Optional[int]:
    """The dimension of a node's tensor that holds the batch on its own (1 at batch 1, 2 at batch 2, the others the
    same), or None (the batch merged with another dimension, or shapes unknown)."""
    once, twice = _shapes(node)
    if once is None or twice is None or len(once) != len(twice):
        return None
    moved = [d for d, (a, b) in enumerate(zip(once, twice)) if a != b]
    return moved[0] if len(moved) == 1 and once[moved[0]] == 1 and twice[moved[0]] == 2 else None


class _ToStack(nn.Module):
    """A tensor with the batch on dimension ``axis`` as the stack of its per-example tensors, ``(B, *shape)``
    (``shape``: the per-example shape, possibly with leading ones to a common rank)."""

    def __init__(self, axis: int, shape: tuple) -> None:
        super().__init__()
        self.axis, self.shape = axis, shape

    def forward(self, x: Any) -> Any:
        return (x if self.axis == 0 else x.movedim(self.axis, 0)).reshape(-1, *self.shape)


class _FromStack(nn.Module):
    """A stack ``(B, *S)`` back to the tensor with the batch on dimension ``axis`` of ``S`` (where it has size 1)."""

    def __init__(self, axis: int, shape: tuple) -> None:
        super().__init__()
        self.axis, self.rest = axis, shape[:axis] + shape[axis + 1:]

    def forward(self, x: Any) -> Any:
        x = x.reshape(-1, *self.rest)
        return x if self.axis == 0 else x.movedim(0, self.axis)


def lift_off_batch(module: Any, static: set) -> bool:
    """The rewrite of the module doc, in place; True where something changed. A node without a per-example op here
    (a recurrent layer) stays as it is, its stacked operands given back in its own layout where the batch is a
    dimension of its own there; where it is merged (``batch·heads``), nothing is rewritten."""
    graph = module.graph
    graph.eliminate_dead_code()
    static = static | {n for n in graph.nodes if n.op == "get_attr"}
    off = {n for n in graph.nodes if n not in static and n.op != "placeholder" and _batch_first(n) is False}
    off |= {n.args[0] for n in off if n.op == "call_function" and n.target is operator.getitem
            and isinstance(n.args[0], torch.fx.Node)}  # a split's pieces carry the shapes: the split goes with them
    if not off:
        return False
    lifted: set = set()  # nodes whose value becomes the (B, *S) stack
    plans: list = []
    for node in graph.nodes:
        if node in static or node.op in ("placeholder", "output", "get_attr"):
            continue
        tensors = [a for a in node.all_input_nodes if a not in static]
        reads = [a for a in tensors if a in lifted]
        if node.op == "call_function" and node.target is operator.getitem:
            if node.args[0] in lifted:
                lifted.add(node)
            continue
        if node not in off and not reads:
            continue
        first = next((a for a in node.args if isinstance(a, torch.fx.Node) and a not in static
                      and _shapes(a)[0] is not None), None)
        rank = len(_shapes(first)[0]) if first is not None else 0
        plan = _per_example(module, node, rank)
        if plan is None:  # kept as it is: it reads its operands in their own layout
            if any(_batch_axis(a) is None for a in reads):
                return False
            if reads:
                plans.append((node, None))
            continue
        if any(_batch_axis(a) is None and a not in lifted and _shapes(a)[0] is not None for a in tensors):
            return False  # a batch-merged operand that is no stack: no per-example view of it here
        plans.append((node, plan))
        if not _batch_first(node):  # a batch-first result is unstacked for its readers, which stay as they are
            lifted.add(node)
    if all(plan is None for _, plan in plans):
        return False
    for node, plan in plans:
        if plan is None:
            _unstack_operands(module, node, lifted)
        else:
            _rewrite(module, node, *plan, lifted, static)
    graph.eliminate_dead_code()
    graph.lint()
    return True


def _unstack_operands(module: Any, node: Any, lifted: set) -> None:
    """A node kept as it is reads each stacked operand back in its own layout."""
    graph = module.graph
    for arg in [a for a in node.all_input_nodes if a in lifted]:
        with graph.inserting_before(node):
            name = f"{arg.name}_unstacked_{node.name}"
            module.add_submodule(name, _FromStack(_batch_axis(arg), _shapes(arg)[0]))
            back = graph.call_module(name, (arg,))
        back.meta = dict(arg.meta)
        node.replace_input_with(arg, back)


def _rewrite(module: Any, node: Any, kind: str, target: Any, lifted: set, static: set) -> None:
    """``node`` as its per-example op on stacks: its other operands stacked (from the dimension their batch is on)
    and every operand stack of a lower rank padded after the batch; a batch-first output unstacked for its
    readers."""
    graph = module.graph
    operands = [a for a in node.args if isinstance(a, torch.fx.Node) and a not in static]
    ranks = {a: len(_shapes(a)[0]) for a in operands if _shapes(a)[0] is not None}
    top = max(ranks.values(), default=0)
    aligned = kind == "call_function" or not isinstance(target, (_Permute, _Cat)) and len(operands) > 1

    def stacked(arg: Any) -> Any:
        if not isinstance(arg, torch.fx.Node) or arg in static or arg not in ranks:
            return arg
        once = _shapes(arg)[0]
        shape = (1,) * (top - len(once)) + once if aligned else once
        if arg in lifted and shape == once:
            return arg
        with graph.inserting_before(node):
            name = f"{arg.name}_stacked_{node.name}"
            module.add_submodule(name, _ToStack(0, shape) if arg in lifted else _ToStack(_batch_axis(arg), shape))
            return graph.call_module(name, (arg,))

    args = tuple(stacked(a) for a in node.args)
    if kind == "call_module":
        if target is not module.get_submodule(node.target):
            name = f"{node.target}_per_example".replace(".", "_")
            module.add_submodule(name, target)
        else:
            name = node.target
        with graph.inserting_before(node):
            new = graph.call_module(name, args, dict(node.kwargs))
    else:
        with graph.inserting_before(node):
            new = graph.call_function(target, args, dict(node.kwargs))
    new.meta = dict(node.meta)
    if _batch_first(node):
        with graph.inserting_after(new):
            name = f"{node.name}_unstacked"
            module.add_submodule(name, _FromStack(0, _shapes(node)[0]))
            back = graph.call_module(name, (new,))
        back.meta = dict(node.meta)
        node.replace_all_uses_with(back)
    else:
        node.replace_all_uses_with(new)
        lifted.add(new)  # its readers, rewritten after it, read the stack
    graph.erase_node(node)
