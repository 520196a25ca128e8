"""Where a training step's time goes, against its FLOP floor (issue 12): the steps of ``benchmarks/speed.py``
profiled with ``torch.profiler``, their operators' own (self) CPU time put in five groups:

- ``matmul/conv``: matrix products and convolutions, forward and backward, with the GFLOP/s they reach
  (the step's matmul/conv FLOPs from ``FlopCounterMode`` over this group's time);
- ``fold``: ``im2col``/``col2im`` (the input layer's transposed convolution by matmul + fold);
- ``elementwise``: arithmetic, comparisons, ``where``, ``clamp``, reductions;
- ``layout``: copies, ``cat``, indexing, scatter/gather;
- ``other``: the rest, and the wall time no operator accounts for (Python, dispatch).

The FLOP floor assumes a step's matrix products run as fast as the plain step's; the profile shows how far
each group is from that: ``ratio = floor × (plain GFLOP/s ÷ this step's matmul GFLOP/s) + the rest``.

    python benchmarks/breakdown.py --rows dm-small@128
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.speed import allocator, build, flops, plain_step, steps  # noqa: E402

MATMUL = ("mm", "bmm", "addmm", "addmv", "addbmm", "baddbmm", "dot", "mv", "mkldnn_convolution",
          "convolution_backward", "slow_conv2d_forward", "slow_conv2d_backward", "_slow_conv2d_forward",
          "_slow_conv2d_backward", "slow_conv_transpose2d", "slow_conv_dilated2d", "mkldnn_convolution_backward",
          "_nnpack_spatial_convolution", "thnn_conv2d", "conv_depthwise2d")
FOLD = ("im2col", "col2im")
ELEMENTWISE = ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "neg", "abs", "clamp", "clamp_",
               "clamp_min", "clamp_max", "where", "maximum", "minimum", "relu", "threshold_backward", "fill_",
               "addcmul", "addcmul_", "addcdiv_", "exp", "log", "log1p", "logsumexp", "sum", "mean", "amax",
               "max", "min", "gt", "lt", "ge", "le", "eq", "ne", "logical_and", "logical_or", "bitwise_and",
               "bitwise_or", "sign", "sqrt", "rsqrt", "pow", "lerp_", "zero_", "softmax", "_softmax",
               "_log_softmax", "_log_softmax_backward_data", "nll_loss_forward", "nll_loss_backward", "isfinite",
               "any", "all", "sgn", "masked_fill", "masked_fill_", "reciprocal", "square", "erf", "tanh", "sigmoid")
LAYOUT = ("copy_", "cat", "clone", "contiguous", "index", "index_select", "index_copy", "index_put_", "scatter",
          "scatter_", "scatter_add_", "scatter_reduce", "gather", "_to_copy", "flip", "constant_pad_nd", "repeat",
          "stack", "split", "narrow", "slice_backward", "select_backward", "index_select_backward",
          "masked_select", "nonzero", "sort", "argsort", "expand", "_unsafe_view", "view", "reshape")
GROUPS = {"matmul/conv": MATMUL, "fold": FOLD, "elementwise": ELEMENTWISE, "layout": LAYOUT}


def group_of(name: str) -> str:
    op = name.removeprefix("aten::")
    return next((group for group, ops in GROUPS.items() if op in ops), "other")


def profiled(fn, rounds: int) -> tuple[float, dict[str, float]]:
    """Median wall seconds of ``fn`` over ``rounds``, and its operators' self CPU seconds per group (one round)."""
    fn()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        fn()
        wall = time.perf_counter() - started
    groups = dict.fromkeys(list(GROUPS) + ["other"], 0.0)
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            groups[group_of(event.key)] += event.self_cpu_time_total / 1e6
    scale = sorted(times)[len(times) // 2] / wall  # the profiler's own overhead, spread evenly
    groups = {k: v * scale for k, v in groups.items()}
    groups["other"] += max(0.0, sorted(times)[len(times) // 2] - sum(groups.values()))
    return sorted(times)[len(times) // 2], groups


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=["dm-small@128"], help="model@batch")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc's malloc as it is")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"allocator: {allocator(args.default_malloc)}")
    for spec in args.rows:
        name, batch = spec.split("@")
        model, x, y = build(name, int(batch))
        plain = plain_step(model, x, y)
        fns = {"plain": plain, **steps(model, x, y, args.eps, None)}
        base_flops = flops(plain)
        base_seconds, base_groups = profiled(plain, args.rounds)
        base_rate = base_flops / max(base_groups["matmul/conv"], 1e-12)
        print(f"{spec}: plain step {1e3 * base_seconds:.1f} ms, matmul/conv {base_rate / 1e9:.1f} GFLOP/s "
              f"({100 * base_groups['matmul/conv'] / base_seconds:.0f}% of it)")
        print("| step | × plain | floor | matmul/conv × plain (GFLOP/s) | fold | elementwise | layout | other |")
        print("|---|---|---|---|---|---|---|---|")
        for step, fn in fns.items():
            fn()  # the first call measures transposed convolutions' ways (``ops/conv.py``): not the step's FLOPs
            step_flops = flops(fn)
            seconds, groups = profiled(fn, args.rounds)
            rate = step_flops / max(groups["matmul/conv"], 1e-12)
            cells = [f"{groups[g] / base_seconds:.2f}" for g in ("fold", "elementwise", "layout", "other")]
            print(f"| {step} | {seconds / base_seconds:.2f} | {step_flops / base_flops:.2f} | "
                  f"{groups['matmul/conv'] / base_seconds:.2f} ({rate / 1e9:.1f}) | " + " | ".join(cells) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
