"""Reading CT slices (16-bit PNG or the slice cache), the context rule, intensity mapping.

Conventions (docs/data.md):
- A DeepLesion PNG stores ``HU + 32768`` as uint16; :func:`read_png_hu` returns int16 HU.
- The context rule (:func:`context_plan`, chosen by the operator; the one rule of training,
  evaluation, the grid and ``a3d predict``): neighbours are ``spacing_mm`` apart
  (``data.context_spacing_mm``, the paper's 2 mm): output offset ``j`` in ``-(D-1)/2 .. (D-1)/2``
  wants position ``key + j * spacing_mm / slice_interval`` (slice units), clamped to the stored range
  (Slice_range intersected with the files present); the two stored slices around it are blended
  with weights ``1 - f`` and ``f`` (``f`` the fractional part), computed per offset.
  AlignShift is the exception (the authors' ``DeepLesionDataset_align.py``): when the interval is
  >= ``spacing_mm`` its D inputs are the stored neighbours ``key + j`` as they are (clamped the same
  way) and the operator's thickness blend aligns them; thinner series are interpolated as above.
  A missing slice interval (NaN) repeats the key slice D times, as the authors' code does.
- A neighbour file that is absent from the folder (a gap) is replaced by the nearest stored slice
  between it and the key slice, as the authors' ``get_slice_name`` does (warning logged once per
  file). The key slice itself missing, or any slice present but unreadable (truncated, corrupt,
  8-bit), raises :class:`a3d.errors.A3DError` naming the file.
- Intensity: HU clipped to [-1024, 2050], mapped linearly to [0, 255], minus 50 -> [-50, 205].
  Blending is done in HU, before the clip.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from a3d.errors import A3DError
from a3d.io import atomic_path

log = logging.getLogger(__name__)

HU_MIN = -1024.0
HU_MAX = 2050.0
HU_OFFSET = 32768
INPUT_MIN = -50.0
INPUT_MAX = 205.0
#: what the image padding holds (the network-input value of air, HU <= -1024)
PAD_VALUE = INPUT_MIN
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"

__all__ = [
    "HU_MIN", "HU_MAX", "PAD_VALUE", "hu_to_input", "read_png_hu", "write_png_hu", "decode_png_hu",
    "neighbour_positions", "interpolation_plan", "context_plan", "context_thickness", "interval_known",
    "PngSource", "slice_path", "load_stack",
]


def hu_to_input(hu: np.ndarray) -> np.ndarray:
    """HU -> network input: clip to [-1024, 2050], map linearly to [0, 255], subtract 50 (float32)."""
    x = np.clip(np.asarray(hu, dtype=np.float32), HU_MIN, HU_MAX)
    x -= HU_MIN
    x *= np.float32(255.0 / (HU_MAX - HU_MIN))
    x -= np.float32(50.0)
    return x


def slice_path(root: str | os.PathLike, series_dir: str, slice_index: int) -> Path:
    return Path(root) / "Images_png" / series_dir / f"{slice_index:03d}.png"


def decode_png_hu(data: bytes, path: str | os.PathLike) -> np.ndarray:
    """Decode the bytes of a DeepLesion 16-bit PNG into int16 HU; A3DError naming ``path`` if bad."""
    if not data.startswith(_PNG_MAGIC):
        raise A3DError(f"{path}: not a PNG file")
    if _PNG_END not in data[-32:]:
        raise A3DError(f"{path}: truncated PNG (no IEND chunk at the end)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise A3DError(f"{path}: corrupt PNG (cannot be decoded)")
    if img.ndim != 2:
        raise A3DError(f"{path}: expected a single-channel 16-bit PNG, got {img.shape[2]} channels")
    if img.dtype != np.uint16:
        raise A3DError(f"{path}: expected a 16-bit PNG (HU + 32768), got {img.dtype.itemsize * 8}-bit")
    return (img.astype(np.int32) - HU_OFFSET).astype(np.int16)


def read_png_hu(path: str | os.PathLike) -> np.ndarray:
    """Read one DeepLesion slice as int16 HU (file value - 32768)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise A3DError(f"{path}: slice file not found") from None
    except OSError as e:
        raise A3DError(f"{path}: cannot read ({e.strerror})") from None
    return decode_png_hu(data, path)


