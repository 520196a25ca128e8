"""``BoundedModule``: a model compiled once into bound programs, one per way of bounding it."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .emit import BoundProgram, emit
from .ir import BoundGraph, Interval
from .ops import LINE_STRATEGIES
from .passes import (BOUND_METHODS, METHODS, attach_rules, canonicalize, eliminate_dead_nodes, evaluate, fold_batchnorm,
                     fuse_spec, mark_perturbed, propagate_shapes, schedule, use_batch_statistics)
from .perturbation import Perturbation
from .trace import trace

Inputs = Union[Tensor, Sequence[Tensor]]
_DROPOUT = nn.modules.dropout._DropoutNd


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside any (Distributed)DataParallel wrappers."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def _finite(t: Tensor) -> bool:
    """No NaN or infinity in ``t``: a sum is finite exactly then, barring overflow, which the exact
    check behind it rules out; one reduction instead of an elementwise pass on the common path."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _as_tuple(x: Inputs) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


class BoundedModule(nn.Module):
    """Trace ``model`` on ``example_input`` (a tensor, or a tuple for several inputs) and compile it.

    ``bm(x)`` is ``model(x)``; ``bm.bounds(x, perturbation, method, C)`` bounds ``C·model(x')`` (or
    ``model(x')`` without ``C``) over every ``x'`` in the perturbation set, differentiably in the
    model's own, live parameters. ``bm(x, perturbation=..., method=...)`` does the same through
    ``forward``, so a ``DistributedDataParallel`` wrapped around a ``BoundedModule`` syncs its gradients.
    """

    def __init__(self, model: nn.Module, example_input: Inputs) -> None:
        super().__init__()
        self.model = model
        core = unwrap(model)
        inputs = _as_tuple(example_input)
        if not inputs or not all(isinstance(x, Tensor) and x.dim() >= 1 for x in inputs):
            raise ValueError("example_input must be a tensor with a batch dimension, or a tuple of them")
        modes = {m: m.training for m in core.modules()}
        core.eval()  # bounds use running statistics; the example's forward must not update them
        try:
            unfolded = propagate_shapes(eliminate_dead_nodes(canonicalize(trace(core, inputs), core)), core, inputs)
            graph = fold_batchnorm(unfolded)
            attach_rules(graph)
            with torch.no_grad():
                expected = core(*inputs)
                got = evaluate(graph, core, inputs)[graph.output]
            if not torch.allclose(expected, got, rtol=1e-4, atol=1e-5):
                raise RuntimeError("internal error: the compiled graph does not compute what the model does "
                                   f"on the example input (max difference {(expected - got).abs().max():.3g})")
        finally:
            for module, training in modes.items():
                module.training = training
        self.graph: BoundGraph = graph  # batch norms folded with their running statistics
        self._unfolded = unfolded  # for batch norms in training mode
        self.input_shapes = [tuple(x.shape[1:]) for x in inputs]
        self.output_shape = tuple(graph[graph.output].shape[1:])
        self._norms = [(n.name, core.get_submodule(n.module)) for n in unfolded if n.op == "batch_norm" and n.module]
        self._dropouts = [m for m in core.modules() if isinstance(m, _DROPOUT)]
        self._programs: dict[tuple, BoundProgram] = {}

    @property
    def core(self) -> nn.Module:
        """The traced model (inside any DataParallel wrapper)."""
        return unwrap(self.model)

    def forward(self, *x: Tensor, perturbation: Any = None, **bound_options: Any) -> Any:
        if perturbation is None:
            return self.model(*x)
        return self._propagate(x if len(x) > 1 else x[0], perturbation, **bound_options)

    def program(self, method: str = "crown-ibp", *, perturbed: Optional[Sequence[int]] = None,
                with_spec: bool = False, bound_lower: bool = True, bound_upper: bool = True,
                lines: str = "adaptive", batch_statistics: Sequence[str] = (), with_ibp: bool = False) -> BoundProgram:
        """The bound program for ``method`` (compiled on first use, then cached); print it to read it.
        ``perturbed``: indices of the perturbed inputs (all by default); ``with_spec``: takes ``C``;
        ``batch_statistics``: batch-norm nodes that normalise with the clean batch's statistics
        (those in training mode); ``with_ibp``: also return the output's IBP bounds, from the same pass."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
        if lines not in LINE_STRATEGIES + ("alpha",):
            raise ValueError(f"unknown line strategy {lines!r}; choose one of {LINE_STRATEGIES}")
        if not (bound_lower or bound_upper):
            raise ValueError("ask for the lower bound, the upper bound, or both")
        perturbed = tuple(range(len(self.input_shapes)) if perturbed is None else sorted(perturbed))
        if not perturbed:
            raise ValueError("at least one input must be perturbed")
        norms = tuple(sorted(batch_statistics))
        key = (method, perturbed, with_spec, bound_lower, bound_upper, lines, norms, with_ibp)
        if key not in self._programs:
            graph = fold_batchnorm(use_batch_statistics(self._unfolded, set(norms))) if norms else self.graph
            graph = mark_perturbed(graph, perturbed)
            if with_spec:
                graph = fuse_spec(graph)
            rules = attach_rules(graph)
            self._programs[key] = emit(graph, rules, schedule(graph, rules, method, with_ibp), bound_lower=bound_lower,
                                       bound_upper=bound_upper, lines=lines)
        return self._programs[key]

    def bounds(self, x: Inputs, perturbation: Union[Perturbation, Sequence[Optional[Perturbation]]],
               method: str = "crown-ibp", C: Optional[Tensor] = None, *, bound_lower: bool = True,
               bound_upper: bool = True, lines: str = "adaptive", beta: float = 1.0) -> Interval:
        """``(lower, upper)`` bounds of ``C·model(x')`` for every ``x'`` in the perturbation set:
        ``(batch, specs)`` with ``C`` of shape ``(batch, specs, outputs)``, else the output's shape.
        A bound not asked for (``bound_lower``/``bound_upper``) is None and costs nothing.
        ``beta`` < 1 mixes in IBP, ``β·bound + (1−β)·IBP`` (CROWN-IBP's training bound, Zhang et al.
        2020), with both from one pass over the intermediate intervals where the method has them.

        Methods: ``ibp``, ``crown-ibp``, ``crown`` (every intermediate bound by its own sweep), ``lbp``
        and ``crown-lbp`` (forward linear bounds, Lyu et al. 2021; one perturbed input). ``lines``:
        ``adaptive``, ``tight``, ``zero`` or ``one``."""
        if lines not in LINE_STRATEGIES:
            raise ValueError(f"unknown line strategy {lines!r}; choose one of {LINE_STRATEGIES}")
        if method not in BOUND_METHODS:
            if method == "singleprop":
                raise ValueError("singleprop propagates deviations, not sound bounds: train with "
                                 "robust_loss(..., method='singleprop') and certify with a bound method")
            raise ValueError(f"unknown method {method!r}; choose one of {BOUND_METHODS}")
        return self._propagate(x, perturbation, method, C, bound_lower=bound_lower, bound_upper=bound_upper,
                               lines=lines, beta=beta)

    def _propagate(self, x: Inputs, perturbation: Union[Perturbation, Sequence[Optional[Perturbation]]],
                   method: str = "crown-ibp", C: Optional[Tensor] = None, *, bound_lower: bool = True,
                   bound_upper: bool = True, lines: str = "adaptive", beta: float = 1.0) -> Interval:
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], got {beta}")
        if beta == 0.0:
            method = "ibp"
        inputs = self._check_inputs(x)
        perturbations = self._check_perturbations(perturbation, inputs)
        self._check_spec(C, inputs[0].shape[0])
        self._check_modes()
        perturbed = [i for i, p in enumerate(perturbations) if p is not None]
        norms = [name for name, module in self._norms if module.training]
        mix = beta < 1.0 and method != "ibp"
        joint = mix and method in ("crown-ibp", "crown")  # their pass computes IBP's bounds anyway
        options = dict(perturbed=perturbed, with_spec=C is not None, bound_lower=bound_lower,
                       bound_upper=bound_upper, lines=lines, batch_statistics=norms)
        program = self.program(method, with_ibp=joint, **options)
        if not mix:
            return program(self.core, inputs, perturbations, C)
        if joint:
            tight, ibp = program(self.core, inputs, perturbations, C)
        else:
            tight = program(self.core, inputs, perturbations, C)
            ibp = self.program("ibp", **options)(self.core, inputs, perturbations, C)
        return Interval(*(None if t is None else beta * t + (1 - beta) * i for t, i in zip(tight, ibp)))

    def _check_inputs(self, x: Inputs) -> tuple:
        inputs = _as_tuple(x)
        if len(inputs) != len(self.input_shapes):
            raise ValueError(f"the model takes {len(self.input_shapes)} input(s); got {len(inputs)}")
        for i, (value, shape) in enumerate(zip(inputs, self.input_shapes)):
            if not isinstance(value, Tensor):
                raise ValueError(f"input {i} must be a tensor, got {type(value).__name__}")
            if tuple(value.shape[1:]) != shape or value.dim() != len(shape) + 1:
                raise ValueError(f"input {i} has shape {tuple(value.shape)}; the model was compiled for "
                                 f"(batch, {', '.join(map(str, shape))})")
            if value.shape[0] != inputs[0].shape[0]:
                raise ValueError(f"input {i} has batch size {value.shape[0]}, input 0 has {inputs[0].shape[0]}")
            if not _finite(value):
                raise ValueError(f"input {i} contains NaN or infinite values")
        return inputs

    def _check_perturbations(self, perturbation: Any, inputs: tuple) -> tuple:
        if isinstance(perturbation, Perturbation):
            if len(inputs) > 1:
                raise ValueError(f"the model takes {len(inputs)} inputs: give a tuple with one perturbation "
                                 "(or None) per input")
            perturbations: tuple = (perturbation,)
        else:
            perturbations = tuple(perturbation)
            if len(perturbations) != len(inputs):
                raise ValueError(f"{len(perturbations)} perturbations for {len(inputs)} inputs")
        for i, p in enumerate(perturbations):
            if p is not None and not isinstance(p, Perturbation):
                raise ValueError(f"perturbation {i} must be a Perturbation (LinfBall, L2Ball, Box) or None")
            if p is not None:
                p.check(inputs[i])
        return perturbations

    def _check_spec(self, C: Optional[Tensor], batch: int) -> None:
        if C is None:
            return
        outputs = math.prod(self.output_shape)
        if not isinstance(C, Tensor) or C.dim() != 3 or C.shape[0] != batch or C.shape[2] != outputs:
            shape = tuple(C.shape) if isinstance(C, Tensor) else type(C).__name__
            raise ValueError(f"C must have shape (batch={batch}, specs, outputs={outputs}); got {shape}")
        if not _finite(C):
            raise ValueError("C contains NaN or infinite values")

    def _check_modes(self) -> None:
        if any(m.training and m.p > 0 for m in self._dropouts):
            raise ValueError("Dropout in training mode is random and has no sound bound: call model.eval(), "
                             "or remove dropout from the certified model")
