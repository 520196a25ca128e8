"""ONNX models in: ``boundgraph.onnx.load(path)`` is an ``nn.Module`` to hand to ``BoundedModule``.

The file is read with ``onnx``, upgraded to opset 13 where it is older (``onnx.version_converter``: the
converter's operators are written against 13 and later), optionally stripped of a trailing ``Softmax`` (for
classification properties, which compare the logits), and converted by ``onnx2torch`` into a ``GraphModule``
of torch modules (``Gemm`` → ``nn.Linear``, ``Conv`` → ``nn.Conv2d``, ``Relu`` → ``nn.ReLU``, …).

Dependencies: ``pip install -e ".[onnx]"`` (``onnx``, ``onnxruntime`` for the tests) and then
``pip install --no-deps onnx2torch``. ``onnx2torch`` declares ``torchvision`` as a dependency, but uses it only
for ``NonMaxSuppression`` and ``RoiAlign``; the index's ``torchvision`` is a CUDA build that does not import
against a CPU torch, and installing it pulls a CUDA torch. So ``onnx2torch`` is installed without its
dependencies, and imported with a stand-in ``torchvision`` whose operators raise a clear error if a model uses
them (the stand-in leaves ``sys.modules`` right after the import).
"""
from __future__ import annotations

import sys
import types
import warnings
from pathlib import Path
from typing import Any, Optional, Union

from torch import nn

INSTALL = 'pip install -e ".[onnx]" && pip install --no-deps onnx2torch'
OPSET = 13  # the oldest opset the conversion takes as is; older models are upgraded to it


class OnnxError(ValueError):
    """An ONNX file that cannot be loaded; the message names the file and the reason."""


def _stand_in_torchvision() -> dict[str, types.ModuleType]:
    def missing(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise ImportError(f"this ONNX model uses torchvision.ops.{name} (NonMaxSuppression / RoiAlign), which "
                              f"needs a torchvision matching your torch; boundgraph does not bound those ops")
        return unavailable

    package, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
    ops.__getattr__ = missing  # type: ignore[method-assign]
    package.ops = ops  # type: ignore[attr-defined]
    return {"torchvision": package, "torchvision.ops": ops}


def _onnx2torch() -> Any:
    """``onnx2torch``, imported with a stand-in ``torchvision`` where none imports."""
    try:
        import torchvision  # noqa: F401
        standing_in = {}
    except Exception:  # missing, or a build that does not match torch
        standing_in = _stand_in_torchvision()
    saved = {name: sys.modules.get(name) for name in standing_in}
    sys.modules.update(standing_in)
    try:
        import onnx2torch
    except ImportError as error:
        raise ImportError(f"ONNX models need onnx and onnx2torch: {INSTALL} ({error})") from error
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    from . import onnx_recurrent
    onnx_recurrent.register()  # LSTM and GRU, which onnx2torch does not convert
    return onnx2torch


def read(path: Union[str, Path]) -> Any:
    """The ONNX model in ``path`` (an ``onnx.ModelProto``); ``OnnxError`` if it is not one."""
    try:
        import onnx
    except ImportError as error:
        raise ImportError(f"ONNX models need onnx and onnx2torch: {INSTALL}") from error
    try:
        return onnx.load(str(path))
    except Exception as error:
        raise OnnxError(f"{path}: not a readable ONNX model ({type(error).__name__}: {error})") from error


def load(path: Union[str, Path], drop_softmax: bool = False) -> nn.Module:
    """The ONNX model in ``path`` as a torch module (in eval mode). ``drop_softmax``: remove a ``Softmax`` that
    computes the graph's only output, so the module returns the logits (a classification property's order is
    the same on them; ``softmax`` has no bound rule of its own worth the looseness)."""
    return convert(read(path), path, drop_softmax)


def convert(model: Any, path: Union[str, Path], drop_softmax: bool = False) -> nn.Module:
    """``load`` of a model already read from ``path`` (named in errors)."""
    import onnx

    converter = _onnx2torch()
    path = Path(path)
    opset = max((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), default=0)
    if opset < OPSET:
        try:
            model = onnx.version_converter.convert_version(model, OPSET)
        except Exception as error:
            raise OnnxError(f"{path}: opset {opset} could not be upgraded to {OPSET} ({error})") from error
    if drop_softmax:
        model = _without_final_softmax(model, path)
    try:
        module = converter.convert(model)
    except Exception as error:
        raise OnnxError(f"{path}: onnx2torch could not convert it ({type(error).__name__}: {error})") from error
    examples = input_examples(model)
    if examples is None:
        return module.eval()
    return _with_constant_operands(module.eval(), examples, path)


def input_shape(model: Any) -> Optional[tuple]:
    """The shape after the batch of the graph's one input (initializers aside); None where there are several
    inputs or the shape is not fixed."""
    inputs = [i for i in model.graph.input if i.name not in {init.name for init in model.graph.initializer}]
    if len(inputs) != 1:
        return None
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) < 2 or any(d <= 0 for d in dims[1:]):
        return None
    return tuple(dims[1:])


