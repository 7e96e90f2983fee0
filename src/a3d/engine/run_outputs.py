"""What rank 0 of a training run shows and writes besides checkpoints: the run folder's
``config.toml`` and ``history.json``, TensorBoard scalars (``tb/``) and the progress (a bar on a
terminal, lines in a log file: :class:`a3d.progress.Progress`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from a3d.config import Config, to_toml
from a3d.io import write_text_atomic
from a3d.progress import Progress


class RunOutputs:
    """Opened by rank 0 when the loop starts (``pos``: the run's position, for the bar's start and the
    TensorBoard purge step); :meth:`close` at the end."""

    def __init__(self, out_dir: Path, cfg: Config, pos, progress: bool, log: Callable[[str], None]):
        self.out_dir, self.log, self.log_every = out_dir, log, cfg.train.log_every
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_dir / "config.toml", to_toml(cfg))
        self.writer = None
        try:  # tensorboard is optional (an extra): train without its logs
            from torch.utils.tensorboard import SummaryWriter

            # a resumed run drops the events logged after its checkpoint
            self.writer = SummaryWriter(str(out_dir / "tb"), purge_step=pos.iteration or None)
        except Exception as e:  # tensorboard missing or unwritable: train anyway
            log(f"warning: no TensorBoard logs ({type(e).__name__}: {e})")
        self.bar = None
        if progress:
            self.bar = Progress(pos.total, f"train {cfg.name}", "it", initial=pos.iteration)

    def log_step(self, done: int, losses: dict[str, float], lr: float, epoch: int) -> None:
        """After iteration ``done``: ``losses`` = {"loss": total, "loss_...": each} (averaged over ranks)."""
        if self.writer is not None and (done % self.log_every == 0 or done == 1):
            for k, v in losses.items():
                self.writer.add_scalar(f"train/{k}", v, done)
            self.writer.add_scalar("train/lr", lr, done)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{losses['loss']:.3f}", lr=f"{lr:.2e}", epoch=epoch + 1)
            self.bar.update(1)

    def set_total(self, total: int) -> None:
        if self.bar is not None:
            self.bar.set_total(total)

    def log_validation(self, rec: dict) -> None:
        if self.writer is not None:
            self.writer.add_scalar("val/average_sensitivity", rec["val_average"], rec["iteration"])
            for fp, s in zip(rec["fps"], rec["val_sensitivities"]):
                self.writer.add_scalar(f"val/sensitivity@{fp:g}", s, rec["iteration"])
        msg = f"epoch {rec['epoch']}: val average sensitivity {rec['val_average']:.4f}"
        (self.bar.write if self.bar is not None else self.log)(msg)

    def write_history(self, history: list[dict]) -> None:
        write_text_atomic(self.out_dir / "history.json", json.dumps(history, indent=1))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
