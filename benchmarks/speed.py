"""Training-step and verification cost against the arithmetic floor (issue 12), as ratios measured in one run.

For each row (model @ batch): a plain CE + SGD step (the unit), an IBP step, a CROWN-IBP step with 9 margin rows and
with loss fusion (``robust_loss(..., fused=True)``), eagerly and, with ``--compile``, through ``torch.compile``;
rounds interleaved, median of ``--rounds``. Beside each ratio, its floor: the step's matmul / convolution FLOPs
(``torch.utils.flop_counter.FlopCounterMode``) divided by the plain step's, so the distance to the floor is
``ratio / floor``. With ``--verify``, full CROWN and α-CROWN (20 iterations) bounds of the 9 margins at batches 1 and
32: seconds and peak resident memory, each in a child process under an address-space limit (``--memory-gb``).

    python benchmarks/speed.py                                        # every row, eager
    python benchmarks/speed.py --rows dm-small@128 --compile          # one row, eager and compiled
    python benchmarks/speed.py --rows mlp@128 dm-small@1 --verify
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bounds import timed  # noqa: E402
from boundgraph import BoundedModule, LinfBall, keep_freed_memory, margin_spec, robust_loss  # noqa: E402
from examples.models import MODELS  # noqa: E402

ROWS = ["mlp@128", "dm-small@1", "dm-small@32", "dm-small@128", "dm-large@32", "cnn7@32", "resnet-small@32"]
CIFAR = ("dm-large", "cnn7", "resnet-small")  # 3×32×32 inputs; the others 1×28×28


def build(name: str, batch: int) -> tuple:
    torch.manual_seed(0)
    shape = (3, 32, 32) if name in CIFAR else (1, 28, 28)
    model = MODELS[name](in_channels=shape[0], size=shape[1])
    return model, torch.rand(batch, *shape), torch.randint(0, 10, (batch,))


def steps(model, x, y, eps: float, compile_backend) -> dict:
    """The steps of one row: name → a function doing forward, loss and backward."""
    bm = BoundedModule(model, x, compile=compile_backend or False)
    ptb = LinfBall(eps, clip=(0.0, 1.0))
    losses = {"ibp": lambda: robust_loss(bm, x, y, ptb, "ibp"),
              "crown-ibp 9 rows": lambda: robust_loss(bm, x, y, ptb, "crown-ibp"),
              "crown-ibp fused": lambda: robust_loss(bm, x, y, ptb, "crown-ibp", fused=True)}

    def step(loss_of):
        def run():
            loss = loss_of()
            model.zero_grad(set_to_none=True)
            loss.backward()
        return run

    return {name: step(loss) for name, loss in losses.items()}


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def plain_step(model, x, y):
    """The unit of every ratio: a plain cross-entropy forward and backward."""
    def plain():
        loss = F.cross_entropy(model(x), y)
        model.zero_grad(set_to_none=True)
        loss.backward()
    return plain


def row(spec: str, eps: float, rounds: int, compile_backend) -> dict:
    name, batch = spec.split("@")
    model, x, y = build(name, int(batch))
    plain = plain_step(model, x, y)
    fns = {"plain": plain}
    fns.update(steps(model, x, y, eps, None))
    if compile_backend:
        started = time.perf_counter()
        compiled = steps(model, x, y, eps, compile_backend)
        for k, f in compiled.items():
            f()  # compiled here, not while timed
        fns.update({f"{k} compiled": f for k, f in compiled.items()})
        compile_seconds = time.perf_counter() - started
    for k, f in fns.items():
        if not k.endswith("compiled"):
            f()  # first calls compile the programs and measure each shape's fastest transposed convolution
    base_flops = flops(plain)
    floors = {k: flops(f) / base_flops for k, f in fns.items() if not k.endswith("compiled")}
    seconds = timed(fns, "cpu", rounds)
    out = {"row": spec, "plain ms": 1e3 * seconds["plain"], "plain GFLOP": base_flops / 1e9}
    for k, s in seconds.items():
        if k != "plain":
            out[k] = s / seconds["plain"]
    out["floors"] = floors
    if compile_backend:
        out["compile s"] = compile_seconds
    return out


def allocator(default: bool) -> str:
    """Apply ``keep_freed_memory`` unless ``default``; say which allocator the numbers are from."""
    if default:
        return "the C library's, as it is"
    return "glibc, freed blocks kept (keep_freed_memory)" if keep_freed_memory() else "the C library's (not glibc)"


def verify_child(spec: str, method: str, eps: float) -> dict:
    """One CROWN / α-CROWN run (in a child process): seconds and peak resident memory."""
    name, batch = spec.split("@")
    model, x, y = build(name, int(batch))
    model.eval()
    bm = BoundedModule(model, x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with torch.no_grad():
        bm.bounds(x, LinfBall(eps, clip=(0.0, 1.0)), method, margin_spec(y, 10), bound_upper=False)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak GB": peak / 2**20, "added GB": (peak - before) / 2**20}


def verify(spec: str, method: str, eps: float, memory_gb: float, threads: int) -> dict:
    code = (f"import resource, json, torch; resource.setrlimit(resource.RLIMIT_AS, ({int(memory_gb * 2**30)},) * 2); "
            f"torch.set_num_threads({threads}); from benchmarks.speed import verify_child; "
            f"print(json.dumps(verify_child({spec!r}, {method!r}, {eps})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"failed": f"over {memory_gb:g} GB" if "memory" in last.lower() or "alloc" in last.lower() else last}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=ROWS, help="model@batch")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", nargs="?", const="inductor", default=None, help="also time compiled programs "
                        "(a torch.compile backend; default inductor)")
    parser.add_argument("--verify", action="store_true", help="also full CROWN and α-CROWN at batches 1 and 32")
    parser.add_argument("--memory-gb", type=float, default=16.0, help="address-space limit of each verification run")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc's malloc as it is (by default "
                        "boundgraph.keep_freed_memory() keeps freed blocks for reuse, as train.py does)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), allocator: {allocator(args.default_malloc)}",
          flush=True)
    results = []
    for spec in args.rows:
        result = row(spec, args.eps, args.rounds, args.compile)
        floors = result["floors"]
        cells = [f"{k} {result[k]:.2f}x (floor {floors[k.removesuffix(' compiled')]:.2f}x)" for k in result
                 if k not in ("row", "plain ms", "plain GFLOP", "floors", "compile s")]
        print(f"{spec:18s} plain {result['plain ms']:.1f} ms ({result['plain GFLOP']:.3g} GFLOP); " + "; ".join(cells)
              + (f"; compile {result['compile s']:.0f} s" if "compile s" in result else ""), flush=True)
        if args.verify:
            name = spec.split("@")[0]
            for batch in (1, 32):
                for method in ("crown", "alpha-crown"):
                    found = verify(f"{name}@{batch}", method, args.eps, args.memory_gb, args.threads)
                    result[f"{method}@{batch}"] = found
                    shown = found.get("failed") or f"{found['seconds']:.2f} s, peak {found['peak GB']:.2f} GB"
                    print(f"{'':18s} {method} @{batch}: {shown}", flush=True)
        results.append(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
