"""ONNX ``LSTM`` and ``GRU`` nodes as ``nn.LSTM`` / ``nn.GRU`` (``onnx2torch`` has no converter for either).

An ONNX recurrent node takes ``X``, ``W`` (directions, gates·H, input), ``R`` (directions, gates·H, H), ``B``
(directions, 2·gates·H: the input biases, then the state biases), optional ``sequence_lens``, ``initial_h``
(and ``initial_c``) and returns ``Y``, ``Y_h`` (and ``Y_c``). With ``layout = 0`` (torch's exporter writes that)
``X`` is (sequence, batch, input), ``Y`` (sequence, directions, batch, H) and the states (directions, batch, H);
with ``layout = 1`` the batch comes first in each. The gates are stacked in another order than torch's:

- LSTM: ONNX ``i, o, f, c``, torch ``i, f, g, o`` (``g`` is ONNX's ``c``);
- GRU: ONNX ``z, r, h``, torch ``r, z, n``; torch's GRU is ONNX's ``linear_before_reset = 1``
  (``n = tanh(W_n x + b_in + r·(R_n h + b_hn))``), the form torch exports.

``_Recurrent`` runs a ``batch_first=True`` torch module on the batch-first sequence (the transpose that the
exporter puts before the node cancels against the one here) and lays its outputs out as ONNX does, so
``BoundedModule`` bounds it with the recurrent rules (``ops/recurrent.py``). Refused, with the node named: peepholes,
``sequence_lens``, ``clip``, ``input_forget``, activations other than the defaults, ``direction = "reverse"``
alone, and a GRU with ``linear_before_reset = 0``.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

_ORDER = {"LSTM": (0, 2, 3, 1), "GRU": (1, 0, 2)}  # torch's gate k is ONNX's gate _ORDER[kind][k]
_DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh")}


class _Recurrent(nn.Module):
    """An ONNX ``LSTM`` / ``GRU`` node: ``rnn`` (``batch_first=True``) on ``X`` in ``layout``; ``states`` says which
    of ``initial_h``, ``initial_c`` the node is given (a state given as None is zeros). Its outputs are ``Y``,
    ``Y_h``, ``Y_c`` (None for a GRU) and, at ``SEQUENCE``, the output sequence as (sequence, batch,
    directions·H): what the exporter makes of ``Y`` for the next layer or the user (``sequence_outputs``)."""

    SEQUENCE = 3

    def __init__(self, rnn: nn.Module, layout: int, states: tuple[bool, bool]) -> None:
        super().__init__()
        self.rnn, self.layout, self.states = rnn, layout, states

    def forward(self, x: Any, *given: Any) -> Any:
        supplied = iter(given)
        h0, c0 = (next(supplied) if present else None for present in self.states)
        if self.layout == 1 and h0 is not None:
            h0 = h0.transpose(0, 1)
        if self.layout == 1 and c0 is not None:
            c0 = c0.transpose(0, 1)
        sequence = x if self.layout == 1 else x.transpose(0, 1)
        lstm = isinstance(self.rnn, nn.LSTM)
        if h0 is None and (c0 is None or not lstm):
            state = None
        elif lstm:
            state = (h0 if h0 is not None else torch.zeros_like(c0), c0 if c0 is not None else torch.zeros_like(h0))
        else:
            state = h0
        out, final = self.rnn(sequence, state)
        batch, length = out.shape[0], out.shape[1]
        directions = 2 if self.rnn.bidirectional else 1
        y = out.reshape(batch, length, directions, self.rnn.hidden_size)  # (batch, sequence, directions, H)
        y = y if self.layout == 1 else y.permute(1, 2, 0, 3)
        finals = (final[0], final[1]) if lstm else (final,)  # indexed: a traced tuple cannot be iterated
        finals = tuple(f.transpose(0, 1) if self.layout == 1 else f for f in finals)
        if not lstm:
            finals += (None,)
        return (y,) + finals + (out.transpose(0, 1),)  # and SEQUENCE: (sequence, batch, directions·H)


def _refuse(node: Any, reason: str) -> NotImplementedError:
    return NotImplementedError(f"ONNX {node.operation_type} node {node.name!r}: {reason}, which boundgraph does not "
                               f"convert")


def _convert(node: Any, graph: Any) -> Any:
    """The converter onnx2torch calls for an ``LSTM`` / ``GRU`` node."""
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    kind, attributes = node.operation_type, node.attributes
    names = list(node.input_values) + [""] * (8 - len(node.input_values))
    x_name, w_name, r_name, b_name, lengths, h_name, c_name = names[:7]
    peepholes = names[7] if kind == "LSTM" else ""
    if kind == "GRU":
        c_name = ""
    if lengths or peepholes:
        raise _refuse(node, "sequence_lens or peepholes are given")
    if attributes.get("clip") is not None or attributes.get("input_forget", 0):
        raise _refuse(node, "clip or input_forget is set")
    activations = attributes.get("activations")
    if activations is not None and tuple(a.decode() if isinstance(a, bytes) else a for a in activations) not in (
            _DEFAULT_ACTIVATIONS[kind], _DEFAULT_ACTIVATIONS[kind] * 2):
        raise _refuse(node, f"its activations are {activations}")
    if kind == "GRU" and attributes.get("linear_before_reset", 0) != 1:
        raise _refuse(node, "linear_before_reset is 0 (torch's GRU applies the reset gate after the state's linear "
                            "map)")
    direction = attributes.get("direction", "forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("forward", "bidirectional"):
        raise _refuse(node, f"direction is {direction!r}")
    for name in (w_name, r_name) + ((b_name,) if b_name else ()):
        if name not in graph.initializers:
            raise _refuse(node, f"its weights {name!r} are computed, not constants")
    W, R = (graph.initializers[n].to_torch() for n in (w_name, r_name))
    hidden = int(attributes.get("hidden_size", R.shape[-1]))
    gates = len(_ORDER[kind])
    B = graph.initializers[b_name].to_torch() if b_name else torch.zeros(W.shape[0], 2 * gates * hidden, dtype=W.dtype)
    rnn = (nn.LSTM if kind == "LSTM" else nn.GRU)(W.shape[-1], hidden, batch_first=True,
                                                 bidirectional=direction == "bidirectional").to(W.dtype)

    def reorder(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t[k * hidden:(k + 1) * hidden] for k in _ORDER[kind]])

    with torch.no_grad():
        for d in range(W.shape[0]):
            suffix = "_l0" + ("_reverse" if d else "")
            getattr(rnn, f"weight_ih{suffix}").copy_(reorder(W[d]))
            getattr(rnn, f"weight_hh{suffix}").copy_(reorder(R[d]))
            getattr(rnn, f"bias_ih{suffix}").copy_(reorder(B[d, :gates * hidden]))
            getattr(rnn, f"bias_hh{suffix}").copy_(reorder(B[d, gates * hidden:]))
    states = (bool(h_name), bool(c_name))
    inputs = (x_name,) + tuple(n for n in (h_name, c_name) if n)
    module = _Recurrent(rnn.eval(), int(attributes.get("layout", 0)), states)
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=inputs,
                                                                                  outputs=node.output_values))


def register() -> None:
    """Add the converters to onnx2torch's registry (once; onnx2torch itself imported)."""
    from onnx2torch.node_converters import registry
    from onnx2torch.node_converters.registry import OperationDescription

    for kind in ("LSTM", "GRU"):
        for version in (7, 14):
            description = OperationDescription(domain=registry.defs.ONNX_DOMAIN, operation_type=kind, version=version)
            if description not in registry._CONVERTER_REGISTRY:
                registry.add_converter(operation_type=kind, version=version)(_convert)


