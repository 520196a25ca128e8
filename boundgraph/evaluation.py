"""Clean, PGD and verified errors of a classifier over a perturbation set."""
from __future__ import annotations

import copy
import time
from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor

from .attacks import pgd_attack
from .bounded_module import BoundedModule, unwrap
from .losses import check_labels, margin_spec
from .perturbation import Perturbation
from .rounding import CERTIFY_MARGIN, rounding_scale


def _margins(bm: BoundedModule, x: Tensor, y: Tensor, perturbation: Perturbation, method: str) -> Tensor:
    C = margin_spec(y, bm.output_shape[0], bm.output_dtype)
    return bm.bounds(x, perturbation, method, C, bound_upper=False).lower


def _float64_twin(bm: BoundedModule, x: Tensor) -> BoundedModule:
    """A float64 copy of the model (compiled once, its parameters and modes refreshed at every call)."""
    twin = bm.__dict__.get("_float64_twin")
    if twin is None:
        twin = BoundedModule(copy.deepcopy(bm.core).double(), x[:1].double())
        bm.__dict__["_float64_twin"] = twin
    twin.core.load_state_dict(bm.core.state_dict())
    for mine, theirs in zip(twin.core.modules(), bm.core.modules()):
        mine.training = theirs.training
    return twin


@torch.no_grad()
def certified(bm: BoundedModule, x: Tensor, y: Tensor, perturbation: Perturbation, method: str) -> Tensor:
    """Per example: whether every margin ``f_y − f_j`` has a positive lower bound over the set, by a margin
    that rounding cannot explain. ``method``: a bound method of ``BoundedModule.bounds`` (``"alpha-crown"``
    too).

    Bounds are computed rounding to nearest, so a tiny positive margin may be rounding's. A float32
    certificate counts if its margins exceed ``1e-4·S`` (``rounding_scale``: 80× the largest float32
    rounding measured); one between 0 and that is re-checked on a float64 copy of the model,
    where margins must exceed ``1e-12·S``. Float64 models need ``1e-12·S``."""
    bm = unwrap(bm)
    check_labels(y, bm.output_shape, x.shape[0])
    margins = _margins(bm, x, y, perturbation, method).min(1).values
    scale = rounding_scale(bm, x, perturbation)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    proved = margins.double() > CERTIFY_MARGIN[dtype] * scale
    if dtype == torch.float64:
        return proved
    near = torch.nonzero((margins > 0) & ~proved).flatten()
    if len(near):
        twin = _float64_twin(bm, x)
        chunk = 1 if method in ("crown", "alpha-crown") else 64  # float64 CPU convolutions are memory-hungry
        for index in near.split(chunk):
            wide = x[index].double()
            margins64 = _margins(twin, wide, y[index], perturbation.select(x, index), method).min(1).values
            proved[index] = margins64 > CERTIFY_MARGIN[torch.float64] * scale[index]
    return proved


def evaluate(bm: BoundedModule, batches: Iterable[tuple[Tensor, Tensor]], perturbation: Perturbation,
             methods: Sequence[str] = ("ibp", "crown-ibp", "crown"), pgd_steps: int = 200,
             pgd_restarts: int = 1, seconds: Optional[dict[str, float]] = None) -> dict[str, float]:
    """Error rates in percent: ``clean``, ``pgd`` (0 steps skips it), ``verified <method>`` for each
    method, and ``verified`` (no method certifies: every method is sound, so any one certifying is a
    proof). A verified error counts every example that cannot be certified, misclassified ones too.
    ``seconds``, if given, receives the time spent on each of those names (``pgd``, ``verified ibp``, …)."""
    seconds = {} if seconds is None else seconds
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
                started = time.perf_counter()
                adversarial = pgd_attack(bm.model, x, y, perturbation, pgd_steps, pgd_restarts)
                with torch.no_grad():
                    counts["pgd"] += int((wrong | (bm(adversarial).argmax(1) != y)).sum())
                seconds["pgd"] = seconds.get("pgd", 0.0) + time.perf_counter() - started
            proved = torch.zeros_like(y, dtype=torch.bool)
            for method in methods:
                started = time.perf_counter()
                by_method = certified(bm, x, y, perturbation, method)
                name = f"verified {method}"
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
                counts[f"verified {method}"] += int((~by_method).sum())
                proved |= by_method
            counts["verified"] += int((~proved).sum())
    finally:
        bm.model.train(was_training)
    return {name: 100.0 * count / max(total, 1) for name, count in counts.items()}
