"""A small tour: compile a CNN, print certified bounds on its logits and margins by each method, and
show the bound program boundgraph emitted for it.

    python examples/demo.py [--eps 0.01] [--show-program]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from boundgraph import BoundedModule, LinfBall, margin_spec  # noqa: E402
from examples.models import dm_small  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eps", type=float, default=0.01, help="L∞ radius in pixel units of [0, 1]")
    parser.add_argument("--show-program", action="store_true", help="print the whole CROWN-IBP program")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = dm_small(1, 28).eval()
    x = torch.rand(2, 1, 28, 28)
    bm = BoundedModule(model, x)
    ptb = LinfBall(args.eps, clip=(0.0, 1.0))
    logits = model(x)
    y = logits.argmax(1)
    print(f"DM-small on two random 28×28 images, L∞ ball of radius {args.eps} clipped to [0, 1]")
    print(f"compiled graph: {len(bm.graph.nodes)} nodes ({', '.join(sorted({n.op for n in bm.graph}))})\n")
    print("logits of image 0:", " ".join(f"{v:+.3f}" for v in logits[0].tolist()))
    for method in ("ibp", "crown-ibp", "crown"):
        lower, upper = bm.bounds(x, ptb, method=method)
        width = (upper - lower).mean().item()
        print(f"{method:>9}: lower " + " ".join(f"{v:+.3f}" for v in lower[0].tolist()))
        print(f"{'':>9}  upper " + " ".join(f"{v:+.3f}" for v in upper[0].tolist()) + f"   mean width {width:.4f}")
    C = margin_spec(y, 10)
    print("\nmargins f_y − f_j (lower bounds; all > 0 means certified):")
    for method in ("ibp", "crown-ibp", "crown"):
        margins = bm.bounds(x, ptb, method=method, C=C, bound_upper=False).lower
        verdict = ["certified" if bool((m > 0).all()) else "not certified" for m in margins]
        print(f"{method:>9}: min margin {margins.min(1).values.tolist()} -> {verdict}")
    program = str(bm.program("crown-ibp", with_spec=True, bound_upper=False))
    lines = program.splitlines()
    print(f"\nthe emitted CROWN-IBP program ({len(lines)} lines), first 14:")
    print("\n".join(lines if args.show_program else lines[:14]))


if __name__ == "__main__":
    main()
