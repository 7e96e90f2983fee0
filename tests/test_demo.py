"""``a3d demo`` end to end at a very small budget: data, untrained + trained evaluation, report."""

from __future__ import annotations

import json

from fixtures_train import small_overrides


def test_demo_end_to_end(tmp_path, capsys):
    from a3d.cli import main

    out = tmp_path / "demo"
    over = [o for o in small_overrides("unused") if not o.startswith("data.root")]
    code = main(["demo", "--out", str(out), "--minutes", "5", "--patients", "8", "--no-progress",
                 *over, "train.max_iters=3"])
    assert code == 0
    report = out / "report"
    m = json.loads((report / "metrics.json").read_text())
    assert m["iterations"] == 3
    for k in ("untrained", "trained"):
        assert 0.0 <= m[k]["average"] <= 1.0 and len(m[k]["sensitivity"]) == 6
    md = (report / "metrics.md").read_text()
    assert "untrained" in md and "trained (3 iterations)" in md
    assert (report / "froc.png").stat().st_size > 1000
    assert list((report / "overlays").glob("*.png"))
    assert (report / "trained" / "predictions.json").is_file()
    assert (out / "run" / "last.pt").is_file()
    assert "untrained" in capsys.readouterr().out
