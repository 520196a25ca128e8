"""One CROWN-IBP step under DistributedDataParallel (2 CPU processes, gloo) gives the parameters that
the same step on one process with the whole batch gives."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from boundgraph import BoundedModule, LinfBall, robust_loss

BATCH = 8


def make():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(BATCH, 1, 6, 6, generator=g)
    y = torch.randint(0, 3, (BATCH,), generator=g)
    return model.double(), x.double(), y


def step(bm, model, x, y, fused=False):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    optimizer.zero_grad()
    robust_loss(bm, x, y, LinfBall(0.05, clip=(0, 1)), "crown-ibp", beta=0.6, kappa=0.3, fused=fused).backward()
    optimizer.step()


def worker(rank: int, world: int, rendezvous: str, out: str, fused: bool) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model, x, y = make()
    model[1].eval()  # per-process batch statistics would differ from the whole batch's: compare eval BN
    half = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    ddp = nn.parallel.DistributedDataParallel(BoundedModule(model, x[half]))
    step(ddp, model, x[half], y[half], fused)
    if rank == 0:
        torch.save({k: v.detach() for k, v in model.state_dict().items()}, out)
    dist.barrier()  # no rank tears the group down while another still uses it (SIGABRT in gloo otherwise)
    dist.destroy_process_group()


@pytest.mark.parametrize("fused", [False, True], ids=["margin rows", "loss fusion"])
def test_a_ddp_crown_ibp_step_equals_the_single_process_step_on_the_whole_batch(tmp_path, fused):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(worker, args=(2, str(tmp_path / "rendezvous"), out, fused), nprocs=2, join=True)
    model, x, y = make()
    model[1].eval()
    step(BoundedModule(model, x), model, x, y, fused)
    distributed = torch.load(out)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(distributed[name], value, rtol=1e-10, atol=1e-12, msg=name)
    assert not torch.equal(distributed["4.weight"], make()[0].state_dict()["4.weight"])  # the step moved it
