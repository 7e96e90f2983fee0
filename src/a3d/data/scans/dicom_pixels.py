"""DICOM pixel data: what a3d decodes, the checks on a file's pixel data before decoding, and the
decoding of one frame (pydicom's pixel backend with a chosen plugin per transfer syntax).

Public for other parts (the DICOM node offers exactly these): :data:`TRANSFER_SYNTAXES` (the
transfer syntax UIDs a3d decodes) and :data:`CT_SOP_CLASSES` (the SOP classes it reads).

Decoders (docs/predict.md, "Transfer syntaxes"; README design notes): JPEG 2000 and HTJ2K by
pylibjpeg-openjpeg, JPEG-LS by pyjpegls (CharLS), RLE by pylibjpeg-rle, JPEG baseline and lossless
(process 14, SV1) by GDCM (python-gdcm); native data by pydicom. JPEG extended with 12-bit samples,
which python-gdcm's build and Pillow cannot decode (and pylibjpeg-libjpeg, which can, is GPL), is
decoded by the GDCM inside SimpleITK, single-frame files only. Pillow, which pydicom may also use,
decodes only 8-bit JPEG and is not chosen. The plugin named here is used when installed; otherwise
any plugin pydicom has for the syntax, and an error naming the package when there is none.
"""

from __future__ import annotations

import contextlib
import os
import struct

import numpy as np
from pydicom import uid as U
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder

from a3d.data.scans.geometry import _sitk

PIXEL_DATA = 0x7FE00010
_EXTENDED_OFFSET_TABLE = 0x7FE00001
_UNDEFINED_LENGTH = 0xFFFFFFFF
# encapsulated Pixel Data's element header: (7FE0,0010) OB, reserved, undefined length (explicit VR LE)
_ENCAPSULATED_HEADER = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"
_ITEM, _SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)

CT_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage (one slice per file)
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage (multi-frame)
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage (multi-frame)
)
MULTI_FRAME_CT = CT_SOP_CLASSES[1:]

NATIVE = (U.ImplicitVRLittleEndian, U.ExplicitVRLittleEndian, U.DeflatedExplicitVRLittleEndian, U.ExplicitVRBigEndian)
# transfer syntax -> (pydicom plugin a3d uses, the pip package that provides it)
PLUGINS = {
    U.JPEGBaseline8Bit: ("gdcm", "python-gdcm"),
    U.JPEGExtended12Bit: ("gdcm", "python-gdcm"),
    U.JPEGLossless: ("gdcm", "python-gdcm"),
    U.JPEGLosslessSV1: ("gdcm", "python-gdcm"),
    U.JPEGLSLossless: ("pyjpegls", "pyjpegls"),
    U.JPEGLSNearLossless: ("pyjpegls", "pyjpegls"),
    U.JPEG2000Lossless: ("pylibjpeg", "pylibjpeg pylibjpeg-openjpeg"),
    U.JPEG2000: ("pylibjpeg", "pylibjpeg pylibjpeg-openjpeg"),
    U.HTJ2KLossless: ("pylibjpeg", "pylibjpeg pylibjpeg-openjpeg"),
    U.HTJ2KLosslessRPCL: ("pylibjpeg", "pylibjpeg pylibjpeg-openjpeg"),
    U.HTJ2K: ("pylibjpeg", "pylibjpeg pylibjpeg-openjpeg"),
    U.RLELossless: ("pylibjpeg", "pylibjpeg pylibjpeg-rle"),
}
TRANSFER_SYNTAXES: tuple[str, ...] = tuple(str(u) for u in NATIVE + tuple(PLUGINS))


class FrameError(Exception):
    """A frame that cannot be decoded; the message says which and the codec's reason."""


def transfer_syntax(ds: Dataset) -> U.UID:
    meta = ds.get("file_meta")
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return U.UID(str(ts)) if ts else U.ExplicitVRLittleEndian


def syntax_problem(ds: Dataset) -> str | None:
    """Why a3d cannot decode this file's transfer syntax, or None."""
    ts = transfer_syntax(ds)
    if ts in TRANSFER_SYNTAXES:
        return None
    return f"transfer syntax {ts} ({ts.name}) is not one a3d decodes (docs/predict.md lists them)"


def _fragments(path: str, offset: int) -> tuple[list[int], str | None]:
    """Lengths of the items of encapsulated pixel data whose value starts at byte ``offset`` (the
    Basic Offset Table first, then the fragments), and what is wrong with their structure or None."""
    size = os.path.getsize(path)
    lengths: list[int] = []
    with open(path, "rb") as f:
        f.seek(offset)
        pos = offset
        while True:
            head = f.read(8)
            if len(head) < 8:
                return lengths, (f"file ends inside the compressed pixel data (after {max(len(lengths) - 1, 0)} "
                                 f"fragments, before the sequence delimiter)")
            group, elem, length = struct.unpack("<HHI", head)
            if (group, elem) == _SEQUENCE_END:
                return lengths, None
            if (group, elem) != _ITEM or length == _UNDEFINED_LENGTH:
                return lengths, (f"compressed pixel data malformed at byte {pos}: ({group:04X},{elem:04X}) where an "
                                 f"item (FFFE,E000) of defined length was expected")
            if pos + 8 + length > size:
                what = "Basic Offset Table" if not lengths else f"fragment {len(lengths)}"
                return lengths, (f"file ends inside the compressed pixel data ({what} holds {size - pos - 8} of its "
                                 f"{length} bytes)")
            lengths.append(length)
            f.seek(length, 1)
            pos += 8 + length