def zero_states(module: Any, node: Any, runs: list) -> Optional[tuple]:
    """The arguments of a ``_Recurrent`` node with each initial state that is all zeros at every batch tried (the
    exporter's ``ConstantOfShape`` of the batch's shape; ``runs``: the values recorded at each batch) dropped, as
    torch's ``None`` state; None if none is."""
    if len(node.args) < 2:
        return None
    kept, dropped = [node.args[0]], False
    target = module.get_submodule(node.target)
    present = [i for i, p in enumerate(target.states) if p]
    states = list(target.states)
    for arg, slot in zip(node.args[1:], present):
        seen = [values.get(arg) for values in runs]
        if all(isinstance(value, torch.Tensor) and not value.any() for value in seen):
            states[slot], dropped = False, True
        else:
            kept.append(arg)
    if not dropped:
        return None
    target.states = tuple(states)
    return tuple(kept)


def sequence_outputs(module: Any) -> bool:
    """The exporter's ``Squeeze(Y, 1)`` (one direction) and ``Reshape(Transpose(Y, (0, 2, 1, 3)), (s, b, 2H))`` (two)
    of a ``layout = 0`` node's ``Y`` read as its ``SEQUENCE`` output: the same values, the transpose of the torch
    module's batch-first output, which the tracer follows (``Y``'s own layout moves the batch to dimension 2).
    True where something changed."""
    import operator

    from onnx2torch.node_converters.transpose import OnnxTranspose

    from .onnx import _Reshape, _Squeeze

    graph, changed = module.graph, False
    for node in list(graph.nodes):
        if node.op != "call_module" or not isinstance(module.get_submodule(node.target), _Recurrent):
            continue
        recurrent = module.get_submodule(node.target)
        if recurrent.layout != 0:
            continue
        directions = 2 if recurrent.rnn.bidirectional else 1
        width = directions * recurrent.rnn.hidden_size
        for y in [u for u in node.users if u.target is operator.getitem and u.args[1] == 0]:
            for user in list(y.users):
                target = module.get_submodule(user.target) if user.op == "call_module" else None
                if directions == 1 and isinstance(target, _Squeeze) and {a % 4 for a in target.axes} == {1}:
                    ends = [user]
                elif isinstance(target, OnnxTranspose) and tuple(target.perm) == (0, 2, 1, 3) and user.users and all(
                        r.op == "call_module" and isinstance(module.get_submodule(r.target), _Reshape)
                        and len(r.meta["tensor_meta"].shape) == 3 and r.meta["tensor_meta"].shape[2] == width
                        for r in user.users):
                    ends = list(user.users)
                else:
                    continue
                with graph.inserting_after(node):
                    sequence = graph.call_function(operator.getitem, (node, _Recurrent.SEQUENCE))
                sequence.meta = dict(ends[0].meta)
                for end in ends:
                    end.replace_all_uses_with(sequence)
                changed = True
    return changed
