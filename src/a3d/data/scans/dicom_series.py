"""Which files of a DICOM series make the volume, and on which slice grid (pure header logic).

Rules (docs/predict.md, "DICOM series: what is checked"):

- every file of the series must be a CT image with pixel data, single-frame or an Enhanced / Legacy
  Converted Enhanced CT (one image per frame, :mod:`a3d.data.scans.dicom_frames`): a SEG, an SR, a
  file without pixel data, another modality or another multi-frame file is refused, naming the file;
- localizers (ImageType holds LOCALIZER) are dropped, each named in a warning;
- one stack: the same orientation, pixel spacing and size throughout; acquisitions
  (AcquisitionNumber) whose slice positions overlap, or two different images at one position, are
  refused with how to choose (``--acquisition N``, or moving files); a file present twice (same
  SOPInstanceUID) is used once, with a warning;
- no gantry tilt: a GantryDetectorTilt other than 0, or slice positions that move within the slice
  plane, are refused (the volume would be sheared);
- the slices are placed by their true position along the slice normal (ImagePositionPatient
  projected on the cross product of the ImageOrientationPatient vectors). A regular stack (positions
  on multiples of one spacing, within 10 % of it) keeps its spacing; positions with no slice
  (missing or unreadable files) are *holes*. Irregular positions are put on a grid of the median
  spacing. Holes and irregular positions refuse the series unless ``allow_missing``: the grid
  slices without a source image are then interpolated (linearly, from the nearest slices on
  either side) and reported, never used as key slices, never segmented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from a3d.data.scans.dicom_files import SEG_SOP_CLASS, SR_SOP_CLASS_PREFIX, DicomFile, Unreadable
from a3d.data.scans.dicom_frames import DicomImage, is_multi_frame
from a3d.data.scans.dicom_pixels import MULTI_FRAME_CT
from a3d.errors import A3DError

CT_MODALITIES = {"CT"}
GRID_TOLERANCE = 0.1  # a slice within this fraction of the spacing from a grid position sits on it
TILT_TOLERANCE_PX = 0.25  # in-plane drift of slice positions (pixels) above which the stack is tilted
_NAMED = 5  # file names listed in one error line before "... and N more"


@dataclass
class SliceGrid:
    """The stack of a series on its regular grid: grid slice ``i`` lies at ``origin + i * spacing *
    normal``; ``slots[i]`` is the index in ``files`` of its source image, or None (interpolated)."""

    files: list[DicomImage]  # sorted by position along the normal
    positions: np.ndarray  # (len(files),) mm along the normal
    origin: np.ndarray  # (3,) ImagePositionPatient of grid slice 0
    row_dir: np.ndarray  # (3,) direction of increasing column index
    col_dir: np.ndarray  # (3,) direction of increasing row index
    pixel_spacing: tuple[float, float]  # (between columns = x, between rows = y) mm
    spacing: float  # between grid slices, mm
    slots: list[int | None]
    warnings: list[str] = field(default_factory=list)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)

    @property
    def interpolated(self) -> list[int]:
        return [i for i, s in enumerate(self.slots) if s is None]

    def grid_position(self, i: int) -> float:
        return float(self.positions[0] + i * self.spacing)

    def neighbours(self, i: int) -> tuple[int, int, float]:
        """Source images (indices in ``files``) below and above grid slice ``i`` and the weight of
        the upper one, for linear interpolation at its position."""
        g = self.grid_position(i)
        hi = int(np.searchsorted(self.positions, g))
        lo = hi - 1
        w = (g - self.positions[lo]) / (self.positions[hi] - self.positions[lo])
        return lo, hi, float(w)


def name_list(items: list[str]) -> str:
    """The first few items, comma-separated, then how many more: one error line stays readable."""
    text = ", ".join(items[:_NAMED])
    return text + (f" ... and {len(items) - _NAMED} more" if len(items) > _NAMED else "")


def check_files(files: list[DicomFile]) -> None:
    """Every file must be a CT image with pixel data, single-frame or Enhanced / Legacy Converted
    Enhanced CT (A3DError naming the first that is not)."""
    for f in files:
        if f.sop_class == SEG_SOP_CLASS:
            raise A3DError(f"{f.path}: a DICOM Segmentation (SEG); a3d predict expects the CT image series itself")
        if f.sop_class.startswith(SR_SOP_CLASS_PREFIX):
            raise A3DError(f"{f.path}: a DICOM Structured Report (SR); a3d predict expects the CT image series itself")
        if f.modality and f.modality not in CT_MODALITIES:
            raise A3DError(f"{f.path}: DICOM Modality is {f.modality}; a3d predict expects CT (Modality CT)")
        if not f.has_pixels:
            raise A3DError(f"{f.path}: DICOM file without pixel data; expected CT images (one slice per file)")
        if is_multi_frame(f) and (f.sop_class not in MULTI_FRAME_CT or "SharedFunctionalGroupsSequence" not in f.ds):
            raise A3DError(f"{f.path}: multi-frame DICOM ({f.n_frames} frames) of SOP class {f.sop_class or '(none)'} "
                           "without functional groups; a3d predict reads CT Image series (one slice per file) and "
                           "Enhanced / Legacy Converted Enhanced CT")


def check_geometry_tags(images: list[DicomImage]) -> None:
    """Every image has its in-plane spacing, position and orientation (A3DError naming the first that has not)."""
    for f in images:
        for value, tag, what in ((f.pixel_spacing, "PixelSpacing", "the in-plane spacing in mm"),
                                 (f.ipp, "ImagePositionPatient", "the slice position"),
                                 (f.iop, "ImageOrientationPatient", "the slice orientation")):
            if value is None:
                where = "" if f.frame is None else f" (frame {f.frame + 1}: per-frame or shared functional groups)"
                raise A3DError(f"{f.path}: DICOM {tag} missing{where}; expected {what}")


def drop_localizers(files: list[DicomImage], series_uid: str) -> tuple[list[DicomImage], list[str]]:
    """The images without LOCALIZER in their ImageType (FrameType), and a warning naming each one dropped."""
    scouts = [f for f in files if "LOCALIZER" in f.image_type]
    kept = [f for f in files if "LOCALIZER" not in f.image_type]
    if scouts and len(kept) < 2:
        raise A3DError(f"{scouts[0].path}: series {series_uid} holds localizer (scout) images only; expected axial CT slices")
    return kept, [f"{f.path}{'' if f.frame is None else f' frame {f.frame + 1}'}: localizer (ImageType "
                  f"{'/'.join(f.image_type)}) in series {series_uid}; left out"
                  for f in scouts]


def select_acquisition(files: list[DicomImage], acquisition: int | None, series_uid: str) -> list[DicomImage]:
    if acquisition is None:
        return files
    kept = [f for f in files if f.acquisition() == acquisition]
    if not kept:
        found = sorted({f.acquisition() for f in files}, key=lambda a: (a is None, a or 0))
        raise A3DError(f"--acquisition {acquisition}: series {series_uid} has no file with AcquisitionNumber "
                       f"{acquisition}; found: {', '.join(str(a) for a in found)}")
    return kept


def _acquisitions_hint(group: list[DicomImage]) -> str:
    acq = sorted({f.acquisition() for f in group if f.acquisition() is not None})
    return f"AcquisitionNumber {', '.join(map(str, acq))}" if acq else "no AcquisitionNumber"


def _how_to_choose(groups: list[list[DicomImage]]) -> str:
    acq = [{f.acquisition() for f in g} for g in groups]
    disjoint = all(None not in a for a in acq) and sum(len(a) for a in acq) == len(set().union(*acq))
    return "choose one with --acquisition N" if disjoint else "move the other files out of the folder"


def check_one_stack(files: list[DicomImage], series_uid: str) -> None:
    """Same orientation, pixel spacing and image size in every file (A3DError describing the stacks)."""
    keys = {
        "orientation": lambda f: tuple(round(float(v), 3) + 0.0 for v in f.orientation()),
        "pixel spacing": lambda f: tuple(round(float(v), 3) for v in f.pixel_spacing),
        "image size": lambda f: (f.rows, f.columns),
    }
    for what, key in keys.items():
        groups: dict[tuple, list[DicomImage]] = {}
        for f in files:
            groups.setdefault(key(f), []).append(f)
        if len(groups) > 1:
            ordered = sorted(groups.items(), key=lambda kv: -len(kv[1]))
            parts = "; ".join(f"{len(g)} files with {what} {'/'.join(f'{v:g}' for v in k)} ({_acquisitions_hint(g)}; "
                              f"e.g. {g[0].name})" for k, g in ordered)
            raise A3DError(f"{Path(files[0].path).parent}: series {series_uid} mixes several stacks ({parts}); "
                           f"expected one stack of parallel slices (a localizer without ImageType LOCALIZER?): "
                           f"{_how_to_choose([g for _, g in ordered])}")


def check_acquisitions(files: list[DicomImage], positions: np.ndarray, series_uid: str) -> None:
    """Acquisitions whose slice ranges overlap are different scans of the same region (A3DError);
    consecutive ranges (e.g. step-and-shoot acquisitions) make one volume."""
    ranges: dict[int | None, list[float]] = {}
    for f, p in zip(files, positions):
        ranges.setdefault(f.acquisition(), []).append(float(p))
    if len(ranges) < 2:
        return
    spans = sorted((min(v), max(v), a, len(v)) for a, v in ranges.items())
    if any(nxt[0] <= cur[1] for cur, nxt in zip(spans, spans[1:])):
        parts = "; ".join(f"acquisition {a}: {n} files at {lo:.2f}..{hi:.2f} mm" for lo, hi, a, n in spans)
        raise A3DError(f"{Path(files[0].path).parent}: series {series_uid} mixes acquisitions covering the same "
                       f"positions ({parts}); choose one with --acquisition N")


def drop_duplicates(files: list[DicomImage], positions: np.ndarray, spacing_hint: float,
                    series_uid: str) -> tuple[list[DicomImage], np.ndarray, list[str]]:
    """Sorted files without second copies of one SOP instance (warned); two different images at one
    position are refused."""
    order = np.argsort(positions, kind="stable")
    files, positions = [files[i] for i in order], positions[order]
    keep, warnings = [0], []
    for i in range(1, len(files)):
        if positions[i] - positions[keep[-1]] > 1e-3 * max(spacing_hint, 1.0):
            keep.append(i)
            continue
        a, b = files[keep[-1]], files[i]
        if a.instance is not None and a.instance == b.instance:
            warnings.append(f"{b.path}: second copy of {a.name} (same SOPInstanceUID); used once")
            continue
        raise A3DError(f"{Path(a.path).parent}: series {series_uid} has two images at position {positions[i]:.2f} mm "
                       f"({a.name}, {b.name}; {_acquisitions_hint([a, b])}): several stacks mixed; "
                       f"{_how_to_choose([[a], [b]])}")
    return [files[i] for i in keep], positions[keep], warnings


def check_tilt(files: list[DicomImage], normal: np.ndarray, pixel_mm: float, series_uid: str) -> None:
    """Refuse gantry tilt: a GantryDetectorTilt other than 0, or positions drifting within the plane."""
    for f in files:
        if f.tilt is not None and abs(f.tilt) > 0.01:
            raise A3DError(f"{f.path}: DICOM GantryDetectorTilt is {f.tilt:g} degrees; a3d predict needs slices "
                           "stacked along their normal (no gantry tilt): resample the series to an untilted grid first")
    ipp = np.stack([f.position() for f in files])
    d = ipp - ipp[0]
    along = d @ normal
    drift = np.linalg.norm(d - along[:, None] * normal[None], axis=1)
    k = int(np.argmax(drift))
    if drift[k] > TILT_TOLERANCE_PX * pixel_mm:
        angle = np.degrees(np.arctan2(drift[k], abs(along[k])))
        raise A3DError(f"{files[k].path}: series {series_uid}: slice positions move {drift[k]:.2f} mm within the slice "
                       f"plane over {abs(along[k]):.1f} mm (gantry tilt of about {angle:.1f} degrees); a3d predict needs "
                       "slices stacked along their normal: resample the series to an untilted grid first")


def plan_grid(positions: np.ndarray) -> tuple[float, list[int | None], bool]:
    """(spacing, slots, regular) for sorted distinct positions: grid slice i at positions[0] + i * spacing,
    slots[i] = index of the position on it (within GRID_TOLERANCE of the spacing) or None.

    Regular: every position is on the grid whose spacing divides the whole extent into whole steps
    of about the median step; otherwise (irregular) the grid has the median step itself."""
    steps = np.diff(positions)
    median = float(np.median(steps))
    extent = float(positions[-1] - positions[0])
    n_steps = max(1, int(round(extent / median)))
    for spacing in (extent / n_steps, median):
        n = int(np.floor(extent / spacing + GRID_TOLERANCE)) + 1
        idx = np.round((positions - positions[0]) / spacing).astype(int)
        on = np.abs(positions - positions[0] - idx * spacing) <= GRID_TOLERANCE * spacing
        slots: list[int | None] = [None] * n
        for j in np.nonzero(on & (idx < n))[0]:
            slots[idx[j]] = int(j)
        regular = bool(on.all())
        if regular:
            break
    return spacing, slots, regular


def _hole_text(grid: SliceGrid, regular: bool) -> str:
    """What is missing or irregular, naming positions and files."""
    holes = grid.interpolated
    parts = []
    if not regular:
        on = {s for s in grid.slots if s is not None}
        off = [j for j in range(len(grid.files)) if j not in on]
        steps = np.diff(grid.positions)
        parts.append(f"irregular slice spacing ({steps.min():.2f}..{steps.max():.2f} mm): {len(off)} slices off the "
                     f"regular {grid.spacing:.2f} mm grid ({name_list([f'{grid.files[j].name} at {grid.positions[j]:.2f} mm' for j in off])})")
    if holes:
        where = []
        for i in holes:
            lo, hi, _ = grid.neighbours(i)
            where.append(f"{grid.grid_position(i):.2f} mm (between {grid.files[lo].name} and {grid.files[hi].name})")
        parts.append(f"{len(holes)} grid positions without an image (along the slice normal: {name_list(where)})")
    return "; ".join(parts)


def unreadable_of(unreadable: list[Unreadable], files: list[DicomImage], series_uid: str) -> list[Unreadable]:
    """The unusable files that may belong to this series: of this series, or of unknown series in a
    folder that holds this series' files."""
    folders = {str(Path(f.path).parent) for f in files}
    return [u for u in unreadable
            if u.series_uid == series_uid or (u.series_uid is None and str(Path(u.path).parent) in folders)]