_INTEGER_TYPES = {2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool"}  # ONNX's elem_type codes


def input_examples(model: Any) -> Optional[tuple]:
    """A batch of one for each of the graph's inputs (initializers aside): uniform in [0, 1) for a floating input,
    ones for an integer or boolean one (an attention mask with every token kept); None where an input's shape after
    the batch is not fixed or its type is neither."""
    import torch

    initializers = {init.name for init in model.graph.initializer}
    examples = []
    for given in [i for i in model.graph.input if i.name not in initializers]:
        tensor = given.type.tensor_type
        dims = [d.dim_value for d in tensor.shape.dim]
        if len(dims) < 1 or any(d <= 0 for d in dims[1:]):
            return None
        if tensor.elem_type in (1, 10, 11):  # float, float16, double
            dtype = {1: torch.float32, 10: torch.float16, 11: torch.float64}[tensor.elem_type]
            examples.append(torch.rand(1, *dims[1:], dtype=dtype))
        elif tensor.elem_type in _INTEGER_TYPES:
            examples.append(torch.ones(1, *dims[1:], dtype=getattr(torch, _INTEGER_TYPES[tensor.elem_type])))
        else:
            return None
    return tuple(examples) or None


def final_softmax(model: Any) -> Optional[Any]:
    """The ``Softmax`` node that computes the graph's only output, or None."""
    graph = model.graph
    if len(graph.output) != 1:
        return None
    last = [node for node in graph.node if graph.output[0].name in node.output]
    return last[0] if last and last[0].op_type == "Softmax" else None


class _Reshape(nn.Module):
    """``x.reshape(shape)``: an ONNX ``Reshape`` by a constant, with ``-1`` where the batch goes (first, or second in
    a sequence-first layout)."""

    def __init__(self, shape: tuple) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: Any) -> Any:
        return x.reshape(self.shape)


class _Expand(nn.Module):
    """``x.expand(batch, *shape)``: an ONNX ``Expand`` to a shape computed from the input's (a squeeze-excite gate
    broadcast over its feature map), its batch dimension kept."""

    def __init__(self, shape: tuple) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: Any) -> Any:
        return x.expand(x.shape[0], *self.shape)


class _BatchExpand(nn.Module):
    """A constant ``(1, ...)`` expanded to ``(batch, *shape)``, the batch read from the model's input: an ONNX
    ``Expand`` whose shape the exporter computes from the input's (a ViT's class token,
    ``cls.expand(batch, -1, -1)``)."""

    def __init__(self, value: Any, shape: tuple) -> None:
        super().__init__()
        self.constant = nn.Parameter(value.detach().clone(), requires_grad=False)  # fx proxies a parameter
        self.shape = shape

    def forward(self, x: Any) -> Any:
        return self.constant.expand(x.shape[0], *self.shape)


class _Squeeze(nn.Module):
    """``x.squeeze(axes)``: an ONNX ``Squeeze`` by constant axes (given as an input, opset 13 on)."""

    def __init__(self, axes: tuple) -> None:
        super().__init__()
        self.axes = axes

    def forward(self, x: Any) -> Any:
        return x.squeeze(self.axes)


