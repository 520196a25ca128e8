"""Clean, PGD and verified errors of a classifier over a perturbation set."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import Tensor

from .attacks import pgd_attack
from .bounded_module import BoundedModule
from .losses import margin_spec
from .perturbation import Perturbation


@torch.no_grad()
def certified(bm: BoundedModule, x: Tensor, y: Tensor, perturbation: Perturbation, method: str) -> Tensor:
    """Per example: whether every margin ``f_y − f_j`` has a positive lower bound over the set.
    ``method``: a bound method of ``BoundedModule.bounds``, or ``"alpha-crown"``."""
    C = margin_spec(y, bm.output_shape[0], x.dtype)
    if method == "alpha-crown":
        from .alpha import alpha_crown
        return (alpha_crown(bm, x, perturbation, C=C).lower > 0).all(1)
    return (bm.bounds(x, perturbation, method, C=C, bound_upper=False).lower > 0).all(1)


def evaluate(bm: BoundedModule, batches: Iterable[tuple[Tensor, Tensor]], perturbation: Perturbation,
             methods: Sequence[str] = ("ibp", "crown-ibp", "crown"), pgd_steps: int = 200,
             pgd_restarts: int = 1) -> dict[str, float]:
    """Error rates in percent: ``clean``, ``pgd`` (0 steps skips it), ``verified <method>`` for each
    method, and ``verified`` (no method certifies: every method is sound, so any one certifying is a
    proof). A verified error counts every example that cannot be certified, misclassified ones too."""
    counts = {"clean": 0, **({"pgd": 0} if pgd_steps else {}), **{f"verified {m}": 0 for m in methods},
              "verified": 0}
    total = 0
    was_training = bm.model.training
    bm.model.eval()
    try:
        for x, y in batches:
            total += x.shape[0]
            with torch.no_grad():
                wrong = bm(x).argmax(1) != y
            counts["clean"] += int(wrong.sum())
            if pgd_steps:  # x is in the set: a clean error is a PGD error too
                adversarial = pgd_attack(bm.model, x, y, perturbation, pgd_steps, pgd_restarts)
                with torch.no_grad():
                    counts["pgd"] += int((wrong | (bm(adversarial).argmax(1) != y)).sum())
            proved = torch.zeros_like(y, dtype=torch.bool)
            for method in methods:
                by_method = certified(bm, x, y, perturbation, method)
                counts[f"verified {method}"] += int((~by_method).sum())
                proved |= by_method
            counts["verified"] += int((~proved).sum())
    finally:
        bm.model.train(was_training)
    return {name: 100.0 * count / max(total, 1) for name, count in counts.items()}
