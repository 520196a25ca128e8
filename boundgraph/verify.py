"""Decide a VNN-LIB property of a network: ``sat`` (a counterexample, checked by running the model), ``unsat``
(proved: no counterexample) or ``unknown`` (the time ran out).

    python -m boundgraph.verify net.nnet property.vnnlib --timeout 60

For each case of the property (``boundgraph.vnnlib``: an input box and output rows ``C·y ≤ d``, all of which a
counterexample satisfies), with ``g(x) = max_i (C_i·f(x) − d_i)`` (a counterexample has ``g ≤ 0``):

1. **Falsify**: random points and corners of the box, then PGD descending ``g`` from the best of them.
2. **Bound**: CROWN's lower bounds ``L_i ≤ min_x C_i·f(x) − d_i`` over the box; ``max_i L_i > 0`` proves the case.
3. **Branch and bound on the input**: unproved boxes wait in a priority queue, the least proved first (smallest
   ``max_i L_i``). Each round bounds up to ``batch`` of them in one call, evaluates the model at their centres
   (a counterexample found there is ``sat``), and halves each unproved one along the dimension of largest
   ``width_j · |∂g/∂x_j|`` at its centre (the "smear" estimate of the gain). A box whose halves would be narrower
   than rounding is left unproved.

Sound by construction: ``unsat`` only when every box of every case is proved by a bound, the halves of a box
covering it exactly; ``sat`` only with a point of the box at which the model itself gives ``C·y ≤ d``.
"""
from __future__ import annotations

import argparse
import heapq
import itertools
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from .bounded_module import BoundedModule
from .perturbation import Box
from .vnnlib import Case, read


@dataclass
class Verdict:
    """``result``: ``sat``, ``unsat`` or ``unknown``; with ``sat``, the counterexample ``x`` and the model's ``y``."""

    result: str
    x: Optional[Tensor] = None
    y: Optional[Tensor] = None
    boxes: int = 0  # boxes bounded
    seconds: float = 0.0
    cases: list = field(default_factory=list)  # per case: (result, boxes bounded)

    def vnncomp(self) -> str:
        """The VNN-COMP result text: the result, and with ``sat`` the counterexample's inputs and outputs."""
        if self.result != "sat":
            return self.result + "\n"
        pairs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(self.x.flatten())]
        pairs += [f"(Y_{i} {float(v)!r})" for i, v in enumerate(self.y.flatten())]
        return "sat\n(" + "\n ".join(pairs) + ")\n"


def _gaps(model: nn.Module, x: Tensor, case: Case) -> Tensor:
    """``g(x) = max_i (C_i·f(x) − d_i)`` per point (``−inf`` with no rows: every point is a counterexample)."""
    return _gaps_of(model(x).flatten(1), case)


def _gaps_of(y: Tensor, case: Case) -> Tensor:
    if case.C.shape[0] == 0:
        return torch.full((y.shape[0],), -math.inf, dtype=y.dtype)
    return (y @ case.C.to(y).T - case.d.to(y)).max(1).values


def _confirmed(model: nn.Module, x: Tensor, case: Case) -> Optional[Verdict]:
    """The counterexample among ``x`` (points of the case's box) at which the model, run on that point alone,
    gives ``C·y ≤ d``, if any."""
    with torch.no_grad():
        hits = (_gaps(model, x, case) <= 0).nonzero().flatten()
        if not len(hits):
            return None
        point = x[hits[0]].clone()
        y = model(point.unsqueeze(0)).flatten(1)
    inside = bool(((point >= case.lower.to(point)) & (point <= case.upper.to(point))).all())
    return Verdict("sat", point, y.flatten()) if inside and bool(_gaps_of(y, case)[0] <= 0) else None


