"""Checkpoints: written atomically, GloRo's state resumed exactly, damaged files reported in one line."""
import argparse
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import examples.checkpoint as checkpoint_module
from examples.checkpoint import CheckpointError, load_checkpoint, run_cli, write_atomically, write_json
from examples.train import main
from examples.verify import main as verify

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--dataset", "synthetic", "--model", "mlp-small", "--train-subset", "200", "--batch-size", "50",
        "--test-subset", "20", "--pgd-steps", "3", "--verify-methods", "ibp", "--quiet", "--threads", "1",
        "--eps-train", "0.01", "--schedule-start", "0", "--schedule-length", "0"]


class Killed(BaseException):
    """Stands for a signal arriving in the middle of a write."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A directory with a one-epoch run's checkpoint (not to be modified: copy it)."""
    out = tmp_path_factory.mktemp("trained")
    main(FAST + ["--epochs", "1", "--out-dir", str(out)])
    return out


def test_a_save_killed_midway_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    main(FAST + ["--epochs", "1", "--out-dir", str(tmp_path)])
    before = (tmp_path / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def torn_save(obj, f, *args, **kwargs):  # half the bytes reach the file, then the process is killed
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        if isinstance(f, (str, os.PathLike)):
            Path(f).write_bytes(half)
        else:
            f.write(half)
        raise Killed

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(Killed):
        main(FAST + ["--epochs", "2", "--out-dir", str(tmp_path), "--resume"])
    monkeypatch.undo()
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "curves.png", "log.json",
                                                         "results.json"]  # no temporary file left
    main(FAST + ["--epochs", "2", "--out-dir", str(tmp_path), "--resume"])  # and the run goes on from there
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "log.json"
    write_json(path, [{"epoch": 1}])

    def fail(file):
        file.write(b'[{"epoch": 1}, {"ep')
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomically(path, fail)
    assert json.loads(path.read_text()) == [{"epoch": 1}] and os.listdir(tmp_path) == ["log.json"]
    write_json(path, [{"epoch": 1}, {"epoch": 2}])
    assert len(json.loads(path.read_text())) == 2 and os.listdir(tmp_path) == ["log.json"]


def test_the_checkpoint_and_both_logs_go_through_the_atomic_writer(tmp_path, monkeypatch):
    written = []
    real = checkpoint_module.write_atomically

    def recording(path, write):
        written.append(Path(path).name)
        real(path, write)

    monkeypatch.setattr(checkpoint_module, "write_atomically", recording)
    main(FAST + ["--epochs", "1", "--out-dir", str(tmp_path)])
    assert written == ["checkpoint.pt", "log.json", "results.json"]


def test_gloro_resume_reproduces_the_parameters_and_losses_of_an_uninterrupted_run(tmp_path):
    common = FAST + ["--method", "gloro", "--norm", "l2", "--eps-train", "0.5", "--eps-test", "0.5",
                     "--schedule-length", "1", "--train-subset", "150"]
    main(common + ["--epochs", "2", "--out-dir", str(tmp_path / "straight")])
    main(common + ["--epochs", "1", "--out-dir", str(tmp_path / "resumed")])
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["lipschitz_iterates"]  # GloRo's state is saved
    main(common + ["--epochs", "2", "--out-dir", str(tmp_path / "resumed"), "--resume"])
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    for name, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][name], value, rtol=0, atol=0, msg=name)
    for name, value in straight["lipschitz_iterates"].items():
        torch.testing.assert_close(resumed["lipschitz_iterates"][name], value, rtol=0, atol=0, msg=name)
    assert [e["loss"] for e in resumed["log"]] == [e["loss"] for e in straight["log"]]


def _without(state: dict, *keys: str) -> dict:
    """``state`` less ``keys``."""
    return {k: v for k, v in state.items() if k not in keys}


def corrupt(kind: str, good: Path, path: Path) -> None:
    """Write into ``path`` a checkpoint damaged in the way ``kind`` says, from the good one."""
    raw = good.read_bytes()
    state = torch.load(good)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(bytes([229]) * 64 + os.urandom(64))
    elif kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "missing keys":
        torch.save(_without(state, "model", "rng"), path)
    elif kind == "newer format":
        torch.save({**state, "format": 99}, path)
    elif kind == "not a dict":
        torch.save(torch.zeros(3), path)
    elif kind == "unsafe object":
        torch.save({**state, "args": argparse.Namespace(**state["args"])}, path)


CORRUPTIONS = {
    "empty": r"is empty \(0 bytes\)",
    "garbage": r"is not a torch checkpoint.*Unsupported operand 229",
    "truncated": r"is truncated or damaged",
    "missing keys": r"is missing keys \['model'",
    "newer format": r"written by an incompatible version of train\.py \(format 99",
    "not a dict": r"holds a Tensor, not the dict",
    "unsafe object": r"holds an object of type argparse\.Namespace, which the safe loader .* refuses",
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_train_resume_names_the_file_and_what_is_wrong_with_it(trained, tmp_path, kind):
    out = tmp_path / "run"
    out.mkdir()
    corrupt(kind, trained / "checkpoint.pt", out / "checkpoint.pt")
    name = re.escape(str(out / "checkpoint.pt"))
    with pytest.raises(CheckpointError, match=rf"checkpoint {name} .*{CORRUPTIONS[kind]}"):
        main(FAST + ["--epochs", "2", "--out-dir", str(out), "--resume"])
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]  # nothing trained, nothing overwritten


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_verify_names_the_file_and_what_is_wrong_with_it(trained, tmp_path, kind):
    path = tmp_path / "checkpoint.pt"
    corrupt(kind, trained / "checkpoint.pt", path)
    with pytest.raises(CheckpointError, match=rf"checkpoint {re.escape(str(path))} .*{CORRUPTIONS[kind]}"):
        verify([str(path), "--test-subset", "4", "--pgd-steps", "1"])


def test_parameters_that_do_not_fit_the_model_are_a_checkpoint_error(trained, tmp_path):
    state = torch.load(trained / "checkpoint.pt")
    torch.save({**state, "args": {**state["args"], "model": "mlp"}}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="parameters do not fit the model"):
        verify([str(tmp_path / "checkpoint.pt"), "--test-subset", "4"])


def test_a_missing_checkpoint_is_a_checkpoint_error_for_verify(tmp_path):
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {tmp_path / 'nope.pt'}: no such file")):
        verify([str(tmp_path / "nope.pt")])


def test_run_cli_turns_checkpoint_and_data_errors_into_a_message_and_exit_status(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(SystemExit) as stop:
        run_cli(lambda: verify([str(tmp_path / "checkpoint.pt")]))
    assert stop.value.code == f"error: checkpoint {tmp_path / 'checkpoint.pt'} is empty (0 bytes): was the run " \
                              f"killed while writing it?"


@pytest.mark.parametrize("script, arguments, message", [
    ("verify.py", ["{out}/checkpoint.pt"], "error: checkpoint {out}/checkpoint.pt is empty"),
    ("train.py", FAST + ["--resume", "--out-dir", "{out}"], "error: checkpoint {out}/checkpoint.pt is empty"),
    ("train.py", FAST + ["--dataset", "mnist", "--data-dir", "{out}/typo", "--out-dir", "{out}"],
     "error: no MNIST in {out}/typo"),
])
def test_the_scripts_print_one_line_and_exit_non_zero(tmp_path, script, arguments, message):
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    command = [sys.executable, str(ROOT / "examples" / script)] + [a.format(out=tmp_path) for a in arguments]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(message.format(out=tmp_path))
