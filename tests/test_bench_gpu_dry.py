"""``benchmarks/gpu.sh`` in its CPU dry mode (tiny sizes, ~15 s): the GPU benchmark keeps running
between the rare occasions a GPU is lent, and its goal checks say what they should."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_gpu  # noqa: E402  (benchmarks/ is not a package)


def _env() -> dict:
    env = dict(os.environ, PYTHON=sys.executable)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def test_gpu_sh_dry_run_writes_every_stage(tmp_path):
    """Every stage runs and is reported: training rows for each operator x precision, the warm-up and
    timed `a3d predict` runs with predictions.json's timing, the fusion rows; markdown and JSON carry
    the date, the device and the torch version. Fails if a stage is dropped or crashes, or the
    script stops installing nothing / finding its Python."""
    out = tmp_path / "gpu"
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), str(out), "--dry"], env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads((out / "gpu.json").read_text())
    md = (out / "gpu.md").read_text()
    plan = bench_gpu.DRY
    assert doc["dry"] is True and doc["env"]["torch"] and doc["env"]["date"] in md and "DRY RUN" in md
    trained = {(row["operator"], row["slices"], row["precision"]) for row in doc["train"]["rows"] if "samples_per_s" in row}
    assert trained == {(o, d, p) for o in plan.operators for d in plan.slices for p in plan.precisions}
    assert [run["run"] for run in doc["predict"]["runs"]] == ["warm-up", "timed"]
    for run in doc["predict"]["runs"]:
        assert run["slices"] == 2 and set(run["timing"]) == {"read", "processing", "model", "write", "total"}
    assert len(doc["fusion"]["rows"]) == len(bench_gpu.DENSE_SHAPES) * len(plan.slices)
    assert all(row["copy_ms"] > 0 and row["a3d_ms"] > 0 for row in doc["fusion"]["rows"])
    assert doc["seconds"] < 120


def test_gpu_sh_needs_an_output_folder():
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh")], env=_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "usage" in r.stderr


def _row(op, d, p, samples_per_s, batch=4):
    return {"operator": op, "slices": d, "precision": p, "samples_per_s": samples_per_s, "s_per_iter": batch / samples_per_s,
            "peak_mib": 1000.0, "size": 512, "batch": batch}


@pytest.mark.parametrize("a3d, none, fast_enough, ratio_ok", [(160.0, 165.0, True, True), (140.0, 150.0, False, False),
                                                              (151.0, 200.0, True, False)])
def test_goals_read_the_right_rows(a3d, none, fast_enough, ratio_ok):
    """The goals: A3D x7 bf16 >= 150 samples/s and its time / none's <= 1.05 (165/160 = 1.03: met;
    150/140 = 1.07 and 200/151 = 1.32: not); the predict goal only for a whole-volume run. Fails if
    a comparison is inverted or reads another row (x3 or fp32 rows here are decoys)."""
    rows = [_row("a3d", 7, "bf16", a3d), _row("none", 7, "bf16", none), _row("a3d", 3, "bf16", 1.0),
            _row("a3d", 7, "fp32", 1.0), _row("none", 3, "bf16", 999.0)]
    timing = {"read": 0.2, "processing": 0.3, "model": 0.5, "write": 0.1, "total": 1.1}
    result = {"train": {"rows": rows}, "plan": {"predict_slices": None},
              "predict": {"runs": [{"run": "timed", "timing": timing}]}}
    g = list(bench_gpu.goals(result).values())
    assert g == [fast_enough, ratio_ok, True]  # processing + model = 0.8 s < 1 s
    timing["model"] = 0.75
    assert list(bench_gpu.goals(result).values())[2] is False  # 1.05 s
    result["plan"]["predict_slices"] = 2  # a partial volume says nothing about the goal
    assert list(bench_gpu.goals(result).values())[2] is None
