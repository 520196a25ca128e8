"""Trace a model into a torch.fx graph, with the example value of every node.

``torch.fx.symbolic_trace`` first; models it cannot trace (Python control flow on tensors, say) are
retried with ``torch.export``, which specialises such control flow to the example input.
"""
from __future__ import annotations

import contextlib
import inspect
import os
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.fx import _symbolic_trace

from .errors import UnsupportedOpError

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep  # not torchvision's, beside it in site-packages
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in [^\n]*\n\s*([^\n]*)')


@dataclass
class Traced:
    gm: fx.GraphModule
    values: dict[str, Any]  # example value of each fx node, by node name
    inputs: list[str]  # placeholders of the user's inputs, in order
    params: dict[str, str] = field(default_factory=dict)  # placeholder -> model attribute path (export)
    constants: dict[str, Any] = field(default_factory=dict)  # placeholder -> frozen value (export)
    how: str = "fx"
    fx_error: str = ""  # why torch.fx could not trace it (when torch.export did)


def user_source(stack_trace: str | None) -> str:
    """``file:line: code`` of the innermost frame of a stack trace that is not inside torch."""
    frames = [f for f in _FRAME.findall(stack_trace or "") if not f[0].startswith(_TORCH_DIR) and f[0] != __file__]
    if not frames:
        return ""
    path, line, code = frames[-1]
    code = "" if code.startswith('File "') else code.strip()  # no source text (a REPL): the next frame's header
    return f"{os.path.basename(path)}:{line}: {code}"


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        self.values[n.name] = value
        return value


def _record(gm: fx.GraphModule, args: tuple) -> dict[str, Any]:
    recorder = _Recorder(gm)
    with torch.no_grad():
        recorder.run(*args)
    return recorder.values


class _ShapedProxy(fx.Proxy):
    """A Proxy that knows its example value: its shape is concrete but for the batch size (dimension 0 of what
    depends on an input), so Python code on shapes (``for t in range(x.shape[1])``, ``if x.dim() == 3``) runs
    while tracing instead of making fx give up."""

    def __getattr__(self, name: str):
        if name in ("shape", "ndim") and self.tracer.known(self.node):
            value = self.node.meta["example"]
            return value.dim() if name == "ndim" else self.tracer.shape_of(self)
        return super().__getattr__(name)

    def __len__(self):
        if self.tracer.known(self.node):
            if self.node.meta["varying"]:
                raise fx.proxy.TraceError("len() of a tensor that depends on an input is its batch size, which "
                                          "is not a constant")
            return len(self.node.meta["example"])
        return super().__len__()


class _Tracer(fx.Tracer):
    """fx's tracer with source lines, leaves for modules that have a rule, and buffers traced as what
    they are (read live at every call): by default fx evaluates an expression of buffers alone, such as
    ``self.table[0]``, once at trace time, and bounds would then ignore later changes of the buffer.

    It also runs every call on example values as it traces (``meta["example"]``), so that shapes are concrete
    but for the batch size: ``x.shape``, ``x.size(d)``, ``x.dim()`` are ints (``x.size(0)`` of what depends on an
    input stays a Proxy), and loops over sequence lengths unroll."""

    proxy_buffer_attributes = True

    def __init__(self, examples: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.record_stack_traces = True
        self.examples = examples or {}

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ShapedProxy(node, self)

    def known(self, node: fx.Node) -> bool:
        return isinstance(node.meta.get("example"), torch.Tensor)

    def shape_of(self, proxy: fx.Proxy) -> tuple:
        value = proxy.node.meta["example"]
        if not proxy.node.meta["varying"]:
            return tuple(value.shape)
        batch = self.create_proxy("call_method", "size", (proxy, 0), {})
        return (batch,) + tuple(value.shape[1:])

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, *extra, **more):
        if kind == "call_method" and target in ("size", "dim", "numel") and args and isinstance(args[0], fx.Proxy) \
                and self.known(args[0].node):
            concrete = self._concrete_size(target, args, kwargs)
            if concrete is not None:
                return concrete
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, *extra, **more)
        self._run(proxy.node)
        return proxy

    def _concrete_size(self, target: str, args: tuple, kwargs: dict) -> Any:
        x = args[0]
        value, varying = x.node.meta["example"], x.node.meta["varying"]
        if target == "dim":
            return value.dim()
        if target == "numel":
            return None if varying else value.numel()
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if dim is None:
            return self.shape_of(x)
        if isinstance(dim, int) and (not varying or dim % value.dim() != 0):
            return value.shape[dim]
        return None

    def _run(self, node: fx.Node) -> None:
        """``node``'s example value (None where it cannot be computed), and whether it depends on an input."""
        def value(a):
            return a.meta.get("example") if isinstance(a, fx.Node) else a

        varying = node.op == "placeholder" and node.target in self.examples and self.examples[node.target][1]
        for a in node.all_input_nodes:
            varying = varying or a.meta.get("varying", False)
        node.meta["varying"] = varying
        patched = torch.nn.Module.__call__, torch.nn.Module.__getattr__
        try:  # with fx's patches of Module lifted: a module run on example values must not be traced into
            torch.nn.Module.__call__ = _symbolic_trace._orig_module_call
            torch.nn.Module.__getattr__ = _symbolic_trace._orig_module_getattr
            args, kwargs = fx.node.map_aggregate(node.args, value), fx.node.map_aggregate(node.kwargs, value)
            if node.op == "placeholder":
                result = self.examples.get(node.target, (None, False))[0]
            elif node.op == "get_attr":
                result = self.root
                for part in node.target.split("."):
                    result = getattr(result, part)
            elif node.op == "call_function":
                result = node.target(*args, **kwargs)
            elif node.op == "call_method":
                result = getattr(args[0], node.target)(*args[1:], **kwargs)
            elif node.op == "call_module":
                result = self.root.get_submodule(node.target)(*args, **kwargs)
            else:
                result = None
        except Exception:  # noqa: BLE001  (no example value: that proxy just behaves as fx's own)
            result = None
        finally:
            torch.nn.Module.__call__, torch.nn.Module.__getattr__ = patched
        node.meta["example"] = result

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        """Modules with a bound rule of their own (e.g. ``boundgraph.nn.ParamRamp``) stay one call."""
        from .ops import SPELLINGS
        return type(m) in SPELLINGS or super().is_leaf_module(m, module_qualified_name)