class _Unsqueeze(nn.Module):
    """``x.unsqueeze(a)`` for each of the constant axes, in increasing order of the output's (ONNX ``Unsqueeze``)."""

    def __init__(self, axes: tuple, rank: int) -> None:
        super().__init__()
        self.axes = tuple(sorted(a % rank for a in axes))

    def forward(self, x: Any) -> Any:
        for axis in self.axes:
            x = x.unsqueeze(axis)
        return x


class _Take(nn.Module):
    """ONNX ``Gather`` by constant indices (``numpy.take``): ``x[..., i]`` on ``axis`` for one index, else
    ``index_select``."""

    def __init__(self, axis: int, index: Any) -> None:
        super().__init__()
        self.axis, self.index = axis, index
        if not isinstance(index, int) and index and index == list(range(index[0], index[-1] + 1)):
            self.index = slice(index[0], index[-1] + 1)  # consecutive indices: a slice

    def forward(self, x: Any) -> Any:
        import torch

        if isinstance(self.index, (int, slice)):  # x[i] on axis 0: also a recurrent layer's final states, h_n[i]
            return x[self.index] if self.axis == 0 else x[(slice(None),) * self.axis + (self.index,)]
        return x.index_select(self.axis, torch.tensor(self.index, device=x.device))


class _Slice(nn.Module):
    """``x[index]``: an ONNX ``Slice`` by constants (never on the batch dimension)."""

    def __init__(self, index: tuple, flip: tuple) -> None:
        super().__init__()
        self.index, self.flip = index, flip

    def forward(self, x: Any) -> Any:
        import torch

        return (torch.flip(x, self.flip) if self.flip else x)[self.index]


class _Split(nn.Module):
    """``torch.split(x, sections, dim)``: an ONNX ``Split`` by constant sections."""

    def __init__(self, sections: list, dim: int) -> None:
        super().__init__()
        self.sections, self.dim = sections, dim

    def forward(self, x: Any) -> Any:
        import torch

        return torch.split(x, self.sections, self.dim)


class _Pad(nn.Module):
    """``F.pad(x, pads, mode, value)`` by constant pads (the identity where they are all zero)."""

    def __init__(self, pads: list, mode: str, value: float) -> None:
        super().__init__()
        self.pads, self.mode, self.value = pads, mode, value

    def forward(self, x: Any) -> Any:
        import torch.nn.functional as F

        if not any(self.pads):
            return x
        return F.pad(x, self.pads, mode=self.mode, value=self.value) if self.mode == "constant" else \
            F.pad(x, self.pads, mode=self.mode)


class _Resize(nn.Module):
    """``F.interpolate(x, size, mode, align_corners)``: an ONNX ``Resize`` to a size known when the graph is loaded."""

    def __init__(self, size: tuple, mode: str, align_corners: Any) -> None:
        super().__init__()
        self.size, self.mode, self.align_corners = size, mode, align_corners

    def forward(self, x: Any) -> Any:
        import torch.nn.functional as F

        return F.interpolate(x, size=self.size, mode=self.mode, align_corners=self.align_corners)


class _Power(nn.Module):
    """``x ** exponent`` for a constant number (ONNX's ``Pow`` by a one-element initializer)."""

    def __init__(self, exponent: float) -> None:
        super().__init__()
        self.exponent = exponent

    def forward(self, x: Any) -> Any:
        return x ** self.exponent


def _arithmetic() -> dict:
    """onnx2torch's functions for Add, Sub, Mul and Div → the Python operators (true division: the operand is
    floating)."""
    import operator

    from onnx2torch.node_converters import binary_math_operations as onnx_math
    table = onnx_math._TORCH_FUNCTION_FROM_ONNX_TYPE
    return {table["Add"]: operator.add, table["Sub"]: operator.sub, table["Mul"]: operator.mul,
            table["Div"]: operator.truediv}


def _swap(graph: Any, node: Any, kind: str, target: Any, args: tuple) -> None:
    """Put a new ``kind`` node (``call_module``, ``call_function``) of ``target`` on ``args`` in ``node``'s place."""
    with graph.inserting_after(node):
        new = graph.create_node(kind, target, args)
    new.meta = dict(node.meta)  # the same value: its recorded shape and dtype hold
    node.replace_all_uses_with(new)
    graph.erase_node(node)


