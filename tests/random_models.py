"""Random models, inputs, perturbation sets and specifications for the property tests and for
``benchmarks/fuzz.py``. Every draw goes through one ``Choices`` interface, so hypothesis (which shrinks a
failure to a small example and replays it) and a plain seeded fuzzer explore the same space.

Families: small MLPs (every ReLU spelling, ParamRamp, every registered activation of the line-fitting
machine, two activations in a row, batch norm, residuals,
dropout in eval mode, input normalisation), deep (8–12 layers) and wide (256–1024) MLPs, DAGs that reuse
a module, activation-free models, CNNs (any stride, padding, dilation, groups; average and max pooling),
nets of the vision zoos' ops (max / adaptive pooling, cat of branches, channel shuffle, pads, upsampling,
pixel shuffle, slices, transposed convolutions, channels-last linear layers, squeeze-excite gates and
attention-like products of perturbed tensors), and
float32 networks whose intervals overflow. Layers get extreme weight scales (×100, ×1e-3, zero) and dead
ReLUs; batch norm may train (bounds then use the clean batch's statistics). Perturbations: L∞ and L2
balls, clip domains that cut them (numbers or per-element tensors), per-example radii with zeros, boxes
with degenerate coordinates.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from boundgraph import Box, L2Ball, LinfBall, ParamRamp
from boundgraph.ops import RULES, SPELLINGS
from boundgraph.ops.elementwise import Elementwise

FAMILIES = ("mlp", "mlp", "mlp", "deep", "wide", "dag", "linear", "cnn", "cnn", "vision", "vision", "overflow")
SEQUENCE_FAMILIES = ("sequence",)  # attention, norms, recurrence: in the fuzzer and their own property test
ACTIVATIONS = ((), ("relu",), ("relu",), ("relu",), ("ramp",), ("relu", "ramp"), ("ramp", "relu"), ("relu", "relu"))
# with every other registered activation of the line-fitting machine ("any"), alone and beside ReLU
EVERY_ACTIVATION = ACTIVATIONS + (("any",), ("any",), ("any", "relu"), ("relu", "any"), ("any", "any"))
ARGUMENTS = {"negative_slope": (0.01, 0.2, -0.5, 1.5), "alpha": (1.0, 0.5, 2.0), "approximate": ("none", "tanh"),
             "beta": (1.0, 2.0), "threshold": (20.0, 1.0), "min_val": (-1.0, 0.0, -2.0), "max_val": (1.0, 6.0, 0.5)}
SCALES = (1.0, 1.0, 1.0, 1.0, 1.0, 100.0, 1e-3, 0.0)


class Choices(Protocol):
    def integer(self, low: int, high: int) -> int: ...
    def boolean(self) -> bool: ...
    def choice(self, options: Sequence) -> Any: ...
    def real(self, low: float, high: float) -> float: ...


class Seeded:
    """Choices from a seeded ``random.Random`` (the fuzzer's)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def boolean(self) -> bool:
        return self.rng.random() < 0.5

    def choice(self, options: Sequence) -> Any:
        return options[self.rng.randrange(len(options))]

    def real(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high)


class Drawn:
    """Choices drawn by hypothesis (``st.composite``'s ``draw``), so failures shrink and replay."""

    def __init__(self, draw) -> None:
        from hypothesis import strategies as st
        self.draw, self.st = draw, st

    def integer(self, low: int, high: int) -> int:
        return self.draw(self.st.integers(low, high))

    def boolean(self) -> bool:
        return self.draw(self.st.booleans())

    def choice(self, options: Sequence) -> Any:
        return self.draw(self.st.sampled_from(list(options)))

    def real(self, low: float, high: float) -> float:
        return self.draw(self.st.floats(low, high))


@dataclass
class Case:
    family: str
    model: nn.Module
    x0: torch.Tensor
    perturbation: Any
    C: Optional[torch.Tensor]

    def __repr__(self) -> str:
        spec = "" if self.C is None else f", C {tuple(self.C.shape)}"
        mode = "train" if self.model.training else "eval"
        return f"Case({self.family}, x0 {tuple(self.x0.shape)} {self.x0.dtype}, {self.perturbation!r}{spec}, {mode})"


# ----- building blocks -------------------------------------------------------------------------------

class Lambda(nn.Module):
    """A function as a module (fx traces through it, so its spelling reaches the compiler)."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class Residual(nn.Module):
    """``body(x) + x``, or ``x − body(x)``."""

    def __init__(self, body: nn.Module, subtract: bool = False) -> None:
        super().__init__()
        self.body, self.subtract = body, subtract

    def forward(self, x):
        return x - self.body(x) if self.subtract else self.body(x) + x


class Normalize(nn.Module):
    """``(x − mean) / std · scale`` with buffers."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.scale = scale

    def forward(self, x):
        return (x - self.mean) / self.std * self.scale


class SharedDag(nn.Module):
    """A DAG that applies one module twice and joins branches: ``h = σ(A x)``, ``a = σ(S h)``,
    ``b = σ(S a)`` (the same ``S``), ``head(a ± b ± h)``."""

    def __init__(self, d: int, width: int, activation, signs: tuple[float, float], outputs: int) -> None:
        super().__init__()
        self.inp, self.shared, self.head = nn.Linear(d, width), nn.Linear(width, width), nn.Linear(width, outputs)
        self.act, self.signs = activation, signs

    def forward(self, x):
        h = self.act(self.inp(x))
        a = self.act(self.shared(h))
        b = self.act(self.shared(a))
        return self.head(a + self.signs[0] * b + self.signs[1] * h)


def _relu(c: Choices) -> nn.Module:
    return c.choice([nn.ReLU(), Lambda(F.relu), Lambda(torch.relu), Lambda(lambda t: t.relu())])


def _elementwise(c: Choices) -> nn.Module:
    """Any registered activation of the line-fitting machine defined on the whole line (the registry
    decides: a new one joins the property tests by being registered), with random arguments, called
    through one of its function spellings."""
    names = sorted(n for n, r in RULES.items() if isinstance(r, Elementwise)
                   and type(r).domain_error is Elementwise.domain_error)
    name = c.choice(names)
    attrs = {p: c.choice(ARGUMENTS.get(p, (default,))) for p, default in RULES[name].parameters}
    function = next(s for s, r in SPELLINGS.items() if r == name and not isinstance(s, (type, tuple))
                    and getattr(s, "__module__", "") in ("torch", "torch.nn.functional", "torch._C._nn")
                    and not getattr(s, "__name__", "_").endswith("_"))
    return Lambda(lambda t: function(t, **attrs))


def _activation(c: Choices, kind: str, features: int) -> nn.Module:
    if kind == "any":
        return _elementwise(c)
    return _relu(c) if kind == "relu" else ParamRamp(features, eta=c.choice([0.0, 0.01, 0.3]),
                                                     r=c.choice([0.0, 0.5, 2.0]))


def randomize_bn(bn: nn.Module, generator: torch.Generator) -> nn.Module:
    """Random running statistics and affine parameters (a fresh batch norm is the identity)."""
    n = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
        bn.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
        bn.weight.copy_(torch.randn(n, generator=generator))
        bn.bias.copy_(torch.randn(n, generator=generator) * 0.3)
    return bn


def _extreme(c: Choices, layer: nn.Module) -> None:
    """Scale a layer's weight by ×100, ×1e-3 or 0 (rarely), or kill its ReLUs by a very negative bias."""
    with torch.no_grad():
        layer.weight.mul_(c.choice(SCALES))
        if layer.bias is not None and c.integer(0, 7) == 0:
            layer.bias.fill_(-50.0)


def _mlp(c: Choices, generator: torch.Generator, depth: int, widths: Sequence[int], activations=ACTIVATIONS,
         training: bool = False) -> tuple[nn.Module, int]:
    d = c.integer(1, 6)
    layers: list = []
    if c.boolean():
        layers.append(Normalize(torch.randn(d, generator=generator) * 0.1, torch.rand(d, generator=generator) + 0.5,
                                c.choice([1.0, -2.0])))
    width = d
    for _ in range(depth):
        new = c.choice(widths)
        linear = nn.Linear(width, new, bias=c.boolean())
        _extreme(c, linear)
        block: list = [linear]
        if c.boolean():
            block.append(randomize_bn(nn.BatchNorm1d(new), generator))
        block += [_activation(c, kind, new) for kind in c.choice(activations)]
        if not training and c.integer(0, 3) == 0:
            block.append(nn.Dropout(0.3))
        if new == width and c.boolean():
            layers.append(Residual(nn.Sequential(*block), subtract=c.boolean()))
        else:
            layers.extend(block)
        width = new
    layers.append(nn.Linear(width, c.integer(1, 4)))
    return nn.Sequential(*layers), d


def _cnn(c: Choices, generator: torch.Generator, activations=ACTIVATIONS) -> tuple[nn.Module, tuple]:
    channels, size = c.integer(1, 3), c.integer(5, 9)
    layers: list = []
    if c.boolean():
        layers.append(Normalize(torch.randn(channels, 1, 1, generator=generator) * 0.1,
                                torch.rand(channels, 1, 1, generator=generator) + 0.5, 1.0))
    ch, h = channels, size
    for _ in range(c.integer(1, 2)):
        groups = c.choice([g for g in (1, 2, 3) if ch % g == 0])
        out = groups * c.integer(1, 2)
        k, stride, padding, dilation = c.integer(1, 3), c.integer(1, 2), c.integer(0, 2), c.integer(1, 2)
        if (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1 < 1:
            continue
        conv = nn.Conv2d(ch, out, k, stride=stride, padding=padding, dilation=dilation, groups=groups,
                         bias=c.boolean())
        _extreme(c, conv)
        layers.append(conv)
        ch, h = out, (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
        if c.boolean():
            layers.append(randomize_bn(nn.BatchNorm2d(ch), generator))
        layers += [_activation(c, kind, ch) for kind in c.choice(activations)]
        if c.boolean():
            layers += [Residual(nn.Conv2d(ch, ch, 3, padding=1), subtract=False), nn.ReLU()]
        if h >= 2 and c.boolean():
            pool, stride, padding = c.integer(1, 2), c.integer(1, 2), c.integer(0, 1)
            padding = min(padding, pool // 2)
            if c.boolean():
                layers.append(nn.AvgPool2d(pool, stride=stride, padding=padding, count_include_pad=c.boolean()))
            else:
                layers.append(nn.MaxPool2d(pool, stride=stride, padding=padding))
            h = (h + 2 * padding - pool) // stride + 1
    probe = nn.Sequential(*layers).eval()(torch.zeros(1, channels, size, size))
    flatten = c.choice([nn.Flatten(), Lambda(lambda t: t.flatten(1)), Lambda(lambda t: t.view(t.size(0), -1)),
                        Lambda(lambda t: torch.reshape(t, (t.shape[0], -1)))])
    layers += [flatten, nn.Linear(probe[0].numel(), c.integer(1, 3))]
    return nn.Sequential(*layers), (channels, size, size)


class Branches(nn.Module):
    """Inception- / DenseNet-style: branches of one input joined by ``cat`` (``stack`` then ``flatten``), the
    input itself among them or not."""

    def __init__(self, branches: list, keep_input: bool, stack: bool) -> None:
        super().__init__()
        self.branches, self.keep_input, self.stack = nn.ModuleList(branches), keep_input, stack

    def forward(self, x):
        parts = [b(x) for b in self.branches] + ([x] if self.keep_input else [])
        if self.stack:
            return torch.stack(parts, 2).flatten(1, 2)
        return torch.cat(parts, dim=1)


class Shuffle(nn.Module):
    """ShuffleNet's channel shuffle by view / transpose / view (or ``channel_shuffle``), then a split in two
    with one half processed."""

    def __init__(self, channels: int, body: nn.Module, functional: bool) -> None:
        super().__init__()
        self.groups, self.body, self.functional = 2, body, functional

    def forward(self, x):
        b, ch, h, w = x.shape
        if self.functional:
            x = F.channel_shuffle(x, self.groups)
        else:
            x = x.view(b, self.groups, ch // self.groups, h, w).transpose(1, 2).reshape(b, ch, h, w)
        left, right = x.chunk(2, dim=1)
        return torch.cat([left, self.body(right)], dim=1)


class Gate(nn.Module):
    """Squeeze-excite: the input scaled by a gate computed from its global average (two perturbed tensors
    multiplied), or attention-like mixing of positions ``(x xᵀ) x`` scaled down."""

    def __init__(self, channels: int, gate: nn.Module, attention: bool) -> None:
        super().__init__()
        self.fc, self.gate, self.attention = nn.Conv2d(channels, channels, 1), gate, attention

    def forward(self, x):
        if self.attention:
            tokens = x.flatten(2)
            return (tokens @ tokens.transpose(1, 2) @ tokens / tokens.shape[-1]).view_as(x)
        return x * self.gate(self.fc(x.mean((2, 3), keepdim=True)))


def _vision_block(c: Choices, ch: int, h: int, w: int, every) -> tuple[nn.Module, int, int, int]:
    """One random block of the mainstream zoos' structural ops; returns it and the new (channels, h, w)."""
    kind = c.choice(["maxpool", "adaptive", "branches", "shuffle", "pad", "resample", "pixel", "slice", "permute",
                     "transpose", "flip", "gate"])
    act = _activation(c, c.choice(["relu", "any", "relu"]) if every is not ACTIVATIONS else "relu", ch)
    if kind == "maxpool" and h >= 2 and w >= 2:
        k, stride = c.integer(2, 3), c.integer(1, 2)
        padding, dilation, ceil = c.integer(0, k // 2), c.integer(1, 2), c.boolean()
        pool = nn.MaxPool2d(k, stride, padding, dilation, ceil_mode=ceil)
    elif kind == "adaptive":
        size = (c.integer(1, h + 1), c.integer(1, w + 1))
        pool = c.choice([nn.AdaptiveAvgPool2d(size), nn.AdaptiveMaxPool2d(size)])
    elif kind == "branches":
        n = c.integer(1, 2)
        branches = [nn.Sequential(nn.Conv2d(ch, c.integer(1, 3), c.choice([1, 3]), padding="same"), act)
                    for _ in range(n)]
        if c.boolean():
            branches.append(nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(ch, 1, 1)))
        stack = c.boolean() and all(isinstance(b[0], nn.Conv2d) and b[0].out_channels == ch for b in branches)
        pool = Branches(branches, keep_input=c.boolean() or stack, stack=stack)
    elif kind == "shuffle" and ch % 2 == 0:
        half = ch // 2
        pool = Shuffle(ch, nn.Sequential(nn.Conv2d(half, half, 3, padding=1, groups=c.choice([1, half])), act),
                       functional=c.boolean())
    elif kind == "pad":
        mode = c.choice(["constant", "reflect", "replicate", "circular"])
        amount = tuple(c.integer(0, min(2, h - 1, w - 1)) for _ in range(4))
        pool = Lambda(lambda t, a=amount, m=mode: F.pad(t, a, mode=m))
    elif kind == "resample":
        mode = c.choice(["nearest", "bilinear"])
        corners = c.boolean() if mode == "bilinear" else None
        pool = nn.Upsample(scale_factor=c.choice([2, 1.5]), mode=mode, align_corners=corners)
    elif kind == "pixel" and ch % 4 == 0:
        pool = nn.PixelShuffle(2)
    elif kind == "pixel" and h % 2 == 0 and w % 2 == 0:
        pool = nn.PixelUnshuffle(2)
    elif kind == "slice" and h >= 2:
        pool = Lambda(lambda t: t[:, :, 1:, ::2])
    elif kind == "transpose":
        pool = nn.Sequential(nn.ConvTranspose2d(ch, c.integer(1, 3), c.integer(2, 3), stride=c.integer(1, 2),
                                                padding=c.integer(0, 1)), act)
    elif kind == "gate":
        pool = Gate(ch, c.choice([nn.Sigmoid(), nn.Hardsigmoid(), nn.Tanh()]), attention=c.boolean())
    elif kind == "flip":
        pool = Lambda(lambda t: torch.roll(t.flip(-1), 1, dims=2))
    else:  # ConvNeXt-style: channels last, a linear layer, back
        linear = nn.Linear(ch, ch)
        pool = nn.Sequential(Lambda(lambda t: t.permute(0, 2, 3, 1)), linear, act, Lambda(lambda t: t.permute(0, 3, 1, 2)))
    try:
        with torch.no_grad():
            shape = pool.eval()(torch.zeros(1, ch, h, w)).shape
    except RuntimeError:  # too small an input for the drawn kernel
        pool, shape = nn.Identity(), (1, ch, h, w)
    return pool, shape[1], shape[2], shape[3]


def _vision(c: Choices, generator: torch.Generator, every=ACTIVATIONS) -> tuple[nn.Module, tuple]:
    """A small net of the vision zoos' ops: conv stem, random blocks (max / adaptive pooling, branches joined
    by cat, channel shuffle and split, every pad mode, upsampling, pixel shuffle, slices, transposed
    convolutions, channels-last linear layers), then global average / max pooling or a flatten, and a head."""
    ch, h, w = c.integer(1, 3), c.integer(4, 7), c.integer(4, 7)
    start = (ch, h, w)
    layers: list = [nn.Conv2d(ch, (ch := c.integer(2, 4)), 3, padding=1), _activation(c, "relu", ch)]
    for _ in range(c.integer(1, 3)):
        if h * w > 400 or h < 2 or w < 2:
            break
        block, ch, h, w = _vision_block(c, ch, h, w, every)
        layers.append(block)
    head = c.choice(["avg", "max", "flatten", "mean"])
    if head == "avg":
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    elif head == "max":
        layers += [Lambda(lambda t: t.amax(dim=(2, 3)))]
    elif head == "mean":
        layers += [Lambda(lambda t: t.mean((-1, -2)))]
    else:
        layers += [nn.Flatten()]
        ch = ch * h * w
    layers.append(nn.Linear(ch, c.integer(1, 3)))
    return nn.Sequential(*layers), start


class _Attend(nn.Module):
    """Self-attention of one of three spellings (``nn.MultiheadAttention`` with a constant causal mask or none,
    ``F.scaled_dot_product_attention``, hand-written ``softmax(q kᵀ/√d) v`` by ``einsum``), with a residual."""

    def __init__(self, kind: str, features: int, heads: int, causal: bool, length: int) -> None:
        super().__init__()
        self.kind, self.causal = kind, causal
        self.mha = nn.MultiheadAttention(features, heads, batch_first=True) if kind == "mha" else None
        self.qkv = nn.Linear(features, 3 * features)
        self.register_buffer("mask", torch.ones(length, length, dtype=torch.bool).triu(1))

    def forward(self, x):
        if self.kind == "mha":
            return x + self.mha(x, x, x, attn_mask=self.mask if self.causal else None, need_weights=False)[0]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.kind == "sdpa":
            return x + F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], is_causal=self.causal)[:, 0]
        scores = torch.einsum("bqd,bkd->bqk", q, k) / q.shape[-1] ** 0.5
        if self.causal:
            scores = scores.masked_fill(self.mask, float("-inf"))
        return x + torch.einsum("bqk,bkd->bqd", scores.softmax(-1), v)


class _Sequence(nn.Module):
    """A recurrent layer's output sequence."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0]


def _sequence(c: Choices, generator: torch.Generator) -> tuple[nn.Module, tuple]:
    """A small net of the sequence models' ops on ``(length, features)``: attention (three spellings, causal or
    not), layer norm, a GELU feed-forward block, a GRU / LSTM, a softmax gate (``x · softmax(x)``), log-softmax
    by ``logsumexp``; then the first position or the mean over positions, and a head."""
    length, features = c.integer(2, 4), c.choice([2, 4, 6])
    layers: list = []
    for _ in range(c.integer(1, 3)):
        kind = c.choice(["mha", "sdpa", "einsum", "norm", "ff", "rnn", "gate", "log_softmax"])
        if kind in ("mha", "sdpa", "einsum"):
            layers.append(_Attend(kind, features, c.choice([1, 2]), c.boolean(), length))
        elif kind == "norm":
            layers.append(nn.LayerNorm(features, elementwise_affine=c.boolean()))
        elif kind == "ff":
            layers.append(Residual(nn.Sequential(nn.Linear(features, 2 * features), nn.GELU(),
                                                 nn.Linear(2 * features, features)), c.boolean()))
        elif kind == "rnn":
            layers.append(_Sequence(c.choice([nn.GRU, nn.LSTM])(features, features, batch_first=True)))
        elif kind == "gate":
            layers.append(Lambda(lambda t: t * t.softmax(-1)))
        else:
            layers.append(Lambda(lambda t: t - torch.logsumexp(t, -1, keepdim=True)))
    scale = c.choice([1.0, 1.0, 0.3, 3.0])
    with torch.no_grad():
        for layer in layers:
            for p in layer.parameters():
                p.mul_(scale)
    pool = c.choice(["first", "mean"])
    layers.append(Lambda((lambda t: t[:, 0]) if pool == "first" else (lambda t: t.mean(1))))
    layers.append(nn.Linear(features, c.integer(1, 3)))
    return nn.Sequential(*layers), (length, features)


def random_perturbation(c: Choices, x0: torch.Tensor):
    """An L∞ or L2 ball (maybe clipped by a domain that cuts it, numbers or per-element tensors; maybe
    per-example radii, some 0), or a box with some degenerate coordinates."""
    kind = c.choice(["linf", "l2", "box", "linf-clip", "l2-clip", "linf-per-example", "box-degenerate"])
    eps = c.choice([0.0, 1e-6, 0.01, 0.1, 0.3, 0.5, 1.0])
    g = torch.Generator().manual_seed(c.integer(0, 2**16))

    def rand(*shape):
        return torch.rand(shape, generator=g, dtype=x0.dtype)

    if kind == "linf":
        return LinfBall(eps)
    if kind == "l2":
        return L2Ball(2 * eps)
    if kind in ("linf-clip", "l2-clip"):  # x0 inside the domain; the ball pokes out of it
        if c.boolean():
            domain = (float(x0.min()) - c.choice([0.0, 0.05]), float(x0.max()) + c.choice([0.0, 0.05]))
        else:
            domain = (x0 - rand(*x0.shape) * eps, x0 + rand(*x0.shape) * eps)
        return LinfBall(eps, clip=domain) if kind == "linf-clip" else L2Ball(2 * eps, clip=domain)
    if kind == "linf-per-example":
        radii = rand(x0.shape[0]) * eps
        radii[rand(x0.shape[0]) < 0.4] = 0.0
        return LinfBall(radii)
    radius = rand(*x0.shape) * eps
    if kind == "box-degenerate":
        radius[rand(*x0.shape) < 0.5] = 0.0
    return Box(x0 - radius * rand(*x0.shape), x0 + radius)


def random_case(c: Choices, families: Sequence[str] = FAMILIES, training: bool = True,
                every_activation: bool = True) -> Case:
    """A model of one of ``families``, an input, a perturbation set and (maybe) a specification, all random;
    with ``training``, batch norms train (normalise by the batch) in a quarter of the models; with
    ``every_activation``, any registered activation, else ReLU and ParamRamp only (those with Lyu et
    al.'s tight lines)."""
    every = EVERY_ACTIVATION if every_activation else ACTIVATIONS
    family = c.choice(families)
    seed = c.integer(0, 2**16)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    dtype = torch.float32 if family == "overflow" else torch.float64
    training = training and family in ("mlp", "deep", "cnn") and c.integer(0, 3) == 0
    if family == "cnn":
        model, shape = _cnn(c, g, every)
    elif family == "vision":
        model, shape = _vision(c, g, every)
    elif family == "sequence":
        model, shape = _sequence(c, g)
    elif family == "dag":
        width = c.integer(1, 8)
        kind = c.choice(["relu", "ramp", "any"] if every_activation else ["relu", "ramp"])
        model = SharedDag(d := c.integer(1, 6), width, _activation(c, kind, width),
                          (c.choice([1.0, -1.0]), c.choice([1.0, -1.0, 0.0])), c.integer(1, 4))
        shape = (d,)
    else:
        depth, widths, activations = {
            "mlp": (c.integer(1, 3), range(1, 9), every), "deep": (c.integer(8, 12), range(1, 9), every),
            "wide": (c.integer(1, 2), (256, 512, 1024), every), "linear": (c.integer(1, 3), range(1, 9), ((),)),
            "overflow": (c.integer(12, 17), (16,), (("relu",),)),
        }[family]
        model, d = _mlp(c, g, depth, widths, activations, training)
        shape = (d,)
        if family == "overflow":
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(c.choice([30.0, 300.0]))
    model = model.to(dtype)
    model.train(training)
    batch = c.integer(2 if training else 1, 3)
    x0 = torch.randn(batch, *shape, generator=g, dtype=dtype)
    perturbation = random_perturbation(c, x0) if family != "overflow" else LinfBall(0.5)
    C = None
    if c.integer(0, 2) == 0:
        outputs = model.eval()(x0).shape[1]
        model.train(training)
        C = torch.randn(batch, c.integer(1, 4), outputs, generator=g, dtype=dtype) * c.choice([1.0, 1.0, 1e3])
        if c.boolean():  # one spec for the whole batch: the fused head's IBP groups the examples (spec_linear)
            C = C[:1].repeat(batch, 1, 1)
    return Case(family, model, x0, perturbation, C)
