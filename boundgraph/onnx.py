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
from pathlib import Path
from typing import Any, Union

from torch import nn

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
        raise ImportError('ONNX models need onnx and onnx2torch: pip install -e ".[onnx]" && '
                          f"pip install --no-deps onnx2torch ({error})") from error
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return onnx2torch


def load(path: Union[str, Path], drop_softmax: bool = False) -> nn.Module:
    """The ONNX model in ``path`` as a torch module (in eval mode). ``drop_softmax``: remove a ``Softmax`` that
    computes the graph's only output, so the module returns the logits (a classification property's order is
    the same on them; ``softmax`` has no bound rule of its own worth the looseness)."""
    try:
        import onnx
    except ImportError as error:
        raise ImportError('ONNX models need onnx and onnx2torch: pip install -e ".[onnx]" && '
                          "pip install --no-deps onnx2torch") from error
    converter = _onnx2torch()
    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as error:
        raise OnnxError(f"{path}: not a readable ONNX model ({type(error).__name__}: {error})") from error
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
    return module.eval()


def _without_final_softmax(model: Any, path: Path) -> Any:
    graph = model.graph
    if len(graph.output) != 1:
        raise OnnxError(f"{path}: drop_softmax needs a model with one output, this one has {len(graph.output)}")
    output = graph.output[0].name
    last = [node for node in graph.node if output in node.output]
    if not last or last[0].op_type != "Softmax":
        raise OnnxError(f"{path}: drop_softmax: the output {output!r} is not computed by a Softmax "
                        f"({last[0].op_type if last else 'no node'})")
    softmax = last[0]
    used = [node for node in graph.node if softmax.input[0] in node.input and node is not softmax]
    if used:
        raise OnnxError(f"{path}: drop_softmax: the softmax's input is also used by {used[0].op_type}")
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == softmax.input[0]:
                node.output[i] = output
    graph.node.remove(softmax)
    return model
