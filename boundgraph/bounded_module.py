"""``BoundedModule``: a model compiled once into bound programs, one per way of bounding it."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .emit import BoundProgram, emit
from .guard import (check_batch_dimension, check_fingerprint, check_graph, fingerprint, refuse_hooks,
                    training_mode_problem)
from .ir import BoundGraph, Interval
from .ops import LINE_STRATEGIES
from .passes import (BOUND_METHODS as SCHEDULED_METHODS, METHODS, attach_rules, canonicalize, eliminate_dead_nodes,
                     expand_perturbed, fold_batchnorm, fuse_loss, fuse_spec, mark_perturbed, propagate_shapes, schedule, use_batch_statistics)
from .perturbation import Perturbation
from .trace import trace

Inputs = Union[Tensor, Sequence[Tensor]]
Perturbations = Union[Perturbation, Sequence[Optional[Perturbation]]]
BOUND_METHODS = SCHEDULED_METHODS + ("alpha-crown",)
_DROPOUT = nn.modules.dropout._DropoutNd
_BATCH_NORM = nn.modules.batchnorm._BatchNorm
_UNKNOWN = object()


# Examples per full-CROWN pass on a CPU: as many as keep one example's largest coefficient matrix (2n rows of the
# widest node, times the widest node) times the chunk within CROWN_CPU_ELEMENTS, at least one. A refining sweep
# bounds, for every example, as many rows as the example with the most unstable neurons has, so a batch of large
# examples pays for its worst one; measured on one thread (64 images, per call): DM-small (Fashion-MNIST,
# IBP-trained, ε 0.1) 7.3 s in one batch, 2.7 s in fours, 1.1 s one at a time (here: 1 at a time); a random
# 784-256-256-256-10 MLP (ε 0.01) 0.79 s, 0.42 s, 0.46 s (here: 1). Small networks lose to the per-pass overhead
# instead: branch and bound on VerticalCAS (4 inputs, 6 x 45 ReLUs), 64 boxes per call, bounded 13,444 boxes in
# 60 s one at a time and 121,924 in one batch (here: 64).
CROWN_CPU_ELEMENTS = 2**21


def _concatenated(parts: list) -> Any:
    """Per-chunk results (tensors, None, or tuples and Intervals of them) joined along the batch."""
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, Tensor):
        return torch.cat(parts)
    joined = [_concatenated([part[i] for part in parts]) for i in range(len(first))]
    return type(first)(*joined) if isinstance(first, Interval) else tuple(joined)


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
    """Trace ``model`` on ``example_input`` (a tensor, or a tuple for several inputs, each with the batch
    on dimension 0) and compile it.

    ``bm(x)`` is ``model(x)``; ``bm.bounds(x, perturbation, method, C)`` bounds ``C·model(x')`` (or
    ``model(x')`` without ``C``) over every ``x'`` in the perturbation set, differentiably in the
    model's own, live parameters. ``compile=True`` (or a ``torch.compile`` backend's name) runs every bound
    program through ``torch.compile``: each program compiles on first use (tens of seconds on a CPU) and is
    cached; where the backend cannot compile, a warning says so and the program runs eagerly.
    ``bm(x, perturbation=..., method=...)`` is ``bm.bounds`` through
    ``forward``, so a ``DistributedDataParallel`` wrapped around a ``BoundedModule`` syncs its gradients.

    The model must stay the model it was compiled from: a swapped module, a new parameter, a changed
    attribute, or control flow that takes another path at another batch size raises
    ``ModelChangedError``/``ValueError`` instead of bounding a stale graph (``boundgraph.guard``).
    """

    def __init__(self, model: nn.Module, example_input: Inputs, compile: Union[bool, str] = False) -> None:
        super().__init__()
        if not isinstance(compile, (bool, str)):
            raise ValueError(f"compile must be True, False or a torch.compile backend name, got {compile!r}")
        self.compile_backend: Optional[str] = ("inductor" if compile is True else compile) or None
        self.model = model
        core = unwrap(model)
        inputs = _as_tuple(example_input)
        if not inputs or not all(isinstance(x, Tensor) and x.dim() >= 1 and x.shape[0] >= 1 for x in inputs):
            raise ValueError("example_input must be a tensor with a batch dimension first (and at least one "
                             "example), or a tuple of them")
        for i, x in enumerate(inputs):
            if x.is_floating_point() and not _finite(x):
                raise ValueError(f"example input {i} contains NaN or infinite values")
        refuse_hooks(core)
        modes = {m: m.training for m in core.modules()}
        core.eval()  # bounds use running statistics; the example's forward must not update them
        try:
            traced = trace(core, inputs)
            canonical = eliminate_dead_nodes(canonicalize(traced, core))
            unfolded = propagate_shapes(canonical, core, inputs)
            graph = fold_batchnorm(unfolded)
            # every rule checked as used when all floating-point inputs are perturbed: refusals at compile time
            attach_rules(expand_perturbed(mark_perturbed(graph, [i for i, x in enumerate(inputs)
                                                                 if x.is_floating_point()])))
            output = check_graph(graph, core, inputs, "the example input")
            bigger = check_batch_dimension(graph, core, inputs)
        finally:
            for module, training in modes.items():
                module.training = training
        self.graph: BoundGraph = graph  # batch norms folded with their running statistics
        self._canonical = canonical  # as traced in eval mode, for the training-mode check
        self._unfolded = unfolded  # for batch norms in training mode
        self.input_shapes = [tuple(x.shape[1:]) for x in inputs]
        self.input_dtypes = [x.dtype for x in inputs]
        self.output_shape = tuple(graph[graph.output].shape[1:])
        self.output_dtype = output.dtype
        self._norms = [(n.name, core.get_submodule(n.module)) for n in unfolded if n.op == "batch_norm" and n.module]
        self._fingerprint = fingerprint(core)
        self._checked_batches = {inputs[0].shape[0], bigger[0].shape[0]}
        self._training_problem: Any = _UNKNOWN
        self._example = tuple(x.detach().clone() for x in inputs)  # for the training-mode trace
        self.traced_by = traced.how  # "fx" or "export"
        self._programs: dict[tuple, BoundProgram] = {}
        self._widest = max((math.prod(n.shape[1:]) for n in graph if n.shape is not None
                            and n.op not in ("param", "constant")), default=1)  # elements (crown_examples_cpu)

    @property
    def core(self) -> nn.Module:
        """The traced model (inside any DataParallel wrapper)."""
        return unwrap(self.model)

    def __getstate__(self) -> dict:
        """Pickled without its compiled programs (generated code; they are compiled again on use)."""
        state = dict(self.__dict__)
        state["_programs"] = {}
        for cache in ("_lipschitz_graph", "_float64_twin"):
            state.pop(cache, None)
        return state

    def forward(self, *x: Tensor, perturbation: Optional[Perturbations] = None,
                deviations: Optional[Perturbations] = None, **options: Any) -> Any:
        """``model(*x)``; with ``perturbation=``, ``bounds(x, perturbation, **options)``; with
        ``deviations=``, SingleProp's deviations (``deviations(x, ..., **options)``)."""
        inputs = x if len(x) > 1 else x[0]
        if perturbation is not None and deviations is not None:
            raise ValueError("give perturbation= (bounds) or deviations= (SingleProp), not both")
        if perturbation is not None:
            return self.bounds(inputs, perturbation, **options)
        if deviations is not None:
            return self.deviations(inputs, deviations, **options)
        if options:
            raise ValueError(f"options {sorted(options)} without perturbation=: a plain forward takes none")
        return self.model(*x)

    def program(self, method: str = "crown-ibp", *, perturbed: Optional[Sequence[int]] = None,
                with_spec: bool = False, bound_lower: bool = True, bound_upper: bool = True,
                lines: str = "adaptive", batch_statistics: Sequence[str] = (), with_ibp: bool = False,
                intermediates: bool = False, loss_fusion: bool = False) -> BoundProgram:
        """The bound program for ``method`` (compiled on first use, then cached); print it to read it.
        ``perturbed``: indices of the perturbed inputs (every floating-point one by default); ``with_spec``: takes ``C``;
        ``batch_statistics``: batch-norm nodes that normalise with the clean batch's statistics
        (those in training mode); ``with_ibp``: also return the output's IBP bounds, from the same pass;
        ``lines="alpha"``: α-CROWN's program, whose lower ReLU slopes come in a dict argument;
        ``intermediates``: also return every interval computed on the way, by node (``boundgraph.check``);
        ``loss_fusion``: bounds ``log(1 + Σ_i exp((C·f)_i))`` instead of ``C·f`` (takes ``C``; ``bounds``)."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
        if lines not in LINE_STRATEGIES + ("alpha",):
            raise ValueError(f"unknown line strategy {lines!r}; choose one of {LINE_STRATEGIES}")
        if not (bound_lower or bound_upper):
            raise ValueError("ask for the lower bound, the upper bound, or both")
        if perturbed is None:  # every floating-point input (integer ones, ids and masks, cannot be perturbed)
            perturbed = [i for i, dtype in enumerate(self.input_dtypes) if dtype.is_floating_point]
        perturbed = tuple(sorted(perturbed))
        if not perturbed:
            raise ValueError("at least one input must be perturbed")
        norms = tuple(sorted(batch_statistics))
        if loss_fusion and method == "singleprop":
            raise ValueError("singleprop propagates deviations, not bounds: loss fusion takes a bound method")
        with_spec = with_spec or loss_fusion
        key = (method, perturbed, with_spec, bound_lower, bound_upper, lines, norms, with_ibp, intermediates, loss_fusion)
        if key not in self._programs:
            graph = fold_batchnorm(use_batch_statistics(self._unfolded, set(norms))) if norms else self.graph
            graph = expand_perturbed(mark_perturbed(graph, perturbed))
            if loss_fusion:
                graph = fuse_loss(graph)
            elif with_spec:
                graph = fuse_spec(graph)
            rules = attach_rules(graph)
            program = emit(graph, rules, schedule(graph, rules, method, with_ibp), bound_lower=bound_lower,
                           bound_upper=bound_upper, lines=lines, intermediates=intermediates)
            backend = getattr(self, "compile_backend", None)  # (absent from modules pickled before it existed)
            self._programs[key] = program.compile(backend) if backend else program
        return self._programs[key]

    def bounds(self, x: Inputs, perturbation: Perturbations, method: str = "crown-ibp", C: Optional[Tensor] = None, *,
               bound_lower: bool = True, bound_upper: bool = True, lines: str = "adaptive", beta: float = 1.0,
               iterations: int = 20, lr: float = 0.5, loss_fusion: bool = False) -> Interval:
        """``(lower, upper)`` bounds of ``C·model(x')`` for every ``x'`` in the perturbation set:
        ``(batch, specs)`` with ``C`` of shape ``(batch, specs, outputs)``, else the output's shape.
        A bound not asked for (``bound_lower``/``bound_upper``) is None and costs nothing.
        ``beta`` < 1 mixes in IBP, ``β·bound + (1−β)·IBP`` (CROWN-IBP's training bound, Zhang et al.
        2020), with both from one pass over the intermediate intervals where the method has them.

        Methods: ``ibp``, ``crown-ibp``, ``crown`` (every intermediate bound by its own sweep), ``lbp``
        and ``crown-lbp`` (forward linear bounds, Lyu et al. 2021; one perturbed input), ``alpha-crown``
        (CROWN with lower ReLU slopes optimised by ``iterations`` Adam steps of step size ``lr``, decayed
        ×0.98 per step, Xu et al. 2021). ``lines``: ``adaptive``, ``tight``, ``zero`` or ``one``.

        ``loss_fusion``: bound ``log(1 + Σ_i exp((C·model(x'))_i))`` instead, ``(batch, 1)``; with ``C``'s rows
        ``e_j − e_y`` (``j ≠ y``) that is the cross entropy at label ``y``, bounded from one backward row
        (``boundgraph/ops/loss.py``; ``robust_loss(..., fused=True)``).

        A bound is never finite and wrong because of overflow: where an intermediate bound overflows,
        the result is −inf (lower) or +inf (upper). Bounds are computed in the model's floating point,
        rounding to nearest (see README, "Floating point")."""
        if method not in BOUND_METHODS:
            if method == "singleprop":
                raise ValueError("singleprop propagates deviations, not sound bounds: train with "
                                 "robust_loss(..., method='singleprop') and certify with a bound method")
            raise ValueError(f"unknown method {method!r}; choose one of {BOUND_METHODS}")
        if lines not in LINE_STRATEGIES:
            raise ValueError(f"unknown line strategy {lines!r}; choose one of {LINE_STRATEGIES}")
        if method == "alpha-crown" and lines != "adaptive":
            raise ValueError("alpha-crown starts from CROWN's adaptive lines and optimises them; lines must be "
                             "'adaptive'")
        if not (bound_lower or bound_upper):
            raise ValueError("ask for the lower bound, the upper bound, or both")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], got {beta}")
        if loss_fusion and method == "alpha-crown":
            raise ValueError("alpha-crown optimises bounds of C·f for verification; loss fusion takes ibp, crown-ibp, "
                             "crown, lbp or crown-lbp")
        if loss_fusion and C is None:
            raise ValueError("loss_fusion bounds log(1 + Σ exp(C·f)): give C (rows e_j − e_y for the cross entropy)")
        inputs, perturbations = self._checked(x, perturbation, C)
        options = dict(perturbed=[i for i, p in enumerate(perturbations) if p is not None], with_spec=C is not None,
                       bound_lower=bound_lower, bound_upper=bound_upper, lines=lines,
                       batch_statistics=self.training_norms(), loss_fusion=loss_fusion)
        if beta == 0.0:
            method = "ibp"
        mix = beta < 1.0 and method != "ibp"
        if method == "alpha-crown":
            from .alpha import optimized_bounds
            tight = optimized_bounds(self, inputs, perturbations, C, options, iterations, lr)
        elif mix and method in ("crown-ibp", "crown"):  # their pass computes IBP's bounds anyway
            tight, ibp = self._run(self.program(method, with_ibp=True, **options), method, inputs, perturbations, C)
        else:
            tight = self._run(self.program(method, **options), method, inputs, perturbations, C)
        if not mix:
            return tight
        if method not in ("crown-ibp", "crown"):
            ibp = self.program("ibp", **options)(self.core, inputs, perturbations, C)
        return Interval(*(None if t is None else beta * t + (1 - beta) * i for t, i in zip(tight, ibp)))

    def crown_examples_cpu(self) -> int:
        """Examples per full-CROWN (and α-CROWN) pass on a CPU (``CROWN_CPU_ELEMENTS``), by the graph's widest node."""
        return max(1, CROWN_CPU_ELEMENTS // (2 * self._widest * self._widest))

    def _run(self, program: BoundProgram, method: str, inputs: tuple, perturbations: tuple, C: Optional[Tensor]):
        """``program`` on the inputs; full CROWN on a CPU ``crown_examples_cpu()`` examples at a time (each
        example's bounds are its own, unless batch norm runs on batch statistics: then the whole batch)."""
        batch = inputs[0].shape[0]
        chunk = self.crown_examples_cpu() if method == "crown" and inputs[0].device.type == "cpu" else batch
        if batch <= chunk or self.training_norms():
            return program(self.core, inputs, perturbations, C)
        from .alpha import _examples

        parts = [program(self.core, *_examples(inputs, perturbations, C, index))
                 for index in torch.arange(batch).split(chunk)]
        return _concatenated(parts)

    def deviations(self, x: Inputs, perturbation: Perturbations, C: Optional[Tensor] = None) -> Interval:
        """SingleProp (Boopathy et al. 2021): the clean value of ``C·model(x)`` ± a propagated deviation.
        **Not a bound** (a training regulariser): certify with ``bounds``."""
        inputs, perturbations = self._checked(x, perturbation, C)
        program = self.program("singleprop", perturbed=[i for i, p in enumerate(perturbations) if p is not None],
                               with_spec=C is not None,
                               batch_statistics=self.training_norms())
        return program(self.core, inputs, perturbations, C)

    def _checked(self, x: Inputs, perturbation: Perturbations, C: Optional[Tensor]) -> tuple[tuple, tuple]:
        """The inputs and perturbations, checked, after checking ``C`` and that the model is still the one
        compiled (the one validation path of every way to bound)."""
        self.check_model()
        inputs = self._check_inputs(x)
        perturbations = self._check_perturbations(perturbation, inputs)
        self._check_spec(C, inputs[0])
        if inputs[0].shape[0] not in self._checked_batches:  # once per batch size: control flow on shapes
            check_graph(self.graph, self.core, inputs, f"a batch of {inputs[0].shape[0]}")
            self._checked_batches.add(inputs[0].shape[0])
        return inputs, perturbations

    def check_model(self) -> None:
        """Raise unless the model is still the one compiled (``boundgraph.guard``) and in a mode its
        programs bound."""
        core = self.core
        check_fingerprint(self._fingerprint, core)
        training = [m for m in core.modules() if m.training]
        if any(isinstance(m, _DROPOUT) and m.p > 0 for m in training):
            raise ValueError("Dropout in training mode is random and has no sound bound: call model.eval(), "
                             "or remove dropout from the certified model")
        folded = {id(module) for _, module in self._norms}
        if any(isinstance(m, _BATCH_NORM) and id(m) not in folded for m in training):
            raise ValueError("a batch norm in training mode that the compiled graph does not see as one (torch.export "
                             "traced the model, or a functional call): call model.eval() to bound with its running "
                             "statistics")
        if training:
            if self._training_problem is _UNKNOWN:
                self._training_problem = training_mode_problem(core, self._example, self._canonical)
            if self._training_problem is not None:
                raise ValueError("in training mode the model computes something its compiled (eval-mode) graph does "
                                 f"not: {self._training_problem}. Call model.eval() to bound the eval-mode network")

    def training_norms(self) -> list[str]:
        """The batch-norm nodes whose modules are in training mode: they normalise with the clean batch's
        statistics (every bound program's ``batch_statistics``)."""
        return [name for name, module in self._norms if module.training]

    def _check_inputs(self, x: Inputs) -> tuple:
        inputs = _as_tuple(x)
        if len(inputs) != len(self.input_shapes):
            raise ValueError(f"the model takes {len(self.input_shapes)} input(s); got {len(inputs)}")
        for i, (value, shape, dtype) in enumerate(zip(inputs, self.input_shapes, self.input_dtypes)):
            if not isinstance(value, Tensor):
                raise ValueError(f"input {i} must be a tensor, got {type(value).__name__}")
            if tuple(value.shape[1:]) != shape or value.dim() != len(shape) + 1:
                raise ValueError(f"input {i} has shape {tuple(value.shape)}; the model was compiled for "
                                 f"(batch, {', '.join(map(str, shape))})")
            if value.shape[0] == 0:
                raise ValueError(f"input {i} is an empty batch: there is nothing to bound")
            if value.shape[0] != inputs[0].shape[0]:
                raise ValueError(f"input {i} has batch size {value.shape[0]}, input 0 has {inputs[0].shape[0]}")
            if value.dtype != dtype:
                raise ValueError(f"input {i} is {value.dtype}; the model was compiled for {dtype} inputs: convert "
                                 "the input, or build a BoundedModule from a converted model and example")
            if value.is_floating_point() and not _finite(value):
                raise ValueError(f"input {i} contains NaN or infinite values")
        return inputs

    def _check_perturbations(self, perturbation: Any, inputs: tuple) -> tuple:
        if isinstance(perturbation, Perturbation):
            if len(inputs) > 1:
                raise ValueError(f"the model takes {len(inputs)} inputs: give a tuple with one perturbation "
                                 "(or None) per input")
            perturbations: tuple = (perturbation,)
        else:
            if not isinstance(perturbation, (tuple, list)):
                raise ValueError(f"perturbation must be a Perturbation (LinfBall, L2Ball, Box), or a tuple of them "
                                 f"(None for unperturbed inputs), got {type(perturbation).__name__}")
            perturbations = tuple(perturbation)
            if len(perturbations) != len(inputs):
                raise ValueError(f"{len(perturbations)} perturbations for {len(inputs)} inputs")
        for i, p in enumerate(perturbations):
            if p is not None and not isinstance(p, Perturbation):
                raise ValueError(f"perturbation {i} must be a Perturbation (LinfBall, L2Ball, Box) or None")
            if p is not None:
                if not inputs[i].is_floating_point():
                    raise ValueError(f"input {i} is {inputs[i].dtype}: only floating-point inputs can be perturbed. "
                                     "Token ids and masks are exact; to perturb a language model, perturb its "
                                     "embeddings: bound a module that takes them (a model's inputs_embeds), with "
                                     "the mask as a second, unperturbed input")
                p.check(inputs[i])
        if all(p is None for p in perturbations):
            raise ValueError("at least one input must be perturbed")
        return perturbations

    def _check_spec(self, C: Optional[Tensor], like: Tensor) -> None:
        if C is None:
            return
        batch, outputs = like.shape[0], math.prod(self.output_shape)
        if not isinstance(C, Tensor) or C.dim() != 3 or C.shape[0] != batch or C.shape[2] != outputs:
            shape = tuple(C.shape) if isinstance(C, Tensor) else type(C).__name__
            raise ValueError(f"C must have shape (batch={batch}, specs, outputs={outputs}); got {shape}")
        if C.shape[1] == 0:
            raise ValueError("C has no specification rows: there is nothing to bound")
        if C.dtype != self.output_dtype or C.device != like.device:
            raise ValueError(f"C is {C.dtype} on {C.device}; the model's output is {self.output_dtype} on "
                             f"{like.device}: convert C")
        if not _finite(C):
            raise ValueError("C contains NaN or infinite values")
