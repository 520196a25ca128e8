"""α-CROWN for verification (Xu et al., ICLR 2021): full CROWN whose ReLU lower slopes α ∈ [0, 1] are
optimised by projected gradient ascent on the bound itself.

Every α in [0, 1] gives sound lines, so every iterate's bound is sound, and the elementwise best over
the iterates is too. The first iterate is CROWN's own choice (adaptive α), so the result is never looser
than CROWN. One α per example and neuron, shared by the intermediate sweeps and the final one.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .bounded_module import BoundedModule
from .ir import Interval
from .perturbation import Perturbation


def alpha_crown(bm: BoundedModule, x: Tensor, perturbation: Perturbation, C: Optional[Tensor] = None,
                iterations: int = 20, lr: float = 0.1, bound_upper: bool = False) -> Interval:
    """Bounds of ``C·f(x')`` (``f(x')`` without ``C``) over the set, at least as tight as ``method="crown"``.
    Lower bounds always; upper bounds too with ``bound_upper`` (a second optimisation, of ``−C``)."""
    inputs = bm._check_inputs(x)
    perturbations = bm._check_perturbations(perturbation, inputs)
    bm._check_spec(C, inputs[0].shape[0])
    bm._check_modes()
    if len(inputs) != 1:
        raise ValueError("alpha_crown bounds models with one (perturbed) input")
    def lower_of(spec: Optional[Tensor]) -> Tensor:
        program = bm.program("crown", with_spec=spec is not None, bound_upper=False, lines="alpha")
        alphas: dict[str, Tensor] = {}
        with torch.enable_grad():
            bound = program(bm.core, inputs, perturbations, spec, alphas).lower
            best = bound.detach()
            optimizer = torch.optim.Adam(list(alphas.values()), lr=lr) if alphas else None
            for _ in range(iterations if optimizer else 0):
                grads = torch.autograd.grad(-bound.sum(), list(alphas.values()), allow_unused=True)
                for alpha, grad in zip(alphas.values(), grads):
                    alpha.grad = grad
                optimizer.step()
                with torch.no_grad():
                    for alpha in alphas.values():
                        alpha.clamp_(0.0, 1.0)  # the projection: αz is a lower line of ReLU for α ∈ [0, 1]
                bound = program(bm.core, inputs, perturbations, spec, alphas).lower
                best = torch.maximum(best, bound.detach())
        return best

    lower = lower_of(C)
    upper = None
    if bound_upper:
        if C is None:
            outputs = bm.output_shape[0] if len(bm.output_shape) == 1 else None
            if outputs is None:
                raise ValueError("alpha_crown: upper bounds of a multi-dimensional output need C")
            C = torch.eye(outputs, dtype=x.dtype).expand(x.shape[0], outputs, outputs)
        upper = -lower_of(-C)
    return Interval(lower, upper)
