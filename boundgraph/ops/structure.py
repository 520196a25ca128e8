"""Structural ops: linear maps that move, copy, or average with non-negative weights the values of their
tensor operands, each example on its own (concatenation, slicing, permutation, padding, flipping,
upsampling, pixel shuffling). A rule here is its forward (``apply``) and how a call becomes its
attributes; everything else comes from ``Structural``:

- IBP maps the lower and the upper bounds through the map: exact, since the map is monotone.
- CROWN's transpose is the map's vector-Jacobian product, computed by autograd with the specs folded into
  the batch (the map never mixes examples), so ``A ← Lᵀ A`` costs about one pass of the op; a constant
  operand adds ``A · L(0, constant)`` to the bias.
- LBP pushes its coefficients through the same map (``Rule.forward_linear`` from ``interval``).
"""
from __future__ import annotations

import contextlib
import math
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ir import Interval, Ref
from .base import Rule, Several, is_number, method, rule, spec_dot
from .constant import Slot, fill

aten = torch.ops.aten


class Structural(Rule):
    """Base of the structural ops (module doc). ``apply(*operands, **attrs)`` is the map, linear in its
    ``data`` operands (all of them, or the positions given), which are batch-first and may be perturbed;
    other operands (index tensors) are parameters of the map."""

    data: tuple[int, ...] | None = None

    def check(self, perturbed: tuple[bool, ...]):
        data = range(len(perturbed)) if self.data is None else self.data
        bad = [i for i, p in enumerate(perturbed) if p and i not in data]
        return f"operand(s) {bad} are indices and depend on the perturbed input" if bad else None

    def _is_data(self, i: int) -> bool:
        return self.data is None or i in self.data

    def apply(self, *operands: Any, **attrs: Any) -> Tensor:
        raise NotImplementedError

    def specialize(self, attrs, operand_shapes, out_shape):
        return dict(attrs, in_shapes=tuple(None if s is None else tuple(s[1:]) for s in operand_shapes))

    def forward(self, *operands: Any, in_shapes=None, **attrs: Any) -> Tensor:
        return self.apply(*operands, **attrs)

    def interval(self, *operands: Any, in_shapes=None, **attrs: Any) -> Interval:
        lower = self.apply(*(o.lower if isinstance(o, Interval) else o for o in operands), **attrs)
        upper = self.apply(*(o.upper if isinstance(o, Interval) else o for o in operands), **attrs)
        return Interval(lower, upper)

    def offset(self, **attrs: Any) -> bool:
        """Whether the map adds a constant of its own (``pad`` with a value other than 0)."""
        return False

    def backward(self, A: Tensor, *operands: Any, in_shapes=None, **attrs: Any):
        As = self.transpose(A, operands, in_shapes, attrs)
        bias: Any = 0
        if self.offset(**attrs) or any(isinstance(o, Tensor) and self._is_data(i) for i, o in enumerate(operands)):
            constant = list(operands)
            for i, o in enumerate(operands):
                if o is None:
                    constant[i] = torch.zeros(A.shape[0], *in_shapes[i], dtype=A.dtype, device=A.device)
            bias = spec_dot(A, self.apply(*constant, **attrs))
        return tuple(As), bias

    def transpose(self, A: Tensor, operands: tuple, in_shapes, attrs: dict) -> list:
        """``Lᵀ A`` for each perturbed (None) operand, by autograd through ``apply`` (None for the others); under
        ``torch.compile`` by ``torch.func.vjp``, a traceable transform (``autograd.grad`` inside a compiled graph
        cannot be differentiated)."""
        batch, specs = A.shape[:2]
        moving = [i for i, o in enumerate(operands) if o is None]
        flat = A.reshape(batch * specs, *A.shape[2:])
        compiling = torch.compiler.is_compiling()
        with contextlib.ExitStack() as scope:
            if not compiling:
                scope.enter_context(torch.inference_mode(False))
                scope.enter_context(torch.enable_grad())
            filled = list(operands)
            for i, o in enumerate(operands):  # constant data: its part of the output is the bias, below
                if isinstance(o, Tensor) and i not in moving and self._is_data(i):
                    filled[i] = torch.zeros(batch * specs, *o.shape[1:], dtype=o.dtype, device=o.device)

            def apply(*moved: Tensor) -> Tensor:
                args = list(filled)
                for i, z in zip(moving, moved):
                    args[i] = z
                return self.apply(*args, **attrs)

            zeros = [torch.zeros(batch * specs, *in_shapes[i], dtype=A.dtype, device=A.device,
                                 requires_grad=not compiling) for i in moving]
            if compiling:
                grads = torch.func.vjp(apply, *zeros)[1](flat)
            else:
                grads = torch.autograd.grad(apply(*zeros), zeros, flat.clone() if flat.is_inference() else flat,
                                            create_graph=A.requires_grad)
        As: list = [None] * len(operands)
        for i, g in zip(moving, grads):
            As[i] = g.reshape(batch, specs, *g.shape[1:])
        return As


