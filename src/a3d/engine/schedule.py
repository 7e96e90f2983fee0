"""How long a run is and how fast it learns: the lr schedule, the run length and the time budget.

- :func:`run_length`: iterations of a run from the config (epochs x iterations per epoch, capped by
  ``train.max_iters``);
- :func:`lr_step_iterations`: the iterations where the lr drops, ``train.lr_steps`` scaled from epochs
  to the run's length;
- :class:`WarmupStepSchedule`: the lr as a pure function of the iteration (linear warm-up, step decay);
- :class:`TimeBudget`: the demo's "train for N seconds": measures the speed and proposes a shorter run.
"""

from __future__ import annotations

import time
from typing import Optional

from a3d.config import Config, TrainConfig


def scaled_lr(cfg: Config, world_size: int) -> float:
    """``train.lr`` is for ``train.lr_reference_batch`` images; scaled linearly to the total batch."""
    t = cfg.train
    return t.lr * t.batch_size * world_size / t.lr_reference_batch


def run_length(t: TrainConfig, iters_per_epoch: int) -> int:
    """Iterations of the whole run: ``epochs x iters_per_epoch``, or ``max_iters`` if smaller."""
    total = t.epochs * iters_per_epoch
    return total if t.max_iters <= 0 else min(t.max_iters, total)


def lr_step_iterations(t: TrainConfig, total: int) -> list[int]:
    """``train.lr_steps`` (epochs) as iterations of a run of ``total`` iterations (same fractions)."""
    return [int(round(s / t.epochs * total)) for s in t.lr_steps]


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
        """Set the optimizer's lr for iteration ``it``; returns it."""
        self.iteration = it
        lr = self.lr_at(it)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "base_lr": self.base_lr, "step_iters": list(self.step_iters)}

    def load_state_dict(self, state: dict) -> None:
        self.iteration = int(state["iteration"])


class TimeBudget:
    """Fit a run into ``seconds`` counted from ``t_start`` (the demo's time budget).

    Call :meth:`start` when the first iteration begins and :meth:`propose` after each one. After 5
    iterations it times them, and again over iterations 6-25 (steady state); at those two points it
    proposes the run length that ends within the budget (3% margin), keeping ``reserve``
    iterations' worth of time for validation. Other iterations get None.
    """

    CHECKS = (5, 25)

    def __init__(self, seconds: float, t_start: float, reserve: int = 0):
        self.seconds, self.t_start, self.reserve = seconds, t_start, reserve
        self.first = 0
        self.t_mark = time.time()
        self.per_iteration = float("nan")

    def start(self, iteration: int) -> None:
        self.first, self.t_mark = iteration, time.time()

    def propose(self, done: int) -> Optional[int]:
        """The run length (iterations) that fits the budget, at the check points; else None."""
        n = done - self.first
        if n not in self.CHECKS:
            return None
        now = time.time()
        timed = self.CHECKS[0] if n == self.CHECKS[0] else self.CHECKS[1] - self.CHECKS[0]
        self.per_iteration = (now - self.t_mark) / timed
        self.t_mark = now
        remaining = self.seconds - (now - self.t_start)
        return done + max(0, int(remaining * 0.97 / self.per_iteration) - self.reserve)
