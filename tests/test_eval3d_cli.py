"""``a3d eval3d`` end to end through ``a3d.cli.main``: files written, numbers, and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from a3d.cli import main

ANN_HEADER = "seriesuid,coordX,coordY,coordZ,diameter_mm"
CAND_HEADER = "seriesuid,coordX,coordY,coordZ,probability"
OUTPUTS = ("metrics.json", "froc.csv", "nodules.csv", "froc.png", "froc.svg")


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def case(tmp_path):
    """Scan 0001: a 10 mm nodule hit at 0.5 and an FP at 0.9; scan 0002: a nodule hit at 0.7 (two
    hits) and a candidate on an excluded finding (-1 = 10 mm); scans 0003 and 0004: nothing."""
    ann = write(tmp_path / "annotations.csv", ANN_HEADER, "0001,-10.5,20,-300.25,10", "0002,0,0,0,6")
    exc = write(tmp_path / "excluded.csv", ANN_HEADER, "0002,40,0,0,-1")
    cand = write(tmp_path / "candidates.csv", CAND_HEADER,
                 "0001,-10.5,21,-300.25,0.5", "0001,60,0,0,0.9",
                 "0002,1,0,0,0.7", "0002,0,1,0,0.6", "0002,44,0,0,0.95")
    scans = write(tmp_path / "scans.txt", "0001", "0002", "0003", "0004")
    return tmp_path, ann, exc, cand, scans


def test_eval3d_end_to_end(case, capsys):
    """Over 4 scans: entries FP 0.9 (0001), nodule 0.7, nodule 0.5; curve (0,0) (1/4,0) (1/4,1/2)
    (1/4,1): sensitivity 0 at 1/8, 1 from 1/4 on, CPM 6/7. Fails if the scans without candidates
    are left out of FPs per scan (CPM 4/7), if the excluded candidate counts as an FP, or if
    series IDs lose their leading zeros (the nodules.csv ids)."""
    tmp, ann, exc, cand, scans = case
    out = tmp / "out"
    code = main(["eval3d", str(ann), str(cand), "--excluded", str(exc), "--scans", str(scans), "--out", str(out),
                 "--bootstrap", "50", "--seed", "3"])
    assert code == 0
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    m = json.loads((out / "metrics.json").read_text())
    assert m["fps"] == [0.125, 0.25, 0.5, 1, 2, 4, 8]
    assert m["sensitivity"] == pytest.approx([0, 1, 1, 1, 1, 1, 1])
    assert m["cpm"] == pytest.approx(6 / 7)
    assert (m["n_scans"], m["n_nodules"], m["n_candidates"], m["n_detected"]) == (4, 2, 5, 2)
    assert (m["n_false_positives"], m["n_ignored_excluded"], m["n_double_hits"]) == (1, 1, 1)
    assert m["ci"]["n_bootstrap"] == 50 and m["ci"]["seed"] == 3 and len(m["ci"]["sensitivity"]) == 7
    lo, hi = m["ci"]["cpm"]
    assert 0 <= lo <= hi <= 1
    with open(out / "froc.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(float(r["fps_per_scan"]), float(r["sensitivity"])) for r in rows] == [(0, 0), (0.25, 0), (0.25, 0.5), (0.25, 1)]
    assert rows[0]["threshold"] == "inf" and [r["threshold"] for r in rows[1:]] == ["0.9", "0.7", "0.5"]
    with open(out / "nodules.csv", newline="") as f:
        nod = list(csv.DictReader(f))
    assert [(n["seriesuid"], n["detected"], n["probability"], n["annotation_row"]) for n in nod] == [
        ("0001", "1", "0.5", "2"), ("0002", "1", "0.7", "3")]
    assert (out / "froc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (out / "froc.svg").read_text()[:1000]
    printed = capsys.readouterr().out
    assert "CPM 85.71" in printed and "4 scans, 2 nodules" in printed


def test_default_scans_are_those_of_annotations_and_candidates(case, capsys):
    """Without --scans the scans named in either file are evaluated: 0001 and 0002 (annotations)
    and 0009 (a candidate only), so an FP is 1/3 per scan: sensitivity 0 at 1/8 and 1/4, then 1,
    with a note saying so; 0003 and 0004 are not counted. Fails if the candidates' scans are
    left out (2 scans)."""
    tmp, ann, exc, cand, _ = case
    extra = write(tmp / "cand2.csv", CAND_HEADER, *(Path(cand).read_text().splitlines()[1:]), "0009,0,0,0,0.01")
    assert main(["eval3d", str(ann), str(extra), "--excluded", str(exc), "--out", str(tmp / "o"), "--bootstrap", "0"]) == 0
    m = json.loads((tmp / "o" / "metrics.json").read_text())
    assert m["n_scans"] == 3 and m["ci"] is None  # 0001, 0002 and the candidates' 0009
    assert m["sensitivity"] == pytest.approx([0, 0, 1, 1, 1, 1, 1])
    assert "no --scans" in capsys.readouterr().out


def test_candidates_on_unlisted_scans_warn_and_are_left_out(case, capsys):
    """A candidate on scan 0005 (not in --scans) is left out: exit 0, one warning naming 0005 on
    stderr, and the numbers of the full case. Fails if it is counted as an FP or dropped silently."""
    tmp, ann, exc, cand, scans = case
    extra = write(tmp / "cand2.csv", *Path(cand).read_text().splitlines(), "0005,0,0,0,0.99")
    assert main(["eval3d", str(ann), str(extra), "--excluded", str(exc), "--scans", str(scans),
                 "--out", str(tmp / "o"), "--bootstrap", "0"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning" in err[0] and "0005" in err[0]
    m = json.loads((tmp / "o" / "metrics.json").read_text())
    assert m["cpm"] == pytest.approx(6 / 7) and m["n_candidates"] == 5 and m["warnings"]


BAD = [
    # (which file, its text, what the one-line error must name)
    ("cand", "seriesuid,coordX,coordY,probability\n0001,1,2,0.5\n", ["candidates.csv", "row 1", "coordZ"]),
    ("cand", CAND_HEADER + "\n0001,1,2,3,0.5\n0001,1,abc,3,0.5\n", ["candidates.csv", "row 3", "coordY", "'abc'"]),
    ("cand", CAND_HEADER + "\n0001,1,2,3,nan\n", ["candidates.csv", "row 2", "probability", "finite"]),
    ("cand", CAND_HEADER + "\n0001,1,2,3\n", ["candidates.csv", "row 2", "expected 5 fields"]),
    ("cand", CAND_HEADER + "\n,1,2,3,0.5\n", ["candidates.csv", "row 2", "seriesuid", "empty"]),
    ("ann", ANN_HEADER + "\n0001,1,2,3,0\n", ["annotations.csv", "row 2", "diameter_mm", "> 0"]),
    ("ann", "", ["annotations.csv", "empty file"]),
    ("scans", "0001\n0002\n0001\n", ["scans.txt", "row 3", "'0001'", "row 1"]),
]


@pytest.mark.parametrize("which, text, names", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_is_one_line_and_exit_2(case, capsys, which, text, names):
    """Each malformed file: exit 2, exactly one stderr line naming the file, row and column, and no
    output written. Fails if a value is parsed leniently (NaN, a missing field) or the error
    does not name where."""
    tmp, ann, exc, cand, scans = case
    {"cand": cand, "ann": ann, "scans": scans}[which].write_text(text)
    out = tmp / "out"
    code = main(["eval3d", str(ann), str(cand), "--scans", str(scans), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("a3d eval3d: error: "), err
    for n in names:
        assert n in err[0], (n, err[0])
    assert not (out / "metrics.json").exists()


def test_missing_file_and_no_nodule_are_errors(case, capsys):
    """A missing CANDIDATES file, and annotations with no nodule on the evaluated scans
    (sensitivity undefined): one line, exit 2. Fails if the empty case writes NaN metrics."""
    tmp, ann, exc, cand, scans = case
    assert main(["eval3d", str(ann), str(tmp / "nope.csv"), "--out", str(tmp / "o")]) == 2
    assert "nope.csv: file not found" in capsys.readouterr().err
    only_other = write(tmp / "scans2.txt", "0003")
    assert main(["eval3d", str(ann), str(cand), "--scans", str(only_other), "--out", str(tmp / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "no nodule" in err[-1] and err[-1].startswith("a3d eval3d: error: ")
    assert not (tmp / "o" / "metrics.json").exists()
