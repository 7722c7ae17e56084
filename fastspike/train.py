"""``fastspike train``: train a model of :mod:`fastspike.models` on a dataset of :mod:`fastspike.data`.

One epoch is a pass over the training set in batches, each ``forward -> loss -> reset_net -> backward ->
step``; then the whole test set is evaluated. The learning rate follows a cosine from ``lr`` towards 0
over the epochs (``--schedule const`` keeps it). Accuracies are fractions in [0, 1] everywhere.

Files written to the output folder (by rank 0) after every epoch:

- ``metrics.json``: the run's configuration, ``best_test_acc``/``best_epoch`` (the epoch with the highest
  test accuracy: chosen on the test set, as the seeds report it; there is no validation split),
  ``final_test_acc``, ``step_ms`` (median time of a training step), ``wall_time_s`` and ``history`` (one
  entry per epoch);
- ``log.csv``: ``history`` as a table; ``curves.png``: loss and accuracy per epoch (matplotlib);
- ``checkpoint.pt``: model, optimizer, AMP scaler, epoch, every rank's RNG state and the history, from
  which ``--resume`` continues bit for bit as if uninterrupted; ``best.pt``: the best model's weights.

``--resume`` refuses a checkpoint saved with other options, except ``--epochs`` (raise it to train
further) and ``--backend``, which do not change what is computed; ``--device`` and ``--workers`` are not
part of the configuration either. Every process reads the checkpoint that rank 0 wrote, so with several
nodes ``--out`` must be on a filesystem they share.

Distributed: run under ``torchrun --nproc-per-node K -m fastspike.cli train ...`` (or ``torchrun`` with
``--nnodes``), which sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``. Each process takes ``--batch-size``
samples per step (a global batch of K times that), gradients are averaged by DistributedDataParallel,
BatchNorm statistics are broadcast from rank 0 at every forward and averaged over the ranks after each
epoch, and the test set is split between the ranks and their sums reduced. Neuron state is not a
parameter or buffer: every process resets its own neurons after each batch, and evaluation runs on the
unwrapped model, so no collective depends on it.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, Subset

from . import backends, data, encoding, functional, models

OPTIMIZERS = ("sgd", "adam", "adamw")
# The only configuration entries --resume lets change: every other one alters the trajectory, so resuming
# with another value would continue a different run under this run's name.
_MAY_CHANGE_ON_RESUME = ("epochs", "backend")


class TrainError(ValueError):
    """A bad combination of options, or a run that cannot be resumed; the message says what to change."""


def _distributed(device: torch.device):
    """``(rank, world_size, device, owns_group)`` from torchrun's environment variables."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device, False
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device, owns


def _resolve(args, info) -> dict:
    """The run's full configuration: the options with the model's defaults filled in, checked."""
    m = models.MODELS[args.model]
    loss = args.loss or m.loss
    if m.spiking and loss not in encoding.LOSSES:
        raise TrainError(f"--loss {loss!r} does not apply to spiking model {args.model!r}; "
                         f"choose one of {', '.join(encoding.LOSSES)}")
    if loss == "ce-mem" and m.loss != "ce-mem":
        raise TrainError(f"--loss ce-mem reads the output layer's membrane potentials, which model {args.model!r} "
                         f"does not return; models that do: "
                         f"{', '.join(n for n, i in models.MODELS.items() if i.loss == 'ce-mem')}")
    if not m.spiking and loss != "ce":
        raise TrainError(f"model {args.model!r} outputs logits: its loss is 'ce', got --loss {loss!r}")
    if not args.momentum >= 0:
        raise TrainError(f"--momentum must be >= 0, got {args.momentum}")
    T = (info.T if m.frames else args.T or m.T) if m.spiking else None
    return {"model": args.model, "dataset": args.dataset, "frame_size": args.frame_size, "T": T,
            "channels": args.channels or m.channels, "encoder": (args.encoder or m.encoder) if m.spiking else None,
            "loss": loss, "opt": args.opt or m.opt, "lr": args.lr or m.lr, "momentum": args.momentum,
            "schedule": args.schedule, "epochs": args.epochs, "batch_size": args.batch_size, "amp": args.amp,
            "backend": args.backend, "seed": args.seed}


