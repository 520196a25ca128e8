"""Shared test machinery: points of a perturbation set (random, corners, PGD-maximised), the
soundness assertion, and hypothesis strategies for random models built from the supported ops."""
from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st

from boundgraph import Box, BoundedModule, L2Ball, LinfBall, check

METHODS = ("ibp", "crown-ibp", "crown", "lbp", "crown-lbp")
DTYPE = torch.float64


def assert_sound(bm: BoundedModule, x0: torch.Tensor, ptb, method: str, C: torch.Tensor | None = None,
                 n: int = 16, pgd: bool = True, seed: int = 0, **options) -> tuple:
    """Every sampled point of the set (random, corners, PGD extremes) has its output, and every
    intermediate value, inside the bounds the method computes for it, and every nonlinear node's value
    lies between its lines (``boundgraph.check``, the users' self-check)."""
    report = check(bm, x0, ptb, method, C, points=n, pgd_steps=15 if pgd else 0, seed=seed, **options)
    assert report.sound, str(report)
    return report.bounds


# ----- random perturbations -------------------------------------------------------------------------

@st.composite
def perturbations(draw, x0: torch.Tensor):
    kind = draw(st.sampled_from(["linf", "l2", "box", "linf-clip", "linf-per-example"]))
    eps = draw(st.floats(0.0, 0.5))
    domain = (float(x0.min()), float(x0.max()))  # contains x0; the ball pokes out of it
    if kind == "linf":
        return LinfBall(eps)
    if kind == "l2":
        return L2Ball(eps * 2, clip=draw(st.sampled_from([None, domain])))
    if kind == "linf-clip":
        return LinfBall(eps, clip=domain)
    if kind == "linf-per-example":
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
        return LinfBall(torch.rand(x0.shape[0], generator=g, dtype=x0.dtype) * eps)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    a = x0 - torch.rand(x0.shape, generator=g, dtype=x0.dtype) * eps
    b = x0 + torch.rand(x0.shape, generator=g, dtype=x0.dtype) * eps
    return Box(a, b)


# ----- random models --------------------------------------------------------------------------------

def relu_spelling(kind: int):
    return [nn.ReLU(), lambda t: F.relu(t), lambda t: torch.relu(t), lambda t: t.relu()][kind]


class Lambda(nn.Module):
    """A function as a module (fx traces through it, so its spelling reaches the compiler)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def Chain(layers) -> nn.Sequential:
    return nn.Sequential(*[l if isinstance(l, nn.Module) else Lambda(l) for l in layers])


class Residual(nn.Module):
    """``body(x) + skip(x)`` (skip the identity unless given), optionally ``- body2(x)``."""

    def __init__(self, body: nn.Module, skip: nn.Module | None = None, subtract: bool = False):
        super().__init__()
        self.body, self.skip, self.subtract = body, skip or nn.Identity(), subtract

    def forward(self, x):
        return self.skip(x) - self.body(x) if self.subtract else self.body(x) + self.skip(x)


class Normalize(nn.Module):
    """Input normalisation ``(x − mean) / std`` with buffers, and a constant scaling."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, scale: float):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.scale = scale

    def forward(self, x):
        return (x - self.mean) / self.std * self.scale


def _randomize_bn(bn: nn.Module, g: torch.Generator) -> nn.Module:
    n = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
        bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        bn.weight.copy_(torch.randn(n, generator=g))
        bn.bias.copy_(torch.randn(n, generator=g) * 0.3)
    return bn


@st.composite
def mlps(draw):
    """Random MLPs: normalisation, linear, the four ReLU spellings, batch norm, residual, dropout."""
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    d = draw(st.integers(1, 6))
    layers: list = []
    if draw(st.booleans()):
        layers.append(Normalize(torch.randn(d) * 0.1, torch.rand(d) + 0.5, draw(st.sampled_from([1.0, -2.0]))))
    width = d
    for _ in range(draw(st.integers(1, 3))):
        new = draw(st.integers(1, 8))
        block: list = [nn.Linear(width, new, bias=draw(st.booleans()))]
        if draw(st.booleans()):
            block.append(_randomize_bn(nn.BatchNorm1d(new), g))
        block.append(relu_spelling(draw(st.integers(0, 3))))
        if draw(st.booleans()):
            block.append(nn.Dropout(0.3))
        if new == width and draw(st.booleans()):
            layers.append(Residual(Chain(block), subtract=draw(st.booleans())))
        else:
            layers.extend(block)
        width = new
    layers.append(nn.Linear(width, draw(st.integers(1, 4))))
    model = Chain(layers).to(DTYPE).eval()
    batch = draw(st.integers(1, 3))
    x0 = torch.randn(batch, d, generator=g, dtype=DTYPE)
    return model, x0


