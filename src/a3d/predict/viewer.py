"""The data behind report.html's interactive viewer (NiiVue, ``assets/``): the CT, the candidates'
label volume and their list, as one JSON-ready dict (:func:`viewer_data`).

How the CT travels (one file that opens from disk, where a page cannot fetch its neighbours):

- **8-bit codes, companded.** HU are mapped to 256 codes linearly in three segments
  (:data:`CODE_KNOTS_HU`): 8 HU per code from -1024 to -160 (air, lung), 4 HU per code from -160 to
  240 (soft tissue), 32 HU per code from 240 to 1744 (bone); beyond, clipped. Each window then keeps
  the precision it needs: soft tissue (W400) is within 2 HU everywhere in it, lung (W1500 L-600)
  within 4 HU, bone (W1800 L400) within 16 HU. The page windows through a grey colour map built
  from the code -> HU table (``code_hu``), so window and level stay in true HU.
- **One greyscale JPEG per axial slice** (quality :data:`JPEG_QUALITY`), base64. Lossless PNG slices
  kept the CT's noise bit for bit: 53 MB for a 300 x 512 x 512 scan with 12 HU of noise, over the
  40 MB the report may take; JPEG at quality 95 makes it 27.6 MB and moves a code by at most 10
  (mean 0.96) on that scan, at the body's edges and in the noise (docs/predict.md, "The report"). Greyscale
  JPEG has no colour conversion, so the browser's decoder gives the codes back as OpenCV's does; the
  page decodes each slice into a NIfTI in memory and checks every slice's mean against ``sums``.
- **Labels**, two gzipped NIfTI (uint8, or uint16 beyond 127 candidates): the masks (value ``c``
  for candidate ``c``, drawn translucent) and the lines (``c``: its boxes, ``N + c``: its long and
  short axes; N candidates), so that NiiVue draws them on every plane and the page hides a
  candidate by its colour tables alone (NiiVue draws an overlay voxel opaque or not at all, hence two).

The arrays keep the canonical orientation (x to the patient's left, y posterior, z superior) with
a NIfTI affine that says so in RAS; oblique scans are shown along their voxel grid, like the overlays.
"""

from __future__ import annotations

import base64
import gzip
import struct

import numpy as np

from a3d.predict.candidates import measured_detection
from a3d.predict.overlays import candidate_rgb
from a3d.predict.results import PredictionResult

CODE_KNOTS_HU = (-1024.0, -160.0, 240.0, 1744.0)
CODE_KNOTS = (0.0, 108.0, 208.0, 255.0)
JPEG_QUALITY = 95  # the viewer's CT slices (module docstring)
# window presets (width, level), HU
WINDOWS = {"soft tissue": (400.0, 40.0), "lung": (1500.0, -600.0), "bone": (1800.0, 400.0)}
_NIFTI_TYPES = {np.dtype(np.uint8): (2, 8), np.dtype(np.uint16): (512, 16)}


def hu_to_code(hu: np.ndarray) -> np.ndarray:
    """HU (any shape) -> uint8 codes of the companded scale (module docstring)."""
    return np.interp(hu, CODE_KNOTS_HU, CODE_KNOTS).round().astype(np.uint8)


def code_hu() -> np.ndarray:
    """(256,) the HU each code stands for."""
    return np.interp(np.arange(256.0), CODE_KNOTS, CODE_KNOTS_HU)


def nifti_header(shape_xyz: tuple[int, int, int], spacing: tuple[float, float, float],
                 origin_lps: tuple[float, float, float], dtype, labels: bool = False) -> bytes:
    """352 bytes: a NIfTI-1 header (+ empty extension flag) for a canonical array stored x fastest;
    the affine maps it to RAS (canonical x and y run against R and A). ``labels``: the intent code
    NIFTI_INTENT_LABEL (NiiVue then looks each value up exactly in its colour table; without it,
    uint16 labels were coloured wrongly)."""
    code, bitpix = _NIFTI_TYPES[np.dtype(dtype)]
    (nx, ny, nz), (sx, sy, sz), (ox, oy, oz) = shape_xyz, spacing, origin_lps
    h = bytearray(352)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, 3, nx, ny, nz, 1, 1, 1, 1)
    struct.pack_into("<hhh", h, 68, 1002 if labels else 0, code, bitpix)
    struct.pack_into("<8f", h, 76, 1.0, sx, sy, sz, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into("<3f", h, 108, 352.0, 1.0, 0.0)  # vox_offset, scl_slope, scl_inter
    h[123] = 2  # xyzt_units: mm
    struct.pack_into("<hh", h, 252, 1, 1)  # qform_code, sform_code: scanner
    struct.pack_into("<6f", h, 256, 0.0, 0.0, 1.0, -ox, -oy, oz)  # quaternion: 180 degrees about z
    struct.pack_into("<12f", h, 280, -sx, 0, 0, -ox, 0, -sy, 0, -oy, 0, 0, sz, oz)
    h[344:348] = b"n+1\0"
    return bytes(h)


def encode_slice(codes: np.ndarray) -> bytes:
    """A (y, x) uint8 slice of codes as the page stores it: a greyscale JPEG (module docstring)."""
    import cv2  # lazy: keeps `import a3d.predict` light

    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY, cv2.IMWRITE_JPEG_OPTIMIZE, 1]  # optimised Huffman: 5 % smaller, same pixels
    ok, buf = cv2.imencode(".jpg", codes, params)
    if not ok:
        raise ValueError("JPEG encoding of a viewer slice failed")
    return buf.tobytes()


