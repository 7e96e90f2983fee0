"""``a3d grid``: train and evaluate every operator at 3 and 7 slices; a Table 2-style report.

For each config (default: the 14 ``<operator>_x<slices>``), the run goes to ``OUT/runs/<name>``:
trained (or resumed when a previous grid run was interrupted, or skipped when complete), then
evaluated on the chosen split (``metrics.json``, predictions, FROC plot in the run folder). At the
end :func:`a3d.evaluation.report.write_report` writes ``OUT/report`` (table + overlaid curves).

Presets: ``paper`` uses the packaged paper configs as they are (plus overrides); ``tiny`` uses the
tiny preset with the config's operator and slices (a small budget, e.g. for synthetic data).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from a3d.config import OPERATORS, Config, load_config, override_config
from a3d.engine.checkpoint import load_checkpoint
from a3d.engine.evaluate import load_model, predict_dataset, split_dataset
from a3d.engine.train import train
from a3d.errors import A3DError
from a3d.evaluation import evaluate_predictions, ground_truth_from_records, write_evaluation, write_report

PAPER_GRID = tuple(f"{op}_x{d}" for d in (3, 7) for op in OPERATORS)


@dataclass
class GridRun:
    name: str
    run_dir: Path
    average: float
    iterations: int
    seconds: float


def grid_config(name: str, preset: str, overrides: Sequence[str] = ()) -> Config:
    """The config of one grid cell: ``name`` is ``<operator>_x<slices>`` (or a TOML path with ``paper``)."""
    if preset == "paper":
        return load_config(name, overrides)
    if preset != "tiny":
        raise A3DError(f"--preset {preset!r}: expected tiny or paper")
    m = re.fullmatch(r"([a-z0-9]+)_x(\d+)", name)
    if not m or m.group(1) not in OPERATORS:
        raise A3DError(f"--configs: {name!r} is not <operator>_x<slices> (operators: {', '.join(OPERATORS)})")
    cfg = load_config("tiny", [f"model.operator={m.group(1)}", f"model.slices={m.group(2)}", *overrides])
    return override_config(cfg, [f"name={name}"])


def run_grid(
    configs: Optional[Sequence[str]] = None,
    out_dir: str | Path = "grid_out",
    preset: str = "tiny",
    overrides: Sequence[str] = (),
    split: str = "val",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Train + evaluate each config; returns {"runs": [GridRun...], "report": {kind: path}}."""
    if split not in ("val", "test"):
        raise A3DError(f"--split {split!r}: expected val or test")
    names = list(configs or PAPER_GRID)
    cfgs = [grid_config(n, preset, overrides) for n in names]  # all validated before anything runs
    out = Path(out_dir)
    runs: list[GridRun] = []
    for cfg in cfgs:
        run_dir = out / "runs" / cfg.name
        t0 = time.time()
        last = run_dir / "last.pt"
        resume = last.exists()
        done = False
        if resume:
            ck = load_checkpoint(last)
            done = int(ck["iteration"]) >= int(ck.get("total_iters", 1 << 62))
        if not done:
            log(f"grid: {'resuming' if resume else 'training'} {cfg.name} -> {run_dir}")
            train(cfg, run_dir, resume=resume, progress=progress, log=log)
        model, _ = load_model(run_dir / "best.pt", cfg.train.device)
        ds = split_dataset(cfg, cfg.data.root, split)
        preds = predict_dataset(model, ds, batch_size=cfg.train.val_batch_size)
        gt = ground_truth_from_records(ds.lesions, split)
        run = {"name": cfg.name, "operator": cfg.model.operator, "slices": cfg.model.slices}
        m = evaluate_predictions(preds, gt, source=str(run_dir), run=run, n_bootstrap=200)
        write_evaluation(run_dir, preds, m, title=f"{cfg.name} ({split})")
        iterations = int(load_checkpoint(run_dir / "last.pt")["iteration"])
        runs.append(GridRun(cfg.name, run_dir, float(m["average"]), iterations, time.time() - t0))
        log(f"grid: {cfg.name}: {split} average sensitivity {100 * m['average']:.2f}%")
    report = write_report([r.run_dir for r in runs], out / "report")
    return {"runs": runs, "report": report}
