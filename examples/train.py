"""Certified training, then evaluation. Methods: IBP (Gowal et al. 2018), CROWN-IBP (Zhang et al.
2020), LBP / CROWN-LBP (Lyu et al. 2021), GloRo (Leino et al. 2021, L2), SingleProp (Boopathy et al.
2021, a regulariser); ReLU or ParamRamp activations (Lyu et al. 2021).

    python examples/train.py                                   # DM-small, Fashion-MNIST, CROWN-IBP
    python examples/train.py --dataset mnist --eps-train 0.4 --eps-test 0.3 --epochs 100
    python examples/train.py --method crown-lbp --activation paramramp --lines tight
    python examples/train.py --method gloro --norm l2 --eps-train 1.0 --eps-test 1.0
    python examples/train.py --config run.json --resume       # every flag can come from a JSON file

Every data path and label is checked before the first epoch. Each epoch writes ``checkpoint.pt``
(``--resume`` continues exactly where it stopped), appends to ``log.json`` and redraws ``curves.png``
(clean and verified error, and ε, over epochs) in ``--out-dir``; the checkpoint and the logs are replaced
atomically, so a kill at any moment leaves the previous epoch's files whole. At the end it prints clean,
PGD and verified errors on the test set and writes ``results.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from boundgraph import (BoundedModule, L2Ball, LinfBall, evaluate, keep_freed_memory, margin_spec,  # noqa: E402
                        robust_loss)
from boundgraph.gloro import gloro_logits, pairwise_lipschitz, vra  # noqa: E402
from boundgraph.nn import ParamRamp, init_ramps  # noqa: E402
from boundgraph.schedules import FollowEps, LinearRamp, SmoothedRamp  # noqa: E402
from examples.checkpoint import (CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, restore_model,  # noqa: E402
                                 run_cli, save_checkpoint, write_json)
from examples.data import Split, load_dataset  # noqa: E402
from examples.distributed import World, join, leave  # noqa: E402
from examples.models import MODELS, relu  # noqa: E402
from examples.progress import Eta, duration, segments, significant  # noqa: E402

METHODS = ["ibp", "crown-ibp", "lbp", "crown-lbp", "gloro", "singleprop"]
BOUND_METHODS = ["ibp", "crown-ibp", "lbp", "crown-lbp", "crown", "alpha-crown"]

DEFAULTS = dict(
    dataset="fashion-mnist", data_dir=None, model="dm-small", method="crown-ibp", epochs=20, batch_size=256,
    lr=5e-4, lr_decay_epochs=[], lr_decay_factor=0.1, eps_train=0.1, eps_test=0.1, schedule="smoothed",
    schedule_start=2, schedule_length=10, kappa_end=0.5, beta_end=0.0, grad_clip=10.0, train_subset=0,
    test_subset=1000, verify_methods=["ibp", "crown-ibp"], pgd_steps=200, pgd_restarts=1, seed=0,
    out_dir="runs/default", resume=False, device="cpu", threads=0, eval_every=5, eval_subset=1000, normalize=False, quiet=False, default_malloc=False, activation="relu",
    ramp_eta=0.01, lines="adaptive", norm="linf", l2_eps_test=0.0, gloro_iterations=1, loss_fusion=None, compile=False,
)
SHAPES = {"mnist": (1, 28), "fashion-mnist": (1, 28), "cifar10": (3, 32), "synthetic": (1, 28)}
CLASSES = 10  # every dataset here has ten classes, and every model ten outputs
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
class Normalize(nn.Module):
    """``(x − mean) / std`` per channel, inside the model so that ε stays in pixel units."""

    def __init__(self, mean, std) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="JSON file of flag values (command-line flags override it)")
    parser.add_argument("--dataset", choices=sorted(SHAPES))
    parser.add_argument("--data-dir", help="directory with the dataset's standard files")
    parser.add_argument("--model", choices=sorted(MODELS))
    parser.add_argument("--method", choices=METHODS, help="the training objective")
    parser.add_argument("--activation", choices=["relu", "paramramp"])
    parser.add_argument("--ramp-eta", type=float, help="ParamRamp's slope η outside [0, r]")
    parser.add_argument("--lines", choices=["adaptive", "tight"], help="bounding lines of the activations")
    parser.add_argument("--loss-fusion", action=argparse.BooleanOptionalAction, default=None,
                        help="bound the worst-case cross entropy from one backward row instead of one per class "
                             "(robust_loss(..., fused=True); default: on for ibp, crown-ibp, lbp, crown-lbp): ~3.4x "
                             "faster CROWN-IBP steps, as tight or tighter on trained models, looser on random weights")
    parser.add_argument("--norm", choices=["linf", "l2"], help="the norm of the ball trained for and tested at")
    parser.add_argument("--l2-eps-test", type=float, help="also verify at this L2 radius (0: no)")
    parser.add_argument("--gloro-iterations", type=int, help="power-iteration steps per GloRo training step")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="Adam learning rate")
    parser.add_argument("--lr-decay-epochs", type=int, nargs="*", help="epochs at which the lr is multiplied")
    parser.add_argument("--lr-decay-factor", type=float)
    parser.add_argument("--eps-train", type=float, help="radius trained for (pixel units, [0, 1] images)")
    parser.add_argument("--eps-test", type=float, help="radius evaluated at")
    parser.add_argument("--schedule", choices=["linear", "smoothed"], help="shape of the ε ramp")
    parser.add_argument("--schedule-start", type=float, help="epochs of natural training before ε ramps up")
    parser.add_argument("--schedule-length", type=float, help="epochs the ε ramp lasts")
    parser.add_argument("--kappa-end", type=float, help="weight of the natural loss once ε is reached")
    parser.add_argument("--beta-end", type=float, help="weight of CROWN-IBP (vs IBP) once ε is reached")
    parser.add_argument("--grad-clip", type=float, help="gradient-norm clipping (0: none)")
    parser.add_argument("--train-subset", type=int, help="train on N images only, a stratified sample seeded by "
                                                         "--seed (0: all)")
    parser.add_argument("--test-subset", type=int, help="evaluate on N test images, a stratified sample seeded "
                                                        "by --seed (0: all)")
    parser.add_argument("--verify-methods", nargs="*", choices=BOUND_METHODS)
    parser.add_argument("--pgd-steps", type=int)
    parser.add_argument("--pgd-restarts", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out-dir")
    parser.add_argument("--resume", action="store_true", default=None, help="continue from out-dir's checkpoint")
    parser.add_argument("--compile", action="store_true", default=None, help="run the bound programs through "
                        "torch.compile (inductor): each compiles once, 5-50 s on a CPU; on this project's CPU the "
                        "eager programs are now faster (CROWN-IBP fused on DM-small@128: 4.8x vs 5.6x a plain step)")
    parser.add_argument("--device", help="cpu or cuda; under torchrun each process takes the GPU of its LOCAL_RANK "
                        "(nccl) or runs on the CPU (gloo)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (0: torch's default, one per core). On an "
                        "idle 2-core machine 2 threads made a fused CROWN-IBP step 1.7× faster than 1 (79 vs 137 ms, "
                        "DM-small, batch 256); where the cores are shared with other work, 1 thread was 2× faster and "
                        "steadier: then use --threads 1")
    parser.add_argument("--eval-every", type=int, help="every N epochs, clean and verified error on a subset of "
                        "held-out test images at the test ε (0: only at the end)")
    parser.add_argument("--eval-subset", type=int, help="test images of the periodic evaluation (0: all)")
    parser.add_argument("--normalize", action="store_true", default=None, help="CIFAR mean/std inside the model")
    parser.add_argument("--quiet", action="store_true", default=None, help="no progress bar")
    parser.add_argument("--default-malloc", action="store_true", default=None, help="leave glibc's malloc as it is; "
                        "otherwise boundgraph.keep_freed_memory() keeps freed blocks for reuse (a CROWN-IBP step "
                        "20%% faster on a CPU)")
    for action in parser._actions:  # the values live in DEFAULTS (a --config file may override them): show them
        if action.dest in DEFAULTS and action.help is not argparse.SUPPRESS and "default:" not in (action.help or ""):
            shown = DEFAULTS[action.dest]
            shown = " ".join(map(str, shown)) if isinstance(shown, list) else shown
            action.help = f"{action.help or ''} (default: {shown if shown not in ('', None) else 'none'})".strip()
    args = parser.parse_args(argv)
    config = dict(DEFAULTS)
    if args.config:
        loaded = json.loads(Path(args.config).read_text())
        unknown = set(loaded) - set(DEFAULTS)
        if unknown:
            parser.error(f"unknown keys in {args.config}: {sorted(unknown)}")
        config.update(loaded)
    config.update({k: v for k, v in vars(args).items() if v is not None and k != "config"})
    if config["loss_fusion"] and config["method"] in ("gloro", "singleprop"):
        parser.error(f"--loss-fusion bounds the cross entropy with a bound method (ibp, crown-ibp, lbp, crown-lbp); "
                     f"{config['method']} has no such bound")
    if config["loss_fusion"] is None:
        config["loss_fusion"] = config["method"] not in ("gloro", "singleprop")
    try:
        device = torch.device(config["device"])
    except RuntimeError:
        parser.error(f"--device {config['device']}: not a device; use cpu or cuda")
    if device.type not in ("cpu", "cuda") or (device.type == "cuda" and not torch.cuda.is_available()):
        parser.error(f"--device {config['device']}: " + ("torch sees no CUDA GPU here" if device.type == "cuda"
                                                         else "training runs on cpu or cuda"))
    if config["method"] == "gloro" and config["norm"] != "l2":
        parser.error("GloRo certifies L2 balls: add --norm l2 (and an L2 radius, e.g. --eps-train 1 --eps-test 1)")
    return argparse.Namespace(**config)


def ball(norm: str, eps: float):
    return (LinfBall if norm == "linf" else L2Ball)(eps, clip=(0.0, 1.0))


def build_model(args) -> nn.Module:
    channels, size = SHAPES[args.dataset]
    act = relu if args.activation == "relu" else (lambda n: ParamRamp(n, eta=args.ramp_eta))
    model = MODELS[args.model](channels, size, CLASSES, act)
    if args.normalize:
        model = nn.Sequential(Normalize(CIFAR_MEAN, CIFAR_STD), model)
    return model


def schedules(args, steps_per_epoch: int):
    start, length = args.schedule_start * steps_per_epoch, args.schedule_length * steps_per_epoch
    eps = (SmoothedRamp(args.eps_train, start, length) if args.schedule == "smoothed"
           else LinearRamp(0.0, args.eps_train, start, length))
    return eps, FollowEps(eps, args.eps_train, args.kappa_end), FollowEps(eps, args.eps_train, args.beta_end)


def load_split(dataset: str, train: bool, data_dir: str | None, subset: int = 0, seed: int = 0) -> Split:
    """One split of ``dataset``, its labels checked against the model's ``CLASSES``, and, if ``subset``,
    cut to a random stratified subset of that many examples (the same ``seed``, the same subset)."""
    name = f"{dataset} {'training' if train else 'test'} split ({data_dir or 'default location'})"
    split = load_dataset(dataset, train=train, data_dir=data_dir).check(CLASSES, name)
    return split.subset(subset, seed=seed) if subset else split


def load_data(args) -> tuple[Split, Split]:
    """The training and test splits, both loaded and checked before any training (the test split
    first, so that a wrong ``--data-dir`` fails at once, not after the last epoch)."""
    test = load_split(args.dataset, False, args.data_dir, args.test_subset, args.seed)
    data = load_split(args.dataset, True, args.data_dir, args.train_subset, args.seed)
    return data, test


def lipschitz_iterates(bm: BoundedModule) -> dict[str, torch.Tensor]:
    """GloRo's power-iteration vectors, which ``boundgraph.gloro.pairwise_lipschitz`` keeps on the
    BoundedModule from one training step to the next (none for the other methods): training state."""
    return {name: value.detach().clone() for name, value in bm.__dict__.get("_lipschitz_iterates", {}).items()}


def restore_lipschitz_iterates(bm: BoundedModule, iterates: dict[str, torch.Tensor]) -> None:
    """Put saved power-iteration vectors back on ``bm``, where ``pairwise_lipschitz`` continues from them."""
    bm.__dict__["_lipschitz_iterates"] = dict(iterates)


def resume(state: dict, path: Path, model: nn.Module, optimizer, decay, bm: BoundedModule) -> tuple[list, int]:
    """Restore a checkpoint's training state (parameters, optimizer, lr schedule, RNG, GloRo's iterates);
    return its log and the number of epochs done."""
    restore_model(model, state, path)
    try:
        optimizer.load_state_dict(state["optimizer"])
        decay.load_state_dict(state["decay"])
        torch.set_rng_state(state["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path}: its optimizer state does not fit this run ({error})") from error
    restore_lipschitz_iterates(bm, state.get("lipschitz_iterates", {}))
    return state["log"], state["epoch"]


def plot(log: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [entry["epoch"] for entry in log]
    figure, errors = plt.subplots(figsize=(7, 4))
    named = next((key for key in ("train bound error", "singleprop margin error (not a certificate)",
                                  "train verified error") if key in log[0]), None)  # the last: older logs
    errors.plot(epochs, [e["train clean error"] for e in log], label="clean error (2000 training images)")
    if named:
        errors.plot(epochs, [e[named] for e in log], label=f"{named} (running)")
    tested = [e for e in log if "test verified error" in e]
    if tested:
        errors.plot([e["epoch"] for e in tested], [e["test verified error"] for e in tested], "o-",
                    label="verified error (test subset)")
    errors.set_xlabel("epoch")
    errors.set_ylabel("error (%)")
    errors.set_ylim(0, 100)
    eps_axis = errors.twinx()
    eps_axis.plot(epochs, [e["eps"] for e in log], "k--", label="ε")
    eps_axis.set_ylabel("ε")
    eps_axis.set_ylim(0, max(e["eps"] for e in log) * 1.05 or 1.0)
    lines = errors.get_legend_handles_labels()[0] + eps_axis.get_legend_handles_labels()[0]
    errors.legend(lines, [line.get_label() for line in lines], loc="center right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def step_kind(args, eps: float, beta: float) -> str:
    """What a training step at ``eps``, ``beta`` computes, for the ETA: steps of one kind cost alike."""
    if eps == 0:
        return "natural"
    if args.method in ("crown-ibp", "crown-lbp") and beta == 0:
        return "ibp" if args.method == "crown-ibp" else "lbp"
    return args.method


def bound_name(args) -> str:
    """What the running training error measures: a certificate by the training bound, except SingleProp's."""
    return "singleprop margin error (not a certificate)" if args.method == "singleprop" else "train bound error"


