"""examples/verify.py: full CROWN's memory budget, each method's time, the explained last row."""
from pathlib import Path

import pytest

from boundgraph import emit
from examples.train import main as train
from examples.verify import main as verify, memory_budget

FAST = ["--dataset", "synthetic", "--model", "mlp-small", "--train-subset", "100", "--batch-size", "50",
        "--test-subset", "10", "--pgd-steps", "2", "--verify-methods", "ibp", "--quiet", "--threads", "1",
        "--eps-train", "0.01", "--schedule-start", "0", "--schedule-length", "0", "--epochs", "1"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("verify")
    train(FAST + ["--out-dir", str(out)])
    return out / "checkpoint.pt"


def test_a_tiny_memory_budget_still_finishes_with_the_same_errors_and_restores_the_budget(checkpoint, capsys):
    command = [str(checkpoint), "--methods", "ibp", "crown", "--test-subset", "10", "--pgd-steps", "1"]
    before = emit.SWEEP_BUDGET_BYTES
    roomy = verify(command + ["--memory", "4"])
    tiny = verify(command + ["--memory", "1e-9"])  # one byte per coefficient tensor: one row per chunk
    assert tiny == roomy and emit.SWEEP_BUDGET_BYTES == before
    printed = capsys.readouterr().out
    assert "memory budget 4.00 GiB" in printed and "memory budget 0.00 GiB" in printed


def test_the_table_gives_each_methods_time_and_explains_the_verified_row(checkpoint, capsys):
    verify([str(checkpoint), "--methods", "ibp", "crown-ibp", "--test-subset", "10", "--pgd-steps", "1"])
    printed = capsys.readouterr().out
    for name in ("pgd", "verified ibp", "verified crown-ibp"):
        row = next(line for line in printed.splitlines() if line.startswith(f"| {name} |"))
        assert float(row.split("|")[3]) >= 0
    assert "no method above certifies" in printed


def test_the_default_memory_budget_is_a_quarter_of_the_free_memory_and_at_most_8_gib():
    assert 0 < memory_budget(None) <= 8 * 2**30
    assert memory_budget(0.5) == 2**29
    with pytest.raises(SystemExit, match="positive"):
        memory_budget(0)
