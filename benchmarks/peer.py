"""Full CROWN and α-CROWN against the generic peer, auto_LiRPA (issue 12, parts 4 and 5): the same model, points,
L∞ ball (clipped to [0, 1]) and margin specification ``C`` (rows ``e_y − e_j``) through both; per row, the time of
each (rounds interleaved, median) and how the lower bounds of every margin compare.

auto_LiRPA is not a dependency of boundgraph: point ``--peer`` at its source folder (it imports from there; its
0.7.1 release runs on our torch 2.13 as far as this script uses it)::

    python benchmarks/peer.py --peer /tmp/alirpa --rows mlp@128 dm-small@1 --method crown
    python benchmarks/peer.py --peer /tmp/alirpa --rows mlp@32 dm-small@8 --method alpha-crown

α-CROWN runs ``--iterations`` Adam steps in both, each at its own default step size (0.5 in both: ours follows the
peer's ``lr_alpha``) unless ``--lr`` sets one for both. The peer keeps the best bound over its iterations; so do we.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.speed import build  # noqa: E402
from boundgraph import BoundedModule, LinfBall, margin_spec  # noqa: E402


def ours(model, x, C, eps: float, method: str, iterations: int, lr) -> callable:
    bm = BoundedModule(model, x)
    ptb = LinfBall(eps, clip=(0.0, 1.0))
    options = dict(iterations=iterations, lr=lr) if method == "alpha-crown" and lr else dict(iterations=iterations)

    def run() -> torch.Tensor:
        with torch.no_grad():
            return bm.bounds(x, ptb, method, C, bound_upper=False, **(options if method == "alpha-crown" else {}))
    return lambda: run().lower


def peer(model, x, C, eps: float, method: str, iterations: int, lr) -> callable:
    from auto_LiRPA import BoundedModule as PeerModule, BoundedTensor, PerturbationLpNorm

    lirpa = PeerModule(model, torch.empty_like(x), device="cpu", verbose=0)
    optimize = {"iteration": iterations}
    if lr:
        optimize["lr_alpha"] = lr
    lirpa.set_bound_opts({"optimize_bound_args": optimize, "verbosity": 0})
    ptb = PerturbationLpNorm(norm=math.inf, eps=eps, x_L=(x - eps).clamp(0, 1), x_U=(x + eps).clamp(0, 1))
    bounded = BoundedTensor(x, ptb)
    name = {"crown": "CROWN", "alpha-crown": "alpha-CROWN"}[method]

    def run() -> torch.Tensor:
        lower, _ = lirpa.compute_bounds(x=(bounded,), C=C, method=name, bound_upper=False)
        return lower.detach()
    return run


def row(spec: str, method: str, eps: float, rounds: int, iterations: int, lr) -> dict:
    name, batch = spec.split("@")
    model, x, y = build(name, int(batch))
    model.eval()
    C = margin_spec(y, 10, x.dtype)
    fns = {"ours": ours(model, x, C, eps, method, iterations, lr), "peer": peer(model, x, C, eps, method, iterations, lr)}
    results = {who: fn() for who, fn in fns.items()}  # warm-up, and the bounds compared
    times: dict[str, list[float]] = {who: [] for who in fns}
    for _ in range(rounds):
        for who, fn in fns.items():
            started = time.perf_counter()
            fn()
            times[who].append(time.perf_counter() - started)
    a, b = results["ours"], results["peer"]
    tol = 1e-5 * (1 + b.abs())
    return {"row": spec, "method": method, "ours_s": statistics.median(times["ours"]),
            "peer_s": statistics.median(times["peer"]), "mean_ours": a.mean().item(), "mean_peer": b.mean().item(),
            "tighter": (a > b + tol).float().mean().item(), "looser": (a < b - tol).float().mean().item(),
            "largest_loss": (b - a).max().item()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", required=True, help="auto_LiRPA's source folder (holding auto_LiRPA/)")
    parser.add_argument("--rows", nargs="+", default=["mlp@128", "dm-small@1"])
    parser.add_argument("--method", choices=("crown", "alpha-crown"), default="crown")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--lr", type=float, default=None, help="α step size for both (default: each its own)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(args.peer).resolve()))
    torch.set_num_threads(args.threads)
    print("| row | method | ours (s) | peer (s) | peer / ours | mean lower, ours | peer | margins tighter | looser "
          "| largest loss |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for spec in args.rows:
        r = row(spec, args.method, args.eps, args.rounds, args.iterations, args.lr)
        print(f"| {r['row']} | {r['method']} | {r['ours_s']:.3f} | {r['peer_s']:.3f} | {r['peer_s'] / r['ours_s']:.2f} "
              f"| {r['mean_ours']:.4f} | {r['mean_peer']:.4f} | {100 * r['tighter']:.1f}% | {100 * r['looser']:.2f}% "
              f"| {r['largest_loss']:.3g} |", flush=True)


if __name__ == "__main__":
    main()
