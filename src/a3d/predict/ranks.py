"""Sharing a batch's scans among the processes of ``torchrun`` (one process: all of them, in order).

The ranks talk only through torch.distributed's key-value store (the TCPStore that torchrun's agent
serves, reached by the ``env://`` rendezvous from MASTER_ADDR/MASTER_PORT), in JSON: rank 0
publishes the plan (the scans, which are already done); every rank claims the next scan to do
with an atomic counter (``store.add``) and posts each scan's outcome; rank 0 collects the outcomes
for ``batch.json``. No process group is created: no NCCL or gloo collective that a slow or dead
rank could hang, and nothing pickled.

Dynamic claiming rather than a fixed share per rank: scans differ by orders of magnitude in slices,
so a static split leaves ranks idle while one works through the big scans; a counter costs one
store round trip per scan and a rank that dies leaves only the scans it had claimed (its current
one and the one it was reading ahead), which a rerun does (the resume rule).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable

import torch.distributed as dist

from a3d.errors import A3DError

POLL_S = 0.2  # how often a waiting rank looks at the store
_STORE_TIMEOUT = timedelta(hours=24)  # a single store call may wait behind a slow rank 0 (planning)


def launched_world_size() -> int:
    """How many processes torchrun started (WORLD_SIZE; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class Ranks:
    """This process's place among the ranks; ``store`` None in a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    store: object = None
    _claimed: int = 0  # one process: scans claimed so far
    _posted: dict = field(default_factory=dict)  # one process: outcomes not yet collected
    _seen: int = 0  # with a store: outcomes collected so far

    @classmethod
    def from_env(cls) -> "Ranks":
        """The ranks torchrun started (RANK, WORLD_SIZE, LOCAL_RANK), joined to its store."""
        world = launched_world_size()
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        if world <= 1:
            return cls()
        try:
            store, _, _ = next(dist.rendezvous("env://", rank, world, timeout=_STORE_TIMEOUT))
        except (RuntimeError, ValueError) as e:
            raise A3DError(f"torchrun: cannot reach the rendezvous store (MASTER_ADDR/MASTER_PORT): {e}") from None
        # a restarted group (torchrun --max-restarts) starts with fresh keys
        prefix = f"a3d-predict/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
        return cls(rank, world, local, dist.PrefixStore(prefix, store))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def label(self) -> str:
        """``"rank 1: "`` before a log line when there are several ranks, else ``""``."""
        return f"rank {self.rank}: " if self.store is not None else ""

    def _get_json(self, key: str):
        while not self.store.check([key]):
            time.sleep(POLL_S)
        return json.loads(self.store.get(key).decode())

    def share(self, make: Callable[[], dict]) -> dict:
        """Rank 0's ``make()``, given to every rank (an A3DError on rank 0 is raised on every rank)."""
        if self.store is None:
            return make()
        if self.is_main:
            try:
                doc = make()
            except A3DError as e:
                self.store.set("plan", json.dumps({"error": str(e)}))
                raise
            self.store.set("plan", json.dumps(doc))
            return doc
        doc = self._get_json("plan")
        if "error" in doc:
            raise A3DError(doc["error"])
        return doc

    def claim(self) -> int:
        """The next index (0, 1, 2, ...) no rank has claimed yet."""
        if self.store is None:
            self._claimed += 1
            return self._claimed - 1
        return int(self.store.add("claimed", 1)) - 1

    def post(self, index: int, entry: dict) -> None:
        """This rank's outcome of scan ``index`` (JSON-ready), for rank 0: the n-th outcome posted
        by any rank is key ``posted/n``."""
        if self.store is None:
            self._posted[index] = entry
            return
        n = int(self.store.add("posted", 1))
        self.store.set(f"posted/{n}", json.dumps({"index": index, "entry": entry}))

    def collect(self) -> dict[int, dict]:
        """The outcomes posted (by any rank) since the last call: {scan index: entry}."""
        if self.store is None:
            new, self._posted = self._posted, {}
            return new
        total, new = int(self.store.add("posted", 0)), {}
        while self._seen < total:
            self._seen += 1
            doc = self._get_json(f"posted/{self._seen}")
            new[int(doc["index"])] = doc["entry"]
        return new

    def finish(self) -> None:
        """This rank has nothing more to do."""
        if self.store is not None:
            self.store.add("finished", 1)

    def all_finished(self) -> bool:
        return self.store is None or int(self.store.add("finished", 0)) >= self.world_size
