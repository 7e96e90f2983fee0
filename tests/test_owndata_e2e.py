"""Your own labelled CT, end to end through the command line: synthetic NIfTI volumes with lesion
labels -> a3d data import -> fine-tune a checkpoint -> a3d predict on the held-out volumes -> a3d eval3d."""

from __future__ import annotations

import csv
import json

import SimpleITK as sitk

from a3d.cli import main
from a3d.data import read_dl_info
from fixtures_train import small_overrides


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_synth_nifti_import_finetune_predict_eval3d(tmp_path, tiny_checkpoint, capsys):
    """Every step runs from the CLI and hands the next one what it needs: the vessels (label 2) are
    left out, the test split's volumes are predicted, their candidates carry the annotations'
    seriesuids, eval3d counts exactly the imported test lesions and scans, and the annotation centres
    are world points inside their volumes. Fails if import and predict disagree on the seriesuid, if
    volumes/test is not the test split, or if --labels is ignored. (The world frame of the candidates
    is checked against planted lesions in test_predict_luna16.py.)"""
    src, root, run, pred, ev = (tmp_path / n for n in ("nifti", "dl", "run", "pred", "eval3d"))
    assert main(["data", "synth-nifti", str(src), "--cases", "6", "--size", "64", "--seed", "1"]) == 0
    assert main(["data", "import", str(src), "--out", str(root), "--labels", "1"]) == 0
    # label 2 (vessels) is left out: the rows are the lesion components only
    n_lesion_components = 0
    for f in sorted((src / "labelsTr").iterdir()):
        lab = sitk.ReadImage(str(f))
        cc = sitk.ConnectedComponent(sitk.Cast(lab == 1, sitk.sitkUInt8), True)
        n_lesion_components += int(sitk.GetArrayFromImage(cc).max())
    assert len(read_dl_info(root / "DL_info.csv")) == n_lesion_components
    assert main(["train", "tiny", *small_overrides(root), f"model.pretrained={tiny_checkpoint}", "train.max_iters=2",
                 "train.lr=0.002", "--out", str(run), "--no-progress"]) == 0
    assert main(["predict", str(root / "volumes" / "test"), "--checkpoint", str(run / "last.pt"), "--out", str(pred),
                 "--device", "cpu", "--no-html", "--no-overlays", "--score-threshold", "0.05"]) == 0
    luna = root / "luna16"
    assert main(["eval3d", str(luna / "annotations_test.csv"), str(pred / "candidates_luna16.csv"),
                 "--scans", str(luna / "seriesuids_test.csv"), "--excluded", str(luna / "annotations_excluded_test.csv"),
                 "--out", str(ev), "--bootstrap", "20"]) == 0
    test_uids = [r["seriesuid"] for r in _rows(luna / "seriesuids_test.csv")]
    annotations = _rows(luna / "annotations_test.csv")
    cands = _rows(pred / "candidates_luna16.csv")
    assert test_uids and {r["seriesuid"] for r in annotations} <= set(test_uids)
    assert cands and {r["seriesuid"] for r in cands} <= set(test_uids)
    m = json.loads((ev / "metrics.json").read_text())
    assert m["n_scans"] == len(test_uids) and m["n_nodules"] == len(annotations) > 0
    assert m["n_candidates"] == len(cands) and len(m["sensitivity"]) == 7
    # the frame: every annotation centre lies inside its scan's volume (world LPS of the NIfTI)
    for a in annotations:
        img = sitk.ReadImage(str(src / "imagesTr" / f"{a['seriesuid']}.nii.gz"))
        idx = img.TransformPhysicalPointToContinuousIndex([float(a[k]) for k in ("coordX", "coordY", "coordZ")])
        assert all(-0.5 <= i <= s - 0.5 for i, s in zip(idx, img.GetSize()))
