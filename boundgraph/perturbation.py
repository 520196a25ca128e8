"""Perturbation sets of an input and how CROWN concretises a linear function over them.

A linear bound ``A·x' + bias`` over the set is minimised in closed form by the dual norm
(Zhang et al. 2018, CROWN): for the L∞ ball ``A·x − ε‖A‖₁``, for the L2 ball ``A·x − ε‖A‖₂``,
for a box ``[l, u]`` with centre ``c`` and radius ``r``: ``A·c − |A|·r``.
Shapes: ``x`` is ``(batch, *shape)``, ``A`` is ``(batch, specs, *shape)``; results ``(batch, specs)``.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Optional, Union

import torch
from torch import Tensor

from .ir import Interval
from .ops.base import spec_dot

Scalar = Union[float, Tensor]


def _box_lower(A: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    return spec_dot(A, centre) - spec_dot(A.abs(), radius)


def _check_radius(eps: Scalar, name: str) -> Scalar:
    if isinstance(eps, bool) or (isinstance(eps, Tensor) and eps.dtype == torch.bool):
        raise ValueError(f"{name}: eps must be a number or a tensor of numbers, got the boolean {eps!r}")
    if isinstance(eps, Tensor):
        if eps.dim() > 1:
            raise ValueError(f"{name}: eps must be a number or a per-example 1-D tensor, got shape {tuple(eps.shape)}")
        if not eps.is_floating_point():
            eps = eps.to(torch.get_default_dtype())
        if not bool(torch.isfinite(eps).all()) or bool((eps < 0).any()):
            raise ValueError(f"{name}: eps must be finite and >= 0, got {eps}")
        return eps
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"{name}: eps must be a finite number >= 0, got {eps!r}")
    return float(eps)


def _check_clip(clip: Any, name: str) -> Optional[tuple]:
    """``(lower, upper)``, each a number or a tensor that broadcasts to an input, no NaN, lower ≤ upper."""
    if clip is None:
        return None
    if not isinstance(clip, (tuple, list)) or len(clip) != 2:
        raise ValueError(f"{name}: clip must be a (lower, upper) pair, got {clip!r}")
    low, high = clip
    for value in (low, high):
        if isinstance(value, bool) or not isinstance(value, (int, float, Tensor)):
            raise ValueError(f"{name}: clip bounds must be numbers or tensors, got {value!r}")
        if bool(torch.as_tensor(value).isnan().any()):
            raise ValueError(f"{name}: clip bounds must not be NaN")
    if bool((torch.as_tensor(low) > torch.as_tensor(high)).any()):
        raise ValueError(f"{name}: clip lower bound above its upper bound, so the set is empty")
    return low, high


def _select(value: Any, x: Tensor, index: Tensor) -> Any:
    """``value[index]`` for a tensor with the batch dimension of ``x`` (as many dimensions, as many
    examples), through tuples; anything else unchanged."""
    if isinstance(value, (tuple, list)):
        return type(value)(_select(v, x, index) for v in value)
    if isinstance(value, Tensor) and value.dim() == x.dim() and value.shape[0] == x.shape[0]:
        return value[index]
    return value


def _fits(shape: tuple, x: Tensor) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``x``'s shape without changing it."""
    try:
        return tuple(torch.broadcast_shapes(shape, x.shape)) == tuple(x.shape)
    except RuntimeError:
        return False