def _encapsulated_offset(ds: Dataset, path: str) -> int | None:
    """Byte offset of the first item of the encapsulated pixel data, or None when there is none."""
    el = ds.get_item(PIXEL_DATA)
    tell = None if el is None else getattr(el, "value_tell", None) or getattr(el, "file_tell", None)
    n = len(_ENCAPSULATED_HEADER)
    with open(path, "rb") as f:
        if tell is not None and tell >= n:
            f.seek(tell - n)
            if f.read(n) == _ENCAPSULATED_HEADER:
                return int(tell)
            f.seek(0)
        data = f.read()  # pydicom dropped the element (the file ends before its sequence delimiter)
    at = data.rfind(_ENCAPSULATED_HEADER)
    return at + n if at >= 0 else None


def encapsulated_problem(ds: Dataset, path: str, frames: int) -> tuple[bool, str | None]:
    """(has pixel data, what is wrong with it or None) for compressed pixel data: every item inside
    the file and the sequence closed, at least one fragment per frame, a Basic (or Extended) Offset
    Table with one entry per frame when present."""
    offset = _encapsulated_offset(ds, path)
    if offset is None:
        return False, None
    lengths, problem = _fragments(path, offset)
    if problem:
        return True, problem
    bot, fragments = (lengths[0], len(lengths) - 1) if lengths else (0, 0)
    if fragments < max(frames, 1):
        return True, f"compressed pixel data holds {fragments} fragments for {frames} frames"
    if bot % 4 or (bot and bot // 4 != frames):
        return True, f"Basic Offset Table holds {bot / 4:g} entries for {frames} frames"
    eot = ds.get(_EXTENDED_OFFSET_TABLE)
    if eot is not None and eot.value is not None and len(eot.value) // 8 != frames:
        return True, f"Extended Offset Table holds {len(eot.value) // 8} entries for {frames} frames"
    return True, None


def native_problem(ds: Dataset, path: str, frames: int) -> str | None:
    """Why uncompressed pixel data is unusable (shorter than Rows x Columns x BitsAllocated x frames,
    or the file ends inside it), or None."""
    el = ds.get_item(PIXEL_DATA)  # a deferred (raw) element: its length is known, its value not loaded
    if getattr(el, "is_raw", False):
        length, tell = int(el.length), el.value_tell
    else:
        length, tell = len(el.value or b""), None
    deflated = transfer_syntax(ds) == U.DeflatedExplicitVRLittleEndian  # offsets are in the inflated stream
    if tell is not None and not deflated and tell + length > os.path.getsize(path):
        return f"file ends inside the pixel data ({os.path.getsize(path) - tell} of {length} bytes)"
    try:
        expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
                    * frames)
    except (AttributeError, TypeError, ValueError):
        return "Rows/Columns/BitsAllocated missing; the pixel data cannot be interpreted"
    if length < expected:
        return f"pixel data holds {length} bytes, Rows x Columns x BitsAllocated x frames needs {expected}"
    return None


def _plugin(ts: U.UID) -> str:
    """The plugin to ask pydicom for ("": pydicom's own choice); FrameError when none is installed."""
    if ts in NATIVE:
        return ""
    decoder = get_decoder(ts)
    want, package = PLUGINS[ts]
    if want in decoder.available_plugins:
        return want
    if decoder.is_available:
        return ""
    raise FrameError(f"no decoder for {ts.name} is installed (pip install {package})")


@contextlib.contextmanager
def _quiet_stderr():
    """GDCM's libjpeg prints "Unsupported JPEG data precision 12" on stderr (fd 2) while it finds the
    12-bit codec, several lines per file: hidden here; a real failure raises all the same."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _jpeg12_stored(ds: Dataset, path: str) -> np.ndarray:
    """Stored values of a single-frame 12-bit JPEG extended file, by SimpleITK's GDCM (which applies
    the file's RescaleSlope/Intercept: undone here, so that a3d applies it like for every other file)."""
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise FrameError("multi-frame JPEG Extended with 12-bit samples is not decoded (no non-GPL decoder "
                         "among a3d's): convert it first, e.g. dcmdjpeg IN OUT")
    sitk = _sitk()
    try:
        with _quiet_stderr():
            v = sitk.GetArrayFromImage(sitk.ReadImage(path)).astype(np.float64)
    except RuntimeError as e:
        raise FrameError(f"frame 1 cannot be decoded (JPEG Extended, SimpleITK/GDCM: "
                         f"{str(e).strip().splitlines()[-1][:160]})") from e
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    return np.round((v.reshape(v.shape[-2:]) - intercept) / slope)


def decode_frame(ds: Dataset, index: int, path: str) -> np.ndarray:
    """Stored values (rows, cols) of frame ``index`` (0-based) of a dataset read with its pixel data
    from ``path``; FrameError with the codec's reason when it cannot be decoded."""
    ts = transfer_syntax(ds)
    if ts == U.JPEGExtended12Bit and int(ds.get("BitsStored", 8)) > 8:
        return _jpeg12_stored(ds, path)
    plugin = _plugin(ts)
    try:
        arr, _ = get_decoder(ts).as_array(ds, index=index, decoding_plugin=plugin)
    except Exception as e:  # every codec raises its own types
        reason = " ".join(str(e).split())[:160] or type(e).__name__
        used = f", {plugin}" if plugin else ""
        raise FrameError(f"frame {index + 1} cannot be decoded ({ts.name}{used}: {reason})") from e
    return arr.reshape(arr.shape[-2:]) if arr.ndim > 2 else arr
