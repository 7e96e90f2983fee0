"""The training loop: SGD with warm-up and step decay, AMP, DDP, checkpoints, validation, resume.

``train(cfg, out_dir, resume=False)`` runs one process, or one rank of ``torchrun --nproc_per_node N``
(DistributedDataParallel, SyncBatchNorm on GPU, gloo on CPU). It reads like torchvision's detection
reference: a :class:`Trainer` is set up (and restored from ``last.pt`` on resume), then each epoch is
:meth:`Trainer.train_one_epoch` followed by :meth:`Trainer.end_epoch` (validation when due,
best-checkpoint tracking, ``last.pt``). Run folder layout::

    RUN_DIR/config.toml   the resolved config
    RUN_DIR/last.pt       latest checkpoint, full training state (each epoch and every
                          train.checkpoint_every iterations)
    RUN_DIR/best.pt       weights + config of the best validation average sensitivity so far
                          (of the last iteration when nothing was validated)
    RUN_DIR/history.json  per epoch: mean training loss, lr and, when validated, the FROC
    RUN_DIR/tb/           TensorBoard logs (rank 0)

Collectives: every rank takes the same decisions from the config and the iteration alone, so every
collective (loss all-reduce, time-budget broadcast, validation broadcast, RNG gather) is reached by
every rank in the same order. Validation runs on rank 0; its record is broadcast, so all ranks hold
the same history.

Faults: a NaN/inf loss raises :class:`TrainingDiverged` (an A3DError naming the iteration) before the
optimizer step, so ``last.pt`` stays the last good state; a killed run loses only the work since its
last checkpoint (writes are atomic); resuming with another model structure, checkpoint format or
total batch is refused.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from a3d.config import Config, config_to_dict, diff
from a3d.engine.checkpoint import (
    check_same_batch,
    load_for_resume,
    load_model_state,
    model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    weights_only,
)
from a3d.engine.distributed import (
    DistInfo,
    all_reduce_mean,
    broadcast_object,
    cleanup,
    gather_objects,
    init_distributed,
)
from a3d.engine.evaluate import evaluate_dataset, predict_dataset
from a3d.engine.loader import make_dataset, make_train_loader
from a3d.engine.run_outputs import RunOutputs
from a3d.engine.runtime import amp_dtype, seed_everything, set_cpu_threads
from a3d.engine.schedule import (
    TimeBudget,
    WarmupStepSchedule,
    lr_step_iterations,
    run_length,
    scaled_lr,
)
from a3d.errors import A3DError
from a3d.models.detector import build_detector
from a3d.models.weights import resolve_pretrained

# seed_everything and set_cpu_threads are imported from here by a3d.engine.demo (their home: runtime)
__all__ = ["Position", "TrainResult", "Trainer", "TrainingDiverged", "seed_everything", "set_cpu_threads", "train",
           "validation_record"]


class TrainingDiverged(A3DError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    out_dir: Path
    iterations: int
    epochs_done: int
    last_checkpoint: Optional[Path]
    best_checkpoint: Optional[Path]
    best_metric: float
    history: list = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Position:
    """Where the run stands: what a checkpoint carries besides the model/optimizer/RNG states."""

    iteration: int = 0  # optimizer steps done
    total: int = 0  # iterations of the whole run
    history: list = field(default_factory=list)  # one record per finished epoch (train loss, validation)
    epoch_loss: list = field(default_factory=lambda: [0.0, 0])  # [sum, count] of this epoch's losses so far
    best_metric: float = -1.0  # best validation average sensitivity (-1: none yet)
    last_saved: Optional[int] = None  # iteration of the last checkpoint written by this process


def _quiet(_: str) -> None:
    pass


def _to_device(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]


def _require_samples(dataset, cfg: Config, split: str, what: str) -> None:
    if len(dataset) == 0:
        raise A3DError(f"{cfg.data.root}: split {split!r} has no samples (no key slice of that split in "
                       f"DL_info.csv); {what}")


def train(
    cfg: Config,
    out_dir: str | os.PathLike,
    resume: bool = False,
    *,
    progress: bool = True,
    time_budget_s: Optional[float] = None,
    train_dataset=None,
    val_dataset=None,
    log: Callable[[str], None] = print,
    loss_hook: Optional[Callable[[int, dict], dict]] = None,
) -> TrainResult:
    """Train ``cfg`` into ``out_dir`` (rank 0 writes); with ``resume`` continue from ``out_dir/last.pt``.

    ``time_budget_s`` (the demo's): after a few timed iterations, cap the total iterations so that
    training ends within the budget (the lr steps scale with it; not on resume). ``train_dataset`` /
    ``val_dataset`` replace the config's datasets (programmatic use, tests). ``loss_hook(iteration,
    losses)`` may replace the loss dict (fault-injection in tests).
    """
    t_start = time.time()
    out_dir = Path(out_dir)
    info = init_distributed(cfg.train.device)
    try:
        main_log = log if info.is_main else _quiet
        ckpt = None
        if resume:
            ckpt = load_for_resume(out_dir / "last.pt", cfg, main_log)
        elif info.is_main and (out_dir / "last.pt").exists():
            raise A3DError(f"{out_dir} already holds a run (last.pt); pass --resume to continue it or choose "
                           "another --out")
        trainer = Trainer(cfg, out_dir, info, ckpt, train_dataset=train_dataset, val_dataset=val_dataset,
                          log=main_log, loss_hook=loss_hook)
        budget = None
        if time_budget_s is not None and trainer.pos.iteration == 0:
            budget = TimeBudget(time_budget_s, t_start, reserve=trainer.validation_reserve())
        trainer.fit(progress=progress, budget=budget)
        return trainer.result(time.time() - t_start)
    finally:
        cleanup(info)


class Trainer:
    """One rank of one training run: data, model, optimizer, schedule, AMP scaler and position.

    ``resumed``: ``(checkpoint, its stored config)`` from :func:`load_for_resume`, or None for a new run.
    """

    def __init__(self, cfg: Config, out_dir: Path, info: DistInfo, resumed: Optional[tuple[dict, Config]] = None, *,
                 train_dataset=None, val_dataset=None, log: Callable[[str], None] = print,
                 loss_hook: Optional[Callable[[int, dict], dict]] = None):
        self.cfg, self.t, self.info, self.device = cfg, cfg.train, info, info.device
        self.out_dir, self.log, self.loss_hook = out_dir, log, loss_hook
        self.last_path, self.best_path = out_dir / "last.pt", out_dir / "best.pt"
        t = self.t
        if resumed is None:
            resolve_pretrained(cfg.model.pretrained)  # a missing ImageNet file stops here, before any work
        set_cpu_threads(t.threads, self.device, log, info.world_size)
        seed_everything(t.seed + info.rank)
        self._build_data(train_dataset, val_dataset)
        self.pos = Position(total=run_length(t, self.ipe))
        if resumed is not None and not diff(resumed[1], cfg, "train"):
            self.pos.total = int(resumed[0].get("total_iters", self.pos.total))  # a time-budget cap included
        self._build_model(pretrained=None if resumed is None else False)
        if resumed is not None:
            self._restore(*resumed)
        self.ddp = self.model
        if info.distributed:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.outputs: Optional[RunOutputs] = None
        self.last_state: Optional[dict] = None  # the checkpoint last written by this process (rank 0)

    # ------------------------------------------------------------------ setup

    def _build_data(self, train_dataset, val_dataset) -> None:
        cfg, t = self.cfg, self.t
        if train_dataset is None:
            train_dataset = make_dataset(cfg, cfg.data.train_split, train=True)
        _require_samples(train_dataset, cfg, cfg.data.train_split, "nothing to train on (data.train_split)")
        # validation is decided by the config alone (the same on every rank); rank 0 runs it
        self.validating = t.val_every > 0
        self.val_dataset = None
        if self.validating and self.info.is_main:
            self.val_dataset = val_dataset
            if val_dataset is None:
                self.val_dataset = make_dataset(cfg, cfg.data.val_split, train=False, masks=False)
            _require_samples(self.val_dataset, cfg, cfg.data.val_split,
                             "nothing to validate on (data.val_split); set train.val_every=0 to train without it")
        # key slices per split, for the model card of an export (validation: rank 0's count)
        self.samples = {"train": len(train_dataset), "val": len(self.val_dataset) if self.val_dataset else None}
        self.loader, self.sampler = make_train_loader(train_dataset, t.batch_size, t.seed, self.info.rank,
                                                      self.info.world_size, cfg.data.workers)
        self.ipe = self.sampler.batches_per_epoch

    def _build_model(self, pretrained: Optional[bool]) -> None:
        """Detector, SGD, lr schedule and AMP scaler (``pretrained=False``: weights come from a checkpoint)."""
        t, info = self.t, self.info
        self.model = build_detector(self.cfg.model, pretrained=pretrained).to(self.device)
        if info.distributed and self.device.type == "cuda" and t.sync_bn:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        base_lr = scaled_lr(self.cfg, info.world_size)
        self.optimizer = torch.optim.SGD(self.params, lr=base_lr, momentum=t.momentum, weight_decay=t.weight_decay)
        self.schedule = WarmupStepSchedule(self.optimizer, base_lr, t.warmup_iters, t.warmup_factor,
                                           lr_step_iterations(t, self.pos.total), t.lr_gamma)
        self.amp = amp_dtype(t.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)

    def _restore(self, ckpt: dict, stored: Config) -> None:
        check_same_batch(ckpt, stored, self.last_path, self.ipe, self.info.world_size, self.t.batch_size)
        load_model_state(self.model, ckpt["model"], str(self.last_path))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.pos.iteration = int(ckpt["iteration"])
        self.pos.history = list(ckpt.get("history", []))
        self.pos.best_metric = float(ckpt.get("best_metric", -1.0))
        self.pos.epoch_loss = list(ckpt.get("epoch_loss", [0.0, 0]))
        self.pos.last_saved = self.pos.iteration
        rngs = ckpt.get("rng") or []
        if rngs:
            set_rng_state(rngs[self.info.rank % len(rngs)])
        self.log(f"resumed {self.last_path} at iteration {self.pos.iteration} "
                 f"(epoch {self.pos.iteration // self.ipe + 1})")

    def validation_reserve(self) -> int:
        """Iterations' worth of time to keep for validations (roughly 1/3 of an iteration per image)."""
        if self.val_dataset is None:
            return 0
        return int(len(self.val_dataset) / 3) * max(1, self.t.epochs // max(1, self.t.val_every))

    # ------------------------------------------------------------------ the run

    def fit(self, progress: bool = True, budget: Optional[TimeBudget] = None) -> None:
        """Train epoch by epoch until the run's last iteration."""
        if self.info.is_main:
            self.outputs = RunOutputs(self.out_dir, self.cfg, self.pos, progress, self.log)
        self.model.train()
        planned = self.pos.total
        if budget is not None:
            budget.start(self.pos.iteration)
        try:
            while self.pos.iteration < self.pos.total:
                epoch = self.pos.iteration // self.ipe
                self.train_one_epoch(epoch, budget, planned)
                self.end_epoch()
        finally:
            if self.outputs is not None:
                self.outputs.close()
        if self.last_state is not None and not self.best_path.exists():
            save_checkpoint(self.best_path, weights_only(self.last_state, None))  # no validation ran: best = last

    def _epoch_end(self, epoch: int) -> int:
        return min((epoch + 1) * self.ipe, self.pos.total)

    def train_one_epoch(self, epoch: int, budget: Optional[TimeBudget] = None, planned: int = 0) -> None:
        """Iterations from the current one to the end of ``epoch`` (or of the run, if sooner), with a
        checkpoint every ``train.checkpoint_every`` iterations inside the epoch."""
        self.sampler.set_epoch(epoch, self.pos.iteration - epoch * self.ipe)
        batches = iter(self.loader)
        while self.pos.iteration < self._epoch_end(epoch):
            images, targets = next(batches)
            self.step(images, targets, epoch)
            if budget is not None:
                self._fit_to_budget(budget, planned)
            done, every = self.pos.iteration, self.t.checkpoint_every
            if every and done % every == 0 and done < self._epoch_end(epoch):
                self.save_last()

    def step(self, images: torch.Tensor, targets: list[dict], epoch: int) -> None:
        """One optimizer step on this rank's batch: ``images`` (B, 1, D, H, W), ``targets`` B dicts."""
        it = self.pos.iteration
        lr = self.schedule.apply(it)
        images = images.to(self.device, non_blocking=True)
        targets = _to_device(targets, self.device)
        thickness = torch.stack([t["thickness"] for t in targets]).to(self.device)  # (B,) mm
        with torch.autocast(device_type=self.device.type, dtype=self.amp or torch.bfloat16,
                            enabled=self.amp is not None):
            losses = self.ddp(images, thickness=thickness, targets=targets)
        if self.loss_hook is not None:
            losses = self.loss_hook(it, losses)
        loss = sum(losses.values())
        # (1 + L,): the total and each loss, averaged over ranks (so every rank stops together on NaN)
        values = all_reduce_mean(torch.stack([loss.detach().float()] + [v.detach().float() for v in losses.values()]),
                                 self.info)
        if not torch.isfinite(values).all():
            raise self._diverged(values, list(losses), epoch)
        self.pos.epoch_loss = [self.pos.epoch_loss[0] + float(values[0]), self.pos.epoch_loss[1] + 1]
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.t.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.t.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.pos.iteration = it + 1
        if self.outputs is not None:
            self.outputs.log_step(self.pos.iteration, dict(zip(["loss", *losses], values.tolist())), lr, epoch)

    def _diverged(self, values: torch.Tensor, names: list[str], epoch: int) -> TrainingDiverged:
        last = self.pos.last_saved
        where = (f"the last good checkpoint is {self.last_path} (iteration {last})" if last is not None
                 else "no checkpoint was written yet")
        bad = ", ".join(f"{k}={float(v):.4g}" for k, v in zip(names, values[1:]))
        return TrainingDiverged(f"loss is {float(values[0])} at iteration {self.pos.iteration + 1} (epoch "
                                f"{epoch + 1}; {bad}); training stopped, {where}; lower train.lr or check the data")

    def _fit_to_budget(self, budget: TimeBudget, planned: int) -> None:
        """Shorten the run to rank 0's proposal (never beyond ``planned``), the lr steps with it, unless
        a step would then fall on an iteration already done."""
        proposal = budget.propose(self.pos.iteration)
        if proposal is None:
            return
        cap = broadcast_object(min(proposal, planned), self.info)
        done = self.pos.iteration
        steps = lr_step_iterations(self.t, max(done, cap))
        if cap == self.pos.total or any(0 < s <= done for s in steps):
            return
        self.pos.total = max(done, cap)
        self.schedule.step_iters = steps
        if self.outputs is not None:
            self.outputs.set_total(self.pos.total)
        self.log(f"time budget: {self.pos.total} iterations ({budget.per_iteration:.2f} s/iteration)")

    # ------------------------------------------------------------------ epoch end

    def end_epoch(self) -> None:
        """After an epoch (or the run's last iteration): validation when due, best-checkpoint tracking,
        ``last.pt`` and ``history.json``."""
        done = self.pos.iteration
        epoch_done = -(-done // self.ipe)  # epochs begun: the last one may end early (max_iters)
        loss_sum, n = self.pos.epoch_loss
        rec = {"epoch": epoch_done, "iteration": done, "train_loss": loss_sum / n if n else None,
               "lr": self.schedule.lr_at(done - 1)}
        improved = False
        if self.validating and (epoch_done % self.t.val_every == 0 or done == self.pos.total):
            rec.update(self.validate(epoch_done))
            improved = rec["val_average"] > self.pos.best_metric
            if improved:
                self.pos.best_metric = rec["val_average"]
        self.pos.history.append(rec)
        self.pos.epoch_loss = [0.0, 0]
        state = self.save_last()
        if state is not None:
            if improved:
                save_checkpoint(self.best_path, weights_only(state, rec))
            self.outputs.write_history(self.pos.history)

    def validate(self, epoch: int) -> dict:
        """Rank 0 evaluates the validation split (FROC); every rank returns its record."""
        rec = None
        if self.info.is_main:
            rec = validation_record(self.model, self.val_dataset, self.t.val_batch_size, self.device, self.amp,
                                    epoch, self.pos.iteration)
            self.outputs.log_validation(rec)
        return broadcast_object(rec, self.info)

    def checkpoint(self, rngs: list[dict]) -> dict:
        """The checkpoint of the current state (format: :mod:`a3d.engine.checkpoint`); ``rngs``: one
        RNG state per rank."""
        return {
            "config": config_to_dict(self.cfg),
            "model": model_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": rngs,
            "epoch": self.pos.iteration // self.ipe,
            "iteration": self.pos.iteration,
            "iters_per_epoch": self.ipe,
            "total_iters": self.pos.total,
            "world_size": self.info.world_size,
            "history": self.pos.history,
            "best_metric": self.pos.best_metric,
            "epoch_loss": self.pos.epoch_loss,
            "samples": self.samples,
        }

    def save_last(self) -> Optional[dict]:
        """Write ``last.pt``: every rank takes part (its RNG state is gathered), rank 0 writes and gets
        the state written; other ranks get None."""
        rngs = gather_objects(rng_state(), self.info)
        self.pos.last_saved = self.pos.iteration
        if not self.info.is_main:
            return None
        self.last_state = self.checkpoint(rngs)
        save_checkpoint(self.last_path, self.last_state)
        return self.last_state

    def result(self, seconds: float) -> TrainResult:
        main = self.info.is_main
        return TrainResult(
            out_dir=self.out_dir,
            iterations=self.pos.iteration,
            epochs_done=self.pos.iteration // self.ipe,
            last_checkpoint=self.last_path if main else None,
            best_checkpoint=self.best_path if main else None,
            best_metric=self.pos.best_metric,
            history=self.pos.history,
            seconds=seconds,
        )


def validation_record(model, dataset, batch_size: int, device: torch.device, amp: Optional[torch.dtype],
                      epoch: int, iteration: int) -> dict:
    """FROC of ``model`` on ``dataset`` as a history record (average sensitivity at 0.5-4 FPs/image)."""
    preds = predict_dataset(model, dataset, batch_size=batch_size, device=device, amp=amp)
    res = evaluate_dataset(preds, dataset)
    model.train()
    avg = float(res.average) if res.average == res.average else 0.0
    return {
        "epoch": epoch,
        "iteration": iteration,
        "val_average": avg,
        "fps": [float(f) for f in res.fps],
        "val_sensitivities": [float(s) for s in res.sensitivities],
    }