def _batch_kept(call, dims) -> None:
    if any(d == 0 for d in dims):
        raise call.fail("the op moves or reduces the batch dimension (dimension 0); boundgraph bounds each example "
                        "on its own")


def _dim(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


_PERMUTATIONS = (torch.permute, method("permute"), aten.permute.default, torch.transpose, method("transpose"),
                 aten.transpose.int, torch.swapaxes, method("swapaxes"), torch.movedim, method("movedim"))


def permutation_dims(spelling, args: tuple, kwargs: dict, rank: int) -> list:
    """The ``dims`` of ``x.permute(dims)`` that a permutation's spelling (``transpose``, ``movedim``, ...) means."""
    def arg(i: int, name: str):
        return args[i] if i < len(args) else kwargs[name]

    if spelling in (torch.transpose, method("transpose"), aten.transpose.int, torch.swapaxes, method("swapaxes")):
        a, b = _dim(arg(1, "dim0"), rank), _dim(arg(2, "dim1"), rank)
        dims = list(range(rank))
        dims[a], dims[b] = b, a
        return dims
    if spelling in (torch.movedim, method("movedim")):
        source, destination = arg(1, "source"), arg(2, "destination")
        source = [_dim(d, rank) for d in ((source,) if isinstance(source, int) else source)]
        destination = [_dim(d, rank) for d in ((destination,) if isinstance(destination, int) else destination)]
        dims = [None] * rank
        for a, b in zip(source, destination):
            dims[b] = a
        rest = iter(d for d in range(rank) if d not in source)
        return [next(rest) if d is None else d for d in dims]
    dims = args[1:] if len(args) > 2 or not isinstance(arg(1, "dims"), (tuple, list)) else arg(1, "dims")
    return [_dim(d, rank) for d in dims]


@rule("permute", spellings=_PERMUTATIONS)
class Permute(Structural):
    """``x.permute(dims)``, with the batch kept first (``transpose``, ``swapaxes``, ``movedim`` are permutations)."""

    def canonicalize(self, call):
        dims = permutation_dims(call.spelling, call.args, call.kwargs, len(call.operand_shape(call.arg(0, "input"))))
        if dims[0] != 0:
            error = call.fail("the permutation moves the batch dimension (dimension 0); only indexing the new first "
                              "dimension (timm's qkv.permute(2, 0, 3, 1, 4).unbind(0)) may follow it")
            error.permutation = (call.arg(0, "input"), tuple(dims))  # the pass may still take it apart
            raise error
        return (call.arg(0, "input"),), dict(dims=tuple(dims))

    def apply(self, x, dims):
        return x.permute(dims)


@rule("index", spellings=(operator.getitem, torch.select, method("select"), aten.select.int, torch.narrow,
                          method("narrow"), aten.slice.Tensor, torch.index_select, method("index_select"),
                          aten.index_select.default, aten.index.Tensor))
class Index(Structural):
    """``x[index]``: slices, integers, ``None``, ``...`` and constant index tensors, the batch dimension
    sliced whole (``select``, ``narrow``, ``index_select`` and aten's ``slice`` are spelled as indices).
    Constant index tensors are operands (``Slot``s in the index), read at every call."""

    data = (0,)

    def canonicalize(self, call):
        x = call.arg(0, "input")
        rank = len(call.operand_shape(x))
        whole = (slice(None),)
        if call.spelling in (torch.select, method("select"), aten.select.int):
            index = whole * _dim(call.arg(1, "dim"), rank) + (call.arg(2, "index"),)
        elif call.spelling in (torch.narrow, method("narrow")):
            start = call.arg(2, "start")
            index = whole * _dim(call.arg(1, "dim"), rank) + (slice(start, start + call.arg(3, "length")),)
        elif call.spelling is aten.slice.Tensor:
            index = whole * _dim(call.arg(1, "dim", 0), rank) + (
                slice(call.arg(2, "start", None), call.arg(3, "end", None), call.arg(4, "step", 1)),)
        elif call.spelling in (torch.index_select, method("index_select"), aten.index_select.default):
            index = whole * _dim(call.arg(1, "dim"), rank) + (call.arg(2, "index"),)
        elif call.spelling is aten.index.Tensor:
            index = tuple(slice(None) if i is None else i for i in call.arg(1, "indices"))
        else:
            index = call.arg(1, "idx")
        index = index if isinstance(index, tuple) else (index,)
        first = index[0] if index else slice(None)
        whole_range = isinstance(first, slice) and first.start in (None, 0) and first.step in (None, 1) and (
            first.stop is None or (isinstance(first.stop, int) and first.stop >= 2 ** 62))  # aten's x[0:]
        if not (whole_range or first is Ellipsis):
            raise call.fail("the index selects along the batch dimension (dimension 0); slice it whole")
        tensors: list = []

        def slot(part):
            if isinstance(part, Ref):
                tensors.append(part)
                return Slot(len(tensors))
            return part

        index = tuple(slot(part) for part in index)  # fills ``tensors``
        return (x, *tensors), dict(index=index)

    def apply(self, x, *tensors, index):
        return x[fill(index, (None,) + tensors)]


@rule("cat", spellings=(torch.cat, torch.concat, torch.concatenate, aten.cat.default, torch.stack, aten.stack.default,
                        torch.hstack, torch.vstack, torch.dstack))
class Cat(Structural):
    """``torch.cat(tensors, dim)`` along a dimension other than the batch's (``stack`` is ``cat`` of
    unsqueezed tensors: ``new=True``); ``hstack``, ``vstack``, ``dstack`` are their dimension."""

    def canonicalize(self, call):
        tensors = tuple(call.arg(0, "tensors"))
        rank = len(call.operand_shape(next(t for t in tensors if isinstance(t, Ref)))) if any(
            isinstance(t, Ref) for t in tensors) else 0
        new = call.spelling in (torch.stack, aten.stack.default)
        fixed = {torch.hstack: 1, torch.vstack: 0, torch.dstack: 2}
        dim = fixed.get(call.spelling, call.arg(1, "dim", 0))
        dim = _dim(dim, rank + (1 if new else 0))
        _batch_kept(call, (dim,))
        return tensors, dict(dim=dim, new=new)

    def apply(self, *tensors, dim, new):
        return torch.stack(tensors, dim) if new else torch.cat(tensors, dim)


@rule("flip", spellings=(torch.flip, method("flip"), aten.flip.default, torch.roll, method("roll"), aten.roll.default))
class Flip(Structural):
    """``flip(dims)`` or ``roll(shifts, dims)`` over dimensions other than the batch's."""

    def canonicalize(self, call):
        rank = len(call.operand_shape(call.arg(0, "input")))
        if call.spelling in (torch.roll, method("roll"), aten.roll.default):
            shifts, dims = call.arg(1, "shifts"), call.arg(2, "dims", None)
            if dims is None:
                raise call.fail("roll without dims flattens the batch into the roll")
            shifts, dims = (shifts,) if isinstance(shifts, int) else tuple(shifts), (
                (dims,) if isinstance(dims, int) else tuple(dims))
            dims = tuple(_dim(d, rank) for d in dims)
            _batch_kept(call, dims)
            return (call.arg(0, "input"),), dict(dims=dims, shifts=shifts)
        dims = call.args[1:] if len(call.args) > 2 else call.arg(1, "dims")  # x.flip(1, 3) or flip(x, (1, 3))
        dims = tuple(_dim(d, rank) for d in ((dims,) if isinstance(dims, int) else dims))
        _batch_kept(call, dims)
        return (call.arg(0, "input"),), dict(dims=dims, shifts=None)

    def apply(self, x, dims, shifts):
        return x.flip(dims) if shifts is None else torch.roll(x, shifts, dims)


@rule("expand", spellings=(method("expand"), method("expand_as"), torch.broadcast_to, method("broadcast_to"),
                           aten.expand.default, method("repeat"), aten.repeat.default, torch.tile, method("tile")))
class Expand(Structural):
    """``expand`` / ``broadcast_to`` (copies along size-1 dimensions) and ``repeat`` / ``tile`` (copies of the
    whole), the batch kept: the per-example shape and repeats are read off the traced call."""

    def canonicalize(self, call):
        x = call.arg(0, "input")
        in_shape, out_shape = call.operand_shape(x), call.out_shape
        if out_shape[0] != in_shape[0]:
            raise call.fail("the op copies along the batch dimension")
        if len(out_shape) != len(in_shape):
            raise call.fail("the op adds dimensions in front of the batch dimension")
        if call.spelling in (method("repeat"), aten.repeat.default, torch.tile, method("tile")):
            return (x,), dict(repeats=tuple(o // i for o, i in zip(out_shape, in_shape))[1:], shape=None)
        return (x,), dict(repeats=None, shape=tuple(out_shape[1:]))

    def apply(self, x, repeats, shape):
        return x.expand(x.shape[0], *shape) if repeats is None else x.repeat(1, *repeats)


_PAD_MODES = {"constant", "reflect", "replicate", "circular"}
_ATEN_PADS = {aten.reflection_pad1d.default: "reflect", aten.reflection_pad2d.default: "reflect",
              aten.reflection_pad3d.default: "reflect", aten.replication_pad1d.default: "replicate",
              aten.replication_pad2d.default: "replicate", aten.replication_pad3d.default: "replicate"}


@rule("pad", spellings=(F.pad, aten.pad.default, aten.constant_pad_nd.default, nn.ZeroPad1d, nn.ZeroPad2d,
                        nn.ZeroPad3d, nn.ConstantPad1d,
                        nn.ConstantPad2d, nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
                        nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d, nn.CircularPad1d,
                        nn.CircularPad2d, nn.CircularPad3d) + tuple(_ATEN_PADS))
class Pad(Structural):
    """``F.pad`` in every mode (constant value, reflect, replicate, circular), never along the batch."""

    def canonicalize(self, call):
        x = call.arg(0, "input")
        if call.module is not None:
            m = call.module
            mode = {"Zero": "constant", "Constant": "constant", "Reflection": "reflect", "Replication": "replicate",
                    "Circular": "circular"}[next(k for k in ("Zero", "Constant", "Reflection", "Replication", "Circular")
                                                 if type(m).__name__.startswith(k))]
            pad, value = tuple(m.padding), float(getattr(m, "value", 0.0))
        elif call.spelling is aten.constant_pad_nd.default:
            pad, mode, value = tuple(call.arg(1, "pad")), "constant", float(call.arg(2, "value", 0.0))
        elif call.spelling in _ATEN_PADS:
            pad, mode, value = tuple(call.arg(1, "padding")), _ATEN_PADS[call.spelling], 0.0
        else:
            pad, mode = tuple(call.arg(1, "pad")), call.arg(2, "mode", "constant")
            value = call.arg(3, "value", None)
            value = 0.0 if value is None else float(value)
        if mode not in _PAD_MODES:
            raise call.fail(f"pad mode {mode!r} is not supported")
        rank = len(call.operand_shape(x))
        if len(pad) // 2 >= rank:
            raise call.fail("the padding reaches the batch dimension")
        return (x,), dict(pad=pad, mode=mode, value=value)

    def offset(self, pad, mode, value):
        return mode == "constant" and value != 0

    def apply(self, x, pad, mode, value):
        if mode == "constant":
            return F.pad(x, pad, mode, value)
        return F.pad(x, pad, mode)


@rule("pixel_shuffle", spellings=(nn.PixelShuffle, F.pixel_shuffle, aten.pixel_shuffle.default, nn.PixelUnshuffle,
                                  F.pixel_unshuffle, aten.pixel_unshuffle.default, nn.ChannelShuffle,
                                  F.channel_shuffle, aten.channel_shuffle.default))
class PixelShuffle(Structural):
    """``pixel_shuffle(r)``, ``pixel_unshuffle(r)`` and ``channel_shuffle(groups)``: permutations."""

    def canonicalize(self, call):
        kind = ("unshuffle" if call.spelling in (nn.PixelUnshuffle, F.pixel_unshuffle, aten.pixel_unshuffle.default)
                else "channel" if call.spelling in (nn.ChannelShuffle, F.channel_shuffle, aten.channel_shuffle.default)
                else "shuffle")
        if call.module is not None:
            m = call.module
            factor = m.groups if kind == "channel" else (m.downscale_factor if kind == "unshuffle" else m.upscale_factor)
        else:
            factor = call.arg(1, {"channel": "groups", "unshuffle": "downscale_factor",
                                  "shuffle": "upscale_factor"}[kind])
        return (call.arg(0, "input"),), dict(kind=kind, factor=int(factor))

    def apply(self, x, kind, factor):
        if kind == "channel":
            return F.channel_shuffle(x, factor)
        return F.pixel_unshuffle(x, factor) if kind == "unshuffle" else F.pixel_shuffle(x, factor)


_RESAMPLING = {"nearest", "nearest-exact", "linear", "bilinear", "trilinear", "area"}


@rule("interpolate", spellings=(F.interpolate, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
                                aten.upsample_nearest2d.vec, aten.upsample_bilinear2d.vec))
class Interpolate(Structural):
    """``F.interpolate`` / ``nn.Upsample`` to the traced output size, nearest or (bi/tri)linear (non-negative
    weights: monotone); bicubic's negative weights are refused."""

    def canonicalize(self, call):
        size, scale, recompute = tuple(call.out_shape[2:]), None, None
        if call.module is not None:
            m = call.module
            mode = m.mode
            align = m.align_corners
            if m.scale_factor is not None:
                size, scale, recompute = None, m.scale_factor, m.recompute_scale_factor
        elif call.spelling in (aten.upsample_nearest2d.vec, aten.upsample_bilinear2d.vec):
            mode = "nearest" if call.spelling is aten.upsample_nearest2d.vec else "bilinear"
            align = call.arg(2, "align_corners", False) if mode == "bilinear" else None
        else:
            mode, align = call.arg(3, "mode", "nearest"), call.arg(4, "align_corners", None)
            if call.arg(2, "scale_factor", None) is not None:
                size, scale, recompute = None, call.arg(2, "scale_factor"), call.arg(5, "recompute_scale_factor", None)
            if call.arg(6, "antialias", False):
                raise call.fail("antialiased interpolation is not supported")
        if mode not in _RESAMPLING:
            raise call.fail(f"interpolation mode {mode!r} is not supported (its weights can be negative)")
        return (call.arg(0, "input"),), dict(size=size, scale_factor=scale, mode=mode, recompute=recompute,
                                            align_corners=None if mode in ("nearest", "nearest-exact", "area") else align)

    def apply(self, x, size, scale_factor, mode, recompute, align_corners):
        """As the model calls it: a scale factor (with its own coordinate mapping) or the output size."""
        return F.interpolate(x, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners,
                             recompute_scale_factor=recompute)



_SPLITS = (torch.split, method("split"), aten.split.Tensor, aten.split_with_sizes.default, torch.chunk, method("chunk"),
           aten.chunk.default, torch.unbind, method("unbind"), aten.unbind.int, torch.tensor_split,
           method("tensor_split"), method("split_with_sizes"))


@rule("split", spellings=_SPLITS)
class Split(Rule):
    """``split``, ``chunk``, ``unbind`` and ``tensor_split`` along a dimension other than the batch's: one
    ``index`` node per piece (a slice, or for ``unbind`` a selection), so each piece is a structural map."""

    def canonicalize(self, call):
        x = call.arg(0, "input")
        rank = len(call.operand_shape(x))
        unbind = call.spelling in (torch.unbind, method("unbind"), aten.unbind.int)
        default = 0
        dim = _dim(call.arg(1 if unbind else 2, "dim", default), rank)
        _batch_kept(call, (dim,))
        length = call.operand_shape(x)[dim]
        whole = (slice(None),) * dim
        if unbind:
            return Several([("index", (x,), dict(index=whole + (i,))) for i in range(length)])
        pieces = self._pieces(call, length)
        return Several([("index", (x,), dict(index=whole + (slice(a, b),))) for a, b in pieces])

    @staticmethod
    def _pieces(call, length: int) -> list[tuple[int, int]]:
        """The ``[start, end)`` of every piece, as torch cuts them."""
        how = call.arg(1, "split_size_or_sections" if call.spelling in (torch.split, method("split")) else "chunks",
                       None)
        if call.spelling in (torch.chunk, method("chunk"), aten.chunk.default):
            size = -(-length // how)
            sizes = [min(size, length - s) for s in range(0, length, size)]
        elif call.spelling in (torch.tensor_split, method("tensor_split")):
            if isinstance(how, int):
                sizes = [length // how + (1 if i < length % how else 0) for i in range(how)]
            else:
                cuts = [0] + [min(max(c, 0), length) for c in how] + [length]
                return [(a, max(a, b)) for a, b in zip(cuts[:-1], cuts[1:])]
        elif isinstance(how, int):
            sizes = [min(how, length - s) for s in range(0, length, how)] or [0]
        else:
            sizes = list(how)
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return [(a, a + n) for a, n in zip(starts, sizes)]


@rule("repeat_interleave", spellings=(torch.repeat_interleave, method("repeat_interleave"),
                                      aten.repeat_interleave.self_int))
class RepeatInterleave(Structural):
    """``x.repeat_interleave(repeats, dim)`` with a constant number of repeats, along a dimension other than
    the batch's: copies of each element."""

    def canonicalize(self, call):
        x = call.arg(0, "input")
        repeats, dim = call.arg(1, "repeats"), call.arg(2, "dim", None)
        if dim is None or not isinstance(repeats, int):
            raise call.fail("repeat_interleave needs an integer number of repeats and a dim other than the batch's")
        dim = _dim(dim, len(call.operand_shape(x)))
        _batch_kept(call, (dim,))
        return (x,), dict(repeats=repeats, dim=dim)

    def apply(self, x, repeats, dim):
        return x.repeat_interleave(repeats, dim)


@rule("where", spellings=(torch.where, method("where"), aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther,
                          aten.where.Scalar))
class Where(Structural):
    """``torch.where(condition, a, b)`` with a constant (or integer-input) condition: ``a`` where it is True,
    ``b`` elsewhere, either or both perturbed, the other a constant tensor or number: a linear map of ``(a, b)``
    (plus the constant's part). IBP selects the bounds; CROWN passes ``A`` back to each branch where it is
    selected. A number ``−inf`` is taken as the dtype's lowest finite number, as ``masked_fill`` does."""

    data = (1, 2)

    def canonicalize(self, call):
        if len(call.args) + len(call.kwargs) < 3:
            raise call.fail("torch.where(condition) (the indices of its nonzeros) has no bound; only "
                            "torch.where(condition, a, b)")
        if call.spelling == method("where"):  # x.where(condition, y)
            condition, a, b = call.arg(1, "condition"), call.arg(0, "input"), call.arg(2, "other")
        else:
            condition, a, b = call.arg(0, "condition"), call.arg(1, "input"), call.arg(2, "other")
        numbers = [v for v in (a, b) if is_number(v)]
        return (condition, a, b), dict(constant=any(v != 0 for v in numbers))

    def offset(self, constant=False):
        return constant

    def transpose(self, A, operands, in_shapes, attrs):
        """A constant branch need not be batch first (``torch.linspace(...)``): it adds nothing to ``Lᵀ A``, so it
        is a number 0 there (its part of the output is the bias)."""
        operands = tuple(0.0 if i in self.data and isinstance(o, Tensor) else o for i, o in enumerate(operands))
        return super().transpose(A, operands, in_shapes, attrs)

    def apply(self, condition, a, b, constant=False):
        dtype = (a if isinstance(a, Tensor) else b).dtype
        return torch.where(condition, *(v if isinstance(v, Tensor) else _finite(v, dtype) for v in (a, b)))


def _finite(value: float, dtype: torch.dtype) -> float:
    """A constant filled in by ``where`` or ``masked_fill``: ``−inf`` as the dtype's lowest finite number."""
    return torch.finfo(dtype).min if value == -math.inf else value


@rule("masked_fill", spellings=(torch.masked_fill, method("masked_fill"), aten.masked_fill.Scalar))
class MaskedFill(Structural):
    """``x.masked_fill(mask, value)`` with a constant (or integer-input) mask and a constant number: ``x`` where
    the mask is False, ``value`` where it is True (an affine map). ``−inf`` is filled as the dtype's lowest
    finite number, which ``exp`` (softmax) also takes to 0, so that the filled positions' bounds stay finite
    intervals rather than ``[−inf, −inf]`` (which the overflow guard would have to treat as unbounded)."""

    data = (0,)

    def canonicalize(self, call):
        value = call.arg(2, "value")
        if not isinstance(value, (int, float)):
            raise call.fail("masked_fill with a tensor value is not supported; only with a constant number")
        return (call.arg(0, "input"), call.arg(1, "mask")), dict(value=float(value))

    def offset(self, value):
        return value != 0

    def apply(self, x, mask, value):
        return x.masked_fill(mask, _finite(value, x.dtype))
