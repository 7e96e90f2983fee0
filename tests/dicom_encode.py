"""One DICOM series re-encoded in every transfer syntax a3d reads, with real encoders: pydicom's
(RLE; JPEG-LS via pyjpegls; JPEG 2000 via pylibjpeg-openjpeg), dcmtk's dcmcjpeg / dcmcjpls /
dcmcrle, openjph's ojph_compress (HTJ2K, encapsulated here with pydicom), and pydicom's writer for
deflated, implicit VR and big endian files.

Each entry of SYNTAXES: name -> (transfer syntax UID, how it is made, lossless?). ``encode_series``
writes the re-encoded copy of a folder (same file names)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid as U
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite

JLS_NEAR = 3  # JPEG-LS near-lossless: every stored value within this of the original (the codec's bound)

SYNTAXES = {
    "explicit-le": (U.ExplicitVRLittleEndian, "copy", True),
    "implicit-le": (U.ImplicitVRLittleEndian, "pydicom", True),
    "big-endian": (U.ExplicitVRBigEndian, "pydicom", True),
    "deflated": (U.DeflatedExplicitVRLittleEndian, "pydicom", True),
    "rle": (U.RLELossless, "pydicom", True),
    "rle-dcmcrle": (U.RLELossless, "dcmcrle", True),
    "jpeg-ls": (U.JPEGLSLossless, "pydicom", True),
    "jpeg-ls-dcmcjpls": (U.JPEGLSLossless, "dcmcjpls", True),
    "jpeg-ls-near": (U.JPEGLSNearLossless, "pydicom", False),
    "j2k": (U.JPEG2000Lossless, "pydicom", True),
    "j2k-lossy": (U.JPEG2000, "pydicom", False),
    "htj2k": (U.HTJ2KLossless, "ojph_compress", True),
    "htj2k-lossy": (U.HTJ2K, "ojph_compress", False),
    "jpeg-lossless-sv1": (U.JPEGLosslessSV1, "dcmcjpeg", True),
    "jpeg-lossless-14": (U.JPEGLossless, "dcmcjpeg", True),
    "jpeg-extended-12bit": (U.JPEGExtended12Bit, "dcmcjpeg", False),
    "jpeg-baseline-8bit": (U.JPEGBaseline8Bit, "dcmcjpeg", False),
}
_DCMCJPEG = {U.JPEGLosslessSV1: "+e1", U.JPEGLossless: "+el", U.JPEGExtended12Bit: "+ee", U.JPEGBaseline8Bit: "+eb"}
TOOLS = {"dcmcrle": "dcmcrle", "dcmcjpls": "dcmcjpls", "dcmcjpeg": "dcmcjpeg", "ojph_compress": "ojph_compress"}


def need_tool(name: str) -> None:
    """Skip without the command-line encoder, except under CI=true (.ci/run installs it)."""
    if shutil.which(name) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} not found: .ci/run installs dcmtk and openjph-tools")
        pytest.skip(f"{name} not found (apt-get install dcmtk openjph-tools)")


def _pydicom(ds, ts: U.UID) -> None:
    if ts == U.ExplicitVRBigEndian:
        ds.PixelData = ds.pixel_array.astype(ds.pixel_array.dtype.newbyteorder(">")).tobytes()
        ds.file_meta.TransferSyntaxUID = ts
    elif ts in (U.ImplicitVRLittleEndian, U.DeflatedExplicitVRLittleEndian):
        ds.file_meta.TransferSyntaxUID = ts
    elif ts == U.JPEGLSNearLossless:
        ds.compress(ts, jls_error=JLS_NEAR)
    elif ts == U.JPEG2000:
        ds.compress(ts, j2k_cr=[12])
    elif ts == U.RLELossless:
        ds.compress(ts, encoding_plugin="pydicom")
    else:
        ds.compress(ts)


def _htj2k(ds, ts: U.UID, tmp: Path) -> None:
    """One frame through ojph_compress (a 16-bit PGM of the stored values: unsigned data only)."""
    arr = ds.pixel_array
    assert arr.dtype == np.uint16, "the HTJ2K fixture writes unsigned PGM"
    maxval = (1 << int(ds.BitsStored)) - 1
    pgm, j2c = tmp / "frame.pgm", tmp / "frame.j2c"
    pgm.write_bytes(f"P5 {arr.shape[1]} {arr.shape[0]} {maxval}\n".encode() + arr.astype(">u2").tobytes())
    lossy = ["-qstep", "0.002"] if ts == U.HTJ2K else ["-reversible", "true"]
    subprocess.run(["ojph_compress", "-i", str(pgm), "-o", str(j2c), *lossy], check=True, capture_output=True)
    ds.PixelData = encapsulate([j2c.read_bytes()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = ts
    if ts == U.HTJ2K:
        ds.LossyImageCompression = "01"


def encode_file(src: Path, dst: Path, name: str) -> None:
    ts, how, _ = SYNTAXES[name]
    if how == "copy":
        shutil.copyfile(src, dst)
    elif how == "dcmcjpeg":
        subprocess.run(["dcmcjpeg", _DCMCJPEG[ts], str(src), str(dst)], check=True, capture_output=True)
    elif how in ("dcmcjpls", "dcmcrle"):
        subprocess.run([how, str(src), str(dst)], check=True, capture_output=True)
    else:
        ds = pydicom.dcmread(src)
        if how == "ojph_compress":
            with tempfile.TemporaryDirectory() as tmp:
                _htj2k(ds, ts, Path(tmp))
        else:
            _pydicom(ds, ts)
        if ts == U.ExplicitVRBigEndian:
            dcmwrite(dst, ds, little_endian=False, implicit_vr=False, force_encoding=True)
        else:
            ds.save_as(dst, enforce_file_format=True)


def encode_series(src: Path, dst: Path, name: str) -> Path:
    """A copy of the folder ``src`` with every file re-encoded as ``name`` (SYNTAXES)."""
    how = SYNTAXES[name][1]
    if how in TOOLS:
        need_tool(TOOLS[how])
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.iterdir()):
        encode_file(p, dst / p.name, name)
    return dst