def header(args, model: nn.Module, data: Split, test: Split, steps_per_epoch: int, world: World = World()) -> str:
    """What the run is: model, data and where they came from, method, schedules, batch, threads, output."""
    full = args.schedule_start + args.schedule_length
    lines = [
        f"model      {args.model} ({args.activation}), {sum(p.numel() for p in model.parameters()):,} parameters"
        f"{', CIFAR normalisation inside' if args.normalize else ''}",
        f"data       {args.dataset}: {len(data):,} training images from {data.source or 'memory'}; "
        f"{len(test):,} test images from {test.source or 'memory'}",
        f"method     {args.method}" + (", loss fusion (one backward row)" if args.loss_fusion else "")
        + (f", lines {args.lines}" if args.method != "gloro" else "") + (", compiled" if args.compile else ""),
        f"epsilon    {args.norm} 0 → {significant(args.eps_train)} ({args.schedule} ramp over epochs "
        f"{significant(args.schedule_start)}–{significant(full)}; full ε from epoch {math.ceil(full) + 1}), "
        f"tested at {significant(args.eps_test)}",
        f"kappa      1 → {significant(args.kappa_end)} (weight of the natural loss, following ε)"
        + (f"; beta 1 → {significant(args.beta_end)} (weight of CROWN-IBP against IBP)"
           if args.method in ("crown-ibp", "crown-lbp") else ""),
        f"training   {args.epochs} epochs of {steps_per_epoch} steps, batch {args.batch_size}, Adam lr "
        f"{significant(args.lr)}" + (f" ×{significant(args.lr_decay_factor)} at epochs "
                                     f"{', '.join(map(str, args.lr_decay_epochs))}" if args.lr_decay_epochs else "")
        + f", seed {args.seed}, {world.device}, {torch.get_num_threads()} thread"
        f"{'s' if torch.get_num_threads() > 1 else ''}" + (" per process" if world.size > 1 else "")
        + (", freed memory kept (glibc)" if getattr(args, "kept_memory", False) else ""),
        *([f"parallel   {world.describe(args.batch_size)}; rank 0 logs, evaluates and checkpoints"]
          if world.size > 1 else []),
        "evaluation " + (f"every {args.eval_every} epochs on {args.eval_subset or 'all'} test images; " if
                         args.eval_every else "") + f"at the end on {len(test):,}: clean, PGD-{args.pgd_steps}, "
        f"verified by {', '.join(args.verify_methods) or 'no method'}",
        f"output     {Path(args.out_dir).resolve()}",
    ]
    return "\n".join(lines)