def write_png_hu(path: str | os.PathLike, hu: np.ndarray) -> None:
    """Write int HU as a DeepLesion 16-bit PNG (HU + 32768), atomically."""
    v = np.clip(np.asarray(hu).astype(np.int32) + HU_OFFSET, 0, 65535).astype(np.uint16)
    ok, buf = cv2.imencode(".png", v, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover
        raise A3DError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def neighbour_positions(key: int, slice_interval: float, slices: int, spacing_mm: float = 2.0) -> np.ndarray:
    """Wanted positions (slice units) of the ``slices`` output slices, ``spacing_mm`` apart, centred on ``key``."""
    if slices < 1 or slices % 2 == 0:
        raise A3DError(f"slices must be an odd number >= 1, got {slices}")
    if not slice_interval > 0:
        raise A3DError(f"slice interval must be positive, got {slice_interval}")
    half = (slices - 1) // 2
    step = float(spacing_mm) / float(slice_interval)
    return np.array([round(key + j * step, 6) for j in range(-half, half + 1)], dtype=np.float64)


def interpolation_plan(key: int, slice_interval: float, slices: int, first: int, last: int,
                       spacing_mm: float = 2.0) -> list[tuple[int, int, float]]:
    """Per output offset: (lower slice, upper slice, weight of the upper slice).

    Positions are clamped to [first, last]; the output slice is ``(1 - w) * lower + w * upper``.
    Each offset has its own weight (the authors' code reused the first offset's weights).
    """
    plan = []
    for p in neighbour_positions(key, slice_interval, slices, spacing_mm):
        p = min(max(p, float(first)), float(last))
        lo = int(math.floor(p))
        w = p - lo
        if w < 1e-6:
            plan.append((lo, lo, 0.0))
        else:
            plan.append((lo, lo + 1, float(w)))
    return plan


def interval_known(slice_interval: float) -> bool:
    """A usable slice interval: a finite positive number of mm (DL_info's may be NaN)."""
    return bool(math.isfinite(slice_interval) and slice_interval > 0)


def context_plan(key: int, slice_interval: float, slices: int, first: int, last: int, spacing_mm: float = 2.0,
                 operator: str = "a3d") -> list[tuple[int, int, float]]:
    """The D input slices of key slice ``key`` for ``operator``: per output slice
    (lower slice, upper slice, weight of the upper), output = ``(1 - w) * lower + w * upper``.

    - unknown interval (NaN, <= 0): the key slice D times (the authors' rule; the caller logs it);
    - ``operator == "alignshift"`` and ``slice_interval >= spacing_mm``: the stored neighbours
      ``key - (D-1)/2 .. key + (D-1)/2`` (clamped to [first, last]), not interpolated;
    - otherwise :func:`interpolation_plan` (``spacing_mm`` apart, linear, clamped).
    """
    if slices < 1 or slices % 2 == 0:
        raise A3DError(f"slices must be an odd number >= 1, got {slices}")
    if not interval_known(slice_interval):
        return [(key, key, 0.0)] * slices
    if operator == "alignshift" and float(spacing_mm) / float(slice_interval) <= 1.0:
        half = (slices - 1) // 2
        taps = [min(max(key + j, first), last) for j in range(-half, half + 1)]
        return [(n, n, 0.0) for n in taps]
    return interpolation_plan(key, slice_interval, slices, first, last, spacing_mm)


def context_thickness(slice_interval: float, spacing_mm: float = 2.0) -> float:
    """The thickness (mm) AlignShift is given for a sample: the stored slice interval, as in the
    authors' code (for thinner series, interpolated to ``spacing_mm``, any value <= 2 mm means a full
    shift, the same as passing 2 mm); ``spacing_mm`` when the interval is unknown (the D inputs are
    then one slice repeated, and any finite thickness leaves them unchanged)."""
    return float(slice_interval) if interval_known(slice_interval) else float(spacing_mm)


class PngSource:
    """Slices of ``ROOT/Images_png/<series>/<slice:03d>.png``; folder listings cached per series."""

    kind = "png"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._listing: dict[str, frozenset[int]] = {}

    def stored(self, series_dir: str) -> frozenset[int]:
        s = self._listing.get(series_dir)
        if s is None:
            folder = self.root / "Images_png" / series_dir
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                raise A3DError(f"{folder}: series folder not found") from None
            except NotADirectoryError:
                raise A3DError(f"{folder}: expected a series folder, found a file") from None
            nums = set()
            for n in names:
                if n.endswith(".png") and n[:-4].isdigit():
                    nums.add(int(n[:-4]))
            s = frozenset(nums)
            self._listing[series_dir] = s
        return s

    def read(self, series_dir: str, slice_index: int) -> np.ndarray:
        return read_png_hu(slice_path(self.root, series_dir, slice_index))

    def describe(self, series_dir: str, slice_index: int) -> str:
        return str(slice_path(self.root, series_dir, slice_index))


_warned: set[str] = set()


def load_stack(source, series_dir: str, key: int, slice_interval: float, slices: int,
               slice_range: Sequence[int], spacing_mm: float = 2.0, operator: str = "a3d") -> np.ndarray:
    """(slices, H, W) float32 HU stack around ``key`` by :func:`context_plan` for ``operator``.

    ``source`` has ``stored(series_dir) -> set of slice numbers``, ``read(series_dir, n) -> int16 HU``
    and ``describe(series_dir, n) -> str`` (file name for messages).
    """
    stored = source.stored(series_dir)
    if key not in stored:
        raise A3DError(f"{source.describe(series_dir, key)}: key slice file not found")
    first, last = int(slice_range[0]), int(slice_range[1])
    present = [s for s in stored if first <= s <= last]
    first, last = max(first, min(present)), min(last, max(present))
    plan = context_plan(key, slice_interval, slices, first, last, spacing_mm, operator)
    cache: dict[int, np.ndarray] = {}

    def get(n: int) -> np.ndarray:
        if n not in stored:  # the authors' rule: the nearest stored slice on the way to the key
            m = n
            while m != key and m not in stored:
                m += 1 if m < key else -1
            name = source.describe(series_dir, n)
            if name not in _warned:
                _warned.add(name)
                log.warning("%s: neighbour slice missing; using slice %d instead", name, m)
            n = m
        a = cache.get(n)
        if a is None:
            a = cache[n] = source.read(series_dir, n)
        return a

    key_img = get(key)
    out = np.empty((slices,) + key_img.shape, dtype=np.float32)
    for d, (lo, hi, w) in enumerate(plan):
        a = get(lo)
        if a.shape != key_img.shape:
            raise A3DError(f"{source.describe(series_dir, lo)}: image size {a.shape} differs from the key "
                           f"slice's {key_img.shape}")
        if w == 0.0:
            out[d] = a
        else:
            b = get(hi)
            if b.shape != key_img.shape:
                raise A3DError(f"{source.describe(series_dir, hi)}: image size {b.shape} differs from the key "
                               f"slice's {key_img.shape}")
            np.multiply(a, np.float32(1.0 - w), out=out[d])
            out[d] += np.float32(w) * b
    return out
