"""α-CROWN for verification (Xu et al., ICLR 2021): full CROWN whose ReLU lower slopes α ∈ [0, 1] are
optimised by projected gradient ascent on the bound itself.

Every α in [0, 1] gives sound lines, so every iterate's bound is sound, and the elementwise best over
the iterates is too. The first iterate is CROWN's own choice (adaptive α), so the result is never looser
than CROWN. One α per example and neuron, shared by the intermediate sweeps and the final one. ReLU
has such a family of lower lines (``αz``); a nonlinearity without one (ParamRamp) keeps CROWN's lines.
It is ``bm.bounds(..., method="alpha-crown")``: the same checks, batch norm in training mode normalising
with the clean batch's statistics as every other method does.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Optional

import torch
from torch import Tensor

from .ir import Interval
from .perturbation import Perturbation

PROBE_EXAMPLES = 8  # examples of the memory probe: a chunk's sweeps pad every example to its worst one's
# unstable neurons, so one example alone would under-count a chunk's
LR_DECAY = 0.98  # the step size's decay per iteration (auto_LiRPA's default)
ALPHA_BUDGET_SWEEPS = 4  # an α chunk keeps at most this many sweep budgets (verify.py's memory is 8 of them)


def alpha_crown(bm, x: Tensor, perturbation: Perturbation, C: Optional[Tensor] = None, iterations: int = 20,
                lr: float = 0.5, bound_upper: bool = False) -> Interval:
    """Bounds of ``C·f(x')`` (``f(x')`` without ``C``) over the set, at least as tight as ``method="crown"``:
    ``bm.bounds(x, perturbation, "alpha-crown", C, ...)`` with lower bounds only unless ``bound_upper``
    (a second optimisation, of ``−C``)."""
    return bm.bounds(x, perturbation, "alpha-crown", C, bound_upper=bound_upper, iterations=iterations, lr=lr)


def _outside_inference(value: Any) -> Any:
    """``value`` with every tensor made under ``torch.inference_mode`` cloned into a normal one (autograd
    cannot save inference tensors), through tuples and perturbation objects."""
    if isinstance(value, Tensor):
        return value.clone() if value.is_inference() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_outside_inference(v) for v in value)
    if isinstance(value, Perturbation):
        twin = copy.copy(value)
        twin.__dict__.update({k: _outside_inference(v) for k, v in vars(value).items()})
        return twin
    return value


def _examples(inputs: tuple, perturbations: tuple, C: Optional[Tensor], index: Tensor) -> tuple:
    """``inputs``, ``perturbations`` and ``C`` cut to the examples ``index``: tensors whose first dimension
    is the batch are indexed, perturbations through their ``select``, anything else is kept."""
    batch = inputs[0].shape[0]

    def rows(value: Any) -> Any:
        return value[index] if isinstance(value, Tensor) and value.dim() and value.shape[0] == batch else value

    return (tuple(rows(i) for i in inputs),
            tuple(p.select(inputs[0], index) if p is not None else None for p in perturbations), rows(C))


def _bytes_per_example(bm, inputs: tuple, perturbations: tuple, C: Optional[Tensor], crown: dict) -> int:
    """Bytes one example's α-CROWN iteration keeps, from a CROWN pass on the first ``PROBE_EXAMPLES``: what
    autograd saves for the backward pass through the slopes (every sweep's coefficients, all rows: the sweeps'
    chunking bounds only their transient tensors), counted once per storage, plus three more copies of the slopes
    (their gradient and Adam's two moments). Both grow with the examples, one slope per neuron per start node each."""
    count = min(inputs[0].shape[0], PROBE_EXAMPLES)
    first_inputs, first_perturbations, first_C = _examples(inputs, perturbations, C,
                                                           torch.arange(count, device=inputs[0].device))
    alphas: dict[str, Tensor] = {}
    storages: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        bm.program("crown", with_spec=C is not None, **crown)(bm.core, first_inputs, first_perturbations, first_C,
                                                              alphas)
    kept = sum(storages.values()) + 3 * sum(alpha.numel() * alpha.element_size() for alpha in alphas.values())
    return kept // count


def optimized_bounds(bm, inputs: tuple, perturbations: tuple, C: Optional[Tensor], options: dict, iterations: int,
                     lr: float) -> Interval:
    """α-CROWN's bounds for checked ``inputs``, ``perturbations`` and ``C``; ``options`` are those of the
    CROWN program (perturbed inputs, batch statistics, bounds asked for). Runs with gradients on, also
    under ``torch.no_grad()`` or ``torch.inference_mode()``; the result carries no gradient.

    Chunks: on a CPU the examples are optimised ``bm.crown_examples_cpu()`` at a time, as full CROWN runs there
    (``bounded_module``; 16 DM-small images, 5 iterations, one thread: 73 s as one batch, 8.5 s one by one,
    peak memory 2.9 vs 0.5 GiB). Elsewhere, what an iteration keeps (the sweeps' coefficients saved for the
    backward pass, the slopes, their gradients and Adam's moments) grows with the batch, so the examples are
    optimised in chunks that keep at most ``ALPHA_BUDGET_SWEEPS`` times the sweep budget
    (``set_sweep_budget``), measured on the first ``PROBE_EXAMPLES``. Each example's slopes are its own, so
    chunks give the same bounds, unless batch norm runs on batch statistics (then the whole batch at once)."""
    from . import emit

    if iterations < 0 or not lr > 0:
        raise ValueError(f"alpha-crown needs iterations >= 0 and lr > 0, got {iterations} and {lr}")
    crown = {k: v for k, v in options.items() if k != "with_spec"}
    crown.update(lines="alpha", bound_lower=True, bound_upper=False)
    batch = inputs[0].shape[0]
    with torch.inference_mode(False), torch.enable_grad():
        inputs, C, perturbations = _outside_inference((inputs, C, perturbations))
        chunk = batch
        if batch > 1 and not options.get("batch_statistics"):
            chunk = bm.crown_examples_cpu() if inputs[0].device.type == "cpu" else batch
            if chunk > 1:
                per_example = _bytes_per_example(bm, inputs, perturbations, C, crown)
                chunk = max(1, min(chunk, ALPHA_BUDGET_SWEEPS * emit.SWEEP_BUDGET_BYTES // max(per_example, 1)))
        if chunk >= batch:
            return _optimized_chunk(bm, inputs, perturbations, C, options, crown, iterations, lr)
        parts = [_optimized_chunk(bm, *_examples(inputs, perturbations, C, index), options, crown, iterations, lr)
                 for index in torch.arange(batch, device=inputs[0].device).split(chunk)]
    lower = torch.cat([part.lower for part in parts]) if options["bound_lower"] else None
    upper = torch.cat([part.upper for part in parts]) if options["bound_upper"] else None
    return Interval(lower, upper)


def _optimized_chunk(bm, inputs: tuple, perturbations: tuple, C: Optional[Tensor], options: dict, crown: dict,
                     iterations: int, lr: float) -> Interval:
    """``optimized_bounds`` for one chunk of examples (all of them optimised together), called with gradients
    on and outside inference mode."""
    want_lower, want_upper = options["bound_lower"], options["bound_upper"]
    batch = inputs[0].shape[0]

    def lower_of(spec: Optional[Tensor]) -> Tensor:
        program = bm.program("crown", with_spec=spec is not None, **crown)
        alphas: dict[str, Tensor] = {}
        bound = program(bm.core, inputs, perturbations, spec, alphas).lower
        best = bound.detach()
        optimizer = torch.optim.Adam(list(alphas.values()), lr=lr) if alphas else None
        decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, LR_DECAY) if optimizer else None
        for _ in range(iterations if optimizer else 0):
            grads = torch.autograd.grad(-bound.sum(), list(alphas.values()), allow_unused=True)
            for alpha, grad in zip(alphas.values(), grads):
                alpha.grad = grad
            optimizer.step()
            decay.step()
            with torch.no_grad():
                for alpha in alphas.values():
                    alpha.clamp_(0.0, 1.0)  # the projection: αz is a lower line of ReLU for α ∈ [0, 1]
            bound = program(bm.core, inputs, perturbations, spec, alphas).lower
            best = torch.maximum(best, bound.detach())
        return best

    lower = lower_of(C) if want_lower else None
    upper = None
    if want_upper:  # the upper bound of C·f is minus the lower bound of −C·f
        spec = C
        if spec is None:
            n = math.prod(bm.output_shape)
            spec = torch.eye(n, dtype=bm.output_dtype, device=inputs[0].device).expand(batch, n, n)
        upper = -lower_of(-spec)
        if C is None:
            upper = upper.reshape(batch, *bm.output_shape)
    return Interval(lower, upper)
