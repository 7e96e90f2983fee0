"""Progress of long work, one way for every command: a tqdm bar when stderr is a terminal, plain
lines otherwise (a log file gets ``desc: 120/1000 it (12 %), 2.1 it/s, ETA 0:07:00`` about every
10 % and at least every minute, instead of a wall of carriage returns)."""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

LINE_EVERY_S = 60.0  # a line at least this often, however slow the work


def _clock(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """``update(n)``, ``set_postfix(**values)``, ``set_total(n)``, ``write(message)``, ``close()``.

    ``enabled=False``: silent (messages from :meth:`write` still go to ``stream``). ``stream``:
    stderr by default; whether it is a terminal decides bar or lines. ``every_update``: a line at
    every update instead of about every 10 % (few, long steps: the scans of a batch).
    """

    def __init__(self, total: int, desc: str, unit: str = "it", initial: int = 0, enabled: bool = True,
                 stream: Optional[TextIO] = None, every_update: bool = False):
        self.stream = stream or sys.stderr
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.enabled, self.postfix, self.every_update = enabled, "", every_update
        self.bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm  # imported for terminals only

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=self.stream)
        self._start, self._start_n = time.monotonic(), initial
        self._last_t, self._last_decile = self._start, self._decile(initial)

    def _decile(self, n: int) -> int:
        return n * 10 // self.total if self.total else 0

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled:
            now = time.monotonic()
            if (self.every_update or self._decile(self.n) != self._last_decile or now - self._last_t >= LINE_EVERY_S
                    or self.n == self.total):
                self._line(now)

    def _line(self, now: float) -> None:
        self._last_t, self._last_decile = now, self._decile(self.n)
        pct = f" ({100 * self.n // self.total} %)" if self.total else ""
        done, spent = self.n - self._start_n, now - self._start
        rate = done / spent if spent > 0 else 0.0
        eta = f", ETA {_clock((self.total - self.n) / rate)}" if rate > 0 and self.total > self.n else ""
        speed = f", {rate:.3g} {self.unit}/s" if rate > 0 else ""
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}{pct}{speed}{eta}{extra}", file=self.stream, flush=True)

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self.bar is not None:
            self.bar.set_postfix(values)

    def set_total(self, total: int) -> None:
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def write(self, message: str) -> None:
        """A message that does not break the bar."""
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_callback(desc: str, unit: str = "it", stream: Optional[TextIO] = None) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback (as ``a3d.predict`` calls it) drawing one :class:`Progress` per
    run of work: a new one whenever ``done`` starts again from the beginning."""
    state: dict = {}

    def report(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None or done < bar.n or total != bar.total:
            if bar is not None:
                bar.close()
            bar = state["bar"] = Progress(total, desc, unit, stream=stream)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            state.pop("bar")

    return report
