"""Models where perturbed tensors meet (``tests/sequence_models.py``, full sizes): time, peak memory and mean
bound width of IBP, CROWN-IBP and CROWN.

    python benchmarks/sequence.py                              # BERT-style encoder, length 32, batch 8
    python benchmarks/sequence.py --models bert gpt vit lstm gru --batch 8 --eps 0.01

Widths are the mean ``upper − lower`` of the model's outputs at L∞ ε on the perturbed input (BERT: the
embeddings; its integer mask is exact), float32. Peak memory is what one bound adds to the built model (Linux's
high-water mark, reset before it; the program's compilation is done before). Time is one call's median of
``--repeats`` (full CROWN: one call). A method that takes longer than ``--budget`` seconds once is reported,
not repeated.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.families import peak_memory  # noqa: E402
from boundgraph import BoundedModule, LinfBall  # noqa: E402
from tests.sequence_models import MODELS, build  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["bert"], choices=sorted(MODELS))
    parser.add_argument("--methods", nargs="+", default=["ibp", "crown-ibp", "crown"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"float32, batch {args.batch}, L-inf eps {args.eps}, {torch.get_num_threads()} thread(s)")
    print(f"{'model':<8} {'method':<10} {'ms':>10} {'x plain':>8} {'peak MiB':>9} {'mean width':>11}")
    for name in args.models:
        model, inputs = build(name, "full", batch=args.batch, dtype=torch.float32)
        bm = BoundedModule(model, inputs)
        ptb = (LinfBall(args.eps),) + (None,) * (len(inputs) - 1)
        with torch.no_grad():
            start = time.perf_counter()
            for _ in range(args.repeats):
                model(*inputs)
            plain = (time.perf_counter() - start) / args.repeats
            for method in args.methods:
                bm.program(method, perturbed=[0], batch_statistics=())  # compiled before it is measured
                result = {}
                peak = peak_memory(lambda: result.update(bounds=bm.bounds(inputs, ptb, method)))
                times = []
                for _ in range(args.repeats if method != "crown" else 1):
                    start = time.perf_counter()
                    bm.bounds(inputs, ptb, method)
                    times.append(time.perf_counter() - start)
                lower, upper = result["bounds"]
                seconds = statistics.median(times)
                print(f"{name:<8} {method:<10} {1e3 * seconds:>10.1f} {seconds / plain:>8.1f} {peak:>9.0f} "
                      f"{float((upper - lower).mean()):>11.4g}", flush=True)


if __name__ == "__main__":
    main()
