"""Process-level settings of a training (or evaluation) process: CPU threads, seeds, AMP dtype."""

from __future__ import annotations

import os
import random
from typing import Callable, Optional

import numpy as np
import torch


def amp_dtype(mode: str, device: torch.device) -> Optional[torch.dtype]:
    """``train.amp`` -> the autocast dtype (None: full precision)."""
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
