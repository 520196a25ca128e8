"""Shared test machinery: points of a perturbation set (random, corners, PGD-maximised), the
soundness assertion, and hypothesis strategies for random models built from the supported ops."""
from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st

from boundgraph import BoundedModule, check
from tests.random_models import (FAMILIES, Case, Drawn, Lambda, Residual, random_case,  # noqa: F401  (shared)
                                 random_perturbation, randomize_bn)

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


# ----- random perturbations and models (tests/random_models.py, shared with benchmarks/fuzz.py) ------

@st.composite
def perturbations(draw, x0: torch.Tensor):
    return random_perturbation(Drawn(draw), x0)


@st.composite
def cases(draw, families=FAMILIES) -> Case:
    """A random model of any family (training-mode batch norm included), input, perturbation and spec."""
    return random_case(Drawn(draw), families)


@st.composite
def mlps(draw):
    """Random MLPs in eval mode, ReLU and ParamRamp activations: ``(model, x0)``."""
    case = random_case(Drawn(draw), ("mlp",), training=False, every_activation=False)
    return case.model, case.x0


@st.composite
def cnns(draw):
    """Random CNNs in eval mode, ReLU and ParamRamp activations: ``(model, x0)``."""
    case = random_case(Drawn(draw), ("cnn",), training=False, every_activation=False)
    return case.model, case.x0


def relu_spelling(kind: int):
    return [nn.ReLU(), lambda t: F.relu(t), lambda t: torch.relu(t), lambda t: t.relu()][kind]


def Chain(layers) -> nn.Sequential:
    return nn.Sequential(*[layer if isinstance(layer, nn.Module) else Lambda(layer) for layer in layers])


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
