"""Issue 18 item 1: one real-looking CT series (the real CT at a scanner's 512 x 512, 12-bit
unsigned, RescaleIntercept -1024) in every transfer syntax a3d reads, made by real encoders
(tests/dicom_encode.py): the same volume as the uncompressed series (exactly when lossless, within
the codec's measured error when lossy) and the same detections through `a3d predict` (the
deterministic blob stand-in). A corrupt compressed frame is named with the codec's reason; a
truncated compressed file is named; a complete file is never called truncated.

On main at cbe5183 every compressed syntax here was refused ("pixel data holds N bytes, Rows x
Columns x BitsAllocated needs 524288"), HTJ2K could not be decoded at all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from a3d.boxes import box_iou
from a3d.cli import main
from a3d.data import scans as S
from a3d.data.scans.dicom_pixels import CT_SOP_CLASSES, TRANSFER_SYNTAXES
from a3d.errors import A3DError
from a3d.predict import loading
from dicom_encode import JLS_NEAR, SYNTAXES, encode_series
from dicom_fixtures import DETECT_HU, real_looking_series, truncate
from test_predict import CFG
from test_predict_support import BlobDetector, shared_ct

# Lossy syntaxes: (max, mean) |HU error| allowed over the volume. Measured on this series on
# 2026-12-07 (max / mean): j2k-lossy (ratio 12) 30 / 4.5, htj2k-lossy (qstep 0.002) 17 / 2.9,
# jpeg-extended-12bit (dcmcjpeg quality 90) 19 / 2.9, jpeg-baseline-8bit 270 / 11.2 (dcmcjpeg maps
# the whole HU range onto 8 bits: a step of 16 HU, then the lossy JPEG). Bounds: about twice that.
# JPEG-LS near-lossless guarantees |error| <= NEAR stored values (slope 1: HU).
LOSSY_BOUNDS = {"jpeg-ls-near": (JLS_NEAR, 2.0), "j2k-lossy": (60, 9.0), "htj2k-lossy": (40, 6.0),
                "jpeg-extended-12bit": (40, 6.0), "jpeg-baseline-8bit": (450, 20.0)}


def _predict(folder: Path, out: Path) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loading, "load_predictor", lambda checkpoint, device="cpu": (BlobDetector(hu=DETECT_HU), CFG))
        rc = main(["predict", str(folder), "--checkpoint", "c.pt", "--out", str(out), "--no-html", "--no-overlays",
                   "--no-markups"])
    assert rc == 0
    return json.loads((out / "predictions.json").read_text())


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """(root, the uncompressed series' folder, its HU as a3d reads it, its predictions.json)."""
    root = tmp_path_factory.mktemp("syntaxes")
    paths, vol = real_looking_series(shared_ct(), root / "plain")
    scan = S.read_scan(root / "plain")
    np.testing.assert_array_equal(scan.hu, vol)  # the writer's HU, independent of the decoders below
    doc = _predict(root / "plain", root / "plain_out")
    assert len(doc["candidates"]) == 2  # both planted lesions, nothing of the real anatomy
    return root, root / "plain", scan.hu, doc


def _matched(a: list[dict], b: list[dict], iou: float) -> bool:
    """Same number of detections, each on the same slice with a box of IoU >= ``iou``."""
    if len(a) != len(b):
        return False
    for d in a:
        same = [e for e in b if e["slice"] == d["slice"]]
        if not same or max(float(box_iou(np.array([d["box_px"]]), np.array([e["box_px"]]))[0, 0]) for e in same) < iou:
            return False
    return True


@pytest.mark.parametrize("name", list(SYNTAXES))
def test_every_transfer_syntax_same_volume_and_detections(plain, name):
    """Fails on main for every compressed syntax (refused as corrupt), and if a decoder returns the
    wrong sign, bit depth or rescale (errors of hundreds to thousands of HU), or a lossy codec's
    error leaves its bound."""
    root, src, ref, ref_doc = plain
    folder = encode_series(src, root / name, name)
    ts, _, lossless = SYNTAXES[name]
    for p in folder.iterdir():
        assert pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID == ts
    hu = S.read_scan(folder).hu
    doc = _predict(folder, root / f"{name}_out")
    det, ref_det = doc["detections"], ref_doc["detections"]
    if lossless:
        np.testing.assert_array_equal(hu, ref)
        assert [(d["slice"], d["box_px"], d["score"]) for d in det] == [(d["slice"], d["box_px"], d["score"]) for d in ref_det]
    else:
        err = np.abs(hu - ref)
        bound_max, bound_mean = LOSSY_BOUNDS[name]
        assert 0 < err.max() <= bound_max and err.mean() <= bound_mean, (err.max(), err.mean())
        assert _matched(det, ref_det, 0.8) and len(doc["candidates"]) == len(ref_doc["candidates"])


@pytest.mark.parametrize("name", ["rle", "jpeg-ls", "j2k", "jpeg-lossless-sv1", "jpeg-lossless-14"])
def test_signed_16bit_lossless(tmp_path, name):
    """The same series stored as signed 16-bit HU (PixelRepresentation 1, RescaleIntercept 0): every
    lossless codec gives back the exact volume, air at -1024 included. Fails if a decoder returns
    the samples unsigned (air would read as 64512) or drops the sign bit."""
    _, vol = real_looking_series(shared_ct(), tmp_path / "plain", stored="int16")
    assert vol.min() < 0
    folder = encode_series(tmp_path / "plain", tmp_path / name, name)
    np.testing.assert_array_equal(S.read_scan(folder).hu, vol)


def test_exported_syntaxes_and_sop_classes():
    """The tuples the DICOM node offers: every syntax the tests decode, and the three CT classes."""
    assert {str(ts) for ts, _, _ in SYNTAXES.values()} <= set(TRANSFER_SYNTAXES)
    assert set(CT_SOP_CLASSES) == {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}


def _fragment_offset(path: Path) -> int:
    """Byte offset of the first fragment's data (after the Basic Offset Table item), found by hand."""
    data = path.read_bytes()
    at = data.rfind(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff") + 12
    bot_len = int.from_bytes(data[at + 4:at + 8], "little")
    return at + 8 + bot_len + 8


def test_corrupt_frame_named_with_the_codec_reason(plain, tmp_path):
    """JPEG 2000 and JPEG-LS files whose compressed frame is overwritten with noise (item structure
    intact): refused naming the file, the frame and the codec's own words; with --allow-missing
    the slice is interpolated and named. Fails if the decoder error is swallowed or reported as a
    truncation."""
    root, src, _, _ = plain
    for name in ("j2k", "jpeg-ls"):
        folder = encode_series(src, tmp_path / name, name)
        bad = sorted(folder.iterdir())[1]
        data = bytearray(bad.read_bytes())
        at = _fragment_offset(bad)
        data[at:at + 400] = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()
        bad.write_bytes(bytes(data))
        with pytest.raises(A3DError) as e:
            S.read_scan(folder)
        msg = str(e.value)
        assert f"{bad.name}: frame 1 cannot be decoded" in msg and "truncated" not in msg, msg
        assert ("pylibjpeg" if name == "j2k" else "pyjpegls") in msg
        scan = S.read_scan(folder, allow_missing=True)
        assert scan.interpolated == (1,) and any(bad.name in w and "cannot be decoded" in w for w in scan.warnings)


def test_truncated_compressed_file_named(plain, tmp_path):
    """A JPEG 2000 file cut inside its fragment, and one cut just before the sequence delimiter:
    each named as ending inside the compressed pixel data (on main: 'pixel data holds N bytes', the
    length check of uncompressed data); the complete files of the series are not named."""
    root, src, _, _ = plain
    folder = encode_series(src, tmp_path / "j2k", "j2k")
    files = sorted(folder.iterdir())
    truncate(files[1], cut=1000)
    truncate(files[2], cut=8)  # only the sequence delimiter is lost
    with pytest.raises(A3DError) as e:
        S.read_scan(folder)
    msg = str(e.value)
    assert f"{files[1].name}: file ends inside the compressed pixel data (fragment 1 holds" in msg
    assert f"{files[2].name}: file ends inside the compressed pixel data (after 1 fragments" in msg
    assert files[0].name not in msg and files[3].name not in msg
