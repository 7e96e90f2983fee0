"""The data of report.html's viewer (a3d.predict.viewer): the HU codes, the NIfTI header, the label volumes."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest
import SimpleITK as sitk

from a3d import predict as P
from a3d.config import Config
from a3d.data import scans as S
from a3d.predict.viewer import code_hu, decode_slice, hu_to_code, label_volumes, nifti_header, viewer_data
from test_candidates import _det, _scan
from test_predict_support import make_image, shared_ct

# the JPEG slices' error in codes that docs/predict.md states (measured 2026-12-08: 10 / 1.34 as is, 9 / 1.01 at 512 px)
MAX_CODE_ERROR, MEAN_CODE_ERROR = 10, 1.4


@pytest.mark.parametrize("lo, hi, err", [(-1024, -160, 4.0), (-160, 240, 2.0), (240, 1744, 16.0)])
def test_codes_keep_each_windows_precision(lo, hi, err):
    hu = np.linspace(lo, hi, 20001)
    back = code_hu()[hu_to_code(hu)]
    assert np.abs(back - hu).max() <= err + 1e-9
    assert np.all(np.diff(hu_to_code(hu).astype(int)) >= 0)  # monotone


def test_codes_clip_and_span_the_byte():
    assert hu_to_code(np.array([-3000.0, -1024.0, 1744.0, 4000.0])).tolist() == [0, 0, 255, 255]
    assert code_hu()[[0, 108, 208, 255]].tolist() == [-1024.0, -160.0, 240.0, 1744.0]


def test_nifti_header_reads_back_in_simpleitk(tmp_path):
    """The page's NIfTI, read by ITK: the same voxels, and the canonical LPS geometry (identity
    direction, the scan's origin and spacing), i.e. the RAS affine written says what the array is."""
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 256, size=(5, 7, 9), dtype=np.uint8)  # z, y, x
    path = tmp_path / "v.nii"
    path.write_bytes(nifti_header((9, 7, 5), (0.7, 0.8, 2.5), (-40.0, 30.0, 100.0), np.uint8) + vol.tobytes())
    img = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), vol)
    np.testing.assert_allclose(img.GetSpacing(), (0.7, 0.8, 2.5), atol=1e-6)
    np.testing.assert_allclose(img.GetOrigin(), (-40.0, 30.0, 100.0), atol=1e-5)
    np.testing.assert_allclose(img.GetDirection(), np.eye(3).ravel(), atol=1e-6)


def test_label_volumes_hold_masks_boxes_and_axes():
    scan = _scan()
    dets = [_det(z, [10, 10, 20, 30], 0.9) for z in (1, 2)] + [_det(2, [50, 50, 60, 60], 0.8)]
    for i, d in enumerate(dets, 1):
        d.id = i
    cands = P.group_candidates(dets, set(range(6)), 0.3, scan)
    res = P.PredictionResult(scan, Config(), P.PredictSettings(), dets, cands, list(range(6)))
    masks, lines, n = label_volumes(res)
    assert n == 2 and masks.dtype == np.uint8
    for d in dets:
        assert np.all(masks[d.z][d.full_mask(masks.shape[1:])] == d.candidate)
        x1, y1, x2, y2 = (int(v) for v in d.box)
        edge = np.concatenate([lines[d.z, y1, x1:x2], lines[d.z, y2 - 1, x1:x2], lines[d.z, y1:y2, x1], lines[d.z, y1:y2, x2 - 1]])
        assert np.all((edge == d.candidate) | (edge == n + d.candidate))
    assert masks.sum() == sum(int(d.mask.sum()) * d.candidate for d in dets)
    # the axes (N + c) only on each candidate's key slice
    for c in cands:
        zs = {int(z) for z in np.nonzero((lines == n + c.id).any(axis=(1, 2)))[0]}
        assert zs == {c.info["key_canonical_slice"]}


def _noisy_ct(upscale: bool) -> S.Scan:
    """The real CT (or 16 of its slices at 512 x 512, linear, as the 300-slice benchmark has it) with
    12 HU of noise inside the body: noise is what a lossy codec loses."""
    scan = S.read_scan(shared_ct("example_ct.nii.gz"))
    hu = scan.hu
    if upscale:
        hu = np.stack([cv2.resize(s, (512, 512), interpolation=cv2.INTER_LINEAR) for s in hu[48:64]])
    body = hu > -900
    hu = hu + np.where(body, np.random.default_rng(0).normal(0, 12, hu.shape), 0).astype(np.float32)
    img = make_image(hu, (0.8, 0.8, 1.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    return S.Scan(hu=hu, image=img, original=img, source="x", kind="nifti", name="x")


@pytest.mark.parametrize("upscale", [False, True], ids=["as-is", "512px"])
def test_stored_slices_decode_to_the_codes_within_the_stated_error(upscale):
    """The page's JPEG slices, decoded as a browser does (libjpeg-turbo: cv2.imdecode; chromium gives
    the same codes, test_predict_html), are the 8-bit codes to within the error docs/predict.md states."""
    scan = _noisy_ct(upscale)
    res = P.PredictionResult(scan, Config(), P.PredictSettings(), [], [], list(range(scan.hu.shape[0])))
    ct = viewer_data(res)["ct"]
    err = np.stack([decode_slice(base64.b64decode(b64)).astype(int) - hu_to_code(hu) for b64, hu in zip(ct["slices"], scan.hu)])
    assert np.abs(err).max() <= MAX_CODE_ERROR and np.abs(err).mean() <= MEAN_CODE_ERROR
    assert ct["sums"] == [int(decode_slice(base64.b64decode(b64)).sum()) for b64 in ct["slices"]]