class Perturbation:
    """A set of inputs around ``x``. Subclasses give its interval hull and the CROWN minimum. ``box``: the set is
    its interval hull (an affine map of the input then has IBP's interval as its exact range)."""

    box = False

    def interval(self, x: Tensor) -> Interval:
        raise NotImplementedError

    def concretize(self, A: Tensor, x: Tensor) -> Tensor:
        """Lower bound of ``A·x'`` over every ``x'`` in the set: ``(batch, specs)``."""
        raise NotImplementedError

    def check(self, x: Tensor) -> None:
        """Raise ``ValueError`` if this set cannot be placed around ``x``."""

    def sample(self, x: Tensor, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` points of the set around each example of ``x``, ``(n, *x.shape)``: the even-numbered ones
        uniformly random inside, the odd-numbered ones corners of the box (the set here, which is a box:
        a box, or an L∞ ball clipped to a box; ``L2Ball`` overrides it)."""
        lower, upper = self.interval(x)
        noise = torch.rand((n, *x.shape), generator=generator, dtype=x.dtype).to(x.device)
        noise[1::2] = noise[1::2].round()
        return lower + noise * (upper - lower)

    def select(self, x: Tensor, index: Tensor) -> "Perturbation":
        """The set for the examples ``x[index]`` only: tensors with the batch dimension of ``x`` (bounds
        shaped like it) are indexed, everything else is kept."""
        twin = copy.copy(self)
        twin.__dict__.update({k: _select(v, x, index) for k, v in vars(self).items()})
        return twin

    def project(self, x: Tensor, point: Tensor) -> Tensor:
        """A point of the set near ``point`` (the set around ``x``), for attacks."""
        lower, upper = self.interval(x)
        return torch.maximum(torch.minimum(point, upper), lower)

    def ascent(self, grad: Tensor, x: Tensor, fraction: float) -> Tensor:
        """A step of steepest ascent for this set's norm, ``fraction`` of its radius long."""
        lower, upper = self.interval(x)
        return grad.sign() * (upper - lower) / 2 * fraction


class _Ball(Perturbation):
    norm = ""

    def __init__(self, eps: Scalar, clip: tuple[Scalar, Scalar] | None = None) -> None:
        self.eps = _check_radius(eps, type(self).__name__)
        self.clip = _check_clip(clip, type(self).__name__)

    def __repr__(self) -> str:
        clip = f", clip={self.clip}" if self.clip is not None else ""
        return f"{type(self).__name__}({self.eps}{clip})"

    def select(self, x: Tensor, index: Tensor) -> "Perturbation":
        twin = super().select(x, index)
        if isinstance(self.eps, Tensor) and self.eps.dim() == 1:
            twin.eps = self.eps[index]  # one radius per example
        return twin

    def _radius(self, x: Tensor) -> Scalar:
        if isinstance(self.eps, Tensor) and self.eps.dim() == 1:
            return self.eps.to(x).view(-1, *([1] * (x.dim() - 1)))
        return self.eps

    def _spec_radius(self, x: Tensor) -> Scalar:
        if isinstance(self.eps, Tensor) and self.eps.dim() == 1:
            return self.eps.to(x).view(-1, 1)
        return self.eps

    def check(self, x: Tensor) -> None:
        if isinstance(self.eps, Tensor) and self.eps.dim() == 1 and self.eps.shape[0] != x.shape[0]:
            raise ValueError(f"{self!r}: {self.eps.shape[0]} per-example radii for a batch of {x.shape[0]}")
        if self.clip is None:
            return
        if not all(_fits(tuple(torch.as_tensor(c).shape), x) for c in self.clip):
            raise ValueError(f"{self!r}: clip bounds of shapes {[tuple(torch.as_tensor(c).shape) for c in self.clip]} "
                             f"do not broadcast to the input's shape {tuple(x.shape)}")
        if self._empty(x):
            raise ValueError(f"{self!r}: the input lies outside the clip domain by more than eps, so the set is empty")

    def _empty(self, x: Tensor) -> Tensor:
        """Whether the set is empty for some example (its ball misses the clip box)."""
        raise NotImplementedError

    def interval(self, x: Tensor) -> Interval:
        eps = self._radius(x)
        return Interval(self._clip(x - eps), self._clip(x + eps))

    def _clip_bounds(self, like: Tensor) -> tuple[Tensor, Tensor]:
        return tuple(torch.as_tensor(c, dtype=like.dtype, device=like.device) for c in self.clip)  # type: ignore

    def _clip(self, t: Tensor) -> Tensor:
        if self.clip is None:
            return t
        low, high = self._clip_bounds(t)
        return torch.maximum(torch.minimum(t, high), low)


class LinfBall(_Ball):
    """``{x' : ‖x' − x‖∞ ≤ ε}``, optionally intersected with the box ``clip`` (e.g. ``(0, 1)``; numbers, or
    tensors that broadcast to the input, e.g. per-channel ``(3, 1, 1)`` bounds of normalised images)."""

    norm = "inf"
    box = True  # a box, clipped or not

    def _empty(self, x: Tensor) -> bool:
        """Empty iff some ``x_i − ε > high_i`` or ``x_i + ε < low_i``; for number bounds, two reductions decide."""
        eps = self._spec_radius(x)
        low, high = self._clip_bounds(x)
        if low.dim() == 0 and high.dim() == 0:
            flat = x.reshape(x.shape[0], -1)
            return bool(((flat.amax(1, keepdim=True) - eps > high) | (flat.amin(1, keepdim=True) + eps < low)).any())
        eps = self._radius(x)
        return bool(((x - eps > high) | (x + eps < low)).any())

    def concretize(self, A: Tensor, x: Tensor) -> Tensor:
        if self.clip is not None:  # the clipped L∞ ball is exactly a box
            return _box_lower(A, *self.interval(x))
        dual = A.reshape(A.shape[0], A.shape[1], -1).abs().sum(-1)
        return spec_dot(A, x) - self._spec_radius(x) * dual


class L2Ball(_Ball):
    """``{x' : ‖x' − x‖₂ ≤ ε}``; with ``clip``, bounds hold over the ball ∩ box (the tighter of both)."""

    norm = "2"

    def _empty(self, x: Tensor) -> bool:
        """Empty iff the L2 distance from some ``x`` to the clip box exceeds ε."""
        low, high = self._clip_bounds(x)
        distance = (x - torch.maximum(torch.minimum(x, high), low)).reshape(x.shape[0], -1).norm(dim=1)
        eps = self._spec_radius(x)
        return bool((distance > (eps.reshape(-1) if isinstance(eps, Tensor) else eps)).any())

    def concretize(self, A: Tensor, x: Tensor) -> Tensor:
        dual = A.reshape(A.shape[0], A.shape[1], -1).norm(p=2, dim=-1)
        ball = spec_dot(A, x) - self._spec_radius(x) * dual
        if self.clip is None:
            return ball
        return torch.maximum(ball, _box_lower(A, *self.interval(x)))

    def project(self, x: Tensor, point: Tensor) -> Tensor:
        """Onto the ball, then into the clip box (which keeps it inside the ball when ``x`` is in the box;
        otherwise a point it moved out of the ball falls back to the box point nearest ``x``)."""
        delta = point - x
        norms = delta.reshape(delta.shape[0], -1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))
        return self._inside(x, self._clip(x + delta * torch.clamp(self._radius(x) / norms.clamp(min=1e-30), max=1.0)))

    def sample(self, x: Tensor, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` points of the set around each example, ``(n, *x.shape)``: the even-numbered ones uniformly
        random in the ball, the odd-numbered ones on its sphere, each then clipped into the box."""
        direction = torch.randn((n, *x.shape), generator=generator, dtype=x.dtype).to(x.device)
        direction = direction / direction.flatten(2).norm(dim=2).clamp(min=1e-30).view(n, -1, *([1] * (x.dim() - 1)))
        radius = torch.rand((n, x.shape[0]), generator=generator, dtype=x.dtype).to(x.device) ** (1 / x[0].numel())
        radius[1::2] = 1.0
        points = x + direction * radius.view(n, -1, *([1] * (x.dim() - 1))) * self._radius(x)
        return torch.stack([self._inside(x, self._clip(p)) for p in points])

    def _inside(self, x: Tensor, point: Tensor) -> Tensor:
        """``point``, or where it left the ball, the box point nearest ``x`` (in the set: it is not empty)."""
        if self.clip is None:
            return point
        distance = (point - x).flatten(1).norm(dim=1)
        outside = (distance > self._spec_radius(x).reshape(-1) if isinstance(self.eps, Tensor) else distance > self.eps)
        if not bool(outside.any()):
            return point
        nearest = self._clip(x)
        return torch.where(outside.view(-1, *([1] * (x.dim() - 1))), nearest, point)

    def ascent(self, grad: Tensor, x: Tensor, fraction: float) -> Tensor:
        norms = grad.reshape(grad.shape[0], -1).norm(dim=1).clamp(min=1e-30).view(-1, *([1] * (x.dim() - 1)))
        return grad / norms * self._radius(x) * fraction


class Box(Perturbation):
    """``{x' : lower ≤ x' ≤ upper}``, elementwise; ``lower``/``upper`` broadcast to the input."""

    box = True

    def __init__(self, lower: Tensor, upper: Tensor) -> None:
        lower, upper = torch.as_tensor(lower), torch.as_tensor(upper)
        if not bool(torch.isfinite(lower).all() & torch.isfinite(upper).all()):
            raise ValueError("Box: lower and upper must be finite")
        if bool((lower > upper).any()):
            raise ValueError("Box: lower > upper somewhere, so the set is empty")
        self.lower, self.upper = lower, upper

    def __repr__(self) -> str:
        return f"Box(lower={tuple(self.lower.shape)}, upper={tuple(self.upper.shape)})"

    def check(self, x: Tensor) -> None:
        if not (_fits(tuple(self.lower.shape), x) and _fits(tuple(self.upper.shape), x)):
            raise ValueError(f"Box bounds of shapes {tuple(self.lower.shape)} and {tuple(self.upper.shape)} do not "
                             f"broadcast to the input's shape {tuple(x.shape)}")

    def interval(self, x: Tensor) -> Interval:
        return Interval(self.lower.to(x).expand_as(x), self.upper.to(x).expand_as(x))

    def concretize(self, A: Tensor, x: Tensor) -> Tensor:
        return _box_lower(A, *self.interval(x))
