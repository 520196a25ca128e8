"""How far float32 bounds lie from the same bounds computed in float64: the measurement behind the
floating-point policy (README, "Floating point") and ``boundgraph.evaluation.certified``'s threshold.

For random models in eval mode (``tests/random_models.py``: small, deep, wide, DAG MLPs and CNNs, batch
norm, ParamRamp, extreme weights) and the example zoo's networks at their default initialisation, it bounds the
margins ``f_y − f_j`` over an L∞ ball in float32 and, on a float64 copy of the same model, in float64,
and reports ``|m32 − m64|`` relative to the example's logit scale ``1 + max |f(x)|`` and to the scale
``S`` of ``boundgraph.rounding.rounding_scale`` (logits and every IBP interval), per method
(full CROWN on the zoo's MLP only: in float64, CPU convolutions take a slow path that needs tens of GB
for CROWN's many rows).

    python benchmarks/rounding.py --cases 300
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from boundgraph import BoundedModule, LinfBall, margin_spec  # noqa: E402
from boundgraph.rounding import rounding_scale  # noqa: E402
from examples.models import MODELS, relu  # noqa: E402
from tests.random_models import Seeded, random_case  # noqa: E402

METHODS = ("ibp", "crown-ibp", "crown")
FAMILIES = ("mlp", "deep", "wide", "dag", "cnn")


def discrepancy(model: torch.nn.Module, x: torch.Tensor, eps: float, methods) -> dict:
    """``|m32 − m64| / S`` per method (a tensor of every margin), for random labels."""
    model32, model64 = copy.deepcopy(model).float(), copy.deepcopy(model).double()
    x32, x64 = x.float(), x.double()
    bm32, bm64 = BoundedModule(model32, x32), BoundedModule(model64, x64)
    with torch.no_grad():
        logits = model32.eval()(x32) if not model.training else model32(x32)
    classes = logits.shape[1]
    if classes < 2:
        return {}
    y = torch.randint(0, classes, (x.shape[0],), generator=torch.Generator().manual_seed(0))
    logit_scale = 1 + logits.abs().amax(1, keepdim=True).double()
    scale = rounding_scale(bm32, x32, LinfBall(eps)).unsqueeze(1)
    out = {}
    for method in methods:
        m32 = bm32.bounds(x32, LinfBall(eps), method, margin_spec(y, classes, torch.float32), bound_upper=False).lower
        m64 = bm64.bounds(x64, LinfBall(eps), method, margin_spec(y, classes, torch.float64), bound_upper=False).lower
        finite = torch.isfinite(m32) & torch.isfinite(m64)
        gap = (m32.double() - m64).abs().detach()
        out[method] = torch.stack([(gap / logit_scale)[finite], (gap / scale)[finite]])
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=200, help="random models")
    parser.add_argument("--zoo", nargs="*", default=["mlp-small", "dm-small", "dm-medium"], choices=sorted(MODELS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    found: dict = {m: [] for m in METHODS}
    for seed in range(args.cases):  # eval mode: verification's setting (training batch norm is a training-time bound)
        case = random_case(Seeded(seed), FAMILIES, training=False)
        for method, values in discrepancy(case.model, case.x0, 0.1, METHODS).items():
            found[method].append(values)
    for name in args.zoo:
        torch.manual_seed(0)
        model = MODELS[name](1, 28, 10, relu).eval()
        x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
        methods = METHODS if name.startswith("mlp") else METHODS[:2]  # float64 full CROWN on convs: tens of GB
        for eps in (0.01, 0.1, 0.3):
            for method, values in discrepancy(model, x, eps, methods).items():
                found[method].append(values)
    print(f"|m32 − m64| / scale over {args.cases} random models and {len(args.zoo)} zoo models at 3 radii: scale "
          "1 + max|f(x)| (logits), or S = boundgraph.rounding.rounding_scale (logits and every IBP interval)\n")
    print("| method | scale | margins | median | 99th percentile | 99.9th | max |\n|---|---|---|---|---|---|---|")
    for method, parts in found.items():
        values = torch.cat(parts, dim=1)
        for name, row in zip(("logits", "S"), values):
            q = torch.quantile(row, torch.tensor([0.5, 0.99, 0.999], dtype=row.dtype)).tolist()
            print(f"| {method} | {name} | {row.numel()} | {q[0]:.2e} | {q[1]:.2e} | {q[2]:.2e} | {float(row.max()):.2e} |")


if __name__ == "__main__":
    main()
