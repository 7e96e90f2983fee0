"""The training loop: SGD with warm-up and step decay, AMP, DDP, checkpoints, validation, resume.

``train(cfg, out_dir, resume=False)`` runs one process, or one rank of ``torchrun --nproc_per_node N``
(DistributedDataParallel, SyncBatchNorm on GPU, gloo on CPU). Run folder layout::

    RUN_DIR/config.toml   the resolved config
    RUN_DIR/last.pt       latest checkpoint (each epoch and every train.checkpoint_every iterations)
    RUN_DIR/best.pt       best validation average sensitivity so far
    RUN_DIR/history.json  validation FROC after each epoch
    RUN_DIR/tb/           TensorBoard logs (rank 0)

Faults: a NaN/inf loss raises :class:`TrainingDiverged` (an A3DError naming the iteration) before the
optimizer step, so ``last.pt`` stays the last good state; a killed run loses only the work since its
last checkpoint (writes are atomic); resuming with another model structure or checkpoint format is
refused.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from a3d.config import Config, config_from_dict, config_to_dict, diff, to_toml
from a3d.engine import distributed as D
from a3d.engine.checkpoint import (
    load_checkpoint,
    load_model_state,
    model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from a3d.errors import A3DError
from a3d.io import write_text_atomic


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


class WarmupStepSchedule:
    """lr(it) = base x warm-up factor x gamma^(steps passed); a pure function of the iteration.

    Linear warm-up from ``warmup_factor`` x base over ``warmup_iters``; ``step_iters`` are the
    iterations after which the rate is multiplied by ``gamma``.
    """

    def __init__(self, optimizer, base_lr: float, warmup_iters: int, warmup_factor: float,
                 step_iters: list[int], gamma: float):
        self.optimizer, self.base_lr = optimizer, base_lr
        self.warmup_iters, self.warmup_factor = warmup_iters, warmup_factor
        self.step_iters, self.gamma = list(step_iters), gamma
        self.iteration = 0

    def lr_at(self, it: int) -> float:
        lr = self.base_lr * self.gamma ** sum(it >= s for s in self.step_iters)
        if it < self.warmup_iters:
            lr *= self.warmup_factor + (1 - self.warmup_factor) * it / self.warmup_iters
        return lr

    def apply(self, it: int) -> float:
        self.iteration = it
        lr = self.lr_at(it)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "base_lr": self.base_lr, "step_iters": list(self.step_iters)}

    def load_state_dict(self, state: dict) -> None:
        self.iteration = int(state["iteration"])


def amp_dtype(mode: str, device: torch.device) -> Optional[torch.dtype]:
    if mode == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_cpu_threads(requested: int, device: torch.device, log: Callable[[str], None] = print,
                    processes: int = 1) -> int:
    """Torch CPU threads: ``requested`` if > 0; auto: torch's default, split among ``processes``
    training processes on CPU, and 1 when the machine is already busy (load average >= cores):
    OpenMP threads competing with other processes slow training down up to ~10x."""
    if requested > 0:
        torch.set_num_threads(requested)
    elif device.type == "cpu" and processes > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // processes))
    elif device.type == "cpu" and hasattr(os, "getloadavg"):
        cores = os.cpu_count() or 1
        if cores > 1 and os.getloadavg()[0] >= cores and torch.get_num_threads() > 1:
            torch.set_num_threads(1)
            log(f"note: the CPUs are busy (load {os.getloadavg()[0]:.1f} on {cores} cores): using 1 thread "
                "(set train.threads to override)")
    return torch.get_num_threads()


def scaled_lr(cfg: Config, world_size: int) -> float:
    t = cfg.train
    return t.lr * t.batch_size * world_size / t.lr_reference_batch


def _to_device(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]


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
    training ends within the budget (the lr steps scale with it). ``train_dataset`` / ``val_dataset``
    replace the config's datasets (programmatic use, tests). ``loss_hook(iteration, losses)`` may
    replace the loss dict (fault-injection in tests).
    """
    t_start = time.time()
    info = D.init_distributed(cfg.train.device)
    try:
        return _train(cfg, Path(out_dir), resume, info, progress, time_budget_s, train_dataset, val_dataset, log,
                      loss_hook, t_start)
    finally:
        D.cleanup(info)