@st.composite
def cnns(draw):
    """Random CNNs: convolutions of random kernel/stride/padding/dilation/groups, batch norm, average
    pooling, residual convolutions, the reshape spellings, and a linear head."""
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    channels = draw(st.integers(1, 3))
    size = draw(st.integers(5, 9))
    layers: list = []
    if draw(st.booleans()):
        layers.append(Normalize(torch.randn(channels, 1, 1) * 0.1, torch.rand(channels, 1, 1) + 0.5, 1.0))
    c, h, w = channels, size, size
    for _ in range(draw(st.integers(1, 2))):
        groups = draw(st.sampled_from([g_ for g_ in (1, 2, 3) if c % g_ == 0]))
        out = groups * draw(st.integers(1, 2))
        k = draw(st.integers(1, 3))
        stride, padding, dilation = draw(st.integers(1, 2)), draw(st.integers(0, 2)), draw(st.integers(1, 2))
        if (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1 < 1:
            continue
        conv = nn.Conv2d(c, out, k, stride=stride, padding=padding, dilation=dilation, groups=groups,
                         bias=draw(st.booleans()))
        layers.append(conv)
        c, h = out, (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
        w = h
        if draw(st.booleans()):
            layers.append(_randomize_bn(nn.BatchNorm2d(c), g))
        layers.append(relu_spelling(draw(st.integers(0, 3))))
        if draw(st.booleans()):
            layers.append(Residual(nn.Conv2d(c, c, 3, padding=1), skip=nn.Identity()))
            layers.append(nn.ReLU())
        if h >= 2 and draw(st.booleans()):
            pool_k = draw(st.integers(1, 2))
            pool_pad = draw(st.integers(0, pool_k // 2))
            layers.append(nn.AvgPool2d(pool_k, stride=draw(st.integers(1, 2)), padding=pool_pad,
                                       count_include_pad=draw(st.booleans())))
            h = w = None  # recomputed below
            probe = Chain(layers).eval()(torch.zeros(1, channels, size, size))
            c, h, w = probe.shape[1:]
    flatten = draw(st.sampled_from([nn.Flatten(), lambda t: t.flatten(1), lambda t: t.view(t.size(0), -1),
                                    lambda t: torch.reshape(t, (t.shape[0], -1))]))
    layers += [flatten, nn.Linear(c * h * w, draw(st.integers(1, 3)))]
    model = Chain(layers).to(DTYPE).eval()
    batch = draw(st.integers(1, 2))
    x0 = torch.randn(batch, channels, size, size, generator=g, dtype=DTYPE)
    return model, x0


def random_spec(batch: int, specs: int, outputs: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, specs, outputs, generator=g, dtype=DTYPE)


def assert_adjoint(rule, x: torch.Tensor, constants: tuple, attrs: dict, specs: int = 3, seed: int = 0,
                   perturbed: tuple[int, ...] = (0,)):
    """A rule's ``backward`` is the transpose of its map: ``Σ A·f(x) = Σ backward(A)·x + bias`` for a
    random ``A``, where ``x`` is the operand at position(s) ``perturbed`` and ``constants`` the rest."""
    g = torch.Generator().manual_seed(seed)
    operands = list(constants)
    for i in perturbed:
        operands.insert(i, x)
    out = rule.forward(*operands, **attrs)
    A = torch.randn(out.shape[0], specs, *out.shape[1:], generator=g, dtype=out.dtype)
    lhs = torch.einsum("bs...,b...->bs", A, out) if out.dim() > 1 else A.squeeze(-1) * out[:, None]
    backward_operands = [None if i in perturbed else o for i, o in enumerate(operands)]
    As, bias = rule.backward(A, *backward_operands, **attrs)
    rhs = bias + sum(torch.einsum("bs...,b...->bs", As[i], x) for i in perturbed)
    torch.testing.assert_close(lhs, rhs + torch.zeros_like(lhs), rtol=1e-9, atol=1e-9)


def assert_sound_all_methods(model: nn.Module, x0: torch.Tensor, ptb, **options) -> dict:
    bm = BoundedModule(model, x0)
    return {m: assert_sound(bm, x0, ptb, m, **options) for m in METHODS}
