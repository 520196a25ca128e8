"""A first measurement for loss fusion (issue 12): the cross entropy of the worst-case logits, ``log(1 + Σ_j
exp(−m_j))`` of the 9 margins ``m = C·f(x)``, written as the bounded model's output, so CROWN-IBP bounds it with one
backward row instead of 9. Prints the step time of each (a CE + SGD step is the unit; rounds interleaved, median
of ``--rounds``) and the two losses: the 9-row robust CE ``CE(−m_lower)`` and the fused upper bound.

    python benchmarks/fusion.py --batch 128 --eps 0.1              # DM-small, random weights
    python benchmarks/fusion.py --spelling exp                     # log(1 + Σ exp(−m)) rather than logsumexp

Both are upper bounds of the worst-case cross entropy over the set; which is smaller decides the objective.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from boundgraph import BoundedModule, LinfBall  # noqa: E402
from boundgraph.losses import margin_spec, robust_loss  # noqa: E402
from examples.models import MODELS  # noqa: E402


class WorstCaseCrossEntropy(nn.Module):
    """``CE`` of the logits ``(0, −m)``: ``logsumexp`` (bounded through the max-shifted pieces) or ``log(1 + Σ exp)``."""

    def __init__(self, model: nn.Module, spelling: str) -> None:
        super().__init__()
        self.model, self.spelling = model, spelling

    def forward(self, x, C):
        m = (C @ self.model(x).unsqueeze(-1)).squeeze(-1)
        if self.spelling == "exp":
            return torch.log(1 + torch.exp(-m).sum(1, keepdim=True))
        return torch.logsumexp(torch.cat([torch.zeros_like(m[:, :1]), -m], 1), 1, keepdim=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dm-small", choices=sorted(MODELS))
    parser.add_argument("--shape", type=int, nargs=3, default=None, help="input (channels, height, width); default "
                        "1×28×28, 3×32×32 for dm-large and cnn7")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--spelling", default="logsumexp", choices=["logsumexp", "exp"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = args.shape or ((3, 32, 32) if args.model in ("dm-large", "cnn7") else (1, 28, 28))
    model = MODELS[args.model](in_channels=shape[0], size=shape[1])
    x, y = torch.rand(args.batch, *shape), torch.randint(0, 10, (args.batch,))
    C, ptb = margin_spec(y, 10), LinfBall(args.eps, clip=(0, 1))
    rows, fused = BoundedModule(model, x), BoundedModule(WorstCaseCrossEntropy(model, args.spelling), (x, C))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)

    def step(loss_of):
        loss = loss_of()
        opt.zero_grad()
        loss.backward()
        return loss

    losses = {"plain": lambda: F.cross_entropy(model(x), y),
              "9 rows": lambda: robust_loss(rows, x, y, ptb, "crown-ibp"),
              "fused": lambda: fused.bounds((x, C), (ptb, None), "crown-ibp", bound_lower=False)[1].mean()}
    times = {k: [] for k in losses}
    for k in losses:
        step(losses[k])  # compiled before it is timed
    for _ in range(args.rounds):
        for k, f in losses.items():
            start = time.perf_counter()
            step(f)
            times[k].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.model}@{args.batch}, eps {args.eps}, {args.spelling}: plain step {1e3 * median['plain']:.1f} ms; "
          f"CROWN-IBP 9 rows {median['9 rows'] / median['plain']:.1f}x, fused {median['fused'] / median['plain']:.1f}x")
    print(f"robust CE (9 rows) {float(losses['9 rows']().detach()):.4g}, fused bound {float(losses['fused']().detach()):.4g}")


if __name__ == "__main__":
    main()