def _optimizer(cfg, params):
    if cfg["opt"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"])
    return (torch.optim.Adam if cfg["opt"] == "adam" else torch.optim.AdamW)(params, lr=cfg["lr"])


def _ce_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The twins' loss: cross-entropy of ``logits [N, K]`` (in fp32 under autocast too)."""
    return F.cross_entropy(logits.float(), labels)


def _loss_fn(cfg):
    if cfg["loss"] == "ce":
        return _ce_logits
    loss = encoding.LOSSES[cfg["loss"]]
    if cfg["loss"] == "ce-mem":
        return loss
    # A model that returns a Readout is scored on its spikes by every loss but ce-mem.
    return lambda out, labels: loss(out.spikes if isinstance(out, models.Readout) else out, labels)


def _predict(out, spiking: bool) -> torch.Tensor:
    """Class of each sample: the most spikes (``out [T, N, K]``, or a Readout's spikes, as snnTorch's
    tutorials count them) or the largest logit (``out [N, K]``)."""
    if isinstance(out, models.Readout):
        out = out.spikes
    return (out.sum(0) if spiking else out).argmax(1)


def _reduce(values, world: int, device) -> list:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(t)
    return t.tolist()


class _Run:
    """One training run: the model, its optimizer and data, the history, and the files it writes."""

    def __init__(self, args):
        self.args = args
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise TrainError("--device cuda, but PyTorch sees no CUDA device")
        self.rank, self.world, self.device, self.owns_group = _distributed(device)
        try:
            self._setup(args)
        except BaseException:
            self.close()  # no one else would destroy the process group begun above
            raise

    def _setup(self, args) -> None:
        self.spiking = models.MODELS[args.model].spiking
        if self.spiking:
            try:
                backends.resolve(args.backend, self.device)
            except (backends.BackendUnavailableError, ValueError) as err:
                raise TrainError(str(err)) from None
        # Rank 0 loads (and downloads) first, so the others find the files in place.
        if self.rank != 0:
            dist.barrier()
        try:
            train_ds, test_ds, info = data.load(args.dataset, args.data_dir, args.frame_size)
        except (ValueError, OSError, ImportError) as err:
            raise TrainError(str(err)) from None
        finally:
            if self.rank == 0 and self.world > 1:
                dist.barrier()
        self.cfg = _resolve(args, info)
        torch.manual_seed(args.seed)
        try:
            self.module = models.build(args.model, info.in_shape, info.classes, T=args.T, channels=args.channels,
                                       encoder=args.encoder, backend=args.backend, frames_T=info.T)
        except ValueError as err:
            raise TrainError(str(err)) from None
        self.module.to(self.device)
        self.model = self.module
        if self.world > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.module, device_ids=[self.device] if self.device.type == "cuda" else None)
            torch.manual_seed(args.seed + 100_003 * self.rank)  # independent encoder noise per rank
        self.opt = _optimizer(self.cfg, self.module.parameters())
        self.loss_fn = _loss_fn(self.cfg)
        amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.autocast = (lambda: torch.autocast(self.device.type, amp_dtype)) if args.amp else nullcontext
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=args.amp and self.device.type == "cuda")
        workers = args.workers if args.workers is not None else (min(4, os.cpu_count() or 1) if info.frames else 0)
        kw = {"num_workers": workers, "pin_memory": self.device.type == "cuda",
              "collate_fn": data.collate_time_major if info.frames else None}
        self.sampler = DistributedSampler(train_ds, self.world, self.rank, shuffle=True, seed=args.seed)
        self.train_loader = DataLoader(train_ds, args.batch_size, sampler=self.sampler, **kw)
        self.test_loader = DataLoader(Subset(test_ds, range(self.rank, len(test_ds), self.world)),
                                      args.batch_size, **kw)
        self.out = args.out
        self.history = []
        if args.resume:
            self._load()
        elif self.rank == 0 and os.path.exists(os.path.join(self.out, "checkpoint.pt")):
            print(f"note: starting a new run in {self.out} over its previous one (--resume continues it)")

    def log(self, *a, **kw):
        if self.rank == 0:
            print(*a, **kw, flush=True)

    def _train_epoch(self, epoch: int, bar):
        self.model.train()
        self.sampler.set_epoch(epoch)
        loss_sum = correct = count = 0.0
        step_times = []
        for x, y in bar(self.train_loader, epoch):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            t0 = time.perf_counter()
            with self.autocast():
                out = self.model(x)
                loss = self.loss_fn(out, y)
            functional.reset_net(self.model)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            value = loss.item()  # waits for the device, so the step time below is complete
            step_times.append(time.perf_counter() - t0)
            loss_sum += value * len(y)
            with torch.no_grad():
                correct += (_predict(out, self.spiking) == y).sum().item()
            count += len(y)
            bar.postfix(loss=value)
        loss_sum, correct, count = _reduce([loss_sum, correct, count], self.world, self.device)
        self._average_buffers()
        return loss_sum / count, correct / count, sorted(step_times)[len(step_times) // 2] * 1e3

    def _average_buffers(self) -> None:
        """Average BatchNorm's running statistics over the ranks: each rank's last forward updated them
        from its own batch, and evaluation and checkpoints need one model."""
        if self.world == 1:
            return
        for b in self.module.buffers():
            if b.is_floating_point():
                dist.all_reduce(b)
                b /= self.world

    @torch.no_grad()
    def evaluate(self):
        """``(test loss, test accuracy)`` over the whole test set (each rank takes every world-th sample)."""
        self.module.eval()
        loss_sum = correct = count = 0.0
        for x, y in self.test_loader:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with self.autocast():
                out = self.module(x)
                loss_sum += self.loss_fn(out, y).item() * len(y)
            functional.reset_net(self.module)
            correct += (_predict(out, self.spiking) == y).sum().item()
            count += len(y)
        loss_sum, correct, count = _reduce([loss_sum, correct, count], self.world, self.device)
        return loss_sum / count, correct / count

    def fit(self, bar) -> dict:
        epochs = self.cfg["epochs"]
        if len(self.history) >= epochs:
            self.log(f"{self.out} already holds {len(self.history)} epochs (--epochs {epochs}): nothing to do")
        for epoch in range(len(self.history), epochs):
            lr = self.cfg["lr"] * (0.5 * (1 + math.cos(math.pi * epoch / epochs))
                                   if self.cfg["schedule"] == "cosine" else 1.0)
            for group in self.opt.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            train_loss, train_acc, step_ms = self._train_epoch(epoch, bar)
            test_loss, test_acc = self.evaluate()
            row = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                   "test_loss": test_loss, "test_acc": test_acc, "epoch_s": time.perf_counter() - t0,
                   "step_ms": step_ms, "steps": len(self.train_loader)}
            previous_best = max((h["test_acc"] for h in self.history), default=-1.0)
            best = max(test_acc, previous_best)
            self.history.append(row)
            self.log(f"epoch {epoch + 1:3d}/{epochs}  lr {lr:.2e}  train loss {train_loss:.4f} acc {train_acc:.4f}"
                     f"  test loss {test_loss:.4f} acc {test_acc:.4f}  (best {best:.4f})  {row['epoch_s']:.1f} s,"
                     f" {step_ms:.1f} ms/step")
            self._save(is_best=test_acc > previous_best)  # the first epoch of the best, as best_epoch
        return self.metrics()

    def metrics(self) -> dict:
        h = self.history
        best = max(h, key=lambda r: r["test_acc"]) if h else None
        return {"accuracy_unit": "fraction in [0, 1]", "config": self.cfg, "world_size": self.world,
                "device": str(self.device), "parameters": sum(p.numel() for p in self.module.parameters()),
                "epochs_done": len(h), "best_test_acc": best and best["test_acc"],
                "best_epoch": best and best["epoch"], "final_test_acc": h[-1]["test_acc"] if h else None,
                "final_train_acc": h[-1]["train_acc"] if h else None,
                "step_ms": sorted(r["step_ms"] for r in h)[len(h) // 2] if h else None,
                "wall_time_s": sum(r["epoch_s"] for r in h), "history": h}

    def _rng_state(self) -> list:
        state = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.world == 1:
            return [state]
        states = [None] * self.world
        dist.all_gather_object(states, state)
        return states

    def _save(self, is_best: bool) -> None:
        rng = self._rng_state()
        if self.rank != 0:
            return
        os.makedirs(self.out, exist_ok=True)
        ckpt = {"config": self.cfg, "model": self.module.state_dict(), "optimizer": self.opt.state_dict(),
                "scaler": self.scaler.state_dict(), "history": self.history, "rng": rng}
        _atomic(os.path.join(self.out, "checkpoint.pt"), lambda p: torch.save(ckpt, p))
        if is_best:
            best = {"model": self.module.state_dict(), "epoch": len(self.history), "config": self.cfg}
            _atomic(os.path.join(self.out, "best.pt"), lambda p: torch.save(best, p))
        metrics = self.metrics()
        _atomic(os.path.join(self.out, "metrics.json"), lambda p: _write_json(p, metrics))
        _atomic(os.path.join(self.out, "log.csv"), lambda p: _write_csv(p, self.history))
        _atomic(os.path.join(self.out, "curves.png"), lambda p: plot_curves(self.history, p, self.cfg))

    def _load(self) -> None:
        path = os.path.join(self.out, "checkpoint.pt")
        if not os.path.exists(path):
            raise TrainError(f"--resume: no checkpoint at {path}")
        ckpt = torch.load(path, map_location=self.device, weights_only=True)
        saved = ckpt["config"]
        diff = {k: (saved.get(k), v) for k, v in self.cfg.items()
                if k not in _MAY_CHANGE_ON_RESUME and saved.get(k) != v}
        if diff:
            raise TrainError(f"--resume: {path} was saved with other options (only --epochs and --backend may "
                             f"change); pass the saved values: "
                             + ", ".join(f"--{k.replace('_', '-')}: saved {a!r}, now {b!r}"
                                         for k, (a, b) in diff.items()))
        self.module.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.history = ckpt["history"]
        rng = ckpt["rng"]
        if len(rng) == self.world:
            torch.set_rng_state(rng[self.rank]["cpu"].cpu())
            if "cuda" in rng[self.rank] and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng[self.rank]["cuda"].cpu(), self.device)
        else:
            self.log(f"note: {path} was saved by {len(rng)} processes, now {self.world}: RNG streams restart")
        self.log(f"resuming {path} after epoch {len(self.history)}")

    def close(self) -> None:
        if self.owns_group:
            dist.destroy_process_group()


