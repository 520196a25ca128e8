"""Speed of bound computation, as ratios to the plain model measured side by side in one run.

For each model and batch size: plain forward, IBP, CROWN-IBP and CROWN bounds of the margins
(``C`` of the 9 margins, lower bounds only, as training and verification use them), each as the
median of several timed repeats and as a ratio to the plain forward; and one CROWN-IBP training step
(bounds + robust loss + backward + optimizer step) against one plain training step.

    python benchmarks/bounds.py                  # all models, batch 1 / 32 / 128
    python benchmarks/bounds.py --models dm-small --batches 128 --device cuda
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from boundgraph import BoundedModule, LinfBall, margin_spec, robust_loss  # noqa: E402
from examples.models import dm_large, dm_small, mlp  # noqa: E402

MODELS = {
    "mlp": (mlp, (1, 28, 28)),
    "dm-small": (lambda: dm_small(1, 28), (1, 28, 28)),
    "dm-large": (lambda: dm_large(3, 32), (3, 32, 32)),
}
CROWN_BUDGET = 2e8  # largest A (elements) a full-CROWN run may build; beyond it CROWN is skipped


def timed(fns: dict, device: str, repeats: int) -> dict:
    """Median wall-clock seconds of each function, measured interleaved: every round runs each function
    once, so drifts in the machine's speed hit all of them alike. Two warm-up rounds first."""
    times: dict = {name: [] for name in fns}
    for round_ in range(repeats + 2):
        for name, fn in fns.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            if round_ >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def crown_size(bm: BoundedModule, batch: int) -> float:
    """Elements of the largest coefficient matrix a full-CROWN run builds: 2n rows for a layer of n
    neurons, times the widest layer before it."""
    sizes = [math.prod(n.shape[1:]) for n in bm.graph if n.shape is not None and n.op not in ("param", "constant")]
    return batch * 2 * max(sizes) * max(sizes)


def bench(name: str, batch: int, device: str, repeats: int, eps: float = 0.1) -> dict:
    build, shape = MODELS[name]
    torch.manual_seed(0)
    model = build().to(device)
    x = torch.rand(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    bm = BoundedModule(model, x)
    ptb = LinfBall(eps, clip=(0.0, 1.0))
    C = margin_spec(y, 10)
    row = {"model": name, "batch": batch, "crown": None}
    methods = ["ibp", "crown-ibp"] + (["crown"] if crown_size(bm, batch) <= CROWN_BUDGET else [])
    with torch.no_grad():
        bounds = {"forward": lambda: model(x)}
        for method in methods:
            bounds[method] = lambda method=method: bm.bounds(x, ptb, method, C=C, bound_upper=False)
        row.update(timed(bounds, device, repeats))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def plain_step():
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    def crown_ibp_step():
        optimizer.zero_grad()
        robust_loss(bm, x, y, ptb, "crown-ibp", beta=1.0, kappa=0.5).backward()
        optimizer.step()

    row.update(timed({"plain step": plain_step, "crown-ibp step": crown_ibp_step}, device, repeats))
    return row


def fmt(seconds: float | None, base: float) -> str:
    if seconds is None:
        return "skipped (A too large)"
    return f"{seconds * 1e3:9.2f} ms ({seconds / base:5.1f}×)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32, 128])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
          f"median of {args.repeats}; ratios to the plain forward (bounds) and the plain step (training)")
    header = ["model", "batch", "forward", "IBP", "CROWN-IBP", "CROWN", "plain step", "CROWN-IBP step"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in args.models:
        for batch in args.batches:
            r = bench(name, batch, args.device, args.repeats)
            cells = [name, str(batch), f"{r['forward'] * 1e3:.2f} ms", fmt(r["ibp"], r["forward"]),
                     fmt(r["crown-ibp"], r["forward"]), fmt(r["crown"], r["forward"]),
                     f"{r['plain step'] * 1e3:.2f} ms", fmt(r["crown-ibp step"], r["plain step"])]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
