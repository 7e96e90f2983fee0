"""``a3d data synth / masks / cache`` through a3d.cli.main: exit 0 on success, 2 with one line on bad input."""

from __future__ import annotations

import shutil

import numpy as np

from a3d.cli import main
from a3d.data import read_dl_info


def test_synth_masks_cache(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["data", "synth", str(out), "--patients", "3", "--seed", "1", "--size", "96"]) == 0
    recs = read_dl_info(out / "DL_info.csv")
    assert recs and {r.image_size for r in recs} == {(96, 96)}
    assert main(["data", "masks", str(out), "--workers", "2", "--no-progress"]) == 0
    n_images = len({r.image_id for r in recs})
    assert len(list((out / "masks").glob("*.npz"))) == n_images
    assert main(["data", "masks", str(out), "--no-progress"]) == 0
    assert f"0 key slices written, {n_images} already present" in capsys.readouterr().out
    assert main(["data", "cache", str(out), "--workers", "2", "--no-progress"]) == 0
    n_series = len({r.series_dir for r in recs})
    assert len(list((out / "cache").glob("*.npy"))) == n_series
    assert len(list((out / "cache").glob("*.json"))) == n_series
    assert main(["data", "cache", str(out), "--no-progress"]) == 0
    assert "0 series written" in capsys.readouterr().out
    # fixed window variant into another folder
    assert main(["data", "masks", str(out), "--window", "-200", "300", "--out", "masks_fixed", "--no-progress"]) == 0
    assert len(list((out / "masks_fixed").glob("*.npz"))) == n_images


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error" in err, err
    for n in needles:
        assert n in err, err


def test_bad_inputs_exit_2(tmp_path, synth_root, capsys):
    assert main(["data", "synth", str(tmp_path / "x"), "--patients", "0"]) == 2
    _one_line_error(capsys, "--patients")
    assert main(["data", "masks", str(tmp_path / "nothing")]) == 2
    _one_line_error(capsys, "DL_info.csv")
    assert main(["data", "cache", str(tmp_path / "nothing")]) == 2
    _one_line_error(capsys, "Images_png")
    assert main(["data", "masks", str(synth_root), "--window", "300", "-200"]) == 2
    _one_line_error(capsys, "--window")

    # a CSV with a missing column
    root = tmp_path / "bad"
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns("masks_true"))
    text = (root / "DL_info.csv").read_text().splitlines()
    cols = text[0].split(",")
    i = cols.index("Patient_gender")
    import csv
    import io

    rows = list(csv.reader(io.StringIO("\n".join(text))))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([r[:i] + r[i + 1:] for r in rows])
    (root / "DL_info.csv").write_text(buf.getvalue())
    assert main(["data", "masks", str(root), "--no-progress"]) == 2
    _one_line_error(capsys, "DL_info.csv", "Patient_gender")


def test_corrupt_png_in_cache_and_masks(synth_copy, capsys):
    recs = read_dl_info(synth_copy / "DL_info.csv")
    r = recs[0]
    key = synth_copy / "Images_png" / r.series_dir / f"{r.key_slice:03d}.png"
    key.write_bytes(key.read_bytes()[:100])
    assert main(["data", "cache", str(synth_copy), "--no-progress"]) == 2
    _one_line_error(capsys, str(key), "truncated")
    assert not list((synth_copy / "cache").glob(f"{r.series_dir}*"))
    assert main(["data", "masks", str(synth_copy), "--no-progress"]) == 2
    _one_line_error(capsys, str(key))
    leftovers = [p for p in (synth_copy / "masks").rglob("*") if p.name.startswith(".")] if (
        synth_copy / "masks").exists() else []
    assert leftovers == []
    # an 8-bit PNG where 16-bit is expected
    key.unlink()
    import cv2

    cv2.imwrite(str(key), np.zeros((128, 128), np.uint8))
    assert main(["data", "cache", str(synth_copy), "--no-progress"]) == 2
    _one_line_error(capsys, str(key), "16-bit")