def falsify(model: nn.Module, case: Case, points: int = 256, steps: int = 50, seed: int = 0) -> Optional[Verdict]:
    """Random points, corners and PGD (signed steps on ``g``, projected onto the box) looking for a counterexample."""
    lower, upper = case.lower, case.upper
    g = torch.Generator().manual_seed(seed)
    n = lower.numel()
    samples = lower + (upper - lower) * torch.rand(points, n, dtype=lower.dtype, generator=g)
    corners = torch.where(torch.rand(min(points, 2 ** n), n, generator=g) < 0.5, lower, upper)
    x = torch.cat([samples, corners, ((lower + upper) / 2).unsqueeze(0)])
    found = _confirmed(model, x, case)
    if found is not None or steps == 0:
        return found
    with torch.no_grad():
        start = x[_gaps(model, x, case).argsort()[:16]]
    x = start.clone().requires_grad_(True)
    step = (upper - lower) / 8
    for _ in range(steps):
        gaps = _gaps(model, x, case)
        grad, = torch.autograd.grad(gaps.sum(), x)
        with torch.no_grad():
            x = torch.minimum(torch.maximum(x - step * grad.sign(), lower), upper)
            found = _confirmed(model, x, case)
            if found is not None:
                return found
            step = step * 0.9
        x.requires_grad_(True)
    return None


def _split_dimension(model: nn.Module, lower: Tensor, upper: Tensor, case: Case) -> Tensor:
    """Per box, the dimension of largest ``width_j · |∂g/∂x_j|`` at the centre (the widest if ``g`` is flat)."""
    centre = ((lower + upper) / 2).requires_grad_(True)
    grad, = torch.autograd.grad(_gaps(model, centre, case).sum(), centre)
    width = upper - lower
    score = width * grad.abs()
    flat = score.max(1).values <= 0
    score[flat] = width[flat]
    return score.argmax(1)


def decide_case(model: nn.Module, bm: BoundedModule, case: Case, deadline: float, batch: int = 64,
                method: str = "crown") -> tuple[Verdict, int]:
    """``sat``, ``unsat`` or ``unknown`` (the deadline passed) for one case, and the boxes bounded."""
    found = falsify(model, case)
    if found is not None:
        return found, 0
    if case.C.shape[0] == 0:
        raise AssertionError("a case without output rows has every point as a counterexample")
    C = case.C.unsqueeze(0)
    queue: list = [(-math.inf, 0, case.lower, case.upper)]
    order = itertools.count(1)
    bounded, stuck = 0, False
    while queue:
        if time.monotonic() > deadline:
            return Verdict("unknown"), bounded
        popped = [heapq.heappop(queue) for _ in range(min(batch, len(queue)))]
        lower = torch.stack([p[2] for p in popped])
        upper = torch.stack([p[3] for p in popped])
        centre = (lower + upper) / 2
        found = _confirmed(model, centre, case)
        if found is not None:
            return found, bounded
        with torch.no_grad():
            bounds = bm.bounds(centre, Box(lower, upper), method, C.expand(len(popped), *C.shape[1:]),
                               bound_upper=False).lower
        bounded += len(popped)
        best = (bounds - case.d.to(bounds)).max(1).values
        open_ = ~(best > 0)  # NaN is not a proof
        if not bool(open_.any()):
            continue
        lower, upper, best = lower[open_], upper[open_], best[open_]
        dimension = _split_dimension(model, lower, upper, case)
        rows = torch.arange(len(lower))
        middle = (lower[rows, dimension] + upper[rows, dimension]) / 2
        for i in range(len(lower)):
            j = int(dimension[i])
            if not (lower[i, j] < middle[i] < upper[i, j]):
                stuck = True  # narrower than rounding: this box stays unproved
                continue
            left_upper, right_lower = upper[i].clone(), lower[i].clone()
            left_upper[j], right_lower[j] = middle[i], middle[i]
            priority = float(best[i]) if not math.isnan(float(best[i])) else -math.inf
            heapq.heappush(queue, (priority, next(order), lower[i], left_upper))
            heapq.heappush(queue, (priority, next(order), right_lower, upper[i]))
    return Verdict("unknown" if stuck else "unsat"), bounded