def _atomic(path: str, write) -> None:
    """Write through a temporary file, so an interrupted run never leaves a truncated file behind."""
    tmp = f"{path}.tmp{os.path.splitext(path)[1]}"
    write(tmp)
    os.replace(tmp, path)


def _write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        f.write(json.dumps(obj, indent=2) + "\n")


def _write_csv(path: str, history: list) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)


def plot_curves(history: list, path: str, cfg: dict) -> None:
    """Loss and accuracy per epoch, train and test, side by side, to the PNG ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "acc")):
        for split in ("train", "test"):
            ax.plot(epochs, [r[f"{split}_{key}"] for r in history], marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"loss ({cfg['loss']})" if key == "loss" else "accuracy (fraction)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{cfg['model']} on {cfg['dataset']}")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


class _Bar:
    """tqdm over the batches on rank 0 (silent on other ranks and when stderr is not a terminal)."""

    def __init__(self, enabled: bool, epochs: int):
        self.enabled, self.epochs, self.bar = enabled, epochs, None

    def __call__(self, loader, epoch):
        from tqdm import tqdm
        self.bar = tqdm(loader, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False, dynamic_ncols=True,
                        disable=None if self.enabled else True)
        return self.bar

    def postfix(self, **values) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in values.items()}, refresh=False)


def run(args):
    """Train as ``args`` (the options of ``fastspike train``) say; returns ``(model, metrics)``, the
    unwrapped model and the ``metrics.json`` content."""
    r = _Run(args)
    try:
        r.log(f"training {args.model} ({models.MODELS[args.model].about}) on {args.dataset}, "
              f"{r.world} process(es), device {r.device}; config {json.dumps(r.cfg)}")
        metrics = r.fit(_Bar(r.rank == 0, r.cfg["epochs"]))
        if metrics["epochs_done"]:
            r.log(f"best test accuracy {metrics['best_test_acc']:.4f} (epoch {metrics['best_epoch']}), "
                  f"final {metrics['final_test_acc']:.4f}; wrote metrics.json, log.csv, curves.png, "
                  f"checkpoint.pt, best.pt to {r.out}")
        return r.module, metrics
    finally:
        r.close()