def _with_constant_operands(module: Any, examples: tuple, path: Path) -> Any:
    """``module`` with onnx2torch's ``Reshape``, ``Slice``, ``Split``, ``Pad``, ``Resize``, ``Expand``,
    ``Squeeze``/``Unsqueeze`` (axes given as an input) and ``Gather`` modules whose shape or index operands are
    constants (initializers), and ``Pow`` by a one-element constant, replaced by plain torch modules with those
    constants built in; ``Add``, ``Sub``, ``Mul`` and ``Div`` by a one-element floating constant become the Python
    operator with the number (so that rewrites that read numbers see them: GELU as ``x·(1 + erf(x/√2))``,
    ``ops/arithmetic.py``); a constant expanded to the batch (a class token) reads the batch from the input.
    onnx2torch's own take them as tensors at run time (``split.tolist()``, loops over ``starts``), which no
    symbolic trace can follow; with the constants in the module, ``BoundedModule`` traces the graph like any
    other. An operand counts as constant when it depends on initializers and ``Shape`` only (the exporter
    computes reshape targets from the input's shape); its value and every output shape come from running the
    graph once on a batch of one (``ShapeProp``), and a reshape keeps the batch first (``-1``). The rewritten
    graph must give the original's outputs at batch 1, and at batch 2 where the file allows it; otherwise it is
    an error."""
    import torch
    from torch.fx.passes.shape_prop import ShapeProp
    from onnx2torch.node_converters import expand as onnx_expand, gather as onnx_gather
    from onnx2torch.node_converters import squeeze as onnx_squeeze, unsqueeze as onnx_unsqueeze
    from onnx2torch.node_converters import pad as onnx_pad, pow as onnx_pow, reshape as onnx_reshape
    from onnx2torch.node_converters import resize as onnx_resize
    from onnx2torch.node_converters import slice as onnx_slice
    from onnx2torch.node_converters import split as onnx_split

    from onnx2torch.node_converters import shape as onnx_shape

    graph, changed = module.graph, False
    static: set = set()  # nodes whose values depend on shapes and constants only, never on the input's values
    for node in graph.nodes:
        inputs = node.all_input_nodes
        if node.op == "get_attr" or (node.op == "call_module" and (not inputs or isinstance(
                module.get_submodule(node.target), onnx_shape.OnnxShape))) or (
                node.op in ("call_module", "call_function", "call_method") and inputs and
                all(i in static for i in inputs)):  # a module without inputs (OnnxConstant) is a constant
            static.add(node)
    values: dict = {}
    values_twice: dict = {}  # the same at batch 2, where the file allows it

    shapes_twice: dict = {}  # every tensor's shape at batch 2 (``_batch_free``, ``onnx_layout``)

    class Recorder(torch.fx.Interpreter):
        def __init__(self, into: dict, shapes: Optional[dict] = None) -> None:
            super().__init__(module)
            self.into, self.shapes = into, shapes

        def run_node(self, node: Any) -> Any:
            result = super().run_node(node)
            if node in static:
                self.into[node] = result
            if self.shapes is not None and isinstance(result, torch.Tensor):
                self.shapes[node] = tuple(result.shape)
            return result

    with torch.no_grad(), warnings.catch_warnings():
        # onnx2torch's own Slice indexes with a list, which torch deprecates; its modules run here once, never after
        warnings.filterwarnings("ignore", "Using a non-tuple sequence for multidimensional indexing", UserWarning)
        expected = module(*examples)
        doubled = tuple(torch.cat([x, torch.rand_like(x) if x.is_floating_point() else x]) for x in examples)
        try:  # also at batch 2, where the file allows it (a fixed batch of one does not), before any rewrite
            expected_twice = module(*doubled)
        except Exception:
            expected_twice = None
        Recorder(values).run(*examples)
        try:
            Recorder(values_twice, shapes_twice).run(*(torch.cat([x, x]) for x in examples))
        except Exception:
            values_twice.clear()
            shapes_twice.clear()
        ShapeProp(module).propagate(*examples)
    for node, shape in shapes_twice.items():  # carried by the node, and by what ``_swap`` puts in its place
        node.meta["shape_twice"] = shape

    def constant(arg: Any) -> Any:
        if isinstance(arg, torch.fx.Node):
            return values.get(arg)  # a static node's value (a shape, at batch 1, or a constant), else None
        return arg

    from onnx2torch.node_converters import binary_math_operations as onnx_math
    from onnx2torch.node_converters import constant as onnx_constant
    from onnx2torch.node_converters import where as onnx_where

    def number(arg: Any) -> Any:
        """A one-element floating constant as a Python number, else None: an initializer or ``Constant`` node, or a
        value computed from shapes that is the same at batch 2 (a head's ``1/√d`` in attention)."""
        if not (isinstance(arg, torch.fx.Node) and arg in values):
            return None
        given = arg.op == "get_attr" or (
            arg.op == "call_module" and isinstance(module.get_submodule(arg.target), onnx_constant.OnnxConstant))
        if not given and not _unchanged(values.get(arg), values_twice.get(arg)):
            return None
        value = values[arg]
        return float(value) if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel() == 1 \
            else None

    from .onnx_recurrent import _Recurrent, sequence_outputs, zero_states
    for node in list(graph.nodes):  # a recurrent node's all-zero initial states: torch's None
        if node.op == "call_module" and isinstance(module.get_submodule(node.target), _Recurrent):
            kept = zero_states(module, node, [values] + ([values_twice] if values_twice else []))
            if kept is not None:
                node.args = kept
                changed = True

    arithmetic = _arithmetic()
    for node in list(graph.nodes):  # x + c, x · c, c / x, where(m, c, x) ... by a one-element constant: the number
        if node.op != "call_module" or node in static:
            continue
        target = module.get_submodule(node.target)
        if isinstance(target, onnx_math.OnnxBinaryMathOperation) and target.broadcast != 1 and len(node.args) == 2:
            function, data = arithmetic[target.math_op_function], node.args
        elif isinstance(target, onnx_where.OnnxWhere) and len(node.args) == 3:  # a mask's fill (−inf, as masked_fill)
            function, data = torch.where, node.args[1:]
        else:
            continue
        first, second = (number(a) for a in data)
        if (first is None) == (second is None):
            continue
        constant_arg, other = (data[1], data[0]) if second is not None else data
        meta = other.meta.get("tensor_meta") if isinstance(other, torch.fx.Node) else None
        if meta is None or getattr(meta, "dtype", None) != values[constant_arg].dtype:
            continue  # a number would be taken in the other operand's dtype: only where the constant's is the same
        data = (data[0], second) if second is not None else (first, data[1])
        _swap(graph, node, "call_function", function, tuple(node.args[:-2]) + data)
        changed = True

    for node in list(graph.nodes):
        if node.op != "call_module" or node in static:
            continue  # a static node is shape arithmetic: it goes once its consumers have its value built in
        target = module.get_submodule(node.target)
        operands = [constant(a) for a in node.args[1:]]
        if any(o is None and a is not None for o, a in zip(operands, node.args[1:])):
            continue  # a shape computed in the graph: leave it as it is
        replacement = None
        if isinstance(target, onnx_reshape.OnnxReshape):
            replacement = _Reshape(_batch_free(tuple(node.meta["tensor_meta"].shape), node.meta.get("shape_twice")))
        elif isinstance(target, onnx_slice.OnnxSlice):
            flip, positive, negative = onnx_slice._get_slices(*[torch.as_tensor(o) if o is not None else None
                                                                for o in (operands + [None, None, None])[:4]])
            axes = [a for a, item in enumerate(positive) if item != slice(None, None)] + list(flip)
            if 0 in axes or negative:
                raise OnnxError(f"{path}: Slice {node.target!r} slices the batch dimension (or counts axes from the "
                                f"end), which boundgraph does not bound")
            def plain(value: Any) -> Any:
                return None if value is None else int(value)

            index = tuple(slice(plain(i.start), plain(i.stop), plain(i.step)) for i in positive)
            replacement = _Slice(index, tuple(int(f) for f in flip))
        elif isinstance(target, onnx_resize.OnnxResize) and (len(operands) < 1 or operands[0] is None
                                                              or operands[0].nelement() == 0 or target.ignore_roi):
            mode = onnx_resize._onnx_mode_to_torch_mode(target.onnx_mode, len(node.meta["tensor_meta"].shape) - 2)
            replacement = _Resize(tuple(node.meta["tensor_meta"].shape[2:]), mode, target.align_corners)
        elif isinstance(target, onnx_split.OnnxSplit13) and operands and operands[0] is not None:
            replacement = _Split([int(v) for v in operands[0].tolist()], target.axis)
        elif isinstance(target, onnx_pad.OnnxPadDynamic) and operands:
            pads = onnx_pad._onnx_padding_to_torch([int(v) for v in operands[0].tolist()])
            value = float(operands[1]) if len(operands) > 1 and operands[1] is not None else 0.0
            pads = onnx_pad._torch_padding_to_mode_format(pads, target.mode)
            while len(pads) >= 2 and pads[-2:] == [0, 0]:
                pads = pads[:-2]  # torch's order ends with the leading (batch, channel) dimensions' pads
            replacement = _Pad(pads, target.mode, value)
        elif isinstance(target, (onnx_squeeze.OnnxSqueezeDynamicAxes, onnx_unsqueeze.OnnxUnsqueezeDynamicAxes)) \
                and operands and isinstance(operands[0], torch.Tensor) and operands[0].numel():
            axes = tuple(int(a) for a in operands[0].flatten().tolist())
            replacement = _Squeeze(axes) if isinstance(target, onnx_squeeze.OnnxSqueezeDynamicAxes) else _Unsqueeze(
                axes, len(node.meta["tensor_meta"].shape))
        elif isinstance(target, onnx_gather.OnnxGather) and operands and isinstance(operands[0], torch.Tensor) \
                and operands[0].dim() <= 1 and not operands[0].is_floating_point():
            rank = len(node.meta["tensor_meta"].shape) + 1 - operands[0].dim()  # the data's: Gather drops the axis
            replacement = _Take(target._axis % rank, operands[0].tolist())
        elif isinstance(target, onnx_expand.OnnxExpand) and operands and operands[0] is not None:
            replacement = _Expand(tuple(node.meta["tensor_meta"].shape)[1:])
        elif isinstance(target, onnx_pow.OnnxPow) and operands and isinstance(operands[0], torch.Tensor) \
                and operands[0].numel() == 1:
            replacement = _Power(float(operands[0]))
        if replacement is None:
            continue
        name = f"{node.target}_constant"
        module.add_submodule(name, replacement)
        _swap(graph, node, "call_module", name, (node.args[0],))
        changed = True
    changed |= _unbind_split_squeezes(module) | sequence_outputs(module) | _take_from_concats(module)
    changed |= _by_batch(module, static, values, values_twice)
    changed |= _fold_static_values(module, static, values, values_twice)
    from .onnx_layout import lift_off_batch
    per_example = lift_off_batch(module, static)
    changed |= per_example
    if not changed:
        return module
    graph.eliminate_dead_code()
    module.recompile()
    pairs = [(examples, expected)] + ([(doubled, expected_twice)] if expected_twice is not None else [])
    for x, want in pairs:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Using a non-tuple sequence for multidimensional indexing",
                                        UserWarning)
                got = module(*x)
        except Exception as error:
            raise OnnxError(f"{path}: building the constant shape operands into the graph made it fail at batch "
                            f"{x[0].shape[0]} ({type(error).__name__}: {str(error).splitlines()[0]}); the file "
                            f"computes shapes that boundgraph cannot build in") from error
        if not all(_same(a, b, per_example) for a, b in zip(torch.utils._pytree.tree_leaves(got),
                                                           torch.utils._pytree.tree_leaves(want))):
            raise OnnxError(f"{path}: building the constant shape operands into the graph changed its outputs "
                            f"at batch {x[0].shape[0]}")
    return module