def decide(model: nn.Module, cases: list[Case], timeout: float = 60.0, batch: int = 64,
           method: str = "crown") -> Verdict:
    """The property's verdict: ``sat`` as soon as one case has a counterexample, ``unsat`` when every case is
    proved, else ``unknown``. ``timeout``: seconds for all the cases together."""
    started = time.monotonic()
    deadline = started + timeout
    model = model.eval()
    dtype = next(model.parameters()).dtype
    example = cases[0].lower.to(dtype).unsqueeze(0) if cases else None
    bm = BoundedModule(model, example) if example is not None else None
    verdict, total, results = Verdict("unsat"), 0, []
    for case in cases:
        case = Case(case.lower.to(dtype), case.upper.to(dtype), case.C.to(dtype), case.d.to(dtype))
        outcome, bounded = decide_case(model, bm, case, deadline, batch, method)
        total += bounded
        results.append((outcome.result, bounded))
        if outcome.result == "sat":
            verdict = outcome
            break
        if outcome.result == "unknown":
            verdict = Verdict("unknown")
    verdict.boxes, verdict.seconds, verdict.cases = total, time.monotonic() - started, results
    return verdict


def load_model(path: Path) -> tuple[nn.Module, int]:
    """A network file as a module from flat inputs ``(batch, n)`` to flat outputs ``(batch, m)``, and ``n``:
    ``.nnet`` (``boundgraph.nnet``) or ``.onnx`` (``boundgraph.onnx``, made float64; VNN-LIB's ``X_i`` are the ONNX
    input's elements in row-major order, and a trailing softmax is dropped: the properties compare the outputs'
    order)."""
    suffix = path.suffix.lower()
    if suffix == ".nnet":
        from .nnet import load

        model, domain = load(path)
        return model, domain.lower.numel()
    if suffix == ".onnx":
        from . import onnx

        proto = onnx.read(path)
        shape = onnx.input_shape(proto)
        if shape is None:
            raise ValueError(f"{path}: the verifier needs one input whose shape after the batch is fixed")
        model = onnx.convert(proto, path, drop_softmax=onnx.final_softmax(proto) is not None)
        return nn.Sequential(nn.Unflatten(1, shape), model, nn.Flatten()).double().eval(), math.prod(shape)
    raise ValueError(f"{path}: the verifier reads .nnet and .onnx networks, not {suffix or 'files without a suffix'}")


def main(argv=None) -> Verdict:
    parser = argparse.ArgumentParser(prog="python -m boundgraph.verify", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the network (.nnet or .onnx)")
    parser.add_argument("property", type=Path, help="the VNN-LIB 1.0 property (the unsafe set)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=64, help="sub-boxes bounded together (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="also write the VNN-COMP result file here")
    parser.add_argument("--method", choices=("crown", "alpha-crown"), default="crown",
                        help="the sub-boxes' bound (default: %(default)s; alpha-crown: 20 iterations per call)")
    args = parser.parse_args(argv)
    model, inputs = load_model(args.model)
    cases = read(args.property)
    if cases:
        if cases[0].lower.numel() != inputs:
            raise SystemExit(f"{args.property} declares {cases[0].lower.numel()} inputs, {args.model} takes {inputs}")
        with torch.no_grad():
            outputs = model(cases[0].lower.to(next(model.parameters()).dtype).unsqueeze(0)).shape[-1]
        if cases[0].C.shape[1] != outputs:
            raise SystemExit(f"{args.property} declares {cases[0].C.shape[1]} outputs, {args.model} has {outputs}")
    verdict = decide(model, cases, args.timeout, args.batch, args.method)
    text = verdict.vnncomp()
    sys.stdout.write(text)
    if args.out:
        args.out.write_text(text)
    print(f"{verdict.result} in {verdict.seconds:.1f} s: {len(cases)} case(s), {verdict.boxes} boxes bounded",
          file=sys.stderr)
    return verdict


if __name__ == "__main__":
    main()
