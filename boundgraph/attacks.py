"""Projected gradient descent (Madry et al. 2018): the empirical side of robustness. Its error is a
lower bound on the true robust error, as a verified error is an upper bound, so PGD error ≤ verified
error on every example is a check of the bounds' soundness."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .perturbation import Perturbation


def pgd_attack(model: nn.Module, x: Tensor, y: Tensor, perturbation: Perturbation, steps: int = 200,
               restarts: int = 1, step_fraction: float = 2.5, generator: Optional[torch.Generator] = None) -> Tensor:
    """Points of the perturbation set that maximise the cross entropy, from ``restarts`` random starts,
    each of ``steps`` steps of length ``step_fraction / steps`` of the radius. For each example, the
    returned point is one that is misclassified if any start found one."""
    lower, upper = perturbation.interval(x)
    best = x.detach().clone()
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    was_training = model.training
    model.eval()
    try:
        for _ in range(restarts):
            noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            point = perturbation.project(x, lower + noise * (upper - lower))
            for _ in range(steps):
                point.requires_grad_(True)
                loss = F.cross_entropy(model(point), y)
                (grad,) = torch.autograd.grad(loss, point)
                with torch.no_grad():
                    point = perturbation.project(x, point + perturbation.ascent(grad, x, step_fraction / steps))
            with torch.no_grad():
                wrong = model(point).argmax(1) != y
                take = wrong & ~fooled
                best[take] = point[take]
                fooled |= wrong
                if restarts > 1:
                    best[~fooled] = point[~fooled]
    finally:
        model.train(was_training)
    return best
