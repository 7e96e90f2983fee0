"""`a3d predict`: geometry chain (stand-in blob detector), outputs, CLI, bad inputs, real model on real CT."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from a3d import predict as P
from a3d.cli import main
from a3d.config import Config, DataConfig, ModelConfig
from a3d.data import scans as S
from a3d.predict import loading
from test_predict_support import BlobDetector, phantom, plant_ellipsoids, make_image, shared_ct, synthetic_nifti, write_dicom_series


def model_cfg(slices: int, size: int, **data) -> Config:
    """The parts of a training config prediction reads: context slices, input size, context spacing."""
    return Config(name="blob-standin", model=ModelConfig(slices=slices), data=DataConfig(size=size, **data))


CFG = model_cfg(3, 128)


@pytest.fixture()
def standin(monkeypatch):
    """The CLI's model loader returns the deterministic blob detector (checkpoint ignored)."""
    model = BlobDetector()

    def fake(checkpoint, device="cpu"):
        return model, CFG

    monkeypatch.setattr(loading, "load_predictor", fake)
    return model


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A random-init detector from the tiny preset at 64 px (fast on CPU), saved like `a3d train` does."""
    from a3d.config import config_to_dict, load_config, override_config
    from a3d.engine.checkpoint import model_state, save_checkpoint
    from a3d.models.detector import build_detector

    cfg = override_config(load_config("tiny"), ["data.size=64"])
    torch.manual_seed(0)
    model = build_detector(cfg.model, pretrained=False)
    path = tmp_path_factory.mktemp("ckpt") / "tiny64.pt"
    save_checkpoint(path, {"model": model_state(model), "config": config_to_dict(cfg), "epoch": 0, "iteration": 0})
    return path


# ------------------------------------------------------------------------------------ geometry chain


def test_nifti_lesions_found_on_right_slice_and_labels_land_on_planted_voxels(tmp_path):
    path, lesions, planted, img = synthetic_nifti(tmp_path / "s.nii.gz")
    scan = S.read_scan(path)
    res = P.predict_scan(scan, BlobDetector(), CFG, P.PredictSettings(batch_size=5))
    assert len(res.candidates) == 2
    doc = P.write_outputs(res, tmp_path / "out", P.OutputOptions(nifti_labels=True))
    for (centre, radii), cand in zip(lesions, sorted(doc["candidates"], key=lambda c: -c["volume_mm3"])):
        np.testing.assert_allclose(cand["centroid_lps"], centre, atol=1.0)
        # key slice: the planted centre's slice in the file's own grid (RAS storage, k = z)
        k = img.TransformPhysicalPointToIndex(centre)[2]
        assert abs(cand["key_slice"] - k) <= 1
        # size: long axis ~ 2 * largest in-plane radius (pixel squares: within ~2 pixels)
        assert abs(cand["long_axis_mm"] - 2 * max(radii[:2])) <= 3.0
        assert abs(cand["short_axis_mm"] - 2 * min(radii[:2])) <= 3.0
        vol = 4 / 3 * np.pi * np.prod(radii)
        assert 0.7 * vol < cand["volume_mm3"] < 1.3 * vol
    # detection boxes, mapped to the file's voxel grid, contain the planted voxels of that slice
    for d in doc["detections"]:
        lo, hi = np.array(d["box_original_index_min"]), np.array(d["box_original_index_max"])
        k = d["slice"]
        jj, ii = np.nonzero(planted[k] > 0)
        near = (ii >= lo[0] - 0.5) & (ii <= hi[0] + 0.5) & (jj >= lo[1] - 0.5) & (jj <= hi[1] + 0.5)
        assert near.sum() > 0
    # label volume: same geometry as the input, candidate voxels == planted voxels (physical space)
    lab = sitk.ReadImage(str(tmp_path / "out" / "labels.nii.gz"))
    assert lab.GetSize() == img.GetSize()
    np.testing.assert_allclose(lab.GetOrigin(), img.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(lab.GetSpacing(), img.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(lab.GetDirection(), img.GetDirection(), atol=1e-6)
    la = sitk.GetArrayFromImage(lab)
    dice = 2 * ((la > 0) & (planted > 0)).sum() / ((la > 0).sum() + (planted > 0).sum())
    assert dice > 0.97
    for idx in np.argwhere(la > 0)[::50]:
        p = lab.TransformIndexToPhysicalPoint(tuple(int(v) for v in idx[::-1]))
        assert any((((np.array(p) - c) / r) ** 2).sum() <= 1.3 for c, r in lesions)


def test_dicom_oblique_free_anisotropic_pixels(tmp_path):
    """DICOM series with non-square pixels and rescale slope: the planted lesion is found at its
    physical position; the model saw the context at 2 mm with the scan's thickness."""
    spacing, origin = (0.6, 0.9, 1.25), (-50.0, -40.0, 200.0)
    img = make_image(phantom((20, 72, 120)), spacing, origin, (1, 0, 0, 0, 1, 0, 0, 0, 1))
    centre = (-20.0, -10.0, 212.5)
    img, planted = plant_ellipsoids(img, [(centre, (7.0, 5.0, 4.0))])
    write_dicom_series(tmp_path / "dcm", sitk.GetArrayFromImage(img), spacing=spacing, origin=origin, slope=2.0, intercept=-2048)
    scan = S.read_scan(tmp_path / "dcm")
    model = BlobDetector()
    res = P.predict_scan(scan, model, CFG, P.PredictSettings(batch_size=8))
    assert model.calls[0][0] == (8, 1, 3, 128, 128) and model.calls[0][1] == [1.25] * 8
    assert len(res.candidates) == 1
    info = res.candidates[0].info
    np.testing.assert_allclose(info["centroid_lps"], centre, atol=0.8)
    assert info["key_slice"] == 10
    assert abs(info["long_axis_mm"] - 14) < 2 and abs(info["short_axis_mm"] - 10) < 2
    rec = P.detection_record(next(d for d in res.detections if d.slice == 10), scan)
    assert abs(rec["width_mm"] - 14) < 2 and abs(rec["height_mm"] - 10) < 2