def _same(got: Any, want: Any, reordered: bool) -> bool:
    """The rewritten graph's output ``got`` is the original's ``want``: exactly, or, where ops now run per example
    (``onnx_layout``: a matrix product over other strides may round differently), to float rounding (1e-5 of the
    output's scale)."""
    import torch

    if not reordered or not (isinstance(got, torch.Tensor) and got.is_floating_point()):
        return torch.equal(got, want) if isinstance(got, torch.Tensor) else got == want
    scale = 1 + float(want.abs().max()) if want.numel() else 1.0
    return got.shape == want.shape and bool(torch.allclose(got, want, rtol=1e-5, atol=1e-5 * scale))


def _take_from_concats(module: Any) -> bool:
    """``cat(pieces, 0)[i]`` as the piece's own ``[j]``: the exporter stacks a multi-layer LSTM's final states
    (``Concat`` of each layer node's ``Y_h`` on axis 0) and then takes one (``h_n[-1]``); the pieces are a recurrent
    layer's per-layer states, which only indexing may read. True where something changed."""
    from onnx2torch.node_converters.concat import OnnxConcat

    graph, changed = module.graph, False
    for node in list(graph.nodes):
        take = module.get_submodule(node.target) if node.op == "call_module" else None
        if not isinstance(take, _Take) or take.axis != 0 or not isinstance(take.index, int):
            continue
        concat = node.args[0]
        joined = module.get_submodule(concat.target) if getattr(concat, "op", None) == "call_module" else None
        if not isinstance(joined, OnnxConcat) or joined.axis != 0:
            continue
        sizes = [p.meta.get("tensor_meta").shape[0] if "tensor_meta" in p.meta else None for p in concat.args]
        if None in sizes:
            continue
        index = take.index % sum(sizes)
        for piece, size in zip(concat.args, sizes):
            if index < size:
                break
            index -= size
        name = f"{node.target}_piece"
        module.add_submodule(name, _Take(0, index))
        _swap(graph, node, "call_module", name, (piece,))
        changed = True
    return changed


