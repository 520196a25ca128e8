"""Cost of each training method and of ParamRamp against ReLU, as ratios measured side by side.

One training step (bound or regulariser + loss + backward + Adam step) of each method, with ReLU and
with ParamRamp activations, interleaved round by round (``benchmarks/bounds.py``'s ``timed``), each
reported as a ratio to a plain training step of the same model, and ParamRamp's step as a ratio to
ReLU's (Lyu et al. 2021 report ×1.09 for IBP and ×1.51 for CROWN-IBP).

    python benchmarks/methods.py                          # mlp-small and dm-small, batch 128
    python benchmarks/methods.py --models dm-small --methods ibp crown-ibp --repeats 9

CROWN-LBP is skipped where its coefficients would exceed ``LBP_BUDGET`` elements (DM-small: 128 × 784 ×
3200 ≈ 3.2e8, about 90 s a step on 2 CPU cores).
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
from boundgraph.gloro import gloro_logits  # noqa: E402
from boundgraph.nn import ParamRamp  # noqa: E402
from examples.models import MODELS, relu  # noqa: E402

METHODS = ("ibp", "crown-ibp", "crown-lbp", "singleprop", "gloro")
LBP_BUDGET = 1e8  # largest LBP coefficient (batch × input elements × neurons of a layer); beyond it skip LBP


def lbp_size(bm: BoundedModule, batch: int) -> float:
    widths = [n.shape[1:] for n in bm.graph if n.shape is not None and n.op not in ("param", "constant", "input")]
    inputs = [n.shape[1:] for n in bm.graph.inputs()]
    count = lambda s: float(torch.tensor(s).prod()) if s else 1.0
    return batch * count(inputs[0]) * max(count(s) for s in widths)


def step_fn(method: str, model, bm, x, y, optimizer):
    def step():
        if method == "plain":
            loss = F.cross_entropy(model(x), y)
        elif method == "gloro":
            loss = F.cross_entropy(gloro_logits(bm, x, 1.0), y)
        else:
            loss = robust_loss(bm, x, y, LinfBall(0.1, clip=(0.0, 1.0)), method, kappa=0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mlp-small", "dm-small"], choices=sorted(MODELS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"batch {args.batch}, median of {args.repeats} interleaved repeats; ratios to the plain step of the "
          "same model and activation")
    print("| model | method | ReLU step | ParamRamp step | ParamRamp / ReLU |\n|---|---|---|---|---|")
    for name in args.models:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(args.batch, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (args.batch,), generator=g)
        fns, plain = {}, {}
        for activation in ("relu", "paramramp"):
            torch.manual_seed(0)
            act = relu if activation == "relu" else (lambda n: ParamRamp(n, eta=0.01))
            model = MODELS[name](1, 28, 10, act)
            bm = BoundedModule(model, x[:2])
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
            methods = ("plain",) + tuple(m for m in args.methods if m != "crown-lbp" or lbp_size(bm, args.batch)
                                         <= LBP_BUDGET)
            for method in methods:
                fns[(activation, method)] = step_fn(method, model, bm, x, y, optimizer)
        times = timed(fns, "cpu", args.repeats)
        for activation in ("relu", "paramramp"):
            plain[activation] = times[(activation, "plain")]
        for method in methods:
            r, p = times[("relu", method)], times[("paramramp", method)]
            print(f"| {name} | {method} | {1000 * r:8.1f} ms ({r / plain['relu']:5.1f}×) | "
                  f"{1000 * p:8.1f} ms ({p / plain['paramramp']:5.1f}×) | ×{p / r:.2f} |", flush=True)


if __name__ == "__main__":
    main()