def assemble_stack(files: list[DicomImage], unreadable: list[Unreadable], series_uid: str, allow_missing: bool = False,
                   acquisition: int | None = None) -> SliceGrid:
    """The checked stack of one series' images on its slice grid, with its warnings (A3DError on any
    refusal); the files must have passed :func:`check_files`.

    ``unreadable``: the input's unusable files; those that may belong to this series
    (:func:`unreadable_of`) are named, and refuse the series unless ``allow_missing``, like holes
    in the positions do."""
    check_geometry_tags(files)
    files, warnings = drop_localizers(files, series_uid)
    files = select_acquisition(files, acquisition, series_uid)
    check_one_stack(files, series_uid)
    iop = files[0].orientation()
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    positions = np.array([float(f.position() @ normal) for f in files])
    check_acquisitions(files, positions, series_uid)
    ps = list(files[0].pixel_spacing)  # (between rows, between columns)
    files, positions, dup = drop_duplicates(files, positions, min(ps), series_uid)
    warnings += dup
    if len(files) < 2:
        raise A3DError(f"{files[0].path}: series {series_uid} holds a single 2D image; expected a CT volume with several slices")
    check_tilt(files, normal, min(ps), series_uid)
    spacing, slots, regular = plan_grid(positions)
    grid = SliceGrid(files, positions, files[0].position(), row, col, (ps[1], ps[0]), spacing, slots, warnings)
    missing = unreadable_of(unreadable, files, series_uid)
    problems = []
    if missing:
        problems.append(f"{len(missing)} unreadable files ({name_list([f'{u.name}: {u.reason}' for u in missing])})")
    if grid.interpolated or not regular:
        problems.append(_hole_text(grid, regular))
    if problems and not allow_missing:
        raise A3DError(f"{Path(files[0].path).parent}: series {series_uid}: {'; '.join(problems)}; the volume would have "
                       "holes: pass --allow-missing to interpolate them (marked, never used as key slices)")
    grid.warnings += [f"{u.path}: unreadable, left out ({u.reason})" for u in missing]
    if grid.interpolated or not regular:
        grid.warnings.append(f"series {series_uid}: {_hole_text(grid, regular)}; those grid slices are interpolated "
                             f"from their neighbours (--allow-missing), never used as key slices")
    return grid
