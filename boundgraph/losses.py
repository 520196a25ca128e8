"""Specifications and losses for certified training."""
from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bounded_module import BoundedModule, unwrap
from .perturbation import Perturbation


def margin_spec(y: Tensor, classes: int, dtype: torch.dtype | None = None) -> Tensor:
    """``C`` whose rows are ``e_y − e_j`` for every ``j ≠ y``: ``(batch, classes − 1, classes)``, in
    ``dtype`` (torch's default if None). ``C·f(x) > 0`` row by row is exactly "``x`` is classified as ``y``"."""
    eye = torch.eye(classes, device=y.device, dtype=dtype)
    rows = eye[y].unsqueeze(1) - eye.unsqueeze(0)  # (batch, classes, classes); row y is zero
    others = torch.arange(classes, device=y.device).unsqueeze(0) != y.unsqueeze(1)
    return rows[others].view(y.shape[0], classes - 1, classes)


def check_labels(y: Tensor, output_shape: tuple, batch: int) -> None:
    """Raise ``ValueError`` unless ``y`` holds one class index per example for a logits output."""
    if len(output_shape) != 1:
        raise ValueError(f"a classification loss needs a logits output (batch, classes); the model's output is "
                         f"(batch, {', '.join(map(str, output_shape))})")
    if not isinstance(y, Tensor) or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"labels must be an integer tensor of class indices, got "
                         f"{y.dtype if isinstance(y, Tensor) else type(y).__name__}")
    if tuple(y.shape) != (batch,):
        raise ValueError(f"labels must have shape ({batch},), one per example; got {tuple(y.shape)}")
    if batch and (int(y.min()) < 0 or int(y.max()) >= output_shape[0]):
        raise ValueError(f"labels must lie in [0, {output_shape[0]}), the model's classes; got values from "
                         f"{int(y.min())} to {int(y.max())}")


def worst_case_logits(margin_lower: Tensor, y: Tensor) -> Tensor:
    """Logits ``−m`` for the other classes and 0 at the true class (Zhang et al. 2020): their cross
    entropy upper-bounds the cross entropy of every logit vector in the perturbation set."""
    batch, specs = margin_lower.shape
    logits = margin_lower.new_zeros(batch, specs + 1)
    others = torch.arange(specs + 1, device=y.device).unsqueeze(0) != y.unsqueeze(1)
    return logits.masked_scatter(others, -margin_lower)


def robust_loss(bm: Union[BoundedModule, nn.Module], x: Tensor, y: Tensor, perturbation: Perturbation,
                method: str = "crown-ibp", beta: float = 1.0, kappa: float = 0.0,
                return_margins: bool = False, lines: str = "adaptive",
                fused: bool = False) -> Union[Tensor, tuple[Tensor, Tensor]]:
    """The CROWN-IBP objective (Zhang et al. 2020): ``κ·CE(f(x), y) + (1−κ)·CE(−m, y)`` where the margin
    lower bound is ``m = β·m_method + (1−β)·m_IBP`` (``method="ibp"`` means β = 0). Any bound method
    serves (``crown-lbp`` gives CROWN-LBP training, Lyu et al. 2021). ``method="singleprop"`` gives
    SingleProp's objective (Boopathy et al. 2021), ``(1−K)·CE(worst) + K·CE(clean)`` with ``K = κ``: its
    margins come from propagated deviations and are a regulariser, not a certificate.

    ``fused``: loss fusion (Xu et al. 2020). The worst case's cross entropy is bounded as the program's output,
    ``U ≥ max_{x'} log(1 + Σ_j exp(f_j(x') − f_y(x')))``, from one backward row instead of ``classes − 1``
    (``boundgraph/ops/loss.py``); the objective is ``κ·CE(f(x), y) + (1−κ)·mean(U)`` with
    ``U = β·U_method + (1−β)·U_IBP``. ``U`` is an upper bound of the worst-case loss, as ``CE(−m, y)`` is, but
    a looser one wherever the margins' IBP intervals are wide (its lines are fitted on them); it is ``CE(−m, y)``
    exactly for IBP. With ``return_margins``, the second value is then ``U`` (``(batch, 1)``): an example is
    certified by it when ``U < log 2`` (then every margin ``f_j − f_y < 0`` over the set).

    ``bm`` is a ``BoundedModule`` or a ``DistributedDataParallel`` around one: every computation goes
    through its ``forward``, so DDP synchronises the gradients of the certified loss. With
    ``return_margins``, also the margin lower bounds ``m`` (``(batch, classes − 1)``; an example is
    certified by them when all are positive)."""
    bounded = unwrap(bm)
    check_labels(y, bounded.output_shape, x.shape[0])
    C = margin_spec(y, bounded.output_shape[0], bounded.output_dtype)
    if fused:
        if method == "singleprop":
            raise ValueError("loss fusion bounds the worst-case loss; singleprop propagates deviations, not bounds: "
                             "use fused=False with it")
        bound = bm(x, perturbation=perturbation, method=method, C=-C, bound_lower=False, lines=lines,
                   beta=1.0 if method == "ibp" else beta, loss_fusion=True).upper
        loss = bound.mean()
    else:
        if method == "singleprop":
            bound = bm(x, deviations=perturbation, C=C).lower
        else:
            bound = bm(x, perturbation=perturbation, method=method, C=C, bound_upper=False, lines=lines,
                       beta=1.0 if method == "ibp" else beta).lower
        loss = F.cross_entropy(worst_case_logits(bound, y), y)
    if kappa > 0:
        loss = kappa * F.cross_entropy(bm(x), y) + (1 - kappa) * loss
    return (loss, bound) if return_margins else loss