def _batch_free(once: tuple, twice: Optional[tuple]) -> tuple:
    """A reshape's target with ``-1`` where the batch goes: the one dimension that doubles from the output's shape at
    batch 1 (``once``) to batch 2 (``twice``), the first where there is no batch-2 run or no such dimension."""
    moved = [] if twice is None or len(twice) != len(once) else [
        d for d, (a, b) in enumerate(zip(once, twice)) if a != b]
    where = moved[0] if len(moved) == 1 and twice[moved[0]] == 2 * once[moved[0]] else 0
    return once[:where] + (-1,) + once[where + 1:]


def _unbind_split_squeezes(module: Any) -> bool:
    """``torch.unbind(x, d)`` for an ONNX ``Split`` of ``x`` into ones along ``d`` whose every piece is squeezed on
    ``d`` (how the exporter writes a ViT's ``qkv.permute(2, 0, 3, 1, 4).unbind(0)``): the same values, and the
    spelling whose first dimension the tracer knows is not the batch's once the permutation has moved it there.
    True where something changed."""
    import operator

    import torch

    graph, changed = module.graph, False
    for node in list(graph.nodes):
        if node.op != "call_module" or not isinstance(module.get_submodule(node.target), _Split):
            continue
        split = module.get_submodule(node.target)
        meta = node.args[0].meta.get("tensor_meta") if isinstance(node.args[0], torch.fx.Node) else None
        if meta is None or any(s != 1 for s in split.sections) or len(split.sections) != meta.shape[split.dim]:
            continue
        rank, dim = len(meta.shape), split.dim % len(meta.shape)
        pieces = list(node.users)
        if not pieces or not all(
                p.op == "call_function" and p.target is operator.getitem and isinstance(p.args[1], int) and p.users
                and all(s.op == "call_module" and isinstance(module.get_submodule(s.target), _Squeeze)
                        and {a % rank for a in module.get_submodule(s.target).axes} == {dim}
                        and len(module.get_submodule(s.target).axes) == 1 for s in p.users) for p in pieces):
            continue
        with graph.inserting_after(node):
            unbound = graph.call_function(torch.unbind, (node.args[0], dim))
        for piece in pieces:
            with graph.inserting_after(unbound):
                item = graph.call_function(operator.getitem, (unbound, piece.args[1]))
            for squeeze in list(piece.users):
                item.meta = dict(squeeze.meta)
                squeeze.replace_all_uses_with(item)
                graph.erase_node(squeeze)
            graph.erase_node(piece)
        graph.erase_node(node)
        changed = True
    return changed