def on(device: torch.device, batches):
    """``batches`` with each ``(x, y)`` moved to ``device``."""
    for x, y in batches:
        yield x.to(device), y.to(device)


def train(args) -> dict:
    """Train as ``args`` says, evaluate, and return the results (also written to out-dir). Under ``torchrun``,
    data-parallel (``examples/distributed.py``): rank 0 prints, evaluates, writes the files and returns the
    results; the other ranks return ``{}``."""
    world = join(args.device)
    try:
        return _train(args, world)
    finally:
        leave(world, wait=False)  # after an error; a finished run has left already


def _train(args, world: World) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    args.kept_memory = not args.default_malloc and keep_freed_memory()
    torch.manual_seed(args.seed)
    device = world.device
    with world.main_first():  # a first download of the data happens once
        data, test = load_data(args)
    out = Path(args.out_dir)
    checkpoint = out / "checkpoint.pt"
    state = load_checkpoint(checkpoint) if args.resume and checkpoint.exists() else None
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(args).to(device)
    if args.activation == "paramramp":
        init_ramps(model, data.images[:1000].to(device))
    bm = BoundedModule(model, data.images[:2].to(device), compile=args.compile)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    decay = torch.optim.lr_scheduler.MultiStepLR(optimizer, args.lr_decay_epochs, args.lr_decay_factor)
    steps_per_epoch = (len(data) + args.batch_size - 1) // args.batch_size
    eps_schedule, kappa_schedule, beta_schedule = schedules(args, steps_per_epoch)
    log, first_epoch = resume(state, checkpoint, model, optimizer, decay, bm) if state is not None else ([], 0)
    low, high = world.span(first_epoch)
    if low != high:
        raise CheckpointError(f"the processes found different checkpoints to resume from ({checkpoint.resolve()} "
                              f"is at epoch {first_epoch} on rank {world.rank}; epochs {low} to {high} across the "
                              f"ranks): with several machines, --out-dir must be a folder they all share")
    net = bm  # what the training step calls: under DDP, the wrapper that all-reduces the gradients
    if world.size > 1:
        net = nn.parallel.DistributedDataParallel(bm, device_ids=[device] if device.type == "cuda" else None)
    probe = data.subset(2000, seed=args.seed + 1)  # the per-epoch clean error, on a stratified sample
    held_out = test.subset(args.eval_subset, seed=args.seed + 2) if args.eval_subset else test
    if world.main:
        print(header(args, model, data, test, steps_per_epoch, world), flush=True)
    layout = segments(step_kind(args, eps_schedule.value(at), beta_schedule.value(at))
                      for at in range(args.epochs * steps_per_epoch))
    eta = Eta()
    named = bound_name(args)
    for epoch in range(first_epoch, args.epochs):
        model.train()
        started = time.perf_counter()
        totals = {"loss": 0.0, "verified": 0, "count": 0}  # this rank's
        order = torch.Generator().manual_seed(args.seed * 100003 + epoch)  # the same order after a resume
        batches = data.batches(args.batch_size, shuffle=True, generator=order)
        progress = None
        if not args.quiet and world.main:
            from tqdm import tqdm

            progress = batches = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{args.epochs}",
                                      leave=False)
        for step, batch in enumerate(batches):
            at = epoch * steps_per_epoch + step
            step_started = time.perf_counter()
            x, y, weight = world.share(*batch)  # the whole batch on one process
            x, y = x.to(device), y.to(device)
            eps, kappa, beta = eps_schedule.value(at), kappa_schedule.value(at), beta_schedule.value(at)
            if eps == 0:  # warm-up: κ = 1, so the natural loss alone; at ε = 0 margins are exact
                logits = net(x)
                loss = F.cross_entropy(logits, y)
                margins = torch.einsum("bso,bo->bs", margin_spec(y, logits.shape[1], logits.dtype), logits.detach())
            elif args.method == "gloro":  # the bottom logit must lose for a point to be certified
                logits = gloro_logits(net, x, eps, iterations=args.gloro_iterations)
                loss = kappa * F.cross_entropy(logits[:, :-1], y) + (1 - kappa) * F.cross_entropy(logits, y)
                margins = (logits.argmax(1) == y).to(logits.dtype).unsqueeze(1) - 0.5
            else:
                loss, margins = robust_loss(net, x, y, ball(args.norm, eps), args.method, beta=beta, kappa=kappa,
                                            lines=args.lines, return_margins=True, fused=args.loss_fusion)
                if args.loss_fusion:  # the loss bound U certifies an example where U < log 2
                    margins = math.log(2) - margins
            optimizer.zero_grad()
            (loss if world.size == 1 else loss * weight).backward()  # DDP averages: the global batch's mean
            if args.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
            if weight:
                with torch.no_grad():
                    totals["loss"] += float(loss) * len(y)
                    totals["verified"] += int((margins <= 0).any(1).sum())
                    totals["count"] += len(y)
            eta.record(step_kind(args, eps, beta), time.perf_counter() - step_started)
            if progress is not None and (step % 10 == 0 or step == steps_per_epoch - 1):
                progress.set_postfix_str(
                    f"loss {totals['loss'] / totals['count']:.3f}, eps {significant(eps)}, kappa {significant(kappa)}, "
                    f"beta {significant(beta)}, {named.replace(' (not a certificate)', '')} "
                    f"{100 * totals['verified'] / totals['count']:.1f}% (running"
                    f"{', this process' if world.size > 1 else ''}), run ETA {eta.describe(layout, at + 1)}",
                    refresh=False)
        decay.step()
        totals["loss"], totals["verified"], totals["count"] = world.sum(
            [totals["loss"], totals["verified"], totals["count"]])
        seconds = time.perf_counter() - started
        if not world.main:
            continue
        model.eval()
        with torch.no_grad():
            clean = sum(int((model(x).argmax(1) != y).sum()) for x, y in on(device, probe.batches(500)))
        entry = {"epoch": epoch + 1, "eps": eps, "kappa": kappa, "beta": beta, "lr": optimizer.param_groups[0]["lr"],
                 "loss": totals["loss"] / totals["count"], "train clean error": 100 * clean / len(probe),
                 named: 100 * totals["verified"] / totals["count"], "seconds": seconds}
        if args.eval_every and (epoch + 1) % args.eval_every == 0 and epoch + 1 < args.epochs:
            methods = [m for m in args.verify_methods if m not in ("crown", "alpha-crown")]  # the cheap ones
            tested = evaluate(bm, on(device, held_out.batches(200)), ball(args.norm, args.eps_test), methods, 0)
            entry["test clean error"], entry["test verified error"] = tested["clean"], tested["verified"]
        log.append(entry)
        save_checkpoint(checkpoint, {"format": CHECKPOINT_FORMAT, "model": model.state_dict(),
                                     "optimizer": optimizer.state_dict(), "decay": decay.state_dict(),
                                     "rng": torch.get_rng_state(), "lipschitz_iterates": lipschitz_iterates(bm),
                                     "log": log, "epoch": epoch + 1, "args": vars(args)})
        write_json(out / "log.json", log)
        plot(log, out / "curves.png")
        tested = (f"  test (ε {significant(args.eps_test)}, {len(held_out)} images): clean {entry['test clean error']:.2f}%"
                  f" verified {entry['test verified error']:.2f}%" if "test clean error" in entry else "")
        print(f"epoch {epoch + 1:3d}/{args.epochs}  eps {significant(eps)}  kappa {significant(kappa)}  beta "
              f"{significant(beta)}  loss {entry['loss']:.4f}  {named} {entry[named]:.2f}% (running, train mode)"
              f"  clean error {entry['train clean error']:.2f}% ({len(probe)} training images, eval mode){tested}  "
              f"{duration(seconds)}, run ETA {eta.describe(layout, (epoch + 1) * steps_per_epoch)}", flush=True)
    leave(world)  # the last checkpoint is written: the other ranks are done; rank 0 evaluates alone
    if not world.main:
        return {}
    model.eval()
    errors = evaluate(bm, on(device, test.batches(200)), ball(args.norm, args.eps_test), args.verify_methods,
                      args.pgd_steps, args.pgd_restarts)
    results = {"errors": errors, "norm": args.norm, "eps_test": args.eps_test, "test images": len(test),
               "seconds per epoch": [e["seconds"] for e in log], "processes": world.size, "args": vars(args)}
    l2_eps = args.eps_test if args.norm == "l2" else args.l2_eps_test
    if l2_eps:  # every model has a global Lipschitz certificate too (GloRo's, exact layer norms)
        l2 = errors if args.norm == "l2" else evaluate(bm, on(device, test.batches(200)), ball("l2", l2_eps),
                                                       args.verify_methods, 0)
        l2["verified lipschitz"] = 100.0 - vra(bm, on(device, test.batches(500)), l2_eps)["vra"]
        results["l2 errors"], results["l2 eps_test"] = l2, l2_eps
        with torch.no_grad():
            results["lipschitz K max"] = float(pairwise_lipschitz(bm, exact=True).max())
    write_json(out / "results.json", results)
    print(f"\n{args.model} ({args.activation}) on {args.dataset}, trained with {args.method}, tested on "
          f"{len(test)} test images:")
    for name, value in errors.items():
        print(f"  {args.norm} {args.eps_test} {name + ' error':>24}: {value:6.2f}%")
    if l2_eps and args.norm != "l2":
        for name, value in results["l2 errors"].items():
            print(f"  l2 {l2_eps} {name + ' error':>24}: {value:6.2f}%")
    return results


def main(argv=None) -> dict:
    return train(parse(argv))


if __name__ == "__main__":
    run_cli(main)
