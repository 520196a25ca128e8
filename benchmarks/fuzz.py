"""Fuzz the bounds: random models (``tests/random_models.py``: small, deep, wide and DAG MLPs, CNNs,
activation-free and float32-overflowing nets, nets of the vision zoos' ops (max and adaptive pooling, cat,
shuffles, pads, upsampling), sequence nets (attention of three spellings, layer norm, GRU / LSTM, softmax
gates, einsum), ParamRamp, two activations in a row, training-mode batch norm, extreme weights;
clipped, per-example and degenerate perturbation sets) for a time budget, every method on each (and each but
α-CROWN on the fused cross entropy of a random spec, ``loss_fusion``), ``boundgraph.check`` comparing every bound with sampled, corner and PGD points.

    python benchmarks/fuzz.py --minutes 20               # prints a table; exit status 1 on any failure
    python benchmarks/fuzz.py --replay 1234              # one case again, with its full report

It counts models, points, scalar comparisons, violations (beyond rounding), excesses that rounding
explains (float32 only: they hold on a float64 copy of the model at the same point), and crashes; each
failure is printed with the seed that replays it.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from boundgraph import BoundedModule, check  # noqa: E402
from tests.random_models import FAMILIES, SEQUENCE_FAMILIES, Seeded, random_case  # noqa: E402

METHODS = ("ibp", "crown-ibp", "crown", "lbp", "crown-lbp", "alpha-crown")


def run_case(seed: int, methods, points: int, pgd_steps: int, verbose: bool = False) -> dict:
    """Check one random case under every method: its counts and its failures."""
    case = random_case(Seeded(seed), FAMILIES + SEQUENCE_FAMILIES)
    tally = Counter(models=1)
    failures = []
    try:
        bm = BoundedModule(case.model, case.x0)
    except Exception as error:  # noqa: BLE001  (the generator builds only supported models: any error is a crash)
        return {"case": case, "tally": tally + Counter(crashes=1),
                "failures": [f"seed {seed} {case!r}: compile: {type(error).__name__}: {error}"]}
    outputs = math.prod(bm.output_shape)
    fused_spec = case.C if case.C is not None else torch.randn(
        case.x0.shape[0], 3, outputs, generator=torch.Generator().manual_seed(seed), dtype=case.x0.dtype)
    runs = [(m, {"iterations": 5} if m == "alpha-crown" else {}) for m in methods]
    runs += [(m, {"loss_fusion": True}) for m in methods if m != "alpha-crown"]  # the fused cross entropy too
    for method, options in runs:
        name = method + (" fused" if options.get("loss_fusion") else "")
        try:
            report = check(bm, case.x0, case.perturbation, method, fused_spec if options.get("loss_fusion") else case.C,
                           points=points, pgd_steps=pgd_steps, seed=seed, **options)
        except Exception as error:  # noqa: BLE001
            tally["crashes"] += 1
            failures.append(f"seed {seed} {case!r} {name}: {type(error).__name__}: {error}"
                            + (f"\n{traceback.format_exc()}" if verbose else ""))
            continue
        tally["checks"] += 1
        tally["points"] += report.points
        tally["comparisons"] += report.comparisons
        tally["violations"] += len(report.violations)
        tally["rounding"] += len(report.rounding)
        if report.violations or verbose:
            failures.append(f"seed {seed} {case!r}\n{report}")
    return {"case": case, "tally": tally, "failures": failures}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="time budget")
    parser.add_argument("--seed", type=int, default=0, help="first case's seed (cases are seed, seed+1, ...)")
    parser.add_argument("--points", type=int, default=16, help="sampled points per check (plus centre and PGD)")
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--replay", type=int, help="check the case of this seed only, printing every report")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.replay is not None:
        result = run_case(args.replay, args.methods, args.points, args.pgd_steps, verbose=True)
        print(result["case"], "\n", result["case"].model, sep="")
        print("\n".join(result["failures"]))
        return 1 if result["tally"]["violations"] or result["tally"]["crashes"] else 0
    totals: dict[str, Counter] = defaultdict(Counter)
    failures: list[str] = []
    started, seed = time.time(), args.seed
    print(f"fuzzing for {args.minutes} min from seed {args.seed}: methods {', '.join(args.methods)}; "
          f"{args.points} sampled points + centre + PGD ({args.pgd_steps} steps) per check", flush=True)
    while time.time() - started < 60 * args.minutes:
        result = run_case(seed, args.methods, args.points, args.pgd_steps)
        totals[result["case"].family] += result["tally"]
        for failure in result["failures"]:
            print(failure, flush=True)
        failures += result["failures"]
        seed += 1
        if seed % 50 == 0:
            done = sum(totals.values(), Counter())
            print(f"  {time.time() - started:6.0f} s: {done['models']} models, {done['violations']} violations, "
                  f"{done['crashes']} crashes", flush=True)
    columns = ("models", "checks", "points", "comparisons", "violations", "rounding", "crashes")
    print(f"\nseeds {args.seed}..{seed - 1} in {time.time() - started:.0f} s\n")
    print("| family | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for family, tally in sorted(totals.items()) + [("all", sum(totals.values(), Counter()))]:
        print(f"| {family} | " + " | ".join(str(tally[c]) for c in columns) + " |")
    everything = sum(totals.values(), Counter())
    return 1 if everything["violations"] or everything["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