def _unchanged(once: Any, twice: Any) -> bool:
    """A value recorded at batch 1 and batch 2 is the same tensor at both."""
    import torch

    return isinstance(once, torch.Tensor) and isinstance(twice, torch.Tensor) and once.shape == twice.shape \
        and torch.equal(once, twice)


def _computed_constants(module: Any, static: set, values: dict, values_twice: dict, ops: tuple) -> list:
    """``(node, value at batch 1, value at batch 2)`` for each static node of ``ops`` (not a ``Constant``, already
    what a constant is) that a value-carrying node reads: what the exporter computes from shapes and initializers
    and the model then uses."""
    from onnx2torch.node_converters import constant as onnx_constant

    return [(node, values.get(node), values_twice.get(node)) for node in list(module.graph.nodes)
            if node in static and node.op in ops
            and not (node.op == "call_module"
                     and isinstance(module.get_submodule(node.target), onnx_constant.OnnxConstant))
            and not all(user in static for user in node.users)]


def _by_batch(module: Any, static: set, values: dict, values_twice: dict) -> bool:
    """Computed constants broadcast over the batch, read with the batch of the model's first input: a static node
    that a value-carrying node reads, whose value is ``(1, ...)`` at batch 1 and that value expanded at batch 2, is
    ``_BatchExpand`` of it (a ViT's class token, ``cls.expand(batch, -1, -1)``; the zeros of an attention mask's
    shape, ``ConstantOfShape(Shape(mask))``). True where something changed."""
    import torch

    graph, changed = module.graph, False
    inputs = [node for node in graph.nodes if node.op == "placeholder"]
    if not inputs:
        return False
    for node, once, twice in _computed_constants(module, static, values, values_twice,
                                                 ("call_module", "call_function", "call_method")):
        if not (isinstance(once, torch.Tensor) and isinstance(twice, torch.Tensor) and once.dim() >= 1
                and once.shape[0] == 1 and twice.dim() == once.dim() and twice.shape[0] == 2
                and torch.equal(twice, once.expand_as(twice))):
            continue
        name = f"{node.target if node.op == 'call_module' else node.name}_by_batch"
        module.add_submodule(name, _BatchExpand(once, tuple(once.shape[1:])))
        _swap(graph, node, "call_module", name, (inputs[0],))
        changed = True
    return changed


