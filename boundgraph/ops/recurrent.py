"""Recurrent cells and layers, unrolled onto the other rules when their input is perturbed (``expand``):
``LSTMCell``, ``GRUCell``, ``RNNCell``, and ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (``batch_first=True``; one or
more layers, bidirectional) over the example's sequence length (shapes are constants; the batch varies).

A cell is linear maps of the input and the state, sigmoid / tanh gates and products of gates with states,
which are products of two perturbed tensors (the bilinear rule) once the state depends on the input:

- LSTM (Hochreiter & Schmidhuber 1997): ``i, f, g, o = σ, σ, tanh, σ of x W_ihᵀ + b_ih + h W_hhᵀ + b_hh``,
  ``c' = f·c + i·g``, ``h' = o·tanh(c')``;
- GRU (Cho et al. 2014): ``r, z = σ(x W_irᵀ + h W_hrᵀ + b)``, ``n = tanh(x W_inᵀ + b_in + r·(h W_hnᵀ + b_hn))``,
  ``h' = n + z·(h − n)``;
- RNN: ``h' = tanh`` (or ReLU) ``(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)``.

A state left out is zeros. A layer's outputs are the hidden states stacked over time; its final states
``h_n``/``c_n`` stack layers and directions on dimension 0 (before the batch), so each is a list of the
per-layer, per-direction states (``h_n[-1]`` selects one; another use of the whole stack is refused).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from ..ir import Ref
from .base import Parts, Rule, Several, rule
from .constant import Slot

aten = torch.ops.aten
_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def _cell(build, kind: str, x: Ref, h: Optional[Ref], c: Optional[Ref], w_ih, w_hh, b_ih, b_hh) -> tuple:
    """One step: the new hidden state (and cell state for the LSTM) from the builder's rules."""
    gates_x = build.add("linear", (x, w_ih, b_ih), suffix="input_gates")
    width = build.shape(gates_x)[1] // _GATES[kind]
    gates_h = build.add("linear", (h, w_hh, b_hh), suffix="state_gates") if h is not None else None

    def part(t: Optional[Ref], k: int, bias=None) -> Any:
        if t is None:  # a zero state: only its bias remains
            return None if bias is None else build.add("call", (bias,), dict(fn=_rows, args=(Slot(0), k * width, width),
                                                                             kwargs={}), "bias", perturbed=False)
        return build.add("index", (t,), dict(index=(slice(None), slice(k * width, (k + 1) * width))), "gate")

    def total(k: int) -> Ref:
        a, b = part(gates_x, k), part(gates_h, k, b_hh)
        return a if b is None else build.add("add", (a, b), dict(alpha=1), "summed")

    if kind.startswith("rnn"):
        return build.add("relu" if kind == "rnn_relu" else "tanh", (total(0),)), None
    if kind == "gru":
        r = build.add("sigmoid", (total(0),), suffix="reset")
        z = build.add("sigmoid", (total(1),), suffix="update")
        hidden_n = part(gates_h, 2, b_hh)
        inner = part(gates_x, 2)
        if hidden_n is not None:
            inner = build.add("add", (inner, build.add("mul", (r, hidden_n), suffix="reset_state")), dict(alpha=1))
        n = build.add("tanh", (inner,), suffix="candidate")
        if h is None:
            return build.add("add", (n, build.add("mul", (z, n), suffix="kept")), dict(alpha=-1), "state"), None
        return build.add("add", (n, build.add("mul", (z, build.add("add", (h, n), dict(alpha=-1))), suffix="kept")),
                         dict(alpha=1), "state"), None
    i, f = build.add("sigmoid", (total(0),), suffix="in"), build.add("sigmoid", (total(1),), suffix="forget")
    g, o = build.add("tanh", (total(2),), suffix="cell_in"), build.add("sigmoid", (total(3),), suffix="out")
    new_c = build.add("mul", (i, g), suffix="written")
    if c is not None:
        new_c = build.add("add", (build.add("mul", (f, c), suffix="remembered"), new_c), dict(alpha=1), "cell")
    return build.add("mul", (o, build.add("tanh", (new_c,))), suffix="state"), new_c


def _rows(t, start: int, count: int):
    return t[start:start + count]


def _state(t, index: int):
    """Layer-and-direction ``index`` of a stacked initial state ``(layers · directions, batch, hidden)``."""
    return t[index]


_CELLS = {nn.LSTMCell: "lstm", nn.GRUCell: "gru", nn.RNNCell: None}


@rule("rnn_cell", spellings=tuple(_CELLS))
class RecurrentCell(Rule):
    """``LSTMCell(x, (h, c))``, ``GRUCell(x, h)``, ``RNNCell(x, h)``: one step (module doc); the LSTM's result
    ``(h', c')`` is two nodes."""

    perturbable = (0, 1, 2)

    def canonicalize(self, call):
        m = call.module
        kind = _CELLS[type(m)] or f"rnn_{m.nonlinearity}"
        x, state = call.arg(0, "input"), call.arg(1, "hx", None)
        h, c = (state, None) if state is None or isinstance(state, Ref) else tuple(state)
        operands = (x, h, c, call.param("weight_ih"), call.param("weight_hh"), call.param("bias_ih"),
                    call.param("bias_hh"))
        attrs = dict(kind=kind, module=m)
        if kind == "lstm":
            return Several([("rnn_cell", operands, dict(attrs, output=0)), ("rnn_cell", operands, dict(attrs, output=1))])
        return operands, dict(attrs, output=None)

    def forward(self, x, h, c, w_ih, w_hh, b_ih, b_hh, kind, module, output):
        state = None if h is None else ((h, c) if kind == "lstm" else h)
        result = module(x, state)
        return result if output is None else result[output]

    def expand(self, node, perturbed, build):
        if not any(perturbed[:3]):
            return None
        x, h, c, w_ih, w_hh, b_ih, b_hh = node.operands
        new_h, new_c = _cell(build, node.attrs["kind"], x, h, c, w_ih, w_hh, b_ih, b_hh)
        return build.finish("identity", (new_c if node.attrs["output"] == 1 else new_h,))


