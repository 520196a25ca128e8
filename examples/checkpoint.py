"""Checkpoints of ``examples/train.py``: written atomically (a kill at any moment leaves the old file
or the new one, never a torn one), read with torch's safe loader, and checked, so that a damaged file is
a ``CheckpointError`` naming the file and what is wrong with it."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import IO, Any, Callable, Sequence

import torch
import torch.nn as nn

from examples.data import DataError

CHECKPOINT_FORMAT = 2  # 1: the first checkpoints (no "format" key, no GloRo iterates); 2: with both
CHECKPOINT_TYPES: dict[str, type] = {"model": dict, "optimizer": dict, "decay": dict, "rng": torch.Tensor, "log": list,
                                     "epoch": int, "args": dict, "lipschitz_iterates": dict}
RESUME_KEYS = ("model", "optimizer", "decay", "rng", "log", "epoch", "args")  # what --resume needs
VERIFY_KEYS = ("model", "epoch", "args")  # what verify.py needs


class CheckpointError(ValueError):
    """A checkpoint is missing, empty, truncated, not one train.py wrote, or from an incompatible version."""


def write_atomically(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` whole or not at all: ``write`` fills a temporary file in the same directory, which is
    flushed, fsynced and renamed onto ``path`` (``os.replace``). Until the rename the old file stays as it
    was, so a crash or a kill at any moment leaves the old file or the new one, never a torn one."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where a directory cannot be opened or synced)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_json(path: Path, value: Any) -> None:
    """``value`` as indented JSON in ``path``, written atomically."""
    text = json.dumps(value, indent=1)
    write_atomically(path, lambda file: file.write(text.encode("utf-8")))


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save(state)`` into ``path``, written atomically."""
    write_atomically(path, lambda file: torch.save(state, file))


def load_checkpoint(path: str | Path, required: Sequence[str] = RESUME_KEYS) -> dict:
    """The state dict in ``path``, loaded with torch's safe loader (``weights_only=True``) onto the CPU and
    checked. A ``CheckpointError`` naming the file says what is wrong: no such file, empty, not a torch
    checkpoint, truncated, refused by the safe loader, written by an incompatible version, missing any of
    the ``required`` keys, or a key holding the wrong type."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): was the run killed while writing it?")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    except Exception as error:  # torch.load raises EOFError, RuntimeError, UnpicklingError, KeyError, ...
        raise CheckpointError(f"checkpoint {path} {_load_failure(path, error)}") from error
    return _checked_state(state, path, required)


def _load_failure(path: Path, error: Exception) -> str:
    """Why ``torch.load`` failed on ``path``, in words, with torch's own reason in brackets."""
    message = str(error)
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if refused:
        return (f"holds an object of type {refused.group(1)}, which the safe loader (torch.load with "
                "weights_only=True) refuses: it was not written by train.py")
    reason = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", message)
    detail = reason.group(1) if reason else (message.strip().split("\n")[0][:160] or "no message")
    with open(path, "rb") as file:
        zipped = file.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
    what = "is truncated or damaged" if zipped else "is not a torch checkpoint (or is truncated)"
    return f"{what} ({type(error).__name__}: {detail})"


def _checked_state(state: Any, path: Path, required: Sequence[str]) -> dict:
    """``state`` if it is a checkpoint dict of a known format with the ``required`` keys, each of its
    known keys of the right type; a ``CheckpointError`` otherwise."""
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not the dict train.py writes")
    version = state.get("format", 1)
    if type(version) is not int or not 1 <= version <= CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} was written by an incompatible version of train.py (format "
                              f"{version!r}; this version reads formats 1 to {CHECKPOINT_FORMAT})")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is missing keys {missing} (it has {sorted(map(str, state))})")
    for key, kind in CHECKPOINT_TYPES.items():
        if key in state and not isinstance(state[key], kind):
            raise CheckpointError(f"checkpoint {path}: {key!r} holds a {type(state[key]).__name__}, "
                                  f"not a {kind.__name__}")
    return state


def restore_model(model: nn.Module, state: dict, path: str | Path) -> None:
    """Load the checkpoint's parameters into ``model``; a ``CheckpointError`` if they do not fit it."""
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, ValueError, KeyError) as error:
        reason = str(error).strip().split("\n")
        raise CheckpointError(f"checkpoint {path}: its parameters do not fit the model "
                              f"({' '.join(line.strip() for line in reason)[:300]})") from error


def run_cli(main: Callable[[], Any]) -> None:
    """Run a script's ``main``: a ``CheckpointError`` or ``DataError`` ends the process with its message
    and exit status 1 instead of a traceback."""
    try:
        main()
    except (CheckpointError, DataError) as error:
        sys.exit(f"error: {error}")
