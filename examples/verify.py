"""Verify a trained model: clean, PGD and verified errors under each bound method at one ε.

    python examples/verify.py runs/default/checkpoint.pt --eps 0.1
    python examples/verify.py runs/mnist/checkpoint.pt --eps 0.3 --methods ibp crown-ibp crown --test-subset 1000
    python examples/verify.py runs/gloro/checkpoint.pt --norm linf --eps 0.1 --methods ibp crown-lbp alpha-crown
    python examples/verify.py runs/default/checkpoint.pt --dtype float64      # bounds in double precision

In float64, convolutions on the CPU run without oneDNN: full CROWN on conv models is many times slower
and needs more memory than in float32 (lower --batch-size if memory runs short).

Full CROWN's refining sweeps take their rows in chunks that fit ``--memory`` (default: a quarter of the memory
free when it starts, never more than 8 GiB); the script says what it chose. The bounds do not depend on it.

A damaged checkpoint or a bad --data-dir ends the script with a one-line message (exit status 1).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from boundgraph import BoundedModule, emit, evaluate, set_sweep_budget  # noqa: E402
from examples.data import Split  # noqa: E402
from examples.checkpoint import VERIFY_KEYS, load_checkpoint, restore_model, run_cli  # noqa: E402
from examples.train import BOUND_METHODS, DEFAULTS, ball, build_model, load_split  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def parse(argv=None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint.pt written by examples/train.py")
    parser.add_argument("--eps", type=float, help="radius (default: the run's --eps-test)")
    parser.add_argument("--norm", choices=["linf", "l2"], help="the ball's norm (default: the run's)")
    parser.add_argument("--methods", nargs="+", default=["ibp", "crown-ibp", "crown"], choices=BOUND_METHODS)
    parser.add_argument("--pgd-steps", type=int, default=200)
    parser.add_argument("--pgd-restarts", type=int, default=1)
    parser.add_argument("--test-subset", type=int, default=0,
                        help="N test images, a stratified sample seeded by --seed (0: all)")
    parser.add_argument("--seed", type=int, help="seed of the test subset (default: the run's, so that the same "
                                                 "--test-subset picks the images train.py evaluated on)")
    parser.add_argument("--batch-size", type=int, default=200,
                        help="test images bounded together (default: %(default)s); fewer need less memory")
    parser.add_argument("--memory", type=float, help="GiB full CROWN may use for its coefficients (default: a "
                        "quarter of the free memory, at most 8)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: 0, torch's own, one "
                        "per core). Where the cores are shared with other work use 1: with a busy second core, "
                        "2 threads made F.unfold on 3672 one-channel 28×28 maps 600× slower than 1 (24 s vs 0.04 s), "
                        "which α-CROWN's gradient through the input layer runs")
    parser.add_argument("--data-dir", help="the dataset's files (default: where the run found them)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="precision of the model, the images and the bounds")
    return parser.parse_args(argv)


SWEEP_TENSORS = 8  # a refining sweep's peak holds a few coefficient tensors of the budget's size (measured: < 6)


def free_memory_bytes() -> int:
    """The memory free now (Linux's MemAvailable; 8 GiB where it cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def memory_budget(gib: float | None) -> int:
    """The bytes full CROWN may use: ``gib`` GiB, or a quarter of the free memory, at most 8 GiB."""
    if gib is not None:
        if gib <= 0:
            raise SystemExit(f"--memory must be positive, not {gib}")
        return int(gib * 2**30)
    return min(free_memory_bytes() // 4, 8 * 2**30)


def in_dtype(split: Split, dtype: torch.dtype) -> Split:
    """``split`` with its images converted to ``dtype`` (labels unchanged)."""
    return Split(split.images.to(dtype), split.labels)


def main(argv=None) -> dict:
    """Load the checkpoint and the test split, print the table of errors and return it."""
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    state = load_checkpoint(args.checkpoint, VERIFY_KEYS)
    run = argparse.Namespace(**{**DEFAULTS, **state["args"]})
    seed = run.seed if args.seed is None else args.seed
    test = load_split(run.dataset, False, args.data_dir or run.data_dir, args.test_subset, seed)
    dtype = DTYPES[args.dtype]
    model = build_model(run)
    restore_model(model, state, args.checkpoint)
    model = model.to(dtype).eval()
    test = in_dtype(test, dtype)
    eps = run.eps_test if args.eps is None else args.eps
    norm = args.norm or run.norm
    budget = memory_budget(args.memory)
    previous_budget = emit.SWEEP_BUDGET_BYTES
    set_sweep_budget(max(1, budget // SWEEP_TENSORS))
    if any(method in ("crown", "alpha-crown") for method in args.methods):
        print(f"full CROWN: memory budget {budget / 2**30:.2f} GiB (--memory), so coefficient tensors of at most "
              f"{budget // SWEEP_TENSORS / 2**20:.0f} MiB; batches of {args.batch_size} images", flush=True)
    bm = BoundedModule(model, test.images[:2])
    seconds: dict[str, float] = {}
    try:
        errors = evaluate(bm, test.batches(args.batch_size), ball(norm, eps), args.methods, args.pgd_steps,
                          args.pgd_restarts, seconds=seconds)
    finally:
        set_sweep_budget(previous_budget)
    print(f"{run.model} ({run.activation}) trained with {run.method} on {run.dataset} ({state['epoch']} epochs); "
          f"{'L∞' if norm == 'linf' else 'L2'} ε = {eps} on {len(test)} test images, in {args.dtype}")
    print("| error | % | seconds |\n|---|---|---|")
    for name, value in errors.items():
        time_taken = f"{seconds[name]:.1f}" if name in seconds else ""
        print(f"| {name} | {value:.2f} | {time_taken} |")
    print("(verified: the examples no method above certifies; every method is sound, so one certificate is a proof)")
    return errors


if __name__ == "__main__":
    run_cli(main)