_LAYERS = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: None}


@rule("rnn", spellings=tuple(_LAYERS))
class Recurrent(Rule):
    """``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``, unrolled (module doc); with ``batch_first=False`` on
    ``x.transpose(0, 1)`` of a batch-first ``x`` (its node keeps the batch first; the canonicaliser gives its output
    sequence back as the user's ``(sequence, batch, …)`` transpose). Its output sequence
    is one node; each final state of ``h_n`` (and ``c_n``) another, which unrolls the layers up to its own."""

    perturbable = (0, 1, 2)

    def canonicalize(self, call):
        m = call.module
        if not m.batch_first and not call.sequence_first:
            raise call.fail(f"{type(m).__name__} with batch_first=False takes (sequence, batch, features): give it "
                            "x.transpose(0, 1) of a batch-first x, or build it with batch_first=True (boundgraph keeps "
                            "the batch on dimension 0 of the model's inputs)")
        if getattr(m, "proj_size", 0):
            raise call.fail("LSTM with proj_size is not supported")
        if m.training and m.dropout > 0 and m.num_layers > 1:
            raise call.fail("dropout between recurrent layers in training mode has no sound bound: call model.eval()")
        kind = _LAYERS[type(m)] or f"rnn_{m.nonlinearity}"
        x, state = call.arg(0, "input"), call.arg(1, "hx", None)
        h, c = (state, None) if state is None or isinstance(state, Ref) else tuple(state)
        directions = 2 if m.bidirectional else 1
        weights = tuple(call.param(name) for name, _ in m.named_parameters())
        operands = (x, h, c) + weights
        base = dict(kind=kind, module=m, layers=m.num_layers, directions=directions,
                    names=tuple(name for name, _ in m.named_parameters()), swapped=not m.batch_first)
        pieces = [("rnn", operands, dict(base, output="sequence", layer=m.num_layers - 1, direction=0))]
        finals = [(layer, d) for layer in range(m.num_layers) for d in range(directions)]
        pieces += [("rnn", operands, dict(base, output="h", layer=layer, direction=d)) for layer, d in finals]
        if kind == "lstm":
            pieces += [("rnn", operands, dict(base, output="c", layer=layer, direction=d)) for layer, d in finals]
        count = len(finals)

        def assemble(refs: list) -> Any:
            h_n = Parts(refs[1:1 + count])
            return (refs[0], (h_n, Parts(refs[1 + count:])) if kind == "lstm" else h_n)

        sequence, final = call.example
        finals_h = final[0] if kind == "lstm" else final
        examples = [sequence] + list(finals_h) + (list(final[1]) if kind == "lstm" else [])
        return Several(pieces, assemble, examples)

    def forward(self, x, h, c, *weights, kind, module, layers, directions, names, output, layer, direction,
                swapped=False):
        state = None if h is None else ((h, c) if kind == "lstm" else h)
        sequence, final = module(x.transpose(0, 1) if swapped else x, state)
        if output == "sequence":
            return sequence.transpose(0, 1) if swapped else sequence
        index = layer * directions + direction
        if kind == "lstm":
            return final[0][index] if output == "h" else final[1][index]
        return final[index]

    def expand(self, node, perturbed, build):
        if not any(perturbed[:3]):
            return None
        x, h0, c0, *weights = node.operands
        a = node.attrs
        params = dict(zip(a["names"], weights))
        sequence, length = x, build.shape(x)[1]
        for layer in range(a["layer"] + 1):
            outputs = []
            for d in range(a["directions"]):
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                w = [params.get(f"{p}{suffix}") for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                index = layer * a["directions"] + d
                h = None if h0 is None else build.add("call", (h0,), dict(fn=_state, args=(Slot(0), index), kwargs={}),
                                                      "h0", perturbed=False)
                c = None if c0 is None else build.add("call", (c0,), dict(fn=_state, args=(Slot(0), index), kwargs={}),
                                                      "c0", perturbed=False)
                states = [None] * length
                for t in (range(length - 1, -1, -1) if d else range(length)):
                    x_t = build.add("index", (sequence,), dict(index=(slice(None), t)), "step")
                    h, c = _cell(build, a["kind"], x_t, h, c, *w)
                    states[t] = h
                if layer == a["layer"] and d == a["direction"] and a["output"] in ("h", "c"):
                    return build.finish("identity", (h if a["output"] == "h" else c,))
                outputs.append(build.add("cat", tuple(states), dict(dim=1, new=True), "sequence"))
            sequence = outputs[0] if len(outputs) == 1 else build.add("cat", tuple(outputs), dict(dim=2, new=False),
                                                                      "directions")
        return build.finish("identity", (sequence,))