def test_context_matches_dataset_rule():
    """The key slice's context: neighbours 2 mm apart, blended in HU like the dataset, normalised."""
    from a3d.data.slices import hu_to_input

    hu = np.stack([np.full((16, 16), v, np.float32) for v in np.arange(10) * 100.0 - 500])
    img = make_image(hu, (1, 1, 5.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    scan = S.Scan(hu=hu, image=img, original=img, source="x", kind="nifti", name="x")
    b = P.ContextBuilder(scan, model_cfg(7, 16))
    x = b.build(4)  # positions 4 + j * 0.4
    want = hu_to_input(np.array([-500 + 100 * (4 + j * 0.4) for j in range(-3, 4)], np.float32))
    np.testing.assert_allclose(x[:, 8, 8], want, atol=1e-4)
    x0 = b.build(0)  # clamped at the first slice
    np.testing.assert_allclose(x0[:3, 8, 8], hu_to_input(np.array([-500] * 3, np.float32)), atol=1e-4)


def test_inplane_fit_roundtrip():
    fit = P.InplaneFit.create(height=80, width=100, sx=0.8, sy=1.0, size=128)
    # field of view 80 x 80 mm -> square pixels of 80/128 mm
    assert fit.pixel_mm == pytest.approx(80 / 128)
    box = np.array([[10.0, 20.0, 30.0, 40.0]])
    model_box = box.copy()
    model_box[:, [0, 2]] = box[:, [0, 2]] * fit.fx + fit.ox
    model_box[:, [1, 3]] = box[:, [1, 3]] * fit.fy + fit.oy
    np.testing.assert_allclose(fit.boxes_back(model_box), box, atol=1e-9)


def test_diameters_of_ellipse_mask():
    yy, xx = np.mgrid[0:200, 0:200]
    sx, sy = 0.5, 0.8
    a, b, t = 30.0, 12.0, np.deg2rad(30)  # mm semi-axes, rotated
    px, py = (xx + 0.5) * sx - 50, (yy + 0.5) * sy - 80
    u = px * np.cos(t) + py * np.sin(t)
    v = -px * np.sin(t) + py * np.cos(t)
    mask = (u / a) ** 2 + (v / b) ** 2 <= 1
    m = P.diameters(mask, sx, sy)
    assert abs(m["long_mm"] - 2 * a) < 1.5 and abs(m["short_mm"] - 2 * b) < 1.5
    assert abs(m["area_mm2"] - np.pi * a * b) < 0.03 * np.pi * a * b


def test_grouping_links_overlapping_adjacent_slices():
    hu = np.zeros((6, 50, 50), np.float32)
    img = make_image(hu, (1, 1, 2.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    scan = S.Scan(hu=hu, image=img, original=img, source="x", kind="nifti", name="x")

    def det(z, box):
        b = np.array(box, float)
        mask = np.ones((int(b[3] - b[1]), int(b[2] - b[0])), bool)
        return P.Detection(0, z, z, 0.9, b, mask, (int(b[0]), int(b[1])), P.diameters(np.pad(mask, 1), 1, 1))

    dets = [det(1, [10, 10, 20, 20]), det(2, [11, 11, 21, 21]), det(3, [13, 13, 17, 17]),  # one lesion, tip smaller
            det(2, [30, 30, 40, 40]),  # separate
            det(5, [10, 10, 20, 20])]  # gap at slice 4: separate
    for i, d in enumerate(dets, 1):
        d.id = i
    cands = P.group_candidates(dets, set(range(6)), 0.3, scan)
    sizes = sorted(len(c.detections) for c in cands)
    assert sizes == [1, 1, 3]
    big = next(c for c in cands if len(c.detections) == 3)
    assert big.info["n_slices"] == 3 and big.info["z_extent_mm"] == 6.0
    assert big.info["volume_mm3"] == pytest.approx((100 + 100 + 16) * 2.0)


# ------------------------------------------------------------------------------------ CLI and outputs


def test_cli_nifti_outputs(tmp_path, standin, capsys):
    path, lesions, planted, img = synthetic_nifti(tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    rc = main(["predict", str(path), "--checkpoint", "x.pt", "--out", str(out), "--nifti-labels", "--window", "350,50"])
    assert rc == 0
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert {"predictions.json", "detections.csv", "candidates.csv", "report.html", "labels.nii.gz", "overlays"} <= set(names)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temp folders left
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["format"] == "a3d-predict" and doc["version"] == 2
    assert doc["settings"]["window"] == {"width": 350.0, "level": 50.0}
    assert doc["geometry"]["original"]["orientation"] == "RAS" and doc["geometry"]["canonical"]["orientation"] == "LPS"
    assert len(doc["candidates"]) == 2 and doc["processed_slices"]["count"] == 24
    for c in doc["candidates"]:
        assert (out / c["overlay"]).is_file()
    rows = list(csv.DictReader(open(out / "detections.csv")))
    assert list(rows[0]) == P.DETECTION_COLUMNS and len(rows) == len(doc["detections"])
    crow = list(csv.DictReader(open(out / "candidates.csv")))
    assert list(crow[0]) == P.CANDIDATE_COLUMNS and len(crow) == 2
    # second run into the same folder: refused without --overwrite, nothing touched
    before = (out / "predictions.json").read_bytes()
    assert main(["predict", str(path), "--checkpoint", "x.pt", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "predictions.json").read_bytes() == before
    # --slice: only that key slice
    rc = main(["predict", str(path), "--checkpoint", "x.pt", "--out", str(out), "--overwrite", "--slice", "12", "--no-html", "--no-overlays"])
    doc = json.loads((out / "predictions.json").read_text())
    assert rc == 0 and doc["processed_slices"] == {"count": 1, "first": 12, "last": 12}
    assert {d["slice"] for d in doc["detections"]} == {12} and not (out / "report.html").exists()
    rc = main(["predict", str(path), "--checkpoint", "x.pt", "--out", str(out), "--overwrite", "--slices", "14:18", "--no-html"])
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["processed_slices"] == {"count": 4, "first": 14, "last": 17}


def test_cli_batch_folder(tmp_path, standin, capsys):
    batch = tmp_path / "scans"
    batch.mkdir()
    synthetic_nifti(batch / "a.nii.gz")
    write_dicom_series(batch / "b_dicom", phantom((6, 40, 40)))
    write_dicom_series(batch / "c_mr", phantom((6, 40, 40)), modality="MR")
    out = tmp_path / "out"
    ckpt = tmp_path / "x.pt"  # the stand-in ignores it; a batch records its content's hash
    ckpt.write_bytes(b"stand-in weights")
    rc = main(["predict", str(batch), "--checkpoint", str(ckpt), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "1 of 3 scans failed" in err and "Modality is MR" in err
    summary = json.loads((out / "batch.json").read_text())
    assert [s["status"] for s in summary["scans"]] == ["done", "done", "failed"]
    assert (out / "a" / "predictions.json").is_file() and (out / "b_dicom" / "predictions.json").is_file()
    assert not (out / "c_mr").exists()


def _assert_clean_failure(argv, out: Path, capsys, match: str):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("a3d predict: error:"), err
    assert match in err, err
    assert not out.exists() or not any(out.iterdir())
    assert not [n for n in os.listdir(out.parent) if n.startswith(f".{out.name}.")]


def test_cli_bad_inputs(tmp_path, standin, capsys):
    out = tmp_path / "out"
    write_dicom_series(tmp_path / "mr", phantom((4, 16, 16)), modality="MR")
    _assert_clean_failure(["predict", str(tmp_path / "mr"), "--checkpoint", "c.pt", "--out", str(out)], out, capsys, "Modality is MR")
    one = tmp_path / "one.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 16), np.int16)), str(one))
    _assert_clean_failure(["predict", str(one), "--checkpoint", "c.pt", "--out", str(out)], out, capsys, "2D")
    png = tmp_path / "000001_01_01"
    from a3d.data.slices import write_png_hu

    for k in range(3):
        write_png_hu(png / f"{k:03d}.png", np.zeros((16, 16)))
    _assert_clean_failure(["predict", str(png), "--checkpoint", "c.pt", "--out", str(out)], out, capsys, "--spacing")
    path, *_ = synthetic_nifti(tmp_path / "ok.nii.gz")
    (tmp_path / "cut.nii.gz").write_bytes(path.read_bytes()[:2000])
    _assert_clean_failure(["predict", str(tmp_path / "cut.nii.gz"), "--checkpoint", "c.pt", "--out", str(out)], out, capsys, "cut.nii.gz")
    _assert_clean_failure(["predict", str(tmp_path / "missing"), "--checkpoint", "c.pt", "--out", str(out)], out, capsys, "does not exist")
    _assert_clean_failure(["predict", str(path), "--checkpoint", "c.pt", "--out", str(out), "--slices", "30:40"], out, capsys, "out of range")
    _assert_clean_failure(["predict", str(path), "--checkpoint", "c.pt", "--out", str(out), "--slices", "x"], out, capsys, "--slices")
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_clean_failure(["predict", str(empty), "--checkpoint", "c.pt", "--out", str(out)], out, capsys, "no DICOM series")


def test_cli_bad_checkpoints(tmp_path, tiny_checkpoint, capsys):
    path, *_ = synthetic_nifti(tmp_path / "s.nii.gz")
    out = tmp_path / "out"
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    _assert_clean_failure(["predict", str(path), "--checkpoint", str(garbage), "--out", str(out)], out, capsys, "garbage.pt")
    ck = torch.load(tiny_checkpoint, weights_only=True)
    future = dict(ck, format=99)
    torch.save(future, tmp_path / "future.pt")
    _assert_clean_failure(["predict", str(path), "--checkpoint", str(tmp_path / "future.pt"), "--out", str(out)], out, capsys, "format")
    other = dict(ck, config={**ck["config"], "model": {**ck["config"]["model"], "fc_width": 128}})
    torch.save(other, tmp_path / "other.pt")
    _assert_clean_failure(["predict", str(path), "--checkpoint", str(tmp_path / "other.pt"), "--out", str(out)], out, capsys, "other.pt")
    _assert_clean_failure(["predict", str(path), "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(out)], out, capsys, "nope.pt")


# ------------------------------------------------------------------------------------ real model, real CT


def test_real_ct_whole_volume_with_real_model(tmp_path, tiny_checkpoint):
    """Random-init tiny detector (64 px) over every slice of the real 30-slice CT: completes, valid outputs."""
    ct = shared_ct("example_ct_sm.nii.gz")
    out = tmp_path / "out"
    rc = main(["predict", str(ct), "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--batch-size", "8",
               "--score-threshold", "0.05", "--nifti-labels"])
    assert rc == 0
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["processed_slices"] == {"count": 30, "first": 0, "last": 29}
    assert doc["model"]["slices"] == 3 and doc["model"]["image_size"] == 64
    assert doc["geometry"]["original"]["size"] == [122, 101, 30]
    for d in doc["detections"]:
        x1, y1, x2, y2 = d["box_px"]
        assert 0 <= x1 < x2 <= 122 and 0 <= y1 < y2 <= 101 and 0 <= d["slice"] < 30
        assert 0.05 <= d["score"] <= 1
    lab = sitk.ReadImage(str(out / "labels.nii.gz"))
    ref = sitk.ReadImage(str(ct))
    assert lab.GetSize() == ref.GetSize() and np.allclose(lab.GetOrigin(), ref.GetOrigin())
    assert np.allclose(lab.GetDirection(), ref.GetDirection())
    labels = set(np.unique(sitk.GetArrayViewFromImage(lab)).tolist())
    # overlapping candidates: the higher-scoring (lower id) one is drawn last, so it is there whole
    assert labels <= set(range(len(doc["candidates"]) + 1))
    if doc["candidates"]:
        px = sum(d["mask_pixels"] for d in doc["detections"] if d["candidate"] == 1)
        assert (px > 0) == (1 in labels)


def test_cli_bad_device(tmp_path, standin, capsys):
    path, *_ = synthetic_nifti(tmp_path / "s.nii.gz")
    out = tmp_path / "out"
    _assert_clean_failure(["predict", str(path), "--checkpoint", "c.pt", "--out", str(out), "--device", "tpu7"], out, capsys, "--device")
    if not torch.cuda.is_available():
        _assert_clean_failure(["predict", str(path), "--checkpoint", "c.pt", "--out", str(out), "--device", "cuda"], out, capsys, "CUDA is not available")


def test_cli_list_series(tmp_path, capsys):
    d = tmp_path / "dcm"
    write_dicom_series(d, phantom((5, 16, 16)), series_uid="1.2.3.4.5")
    write_dicom_series(d, phantom((3, 16, 16)), series_uid="1.2.3.4.6")
    assert main(["predict", str(d), "--list-series"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split("\t")[:2] for ln in lines] == [["1.2.3.4.5", "5 files"], ["1.2.3.4.6", "3 files"]]
    assert main(["predict", str(d)]) == 2
    assert "--checkpoint CKPT and --out DIR are required" in capsys.readouterr().err


DOC_KEYS = {"format", "version", "a3d_version", "created", "input", "geometry", "model", "settings", "processed_slices",
            "skipped_air_slices", "seconds", "timing", "warnings", "files", "detections", "candidates"}
DET_KEYS = {"id", "candidate", "slice", "canonical_slice", "slice_file", "score", "box_px", "box_mm", "width_mm", "height_mm",
            "box_lps", "center_lps", "center_original_index", "box_original_index_min", "box_original_index_max",
            "long_axis_mm", "short_axis_mm", "long_axis_px", "short_axis_px", "mask_area_mm2", "mask_pixels", "mask_outline_px"}
CAND_KEYS = {"id", "key_detection", "key_slice", "key_canonical_slice", "max_score", "mean_score", "n_detections", "n_slices",
             "slices", "canonical_slices", "z_extent_mm", "volume_mm3", "volume_ml", "long_axis_mm", "short_axis_mm",
             "measured_on_slice", "centroid_lps", "centroid_canonical_index", "bbox_lps_min", "bbox_lps_max", "detections", "overlay"}


def test_json_schema_matches_docs(tmp_path, standin):
    """The keys documented in docs/predict.md are the keys written (DeepLesion PNG input, --dl-info)."""
    from a3d.data.slices import write_png_hu

    series = tmp_path / "000002_01_01"
    vol = phantom((6, 64, 64))
    vol[2:5, 20:30, 30:42] = 300
    for k in range(6):
        write_png_hu(series / f"{100 + k:03d}.png", vol[k])
    out = tmp_path / "out"
    assert main(["predict", str(series), "--checkpoint", "x.pt", "--out", str(out), "--spacing", "0.8,0.8,2"]) == 0
    doc = json.loads((out / "predictions.json").read_text())
    assert set(doc) == DOC_KEYS and doc["input"]["kind"] == "deeplesion-png"
    assert doc["detections"] and all(set(d) == DET_KEYS for d in doc["detections"])
    assert len(doc["candidates"]) == 1 and set(doc["candidates"][0]) == CAND_KEYS
    c = doc["candidates"][0]
    assert c["slices"] == [2, 3, 4] and c["z_extent_mm"] == pytest.approx(6.0)
    assert {d["slice_file"] for d in doc["detections"]} == {"102.png", "103.png", "104.png"}
    assert c["long_axis_mm"] == pytest.approx(np.hypot(12, 10) * 0.8, abs=1.0)
    outline = np.array(doc["detections"][0]["mask_outline_px"])
    assert outline[:, 0].min() == 30 and outline[:, 0].max() == 41 and outline[:, 1].min() == 20 and outline[:, 1].max() == 29
    docs = (Path(__file__).resolve().parents[1] / "docs" / "predict.md").read_text()
    for key in DOC_KEYS | DET_KEYS | CAND_KEYS:
        assert f'"{key}"' in docs, key


def test_same_input_and_detections_as_the_dataset_path(synth_root):
    """On a DeepLesion-format series, predict's model input (PNG reading, 2 mm neighbours, HU mapping,
    in-plane fit) equals the training dataset's, and a detector gives the same detections through
    `a3d predict`'s engine as through the detector engine's predict_dataset."""
    from a3d.config import load_config
    from a3d.data import DeepLesionDataset
    from a3d.engine.evaluate import predict_dataset
    from a3d.models.detector import build_detector

    ds = DeepLesionDataset(synth_root, "all", slices=3, masks=False)
    checked = 0
    for i, group in enumerate(ds.records):
        rec = group[0]
        series = synth_root / "Images_png" / rec.series_dir
        files = sorted(p.name for p in series.glob("*.png"))
        z = files.index(f"{rec.key_slice:03d}.png")
        if not 2 <= z <= len(files) - 3:
            continue  # away from the ends (the dataset clamps to Slice_range, predict to the files)
        scan = S.read_scan(series, dl_info=synth_root / "DL_info.csv")
        assert scan.spacing[2] == pytest.approx(float(rec.spacing[2]))
        image, target = ds[i]
        mine = P.ContextBuilder(scan, model_cfg(3, image.shape[-1])).build(z)
        np.testing.assert_allclose(mine, image[0].numpy(), atol=1e-4)
        checked += 1
        if checked == 1:
            cfg = load_config("tiny")
            torch.manual_seed(1)
            model = build_detector(cfg.model, pretrained=False).eval()
            ref = predict_dataset(model, torch.utils.data.Subset(ds, [i]), batch_size=1)[0]
            res = P.predict_scan(scan, model, cfg, P.PredictSettings(score_threshold=0.0, slices=(z, z + 1), precision="fp32"))
            # predict keeps the model's detections that survive its suppression of near-duplicates per slice
            # and of fragments (tracks centred in a better one's mask; docs/predict.md): the same boxes and
            # scores as the engine's once suppress_duplicates is applied, less those fragments
            raw = [P.Detection(0, z, z, float(s), np.asarray(b, np.float64), None) for s, b in zip(ref.scores, ref.boxes)]
            want = np.array(sorted(((d.score, *d.box) for d in P.suppress_duplicates(raw)), reverse=True))
            got = np.array(sorted(((d.score, *d.box) for d in res.detections), reverse=True))
            assert len(want) < len(raw) and 0 < len(got) <= len(want)  # random init: many overlapping boxes
            for g in got:
                match = (np.abs(want[:, 0] - g[0]) < 1e-5) & (np.abs(want[:, 1:] - g[1:]).max(axis=1) < 1e-3)
                assert match.any(), g
        if checked == 3:
            break
    assert checked == 3


def test_coronal_stored_volume(tmp_path):
    """A volume stored with coronal slices (file axes: x, inferior, posterior): predict re-orients it to
    axial LPS, finds the planted lesion at its physical place, and the labels land back on its voxels."""
    direction = (1, 0, 0, 0, 0, 1, 0, -1, 0)  # columns: i -> +x (L), j -> -z (I), k -> +y (P)
    vol = np.transpose(phantom((40, 24, 64)), (1, 0, 2)).copy()  # stored (k, j, i) = (P, I, L) extents
    img = make_image(vol, (1.2, 2.0, 1.5), (-30.0, -20.0, 60.0), direction)
    centre = (8.0, 10.0, 20.0)
    img, planted = plant_ellipsoids(img, [(centre, (6.0, 5.0, 5.0))])
    sitk.WriteImage(sitk.Cast(img, sitk.sitkInt16), str(tmp_path / "cor.nii.gz"))
    scan = S.read_scan(tmp_path / "cor.nii.gz")
    assert scan.original_orientation != "LPS" and scan.shape[0] == 40  # 40 axial slices (file axis j)
    assert scan.original_slice_axis() == 1
    res = P.predict_scan(scan, BlobDetector(), CFG, P.PredictSettings(batch_size=8))
    assert len(res.candidates) == 1
    np.testing.assert_allclose(res.candidates[0].info["centroid_lps"], centre, atol=1.0)
    # "slice" is the index along the file's axis that runs inferior-superior (j here, reversed)
    assert res.candidates[0].info["key_slice"] == img.TransformPhysicalPointToIndex(centre)[1]
    P.write_outputs(res, tmp_path / "out", P.OutputOptions(overlays=False, html=False, nifti_labels=True))
    lab = sitk.ReadImage(str(tmp_path / "out" / "labels.nii.gz"))
    np.testing.assert_allclose(lab.GetDirection(), direction, atol=1e-6)
    la = sitk.GetArrayFromImage(lab)
    dice = 2 * ((la > 0) & (planted > 0)).sum() / ((la > 0).sum() + (planted > 0).sum())
    assert dice > 0.93  # non-square in-plane pixels: the stand-in thresholds a resampled slice