def _train(cfg, out_dir, resume, info, progress, time_budget_s, train_dataset, val_dataset, log, loss_hook, t_start):
    from a3d.engine.loader import make_dataset, make_train_loader
    from a3d.models.detector import build_detector

    t = cfg.train
    device = info.device
    main = info.is_main
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"

    ckpt = None
    if resume:
        if not last_path.is_file():
            raise A3DError(f"--resume: {last_path} not found (nothing to resume in {out_dir})")
        ckpt = load_checkpoint(last_path)
        stored = config_from_dict(ckpt["config"], f"{last_path} (stored config)")
        changed = diff(stored, cfg, "model")
        if changed:
            raise A3DError(f"{last_path}: checkpoint from another model config (differs in {', '.join(changed)}); "
                           "resume with the run's own config or start a new --out folder")
        # the schedule must match for an exact resume; the stored one wins unless epochs were extended
        sched_changed = [k for k in diff(stored, cfg, "train") if k not in ("train.epochs", "train.max_iters",
                                                                             "train.checkpoint_every",
                                                                             "train.val_every", "train.log_every",
                                                                             "train.device")]
        if sched_changed and main:
            log(f"resume: note: config differs from the checkpoint's in {', '.join(sched_changed)}")
    elif main and last_path.exists():
        raise A3DError(f"{out_dir} already holds a run (last.pt); pass --resume to continue it or choose another --out")

    if ckpt is None:
        from a3d.models.detector import resolve_pretrained

        resolve_pretrained(cfg.model.pretrained)  # a missing ImageNet file stops here, before any work
    set_cpu_threads(t.threads, device, log if main else (lambda s: None), info.world_size)
    seed_everything(t.seed + info.rank)

    # ---- data
    if train_dataset is None:
        train_dataset = make_dataset(cfg, cfg.data.train_split, train=True)
    if len(train_dataset) == 0:
        raise A3DError(f"{cfg.data.root}: split {cfg.data.train_split!r} has no samples")
    if val_dataset is None and t.val_every > 0 and main:
        val_dataset = make_dataset(cfg, cfg.data.val_split, train=False, masks=False)
    loader, sampler = make_train_loader(train_dataset, t.batch_size, t.seed, info.rank, info.world_size,
                                        cfg.data.workers)
    ipe = sampler.batches_per_epoch
    total = t.epochs * ipe if t.max_iters <= 0 else min(t.max_iters, t.epochs * ipe)
    if ckpt is not None and "total_iters" in ckpt and not diff(config_from_dict(ckpt["config"]), cfg, "train"):
        total = int(ckpt["total_iters"])  # same schedule: keep the run's length (a time-budget cap included)

    # ---- model, optimiser, schedule
    model = build_detector(cfg.model, pretrained=None if ckpt is None else False).to(device)
    if info.distributed and device.type == "cuda" and t.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    base_lr = scaled_lr(cfg, info.world_size)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=base_lr, momentum=t.momentum, weight_decay=t.weight_decay)

    def step_iters(total_iters: int) -> list[int]:
        return [int(round(s / t.epochs * total_iters)) for s in t.lr_steps]

    schedule = WarmupStepSchedule(optimizer, base_lr, t.warmup_iters, t.warmup_factor, step_iters(total), t.lr_gamma)
    dtype = amp_dtype(t.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    start_it, history, best_metric = 0, [], -1.0
    if ckpt is not None:
        if int(ckpt.get("iters_per_epoch", ipe)) != ipe or int(ckpt.get("world_size", info.world_size)) * \
                int(config_from_dict(ckpt["config"]).train.batch_size) != info.world_size * t.batch_size:
            raise A3DError(f"{last_path}: the checkpoint was taken with another total batch or dataset size "
                           f"({ckpt.get('iters_per_epoch')} iterations per epoch, here {ipe}); resume with the same "
                           "world size and batch size")
        load_model_state(model, ckpt["model"], str(last_path))
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_it = int(ckpt["iteration"])
        history = list(ckpt.get("history", []))
        best_metric = float(ckpt.get("best_metric", -1.0))
        rngs = ckpt.get("rng") or []
        if rngs:
            set_rng_state(rngs[info.rank % len(rngs)])
        if main:
            log(f"resumed {last_path} at iteration {start_it} (epoch {start_it // ipe + 1})")
    ddp = model
    if info.distributed:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    # ---- outputs (rank 0)
    writer = None
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_dir / "config.toml", to_toml(cfg))
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out_dir / "tb"), purge_step=start_it if start_it else None)
        except Exception as e:  # tensorboard missing or unwritable: train anyway
            log(f"warning: no TensorBoard logs ({type(e).__name__}: {e})")

    state = {"it": start_it, "total": total, "last_saved": None}

    def save(epoch_next: int) -> None:
        """Write last.pt (rank 0); RNG states are gathered from every rank."""
        rngs = D.gather_objects(rng_state(), info)
        if not main:
            return
        ckpt_state = {
            "config": config_to_dict(cfg),
            "model": model_state(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": schedule.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "rng": rngs,
            "epoch": epoch_next,
            "iteration": state["it"],
            "iters_per_epoch": ipe,
            "total_iters": state["total"],
            "world_size": info.world_size,
            "history": history,
            "best_metric": best_metric,
        }
        save_checkpoint(last_path, ckpt_state)
        state["last_saved"] = state["it"]
        state["ckpt"] = ckpt_state

    bar = None
    if main and progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start_it, desc=f"train {cfg.name}", unit="it", dynamic_ncols=True)

    model.train()
    budget_checked = time_budget_s is None or start_it > 0
    full_total, t_five = state["total"], time.time()
    t_loop = time.time()
    n_epochs = math.ceil(total / ipe)
    epoch = start_it // ipe
    try:
        while epoch < n_epochs and state["it"] < state["total"]:
            sampler.set_epoch(epoch, state["it"] - epoch * ipe)
            for images, targets in loader:
                it = state["it"]
                if it >= state["total"]:
                    break
                lr = schedule.apply(it)
                images = images.to(device, non_blocking=True)
                targets = _to_device(targets, device)
                with torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                    losses = ddp(images, thickness=torch.stack([t["thickness"] for t in targets]), targets=targets)
                if loss_hook is not None:
                    losses = loss_hook(it, losses)
                loss = sum(losses.values())
                values = torch.stack([loss.detach().float()] + [v.detach().float() for v in losses.values()])
                values = D.all_reduce_mean(values, info)
                if not torch.isfinite(values).all():
                    where = (f"the last good checkpoint is {last_path} (iteration {state['last_saved']})"
                             if state["last_saved"] is not None else "no checkpoint was written yet")
                    bad = ", ".join(f"{k}={float(v):.4g}" for k, v in zip(losses, values[1:]))
                    raise TrainingDiverged(f"loss is {float(values[0])} at iteration {it + 1} (epoch {epoch + 1}; "
                                           f"{bad}); training stopped, {where}; lower train.lr or check the data")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if t.clip_grad > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, t.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                state["it"] = it + 1
                done = state["it"]

                if main:
                    if writer is not None and (done % t.log_every == 0 or done == 1):
                        writer.add_scalar("train/loss", float(values[0]), done)
                        for k, v in zip(losses, values[1:]):
                            writer.add_scalar(f"train/{k}", float(v), done)
                        writer.add_scalar("train/lr", lr, done)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{float(values[0]):.3f}", lr=f"{lr:.2e}", epoch=epoch + 1)
                if not budget_checked and done - start_it in (5, 25):
                    # estimate the speed after 5 iterations, then again over iterations 5-25 (steady state)
                    if done - start_it == 5:
                        per_it = (time.time() - t_loop) / 5
                        t_five = time.time()
                    else:
                        budget_checked = True
                        per_it = (time.time() - t_five) / 20
                    remaining = time_budget_s - (time.time() - t_start)
                    cap = done + max(0, int(remaining * 0.97 / per_it) - _val_reserve(per_it, val_dataset, t, ipe))
                    cap = D.broadcast_object(min(cap, full_total), info)
                    new_steps = step_iters(max(done, cap))
                    if cap != state["total"] and all(s_ > done for s_ in new_steps if s_ > 0):
                        state["total"] = max(done, cap)
                        schedule.step_iters = new_steps
                        if bar is not None:
                            bar.total = state["total"]
                            bar.refresh()
                        if main:
                            log(f"time budget: {state['total']} iterations ({per_it:.2f} s/iteration)")
                    n_epochs = math.ceil(state["total"] / ipe)
                end_of_epoch = done % ipe == 0 or done == state["total"]
                if end_of_epoch:
                    break
                if t.checkpoint_every and done % t.checkpoint_every == 0:
                    save(done // ipe)
            done = state["it"]
            if not (done % ipe == 0 or done == state["total"]):
                break
            epoch_done = (done - 1) // ipe + 1
            if t.val_every and (epoch_done % t.val_every == 0 or done == state["total"]) and val_dataset is not None:
                if main:
                    rec = _validate(model, val_dataset, t, device, dtype, epoch_done, done)
                    history.append(rec)
                    if writer is not None:
                        writer.add_scalar("val/average_sensitivity", rec["val_average"], done)
                        for fp, s in zip(rec["fps"], rec["val_sensitivities"]):
                            writer.add_scalar(f"val/sensitivity@{fp:g}", s, done)
                    msg = f"epoch {epoch_done}: val average sensitivity {rec['val_average']:.4f}"
                    (bar.write if bar is not None else log)(msg)
                D.barrier(info)
            improved = bool(history) and history[-1]["iteration"] == done and history[-1]["val_average"] > best_metric
            if improved:
                best_metric = history[-1]["val_average"]
            save(epoch_done)
            if main:
                if improved:
                    save_checkpoint(best_path, state["ckpt"])
                write_text_atomic(out_dir / "history.json", json.dumps(history, indent=1))
            epoch = epoch_done
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    if main and not best_path.exists() and "ckpt" in state:
        # no validation ran: best = last
        save_checkpoint(best_path, state["ckpt"])
    return TrainResult(
        out_dir=out_dir,
        iterations=state["it"],
        epochs_done=state["it"] // ipe,
        last_checkpoint=last_path if main else None,
        best_checkpoint=best_path if main else None,
        best_metric=best_metric,
        history=history,
        seconds=time.time() - t_start,
    )


def _val_reserve(per_it: float, val_dataset, t, ipe: int) -> int:
    """Iterations' worth of time to keep for validations (roughly 1/3 of a training iteration per image)."""
    if val_dataset is None or not t.val_every:
        return 0
    return int(len(val_dataset) / 3) * max(1, t.epochs // max(1, t.val_every))


def _validate(model, dataset, t, device, dtype, epoch: int, iteration: int) -> dict:
    from a3d.engine.evaluate import evaluate_dataset, predict_dataset

    preds = predict_dataset(model, dataset, batch_size=t.val_batch_size, device=device, amp=dtype)
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
