"""Data-parallel training for ``examples/train.py``, under ``torchrun``:

    torchrun --standalone --nproc_per_node 2 examples/train.py ...                # one machine, 2 processes
    torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port 29500 \\
             --nproc_per_node 4 examples/train.py --device cuda ...               # 2 machines × 4 GPUs

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and the rendezvous); without them a run is one
process, as before. The backend follows the device: ``gloo`` on CPUs, ``nccl`` on GPUs (one GPU per process,
``cuda:LOCAL_RANK``).

How a step is split. Every rank draws the same seeded permutation of the training set as a single-process
run and cuts the same global batches of ``--batch-size`` examples from it; rank ``r`` of ``W`` takes the
``r``-th of ``W`` contiguous shares of each (``tensor_split``: the first ``n mod W`` shares hold one example
more). Its mean loss is weighted by ``W·n_r/n``, so that DDP's average of the ranks' gradients,
``(1/W) Σ_r W·(n_r/n)·∇L_r = ∇(Σ_r n_r·L_r / n)``, is the gradient of the mean loss over the whole global
batch, also for a last batch that does not split evenly. A data-parallel run and a single-process one at the
same global batch therefore take the same steps (up to the rounding of the sums), and a checkpoint resumes
under any number of processes. ``torch.utils.data.DistributedSampler`` is not used for this reason: it
draws its own permutation and pads the epoch with repeated examples to a multiple of ``W``, so its steps
are not a single-process run's.

Batch norm in training mode normalises with each rank's share of the batch (its own statistics, as DDP
does by default), not the global batch's: there a data-parallel run is not a single-process one.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class World:
    """The processes of a run: this one's ``rank`` among ``size``, and its device."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""

    @property
    def main(self) -> bool:
        """Rank 0 prints, evaluates and writes the checkpoint and logs."""
        return self.rank == 0

    def share(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, float]:
        """This rank's share of a global batch ``(x, y)`` and the weight ``W·n_r/n`` of its mean loss. A rank
        whose share is empty (a last batch of fewer than ``W`` examples) still runs the step, on the whole
        batch with weight 0: DDP needs every rank in every gradient all-reduce."""
        if self.size == 1:
            return x, y, 1.0
        shares_x, shares_y = x.tensor_split(self.size), y.tensor_split(self.size)
        mine = len(shares_y[self.rank])
        if mine == 0:
            return x, y, 0.0
        return shares_x[self.rank], shares_y[self.rank], self.size * mine / len(y)

    def sum(self, values: Sequence[float]) -> list[float]:
        """``values`` summed over the ranks (every rank gets the sums), in float64."""
        if self.size == 1:
            return [float(v) for v in values]
        total = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.tolist()

    def span(self, value: int) -> tuple[int, int]:
        """The least and the greatest of the ranks' ``value``s (equal where the ranks agree)."""
        if self.size == 1:
            return value, value
        extremes = torch.tensor([-value, value], dtype=torch.int64, device=self.device)
        dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
        return -int(extremes[0]), int(extremes[1])

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first, the others after it (a first data download happens once)."""
        if not self.main:
            self.barrier()
        yield
        if self.main:
            self.barrier()

    def describe(self, batch_size: int) -> str:
        if self.size == 1:
            return ""
        share = batch_size // self.size
        shares = f"{share}" if batch_size % self.size == 0 else f"{share}–{share + 1}"
        return (f"data-parallel: {self.size} processes ({self.backend}, {self.device.type}), "
                f"{shares} examples of each batch per process")


def join(device: str, timeout_minutes: float = 60.0) -> World:
    """The ``World`` that ``torchrun``'s environment describes, its process group initialised (one process
    and no group without ``torchrun``). ``device``: ``cpu`` or ``cuda`` (under ``torchrun``, each process
    takes the GPU of its ``LOCAL_RANK``). ``timeout_minutes``: how long a rank waits for the others (rank 0
    evaluates and writes the checkpoint while they wait)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    chosen = torch.device(device)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA GPU here (torch.cuda.is_available() is False)")
    if size == 1:
        return World(device=chosen)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if chosen.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"process {rank} (local rank {local_rank}) has no GPU: this node has "
                             f"{torch.cuda.device_count()}; start at most that many processes per node")
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    elif chosen.type != "cpu":
        raise ValueError(f"--device {device}: data-parallel training runs on cpu (gloo) or cuda (nccl)")
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    return World(rank, size, local_rank, chosen, backend)


def leave(world: World, wait: bool = True) -> None:
    """Tear the process group down (a no-op once it is). ``wait``: first wait for every rank, so that none
    tears it down while another still uses it; without (this rank failed), at once, so that the process ends
    and ``torchrun`` stops the others instead of every rank waiting out the timeout."""
    if world.size > 1 and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
