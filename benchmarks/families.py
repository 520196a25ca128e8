"""The mainstream vision families (``tests/families.py``): what compiles, how tight CROWN-IBP is against IBP,
and the cost of CROWN-IBP on full-size ResNet-18 and VGG-11 at 32×32.

    python benchmarks/families.py                         # widths of every family, then the two full-size nets
    python benchmarks/families.py --skip-widths --batch 8

Widths: the mean width ``upper − lower`` of the 9 margins ``y_true − y_j`` (labels: the clean prediction) at
L∞ ε = 2/255 on random [0, 1] inputs, by IBP, CROWN-IBP and (where it fits) CROWN, float32.

Cost: for each full-size net, median seconds of a plain forward, an IBP bound and a CROWN-IBP bound of the
margins, measured interleaved in one process; the matmul/conv FLOPs of each (``FlopCounterMode``) and
their ratios to the plain forward's (the arithmetic floor of a method is its FLOP ratio); the peak
resident memory a CROWN-IBP bound adds to the built model (Linux's high-water mark, reset before it).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from boundgraph import BoundedModule, LinfBall, margin_spec  # noqa: E402
from tests.families import FAMILIES, build, resnet18, vgg11  # noqa: E402

FULL = {"resnet-18": resnet18, "vgg-11": vgg11}


def margins(bm: BoundedModule, x: torch.Tensor) -> torch.Tensor:
    labels = bm(x).argmax(1) if len(bm.output_shape) == 1 else torch.zeros(x.shape[0], dtype=torch.long)
    outputs = torch.Size(bm.output_shape).numel()
    return margin_spec(labels, outputs, dtype=x.dtype) if len(bm.output_shape) == 1 else \
        torch.randn(x.shape[0], 9, outputs, generator=torch.Generator().manual_seed(0), dtype=x.dtype)


def widths(eps: float) -> None:
    print(f"family widths: mean (upper - lower) of 9 margins, L-inf eps {eps:.4g}, float32, batch 2")
    print(f"{'family':<16} {'compile s':>9} {'IBP':>10} {'CROWN-IBP':>10} {'CROWN':>10} {'CROWN-IBP/IBP':>14}")
    for name in FAMILIES:
        model, x = build(name, dtype=torch.float32)
        start = time.perf_counter()
        try:
            bm = BoundedModule(model, x)
        except Exception as error:  # noqa: BLE001  (reported, not raised: the table is the point)
            print(f"{name:<16} does not compile: {str(error).splitlines()[0]}")
            continue
        compiled = time.perf_counter() - start
        C = margins(bm, x)
        ptb = LinfBall(eps, clip=(0, 1))
        row = {}
        for method in ("ibp", "crown-ibp", "crown"):
            with torch.no_grad():
                low, high = bm.bounds(x, ptb, method, C)
            row[method] = float((high - low).mean())
        print(f"{name:<16} {compiled:>9.2f} {row['ibp']:>10.4g} {row['crown-ibp']:>10.4g} {row['crown']:>10.4g} "
              f"{row['crown-ibp'] / row['ibp']:>14.3f}")


def _timed(fns: dict, repeats: int) -> dict:
    times: dict = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _flops(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def _status(field: str) -> float:
    """A ``/proc/self/status`` memory field, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def peak_memory(fn) -> float:
    """The resident memory ``fn`` adds at its peak (MiB): the high-water mark reset to the current size
    (``clear_refs``), ``fn`` run, the new high-water mark less the size before (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    fn()
    return _status("VmHWM") - before


def cost(batch: int, eps: float, repeats: int) -> None:
    print(f"\nfull-size nets at 32x32, batch {batch}, L-inf eps {eps:.4g}, 9 margins, lower bounds, float32, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"{'net':<10} {'params':>7} {'compile s':>9} {'plain ms':>9} {'IBP ms':>9} {'CROWN-IBP ms':>13} "
          f"{'time ratio':>11} {'FLOP ratio':>11} {'peak MiB':>9}")
    for name, make in FULL.items():
        torch.manual_seed(0)
        model = make().eval()
        x = torch.rand(batch, 3, 32, 32)
        start = time.perf_counter()
        bm = BoundedModule(model, x)
        compiled = time.perf_counter() - start
        C = margins(bm, x)
        ptb = LinfBall(eps, clip=(0, 1))
        fns = {"plain": lambda: model(x), "ibp": lambda: bm.bounds(x, ptb, "ibp", C, bound_upper=False),
               "crown-ibp": lambda: bm.bounds(x, ptb, "crown-ibp", C, bound_upper=False)}
        with torch.no_grad():
            seconds = _timed(fns, repeats)
            flops = {k: _flops(fn) for k, fn in fns.items()}
            peak = peak_memory(fns["crown-ibp"])
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:<10} {params:>6.1f}M {compiled:>9.2f} {1e3 * seconds['plain']:>9.1f} {1e3 * seconds['ibp']:>9.1f} "
              f"{1e3 * seconds['crown-ibp']:>13.1f} {seconds['crown-ibp'] / seconds['plain']:>11.1f} "
              f"{flops['crown-ibp'] / flops['plain']:>11.1f} {peak:>9.0f}")
        print(f"{'':<10} IBP: time ratio {seconds['ibp'] / seconds['plain']:.1f}, FLOP ratio "
              f"{flops['ibp'] / flops['plain']:.1f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, default=2 / 255)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-widths", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.skip_widths:
        widths(args.eps)
    cost(args.batch, args.eps, args.repeats)


if __name__ == "__main__":
    main()
