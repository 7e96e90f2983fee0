"""From a scan to detections: model inputs built like the training data, the model run in batches.

1. :class:`ContextBuilder`: for each key slice, ``cfg.model.slices`` context slices by the dataset's
   context rule for ``cfg.model.operator`` (:func:`a3d.data.slices.context_plan`: interpolated
   ``cfg.data.context_spacing_mm`` apart, clamped at the ends; AlignShift takes the stored
   neighbours of series at least that thick), each fitted in-plane into
   the ``cfg.data.size`` input (:class:`a3d.predict.geometry.InplaneFit`), HU mapped to [-50, 205].
2. :func:`run_model`: (B, D, S, S) inputs -> the detector's outputs as numpy; the scan's slice
   interval goes in as every sample's ``thickness`` (AlignShift), the detector's one door for it;
   the forward runs at the chosen precision (:mod:`a3d.predict.precision`).
3. :func:`predict_scan`: the batch loop over the key slices (air-only ones skipped:
   :func:`air_only_slices`); boxes and masks mapped back to the canonical slice, measured, grouped
   into 3D candidates (:mod:`a3d.predict.candidates`).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from a3d.config import Config
from a3d.data.scans import Scan
from a3d.data.slices import context_plan, hu_to_input
from a3d.predict.candidates import group_candidates, suppress_duplicates, suppress_fragments
from a3d.predict.geometry import InplaneFit, canonical_to_original_slices, key_slices
from a3d.predict.measurements import NO_MEASURES, diameters
from a3d.predict.precision import precision_context, resolve_precision
from a3d.predict.results import Detection, PredictionResult, PredictSettings

log = logging.getLogger(__name__)

AIR_HU = -1024.0
# A key slice is air only when fewer than this fraction of its voxels is above BODY_HU (no patient,
# no table): nothing to detect there, so it is not run (recorded in predictions.json, logged).
BODY_HU = -500.0
AIR_ONLY_FRACTION = 1e-3


class ContextBuilder:
    """Builds (D, size, size) normalised model inputs for key slices of ``scan`` like the dataset
    does; each stored slice is fitted in-plane once (cached until :meth:`forget_before`)."""

    def __init__(self, scan: Scan, cfg: Config):
        self.scan = scan
        self.depth = cfg.model.slices
        self.size = cfg.data.size
        self.spacing_mm = cfg.data.context_spacing_mm
        self.operator = cfg.model.operator
        z, h, w = scan.hu.shape
        sx, sy, sz = scan.spacing
        self.n = z
        self.sz = sz
        self.fit = InplaneFit.create(h, w, sx, sy, self.size)
        self._cache: dict[int, np.ndarray] = {}

    def _slice(self, i: int) -> np.ndarray:
        s = self._cache.get(i)
        if s is None:
            s = self.fit.apply(self.scan.hu[i], AIR_HU)
            self._cache[i] = s
        return s

    def build(self, key: int) -> np.ndarray:
        """(D, size, size) float32 in [-50, 205] for canonical key slice ``key``."""
        plan = context_plan(key, self.sz, self.depth, 0, self.n - 1, self.spacing_mm, self.operator)
        out = np.empty((self.depth, self.size, self.size), dtype=np.float32)
        for d, (lo, hi, w) in enumerate(plan):
            a = self._slice(int(lo))
            if w > 0 and hi != lo:
                out[d] = a * (1 - w) + self._slice(int(hi)) * w
            else:
                out[d] = a
        return hu_to_input(out)

    def forget_before(self, key: int) -> None:
        """Drop cached slices that no key slice >= ``key`` reaches (key slices come in order)."""
        reach = int(math.ceil(self.depth * max(self.spacing_mm / self.sz, 1.0))) + 2
        for k in [k for k in self._cache if k < key - reach]:
            del self._cache[k]


def run_model(model: nn.Module, images: np.ndarray, thickness: float, device: str = "cpu",
              precision: str = "fp32") -> list[dict]:
    """images (B, D, S, S) normalised -> per image a dict of numpy arrays: ``boxes`` (K, 4),
    ``scores`` (K,), and ``masks`` (K, S, S) when the model has a mask branch.

    ``model`` is called as ``model(x, thickness=t)`` with x (B, 1, D, S, S) and t (B,) mm: a3d's
    detector, or any module with that forward and torchvision-style outputs. ``precision``: fp32
    (the reference), bf16, fp16 or auto (:func:`a3d.predict.precision.resolve_precision`).
    """
    dev = torch.device(device)
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).to(dev)
    th = torch.full((x.shape[0],), float(thickness), dtype=torch.float32, device=dev)
    with precision_context(model, resolve_precision(precision, device), dev.type):
        outs = model(x, thickness=th)
    res = []
    for o in outs:
        d = {"boxes": o["boxes"].float().cpu().numpy().reshape(-1, 4), "scores": o["scores"].float().cpu().numpy().reshape(-1)}
        m = o.get("masks")
        if m is not None:
            m = m.float().cpu().numpy()
            if m.ndim == 4:
                m = m[:, 0]
            d["masks"] = m
        res.append(d)
    return res


def _detection(box: np.ndarray, score: float, prob: np.ndarray | None, fit: InplaneFit, z: int, slice_: int,
               scan: Scan, mask_threshold: float) -> Detection:
    """One detection on canonical slice ``z`` from its box (slice pixels) and mask probabilities
    (model input); without a mask head the box interior is the mask."""
    sx, sy, _ = scan.spacing
    if prob is not None:
        full = fit.mask_back(prob, mask_threshold)
    else:
        full = np.zeros(scan.hu.shape[1:], dtype=bool)
        full[int(box[1]) : int(math.ceil(box[3])), int(box[0]) : int(math.ceil(box[2]))] = True
    ys, xs = np.nonzero(full)
    if len(xs):
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        crop, meas = full[y0:y1, x0:x1].copy(), diameters(full, sx, sy)
    else:
        x0 = y0 = 0
        crop, meas = None, dict(NO_MEASURES)
    return Detection(id=0, z=int(z), slice=int(slice_), score=float(score), box=box.astype(np.float64),
                     mask=crop, mask_origin=(int(x0), int(y0)), measures=meas)


def _slice_detections(out: dict, z: int, slice_: int, fit: InplaneFit, scan: Scan,
                      settings: PredictSettings) -> list[Detection]:
    """The model's output for key slice ``z`` -> its detections above the score threshold."""
    keep = out["scores"] >= settings.score_threshold
    boxes = fit.boxes_back(out["boxes"][keep])
    scores = out["scores"][keep]
    masks = out.get("masks")
    masks = masks[keep] if masks is not None else None
    dets = []
    for n in range(len(scores)):
        b = boxes[n]
        if b[2] - b[0] <= 0 or b[3] - b[1] <= 0:
            continue
        prob = masks[n] if masks is not None else None
        dets.append(_detection(b, scores[n], prob, fit, z, slice_, scan, settings.mask_threshold))
    return dets


