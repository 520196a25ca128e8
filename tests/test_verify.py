"""The verifier (``boundgraph/verify.py``): on a small ReLU network whose maximum over a box is known to
within a Lipschitz margin, a threshold above it is ``unsat`` only after branch and bound (CROWN alone does not
prove it), one below it is ``sat`` with a counterexample the model confirms, and the command line reads an
NNet file and a VNN-LIB file and prints the VNN-COMP result."""
import math

import torch
import torch.nn as nn

from boundgraph import BoundedModule, Box
from boundgraph.verify import decide, main
from boundgraph.vnnlib import read
from tests.test_nnet import random_network, write_nnet


def network():
    torch.manual_seed(4)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1)).double().eval()


def true_maximum(model, lower, upper, points=401):
    """The largest output on a grid, and a margin within which the true maximum lies (Lipschitz × spacing)."""
    axes = [torch.linspace(float(lo), float(hi), points, dtype=torch.float64) for lo, hi in zip(lower, upper)]
    grid = torch.cartesian_prod(*axes)
    with torch.no_grad():
        best = float(model(grid).max())
        lipschitz = math.prod(float(torch.linalg.matrix_norm(m.weight, 2)) for m in model if isinstance(m, nn.Linear))
    spacing = float(((upper - lower) / (points - 1)).norm()) / 2
    return best, lipschitz * spacing


def property_text(threshold):
    return f"""(declare-const X_0 Real) (declare-const X_1 Real) (declare-const Y_0 Real)
    (assert (>= X_0 -1)) (assert (<= X_0 1)) (assert (>= X_1 -1)) (assert (<= X_1 1))
    (assert (>= Y_0 {threshold!r}))"""


def test_a_threshold_above_the_maximum_is_unsat_by_branch_and_bound_and_one_below_is_sat_with_a_checked_point():
    model = network()
    lower, upper = -torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    best, margin = true_maximum(model, lower, upper)
    above = best + margin + 0.02
    (case,) = read(property_text(above))
    with torch.no_grad():
        whole = BoundedModule(model, lower.unsqueeze(0)).bounds(lower.unsqueeze(0), Box(lower, upper), "crown").upper
    assert float(whole) > above  # CROWN over the whole box does not prove it: splitting must
    verdict = decide(model, [case], timeout=120)
    assert verdict.result == "unsat" and verdict.boxes > 1, verdict
    verdict = decide(model, read(property_text(best - 0.01)), timeout=60)
    assert verdict.result == "sat"
    assert bool(((verdict.x >= lower) & (verdict.x <= upper)).all())
    with torch.no_grad():
        y = model(verdict.x.unsqueeze(0)).flatten()
    assert float(y) >= best - 0.01 and torch.equal(verdict.y, y)


def test_the_command_reads_nnet_and_vnnlib_files_and_prints_the_vnncomp_result(tmp_path, capsys):
    sizes = [3, 8, 8, 2]
    network_ = random_network(sizes, seed=2)
    write_nnet(tmp_path / "net.nnet", sizes, *network_)
    _, minima, maxima, _, _ = network_
    box = "".join(f"(assert (>= X_{i} {float(minima[i])!r})) (assert (<= X_{i} {float(maxima[i])!r}))" for i in range(3))
    declared = "".join(f"(declare-const X_{i} Real)" for i in range(3)) + "(declare-const Y_0 Real)(declare-const Y_1 Real)"
    (tmp_path / "never.vnnlib").write_text(declared + box + "(assert (>= Y_0 1e9))")
    (tmp_path / "always.vnnlib").write_text(declared + box + "(assert (<= Y_0 1e9))")
    verdict = main([str(tmp_path / "net.nnet"), str(tmp_path / "never.vnnlib"),
                    "--timeout", "30", "--out", str(tmp_path / "result.txt")])
    assert verdict.result == "unsat" and capsys.readouterr().out == "unsat\n"
    assert (tmp_path / "result.txt").read_text() == "unsat\n"
    verdict = main([str(tmp_path / "net.nnet"), str(tmp_path / "always.vnnlib"), "--timeout", "30"])
    printed = capsys.readouterr().out
    assert verdict.result == "sat" and printed.startswith("sat\n((X_0 ") and "(Y_1 " in printed