def decode_slice(jpeg: bytes) -> np.ndarray:
    """The codes a browser gets back from :func:`encode_slice` (libjpeg-turbo, as in Chromium and Firefox)."""
    import cv2

    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_UNCHANGED)


def _ct(res: PredictionResult) -> dict:
    scan = res.scan
    nz, ny, nx = scan.hu.shape
    slices, sums = [], []
    for z in range(nz):  # a slice at a time: a 300 x 512 x 512 scan never needs a float64 copy
        jpeg = encode_slice(hu_to_code(scan.hu[z]))
        slices.append(base64.b64encode(jpeg).decode("ascii"))
        sums.append(int(decode_slice(jpeg).sum(dtype=np.int64)))
    return {
        "header": base64.b64encode(nifti_header((nx, ny, nz), scan.spacing, _origin(res), np.uint8)).decode("ascii"),
        "slices": slices,
        "sums": sums,  # each decoded slice's sum of codes: the page checks what its decoder gave
    }


def _origin(res: PredictionResult) -> tuple[float, float, float]:
    return tuple(float(v) for v in res.scan.physical_point(0, 0, 0))


def _line(img: np.ndarray, ends_px, value: int) -> None:
    """Set the pixels under the segment (x1 y1 x2 y2, pixel-edge coordinates) to ``value``."""
    x1, y1, x2, y2 = ends_px
    n = int(np.ceil(2 * np.hypot(x2 - x1, y2 - y1))) + 2
    xs = np.clip(np.floor(np.linspace(x1, x2, n)).astype(int), 0, img.shape[1] - 1)
    ys = np.clip(np.floor(np.linspace(y1, y2, n)).astype(int), 0, img.shape[0] - 1)
    img[ys, xs] = value


def label_volumes(res: PredictionResult) -> tuple[np.ndarray, np.ndarray, int]:
    """(masks, lines, N): two (z, y, x) label arrays, masks (value c) and lines (boxes c, long and
    short axes N + c) of the N candidates; lower ids drawn last, so on top."""
    n = len(res.candidates)
    dtype = np.uint8 if 2 * n + 1 <= 255 else np.uint16
    masks = np.zeros(res.scan.hu.shape, dtype=dtype)
    lines = np.zeros_like(masks)
    for c in sorted(res.candidates, key=lambda c: -c.id):
        for d in c.detections:
            if d.mask is not None:
                x0, y0 = d.mask_origin
                h, w = d.mask.shape
                masks[d.z, y0 : y0 + h, x0 : x0 + w][d.mask] = c.id
            x1, y1, x2, y2 = d.box
            for ends in ((x1, y1, x2, y1), (x1, y2 - 0.5, x2, y2 - 0.5), (x1, y1, x1, y2), (x2 - 0.5, y1, x2 - 0.5, y2)):
                _line(lines[d.z], ends, c.id)
        key = measured_detection(c)
        for axis in ("long_axis_px", "short_axis_px"):
            if key.measures.get(axis) is not None:
                _line(lines[key.z], key.measures[axis], n + c.id)
    return masks, lines, n


def _nifti_gz_b64(res: PredictionResult, lab: np.ndarray) -> str:
    nz, ny, nx = lab.shape
    raw = nifti_header((nx, ny, nz), res.scan.spacing, _origin(res), lab.dtype, labels=True) + lab.tobytes()
    return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode("ascii")


def _candidate(c) -> dict:
    key = measured_detection(c)
    info = c.info
    return {
        "id": c.id, "score": info["max_score"], "rgb": list(candidate_rgb(c.id)),
        "key_z": info["key_canonical_slice"], "key_slice": info["key_slice"],
        "first_slice": min(info["slices"]), "last_slice": max(info["slices"]),
        "long_mm": info["long_axis_mm"], "short_mm": info["short_axis_mm"], "volume_ml": info["volume_ml"],
        "dets": [[d.z, *(float(v) for v in d.box), d.score] for d in c.detections],
        "axes": {"z": key.z, "long": key.measures.get("long_axis_px"), "short": key.measures.get("short_axis_px")},
    }


def viewer_data(res: PredictionResult) -> dict:
    """Everything the page's viewer reads (``assets/viewer.js``), JSON-ready."""
    masks, lines, n = label_volumes(res)
    nz, ny, nx = res.scan.hu.shape
    return {
        "shape": [nx, ny, nz],
        "spacing": [float(v) for v in res.scan.spacing],
        "slice_index": [int(v) for v in res.slice_of_canonical],
        "code_hu": [float(v) for v in code_hu()],
        "windows": {k: list(v) for k, v in WINDOWS.items()},
        "window": [float(v) for v in res.settings.window],
        "score_threshold": res.settings.score_threshold,
        "ct": _ct(res),
        "masks": _nifti_gz_b64(res, masks),
        "lines": _nifti_gz_b64(res, lines),
        "n_candidates": n,
        "candidates": [_candidate(c) for c in sorted(res.candidates, key=lambda c: c.id)],
    }
