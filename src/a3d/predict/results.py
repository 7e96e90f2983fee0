"""The types prediction passes along: settings in, detections and 3D candidates out.

- :class:`PredictSettings`: what the user chose (thresholds, batch, device, precision, key-slice range,
  air-only slices, window).
- :class:`Detection`: one box (+ mask, measurements) on one canonical slice.
- :class:`Candidate`: detections on adjacent slices grouped into one lesion, with its ``info``.
- :class:`PredictionResult`: everything one scan produced, what the writers take.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from a3d.config import Config
from a3d.data.scans import Scan
from a3d.predict.geometry import canonical_to_original_slices


@dataclass(frozen=True)
class PredictSettings:
    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    link_iou: float = 0.3
    batch_size: int = 4
    device: str = "cpu"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (a3d.predict.precision.resolve_precision)
    slices: tuple[int | None, int | None] | None = None  # original slice indices [start, stop); None: all
    skip_air: bool = True  # key slices with (almost) no voxel above -500 HU are not run (recorded, logged)
    window: tuple[float, float] = (400.0, 40.0)  # width, level (HU) for overlays


@dataclass
class Detection:
    id: int
    z: int  # canonical slice index
    slice: int  # slice index in the input file's grid
    score: float
    box: np.ndarray  # (4,) canonical slice pixels, x1 y1 x2 y2 (pixel-edge coordinates)
    mask: np.ndarray | None  # bool crop (h, w) of the slice at mask_origin; None: empty mask
    mask_origin: tuple[int, int] = (0, 0)  # (x0, y0) of the crop in the slice
    measures: dict = field(default_factory=dict)  # a3d.predict.measurements.diameters
    candidate: int = 0  # id of its Candidate (set by grouping)

    def full_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The mask on the whole (H, W) slice."""
        out = np.zeros(shape, dtype=bool)
        if self.mask is not None:
            x0, y0 = self.mask_origin
            h, w = self.mask.shape
            out[y0 : y0 + h, x0 : x0 + w] = self.mask
        return out


@dataclass
class Candidate:
    id: int
    detections: list[Detection]  # sorted by (z, -score)
    info: dict = field(default_factory=dict)  # a3d.predict.candidates.candidate_info


@dataclass
class PredictionResult:
    scan: Scan
    cfg: Config  # the model's training config (context slices, input size, context spacing)
    settings: PredictSettings
    detections: list[Detection]
    candidates: list[Candidate]
    processed: list[int]  # canonical slices used as key slices
    seconds: float = 0.0
    checkpoint: str | None = None  # absolute path of the weights, when they came from a file
    precision: str = "fp32"  # the precision the model ran in (settings.precision resolved)
    skipped: list[int] = field(default_factory=list)  # canonical key slices skipped as air only
    # seconds: "read" (scan), "model" (forward passes), "processing" (inputs, post-processing,
    # grouping), "write" (outputs); filled as the steps run (None: not measured)
    timing: dict = field(default_factory=dict)

    @property
    def slice_of_canonical(self) -> np.ndarray:
        return canonical_to_original_slices(self.scan)