def _defaults(model: nn.Module, given: int) -> dict[str, Any]:
    """forward's optional arguments after the ``given`` ones, at their defaults (fx specialises them, as a
    call with only the given inputs does); an argument without a default that the example lacks is an error."""
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    defaults = {}
    for p in positional[given:] + [p for p in parameters if p.kind == p.KEYWORD_ONLY]:
        if p.default is p.empty:
            raise _Arity(f"the model's forward takes an argument {p.name!r} that the example input does not give "
                         f"(it gives {given})")
        defaults[p.name] = p.default
    return defaults


_FACTORIES = ("zeros", "ones", "full", "empty", "arange", "eye", "rand", "randn", "tril_indices", "triu_indices")


@contextlib.contextmanager
def _traceable_factories():
    """``torch.ones(x.size(1), n)``: fx cannot trace a factory whose sizes are Proxies (they are plain ints to
    the C function), so while tracing each factory records a call when one of its arguments is a Proxy."""
    originals = {name: getattr(torch, name) for name in _FACTORIES}

    def wrap(fn):
        def factory(*args, **kwargs):
            found: list = []
            fx.node.map_aggregate((args, kwargs), lambda a: found.append(a) if isinstance(a, fx.Proxy) else None)
            if found:
                return found[0].tracer.create_proxy("call_function", fn, args, kwargs)
            return fn(*args, **kwargs)
        return factory

    try:
        for name, fn in originals.items():
            setattr(torch, name, wrap(fn))
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch, name, fn)


def _trace_fx(model: nn.Module, inputs: tuple) -> Traced:
    defaults = _defaults(model, len(inputs))
    names = [p for p in inspect.signature(model.forward).parameters][:len(inputs)]
    examples = {name: (x.detach().clone(), True) for name, x in zip(names, inputs)}
    examples.update({name: (value, False) for name, value in defaults.items()})
    tracer = _Tracer(examples)
    before = set(model.__dict__)
    try:
        with _traceable_factories(), torch.no_grad():
            graph = tracer.trace(model, concrete_args=defaults or None)
        gm = fx.GraphModule(model, graph)
    finally:  # fx stores the constants it meets as attributes of the model; they live on in gm only
        for name in set(model.__dict__) - before:
            if name.startswith("_tensor_constant"):
                delattr(model, name)
    placeholders = [n.name for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(inputs) + len(defaults):
        raise _Arity(f"the model's forward takes {len(placeholders)} inputs; the example gives {len(inputs)}")
    traced = Traced(gm, {}, placeholders[:len(inputs)])
    traced.constants = dict(zip(placeholders[len(inputs):], defaults.values()))
    traced.values = _record(gm, inputs)
    return traced


class _Arity(ValueError):
    """The example input does not match the model's forward: an error of the caller, not of fx."""


def _trace_export(model: nn.Module, inputs: tuple) -> Traced:
    from torch.export.graph_signature import InputKind

    try:  # the batch dimension dynamic, so that what is computed from the batch size follows it
        batch = tuple({0: torch.export.Dim.AUTO} for _ in inputs)
        exported = torch.export.export(model, inputs, dynamic_shapes=batch)
    except Exception:  # noqa: BLE001  (e.g. control flow on the batch size: specialised to the example's)
        exported = torch.export.export(model, inputs)
    gm = exported.graph_module
    traced = Traced(gm, {}, [], how="export")
    args, user = [], iter(inputs)
    for spec in exported.graph_signature.input_specs:
        name = spec.arg.name
        if spec.kind == InputKind.USER_INPUT:
            traced.inputs.append(name)
            args.append(next(user))
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
            traced.params[name] = spec.target
            args.append(exported.state_dict[spec.target] if spec.target in exported.state_dict
                        else exported.constants[spec.target])
        else:
            value = exported.constants[spec.target]
            traced.constants[name] = value
            args.append(value)
    traced.values = _record(gm, tuple(args))
    return traced


def trace(model: nn.Module, inputs: tuple) -> Traced:
    """Trace ``model`` called on ``inputs``; raise a clear error when neither tracer can."""
    try:
        return _trace_fx(model, inputs)
    except _Arity:
        raise
    except Exception as fx_error:  # noqa: BLE001  (any fx failure: retry with torch.export)
        try:
            traced = _trace_export(model, inputs)
            traced.fx_error = f"{type(fx_error).__name__}: {str(fx_error).splitlines()[0] if str(fx_error) else ''}"
            return traced
        except Exception as export_error:  # noqa: BLE001
            raise UnsupportedOpError(
                type(model).__name__, "trace", "",
                f"torch.fx could not trace the model ({fx_error}) and neither could torch.export "
                f"({type(export_error).__name__}: {str(export_error).splitlines()[0] if str(export_error) else ''})"
            ) from export_error
