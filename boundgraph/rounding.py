"""The floating-point policy: bounds are computed rounding to nearest, so how far rounding can move
them is measured relative to the largest values in the computation (README, "Floating point")."""
from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import Tensor

CERTIFY_MARGIN = {torch.float64: 1e-12, torch.float32: 1e-4}  # × the rounding scale S (``rounding_scale``)


def largest_magnitude(batch: int, tensors) -> Tensor:
    """Per example, the largest finite magnitude in the batch-first floating tensors among ``tensors``
    (what rounding errors are relative to: the values that cancel, not what is left of them)."""
    size = torch.zeros(batch, dtype=torch.float64)
    for t in tensors:
        if isinstance(t, Tensor) and t.dim() and t.shape[0] == batch and t.is_floating_point():
            largest = t.detach().abs().nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).reshape(batch, -1).amax(1)
            size = torch.maximum(size, largest.to(device=size.device, dtype=torch.float64))
    return size


def rounding_scale(bm, x: Union[Tensor, tuple], perturbation: Any, C: Optional[Tensor] = None) -> Tensor:
    """Per example, the size that rounding errors of its bounds are relative to: ``S = 1 + max |every end
    of every IBP interval|``, the output's included (it holds ``f(x)``; with ``C``, ``C·f(x)``). Over 300
    random eval-mode networks and three zoo networks (extreme weight scales included; ``python
    benchmarks/rounding.py --cases 300``) no float32 margin bound of IBP, CROWN-IBP or CROWN lay farther
    than 1.3e-6·S from the float64 one; relative to the logits alone the distance reached 9e-3, since
    large intermediate values cancel. ``x`` and ``perturbation`` as ``bm.bounds`` takes them."""
    inputs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    perturbations = tuple(perturbation) if isinstance(perturbation, (tuple, list)) else (perturbation,)
    program = bm.program("ibp", intermediates=True, with_spec=C is not None, batch_statistics=bm.training_norms(),
                         perturbed=[i for i, p in enumerate(perturbations) if p is not None])
    output, intervals, _ = program(bm.core, inputs, perturbations, C)
    ends = [end for interval in (output, *intervals.values()) for end in interval]
    return 1 + largest_magnitude(inputs[0].shape[0], ends)
