"""Loss fusion against margin rows (issue 12): the CROWN-IBP training step with one backward row
(``robust_loss(..., fused=True)``) and with ``classes − 1`` rows, as ratios to a plain CE + SGD step (rounds
interleaved, median of ``--rounds`` after two warm-up rounds: ``benchmarks/bounds.py``'s ``timed``), and the two robust losses (both upper bounds of the worst-case cross entropy).

    python benchmarks/fusion.py --batch 128 --eps 0.1                        # DM-small, random weights
    python benchmarks/fusion.py --model dm-large --batch 32                   # CIFAR-shaped (3×32×32) input
    python benchmarks/fusion.py --checkpoint runs/default/checkpoint.pt --dataset fashion-mnist --eps 0.1

With ``--checkpoint`` (a ``examples/train.py`` checkpoint) the model is the trained one and the batch is real test
images of ``--dataset``; the losses are also given over ``--loss-images`` test images, per method.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bounds import timed  # noqa: E402
from boundgraph import BoundedModule, LinfBall, robust_loss  # noqa: E402
from examples.models import MODELS  # noqa: E402


def load(args) -> tuple:
    """The model and a batch: random weights and inputs, or a checkpoint's model and real test images."""
    if not args.checkpoint:
        shape = args.shape or ((3, 32, 32) if args.model in ("dm-large", "cnn7") else (1, 28, 28))
        model = MODELS[args.model](in_channels=shape[0], size=shape[1])
        return model, torch.rand(args.batch, *shape), torch.randint(0, 10, (args.batch,)), None
    from examples.checkpoint import load_checkpoint, restore_model
    from examples.train import build_model, load_split

    state = load_checkpoint(args.checkpoint, required=("model", "args"))
    trained = argparse.Namespace(**state["args"])
    model = build_model(trained)
    restore_model(model, state, args.checkpoint)
    test = load_split(args.dataset or trained.dataset, False, args.data_dir, args.loss_images, seed=0)
    return model.eval(), test.images[:args.batch], test.labels[:args.batch], test


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dm-small", choices=sorted(MODELS))
    parser.add_argument("--shape", type=int, nargs=3, default=None, help="input (channels, height, width); default "
                        "1×28×28, 3×32×32 for dm-large and cnn7")
    parser.add_argument("--checkpoint", help="a trained model (examples/train.py's checkpoint.pt)")
    parser.add_argument("--dataset", help="test images for --checkpoint (default: the dataset it was trained on)")
    parser.add_argument("--data-dir")
    parser.add_argument("--loss-images", type=int, default=1000, help="test images the losses are averaged over")
    parser.add_argument("--methods", nargs="+", default=["ibp", "crown-ibp"], help="methods whose losses are compared "
                        "(crown-lbp's forward bounds are slow on convolutional models: one coefficient per input pixel)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, x, y, test = load(args)
    bm, ptb = BoundedModule(model, x), LinfBall(args.eps, clip=(0, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    losses = {"plain": lambda: F.cross_entropy(model(x), y),
              "ibp": lambda: robust_loss(bm, x, y, ptb, "ibp"),
              "9 rows": lambda: robust_loss(bm, x, y, ptb, "crown-ibp"),
              "fused": lambda: robust_loss(bm, x, y, ptb, "crown-ibp", fused=True)}
    def step(loss_of):
        def run():
            loss = loss_of()
            opt.zero_grad()
            loss.backward()
        return run

    median = timed({k: step(f) for k, f in losses.items()}, "cpu", args.rounds)
    print(f"{args.model}@{args.batch}, eps {args.eps}: plain step {1e3 * median['plain']:.1f} ms; IBP "
          f"{median['ibp'] / median['plain']:.1f}x, CROWN-IBP 9 rows {median['9 rows'] / median['plain']:.1f}x, "
          f"fused {median['fused'] / median['plain']:.1f}x")
    batches = [(x, y)] if test is None else list(test.batches(200))
    for method in args.methods:
        with torch.no_grad():
            rows = sum(float(robust_loss(bm, a, b, ptb, method)) * len(b) for a, b in batches)
            fused = sum(float(robust_loss(bm, a, b, ptb, method, fused=True)) * len(b) for a, b in batches)
        count = sum(len(b) for _, b in batches)
        print(f"  {method:9s} robust CE over {count} images: margin rows {rows / count:.4g}, fused {fused / count:.4g}")


if __name__ == "__main__":
    main()
