"""Verify a trained model: clean, PGD and verified errors under each bound method at one ε.

    python examples/verify.py runs/default/checkpoint.pt --eps 0.1
    python examples/verify.py runs/mnist/checkpoint.pt --eps 0.3 --methods ibp crown-ibp crown --test-subset 1000
    python examples/verify.py runs/gloro/checkpoint.pt --norm linf --eps 0.1 --methods ibp crown-lbp alpha-crown
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from boundgraph import BoundedModule, evaluate  # noqa: E402
from examples.data import load_dataset  # noqa: E402
from examples.train import BOUND_METHODS, DEFAULTS, ball, build_model  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint.pt written by examples/train.py")
    parser.add_argument("--eps", type=float, help="radius (default: the run's --eps-test)")
    parser.add_argument("--norm", choices=["linf", "l2"], help="the ball's norm (default: the run's)")
    parser.add_argument("--methods", nargs="+", default=["ibp", "crown-ibp", "crown"], choices=BOUND_METHODS)
    parser.add_argument("--pgd-steps", type=int, default=200)
    parser.add_argument("--pgd-restarts", type=int, default=1)
    parser.add_argument("--test-subset", type=int, default=0, help="the first N test images (0: all)")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--data-dir", help="the dataset's files (default: where the run found them)")
    args = parser.parse_args(argv)
    state = torch.load(args.checkpoint)
    run = argparse.Namespace(**{**DEFAULTS, **state["args"]})
    model = build_model(run)
    model.load_state_dict(state["model"])
    model.eval()
    test = load_dataset(run.dataset, train=False, data_dir=args.data_dir or run.data_dir)
    if args.test_subset:
        test = test.subset(args.test_subset)
    eps = run.eps_test if args.eps is None else args.eps
    norm = args.norm or run.norm
    bm = BoundedModule(model, test.images[:2])
    errors = evaluate(bm, test.batches(args.batch_size), ball(norm, eps), args.methods, args.pgd_steps,
                      args.pgd_restarts)
    print(f"{run.model} ({run.activation}) trained with {run.method} on {run.dataset} ({state['epoch']} epochs); "
          f"{'L∞' if norm == 'linf' else 'L2'} ε = {eps} on {len(test)} test images")
    print("| error | % |\n|---|---|")
    for name, value in errors.items():
        print(f"| {name} | {value:.2f} |")
    return errors


if __name__ == "__main__":
    main()
