"""``index.html`` of a batch output folder, from its ``batch.json`` document (issue 20)."""

from __future__ import annotations

import json
from html.parser import HTMLParser

from a3d.cli import main
from a3d.predict.batch_index import batch_index_html
from test_predict import standin  # noqa: F401  (fixture)
from test_predict_support import synthetic_nifti


class _Rows(HTMLParser):
    """Each table row of the scans: its cells' text, links and images."""

    def __init__(self):
        super().__init__()
        self.rows: list[dict] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "scan" in (a.get("class") or ""):
            self.rows.append({"status": a["data-status"], "cells": [], "links": [], "images": []})
        elif self.rows and tag == "td":
            self._cell = []
        elif self.rows and tag == "a":
            self.rows[-1]["links"].append(a["href"])
        elif self.rows and tag == "img":
            self.rows[-1]["images"].append(a["src"])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1]["cells"].append("".join(self._cell).strip())
            self._cell = None


def _rows(text: str) -> list[dict]:
    p = _Rows()
    p.feed(text)
    return p.rows


def _scan_folder(root, name, candidates, overlay=True):
    (root / name / "overlays").mkdir(parents=True)
    (root / name / "report.html").write_text("<html></html>")
    cands = [{"id": i, "max_score": s, "overlay": f"overlays/slice_{i:04d}.png"} for i, s in enumerate(candidates, 1)]
    for c in cands[:1] if overlay else []:
        (root / name / c["overlay"]).write_bytes(b"png")
    (root / name / "predictions.json").write_text(json.dumps({"candidates": cands}))


def test_index_lists_every_status_and_tolerates_missing_fields(tmp_path):
    _scan_folder(tmp_path, "a", [0.91, 0.4])
    _scan_folder(tmp_path, "b", [], overlay=False)
    (tmp_path / "c").mkdir()  # still running: no predictions.json yet
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "predictions.json").write_text("{cut off")  # half-written by another process
    doc = {"format": "a3d-predict-batch", "version": 1, "scans": [
        {"input": "/in/a.nii.gz", "output": "a", "status": "ok", "detections": 5, "candidates": 2},
        {"input": "/in/b", "output": "b", "status": "ok", "detections": 0, "candidates": 0},
        {"input": "/in/c.nii.gz", "output": "c", "status": "pending"},
        {"input": "/in/d.nii.gz", "output": "d", "status": "skipped"},
        {"input": "/in/e_mr", "output": None, "status": "error", "error": "e_mr: Modality is MR"},
    ]}
    rows = _rows(batch_index_html(doc, tmp_path))
    assert [r["status"] for r in rows] == ["ok", "ok", "pending", "skipped", "error"]
    a, b, c, d, e = rows
    assert a["cells"][:5] == ["a", "ok", "2", "5", "0.910"]
    assert a["links"][0] == "a/report.html" and a["images"] == ["a/overlays/slice_0001.png"]
    assert b["cells"][2:5] == ["0", "0", "\u2013"] and not b["images"]
    assert c["cells"][:5] == ["c", "pending", "\u2013", "\u2013", "\u2013"] and not c["links"]
    assert d["cells"][1] == "skipped" and d["cells"][4] == "\u2013"
    assert e["cells"][:2] == ["e_mr", "error: e_mr: Modality is MR"] and not e["links"]


def test_batch_run_writes_the_index(tmp_path, standin):
    batch = tmp_path / "scans"
    batch.mkdir()
    synthetic_nifti(batch / "a.nii.gz")
    synthetic_nifti(batch / "b.nii.gz", lesions=[])
    out, ckpt = tmp_path / "out", tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"stand-in weights")  # the batch records the checkpoint's hash
    assert main(["predict", str(batch), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    rows = _rows((out / "index.html").read_text())
    docs = {n: json.loads((out / n / "predictions.json").read_text()) for n in ("a", "b")}
    assert [r["cells"][0] for r in rows] == ["a", "b"]
    for r, n in zip(rows, ("a", "b")):
        cands = docs[n]["candidates"]
        assert r["cells"][2] == str(len(cands))
        assert r["cells"][4] == (f"{cands[0]['max_score']:.3f}" if cands else "\u2013")
        for rel in r["links"] + r["images"]:
            assert (out / rel).is_file(), rel
    assert len(rows[0]["images"]) == 1 and not rows[1]["images"]
