"""The run's length and lr schedule under a time budget (a3d.engine.schedule.TimeBudget), with a
fake clock: hand-computed lengths, no timing in the test."""

from __future__ import annotations

import time

from a3d.engine import schedule
from a3d.engine.checkpoint import load_checkpoint
from a3d.engine.schedule import TimeBudget
from a3d.engine.train import train
from fixtures_train import small_config


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_time_budget_proposals(monkeypatch):
    """Fails if the speed is not re-measured over iterations 6-25, if the time spent before the loop
    is not counted, or if the validation reserve is not kept."""
    clock = FakeClock()
    monkeypatch.setattr(schedule.time, "time", clock)
    budget = TimeBudget(seconds=100, t_start=clock.now - 10, reserve=3)  # 10 s spent before the loop
    budget.start(0)
    for done in range(1, 5):
        clock.now += 2
        assert budget.propose(done) is None
    clock.now += 2
    # 2 s/iteration, 100 - 20 = 80 s left: 80 x 0.97 / 2 = 38.8 -> 38 iterations, 3 kept for validation
    assert budget.propose(5) == 5 + 38 - 3
    clock.now += 20 * 1.0  # iterations 6-25 at 1 s each: 100 - 40 = 60 s left -> 58.2 -> 58
    assert budget.propose(25) == 25 + 58 - 3
    clock.now += 1
    assert budget.propose(26) is None


def test_time_budget_shortens_the_run_and_its_lr_steps(synth_root, tmp_path, monkeypatch):
    """Fails if the trainer ignores the budget's proposal (20 iterations would run) or keeps the lr
    steps of the planned run (18 and 20)."""
    clock = FakeClock()
    monkeypatch.setattr(time, "time", clock)

    def one_second_per_iteration(it, losses):
        clock.now += 1.0
        return losses

    cfg = small_config(synth_root, "train.max_iters=20", "train.epochs=10", "train.lr_steps=9,10", "train.threads=1")
    res = train(cfg, tmp_path / "run", time_budget_s=8, progress=False, log=lambda s: None,
                loss_hook=one_second_per_iteration)
    # after 5 iterations (5 s): 3 s left -> 3 x 0.97 = 2.91 -> 2 more iterations
    assert res.iterations == 7
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["total_iters"] == 7
    # lr steps at 9/10 and 10/10 of the run: round(6.3), 7 (the planned run's: 18, 20)
    assert ckpt["scheduler"]["step_iters"] == [6, 7]


def test_lr_step_iterations_scale_with_the_run():
    """Fails if the lr steps are truncated instead of rounded, or the run length ignores max_iters."""
    cfg = small_config("unused", "train.epochs=10", "train.lr_steps=7,9")
    assert schedule.lr_step_iterations(cfg.train, 100) == [70, 90]
    assert schedule.lr_step_iterations(cfg.train, 11) == [8, 10]  # 7.7 and 9.9, rounded
    assert schedule.run_length(cfg.train, 8) == 80
    assert schedule.run_length(small_config("unused", "train.max_iters=5").train, 8) == 5