def _fold_static_values(module: Any, static: set, values: dict, values_twice: dict) -> bool:
    """Computed constants as buffers: a static node (shapes and initializers only) that a value-carrying node reads,
    whose value is a tensor equal at batch 1 and batch 2, becomes a buffer read by ``get_attr``. So GPT's causal
    mask, which the exporter slices out of its buffer to the sequence's length (``Shape`` → ``Gather`` → ``Slice``
    → ``Equal`` → ``Where``), reaches ``BoundedModule`` as the constant it is. A value that changes with the batch
    stays as it is (and the graph then stops where the tracer meets it). True where something changed."""
    graph, folded = module.graph, 0
    for node, once, twice in _computed_constants(module, static, values, values_twice, ("call_module",)):
        if not _unchanged(once, twice):
            continue
        name = f"folded_constant_{folded}"
        folded += 1
        module.register_buffer(name, once.clone())
        with graph.inserting_before(node):
            buffer = graph.get_attr(name)
        node.replace_all_uses_with(buffer)
    return folded > 0


def _without_final_softmax(model: Any, path: Path) -> Any:
    graph = model.graph
    if len(graph.output) != 1:
        raise OnnxError(f"{path}: drop_softmax needs a model with one output, this one has {len(graph.output)}")
    output = graph.output[0].name
    softmax = final_softmax(model)
    if softmax is None:
        last = [node for node in graph.node if output in node.output]
        raise OnnxError(f"{path}: drop_softmax: the output {output!r} is not computed by a Softmax "
                        f"({last[0].op_type if last else 'no node'})")
    used = [node for node in graph.node if softmax.input[0] in node.input and node is not softmax]
    if used:
        raise OnnxError(f"{path}: drop_softmax: the softmax's input is also used by {used[0].op_type}")
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == softmax.input[0]:
                node.output[i] = output
    graph.node.remove(softmax)
    return model