def air_only_slices(scan: Scan, keys: list[int]) -> list[int]:
    """The key slices of ``keys`` with fewer than AIR_ONLY_FRACTION of their voxels above BODY_HU."""
    return [k for k in keys if np.count_nonzero(scan.hu[k] > BODY_HU) < AIR_ONLY_FRACTION * scan.hu[k].size]


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 7, 9, 10] -> "0-2, 7, 9-10"."""
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def _run_keys(scan: Scan, settings: PredictSettings) -> tuple[list[int], list[int]]:
    """(key slices to run, key slices skipped as air only), canonical indices."""
    keys = key_slices(scan, settings.slices)
    skipped = air_only_slices(scan, keys) if settings.skip_air else []
    if skipped:
        orig = canonical_to_original_slices(scan)
        log.warning("%s: %d key slice(s) hold only air (< %g%% of voxels above %g HU), not run: slices %s",
                    scan.source, len(skipped), 100 * AIR_ONLY_FRACTION, BODY_HU, _ranges(sorted(int(orig[k]) for k in skipped)))
    gone = set(skipped)
    return [k for k in keys if k not in gone], skipped


def predict_scan(scan: Scan, model: nn.Module, cfg: Config, settings: PredictSettings,
                 progress: Callable[[int, int], None] | None = None, checkpoint: str | None = None) -> PredictionResult:
    """Run ``model`` (built for ``cfg``) over the key slices of ``scan``: detections above the score
    threshold, measured, grouped into 3D candidates. ``progress(done, total)`` after each batch;
    ``checkpoint``: where the weights came from, recorded in the result. The result's ``timing``
    holds the seconds in the model and in the rest of this function."""
    t0 = time.perf_counter()
    precision = resolve_precision(settings.precision, settings.device)
    keys, skipped = _run_keys(scan, settings)
    orig = canonical_to_original_slices(scan)
    builder = ContextBuilder(scan, cfg)
    dets: list[Detection] = []
    bs = max(1, int(settings.batch_size))
    t_model = 0.0
    for start in range(0, len(keys), bs):
        batch = keys[start : start + bs]
        builder.forget_before(min(batch))
        images = np.stack([builder.build(k) for k in batch])
        t1 = time.perf_counter()
        outs = run_model(model, images, scan.spacing[2], settings.device, precision)
        t_model += time.perf_counter() - t1
        for k, o in zip(batch, outs):
            dets += _slice_detections(o, k, orig[k], builder.fit, scan, settings)
        if progress:
            progress(min(start + bs, len(keys)), len(keys))
    dets = suppress_duplicates(dets)  # near-duplicates on one slice would chain lesions together
    dets = suppress_fragments(dets, set(keys), settings.link_iou, scan)  # partial tracks inside a better one
    dets.sort(key=lambda d: (d.z, -d.score))
    for i, d in enumerate(dets, 1):
        d.id = i
    cands = group_candidates(dets, set(keys), settings.link_iou, scan)
    seconds = time.perf_counter() - t0
    timing = {"model": t_model, "processing": seconds - t_model}
    return PredictionResult(scan, cfg, settings, dets, cands, keys, seconds, checkpoint, precision, skipped, timing)
