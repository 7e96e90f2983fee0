"""Whole-scan inference: ``a3d predict``.

Pipeline (docs/predict.md has the user-facing description):

1. read the scan (:mod:`a3d.data.scans`): HU, canonical LPS orientation, geometry;
2. for every key slice, build the model input like the dataset does: ``depth`` context slices at
   2 mm along z (linear interpolation between stored slices, clamped at the ends), HU normalised to
   [-50, 205]; in-plane, the slice's field of view is fitted into the model's ``size x size`` input
   with square pixels (pixel size ``max(W * sx, H * sy) / size``), centred, padded with air;
3. run the detector (eval mode, torchvision-style outputs) in batches of key slices;
4. map boxes and masks back to the canonical slice grid, then to millimetres, patient (LPS)
   coordinates and the input file's voxel indices; measure long/short diameters on the masks;
5. link overlapping detections on adjacent slices into 3D lesion candidates.

Everything here works on arrays and SimpleITK images; writers live in
:mod:`a3d.engine.predict_outputs`.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from a3d.data.scans import Scan
from a3d.data.slices import hu_to_input, interpolation_plan
from a3d.errors import A3DError

log = logging.getLogger(__name__)

AIR_HU = -1024.0
TARGET_SLICE_MM = 2.0


# --------------------------------------------------------------------------------------------
# settings and model description


@dataclass
class ModelSpec:
    """What inference needs to know about the model (from the checkpoint's config)."""

    depth: int = 3  # number of context slices D
    size: int = 512  # input is size x size
    slice_mm: float = TARGET_SLICE_MM
    operator: str = ""
    name: str = ""


@dataclass
class PredictSettings:
    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    link_iou: float = 0.3
    batch_size: int = 4
    device: str = "cpu"
    amp: bool = False
    slices: tuple[int, int] | None = None  # original slice indices [start, stop)
    window: tuple[float, float] = (400.0, 40.0)  # width, level (HU) for overlays


def _get(cfg: Any, *path: str, default=None):
    cur = cfg
    for p in path:
        if cur is None:
            return default
        if isinstance(cur, dict):
            cur = cur.get(p)
        else:
            cur = getattr(cur, p, None)
    return default if cur is None else cur


def model_spec(config: Any) -> ModelSpec:
    """ModelSpec from the training config stored in a checkpoint (dict or dataclass)."""
    depth = None
    for path in (("model", "slices"), ("data", "slices"), ("model", "depth"), ("slices",), ("depth",)):
        depth = _get(config, *path)
        if depth is not None:
            break
    size = None
    for path in (("data", "size"), ("data", "image_size"), ("model", "image_size"), ("model", "size"), ("image_size",), ("size",)):
        size = _get(config, *path)
        if size is not None:
            break
    if isinstance(size, (list, tuple)):
        size = max(int(v) for v in size)
    operator = _get(config, "model", "operator", default="") or _get(config, "operator", default="")
    name = _get(config, "name", default="") or _get(config, "model", "name", default="")
    if depth is None:
        raise A3DError("checkpoint config: no number of context slices (model.slices); expected an a3d training config")
    try:
        depth = int(depth)
        size = int(size) if size is not None else 512
    except (TypeError, ValueError) as e:
        raise A3DError(f"checkpoint config: model.slices={depth!r}, data.size={size!r}; expected integers") from e
    if depth < 1 or depth % 2 == 0:
        raise A3DError(f"checkpoint config: model.slices={depth}; expected an odd number of context slices")
    if size < 16:
        raise A3DError(f"checkpoint config: image size {size}; expected at least 16 pixels")
    return ModelSpec(depth=depth, size=size, operator=str(operator), name=str(name))


# --------------------------------------------------------------------------------------------
# in-plane fit


@dataclass(frozen=True)
class InplaneFit:
    """Maps a canonical slice (H x W, spacing sx, sy) into the model's size x size input."""

    size: int
    height: int
    width: int
    fx: float  # resized width / width
    fy: float
    ox: int  # left padding in model pixels
    oy: int
    resized: tuple[int, int]  # (Wr, Hr)
    pixel_mm: float  # model pixel size

    @classmethod
    def create(cls, height: int, width: int, sx: float, sy: float, size: int) -> "InplaneFit":
        t = max(width * sx, height * sy) / size
        wr = max(1, min(size, int(round(width * sx / t))))
        hr = max(1, min(size, int(round(height * sy / t))))
        return cls(size, height, width, wr / width, hr / height, (size - wr) // 2, (size - hr) // 2, (wr, hr), t)

    def apply(self, slice2d: np.ndarray, fill: float) -> np.ndarray:
        import cv2

        wr, hr = self.resized
        out = np.full((self.size, self.size), fill, dtype=np.float32)
        if (wr, hr) == (self.width, self.height):
            r = slice2d.astype(np.float32, copy=False)
        else:
            r = cv2.resize(slice2d.astype(np.float32, copy=False), (wr, hr), interpolation=cv2.INTER_LINEAR)
        out[self.oy : self.oy + hr, self.ox : self.ox + wr] = r
        return out

    def boxes_back(self, boxes: np.ndarray) -> np.ndarray:
        """Model-input boxes (x1 y1 x2 y2, pixel-edge coordinates) -> canonical slice pixels."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        b[:, [0, 2]] = (b[:, [0, 2]] - self.ox) / self.fx
        b[:, [1, 3]] = (b[:, [1, 3]] - self.oy) / self.fy
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, self.width)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, self.height)
        return b

    def mask_back(self, prob: np.ndarray, threshold: float) -> np.ndarray:
        """Model-input mask probabilities (size x size) -> boolean mask on the canonical slice."""
        import cv2

        wr, hr = self.resized
        crop = np.ascontiguousarray(prob[self.oy : self.oy + hr, self.ox : self.ox + wr], dtype=np.float32)
        if (wr, hr) != (self.width, self.height):
            crop = cv2.resize(crop, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        return crop > threshold


# --------------------------------------------------------------------------------------------
# model input


class ContextBuilder:
    """Builds (D, size, size) normalised inputs for key slices like the dataset does: neighbour
    slices 2 mm apart blended in HU (:func:`a3d.data.slices.interpolation_plan`), then mapped to
    [-50, 205] (:func:`a3d.data.slices.hu_to_input`). Each stored slice is fitted in-plane once."""

    def __init__(self, scan: Scan, spec: ModelSpec):
        self.scan = scan
        self.spec = spec
        z, h, w = scan.hu.shape
        sx, sy, sz = scan.spacing
        self.n = z
        self.sz = sz
        self.fit = InplaneFit.create(h, w, sx, sy, spec.size)
        self._cache: dict[int, np.ndarray] = {}

    def _slice(self, i: int) -> np.ndarray:
        s = self._cache.get(i)
        if s is None:
            s = self.fit.apply(self.scan.hu[i], AIR_HU)
            self._cache[i] = s
        return s

    def build(self, key: int) -> np.ndarray:
        plan = interpolation_plan(key, self.sz, self.spec.depth, 0, self.n - 1)
        out = np.empty((self.spec.depth, self.spec.size, self.spec.size), dtype=np.float32)
        for d, (lo, hi, w) in enumerate(plan):
            a = self._slice(int(lo))
            if w > 0 and hi != lo:
                out[d] = a * (1 - w) + self._slice(int(hi)) * w
            else:
                out[d] = a
        return hu_to_input(out)

    def forget_below(self, index: int) -> None:
        for k in [k for k in self._cache if k < index]:
            del self._cache[k]


# --------------------------------------------------------------------------------------------
# running the model


def _forward_fn(model) -> Callable:
    """How to pass the per-sample slice thickness (AlignShift) to this model: as an argument when its
    forward takes one (the a3d detector), else stored on its AlignShift layers."""
    from a3d.ops import set_thickness

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        params = {}
    if "thickness" in params:
        return lambda images, thickness: model(images, thickness=thickness)

    def call(images, thickness):
        set_thickness(model, thickness)
        return model(images)

    return call


def run_model(model, images: np.ndarray, thickness: float, device: str = "cpu", amp: bool = False) -> list[dict]:
    """images (B, D, S, S) normalised -> list of dicts of numpy arrays (boxes, scores, masks)."""
    import torch

    dev = torch.device(device)
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).to(dev)
    th = torch.full((x.shape[0],), float(thickness), dtype=torch.float32, device=dev)
    fwd = _forward_fn(model)
    with torch.inference_mode():
        if amp:
            dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
            with torch.autocast(device_type=dev.type, dtype=dtype):
                outs = fwd(x, th)
        else:
            outs = fwd(x, th)
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


# --------------------------------------------------------------------------------------------
# measurements


def _hull_points_mm(mask: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Convex hull (in mm) of the mask's pixel squares."""
    import cv2

    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros((0, 2))
    corners = np.concatenate(
        [np.stack([xs + dx, ys + dy], axis=1) for dx in (0, 1) for dy in (0, 1)], axis=0
    ).astype(np.float32)
    hull = cv2.convexHull(corners).reshape(-1, 2).astype(np.float64)
    hull[:, 0] *= sx
    hull[:, 1] *= sy
    return hull


def diameters(mask: np.ndarray, sx: float, sy: float) -> dict:
    """RECIST-like measurements of a 2D mask, in mm.

    long: maximum Feret diameter of the mask (pixel squares' convex hull);
    short: the longest chord perpendicular to the long axis (mask pixels binned by their position
    along the long axis, extent across it per bin, pixel squares counted whole).
    Returns long_mm, short_mm, long_axis (two end points, pixel coordinates), area_mm2.
    """
    area = float(mask.sum()) * sx * sy
    hull = _hull_points_mm(mask, sx, sy)
    if len(hull) < 2:
        return {"long_mm": 0.0, "short_mm": 0.0, "long_axis_px": None, "area_mm2": area}
    d = np.linalg.norm(hull[:, None] - hull[None], axis=-1)
    i, j = np.unravel_index(np.argmax(d), d.shape)
    long_mm = float(d[i, j])
    u = (hull[j] - hull[i]) / max(long_mm, 1e-9)
    v = np.array([-u[1], u[0]])
    ys, xs = np.nonzero(mask)
    # pixel squares as their 4 corners, in mm
    cx = (xs[:, None] + np.array([0, 1, 0, 1])[None]) * sx
    cy = (ys[:, None] + np.array([0, 0, 1, 1])[None]) * sy
    a_c = (xs + 0.5) * sx * u[0] + (ys + 0.5) * sy * u[1]
    b = cx * v[0] + cy * v[1]
    step = min(sx, sy)
    bins = np.floor((a_c - a_c.min()) / step).astype(np.int64)
    bmin = np.full(bins.max() + 1, np.inf)
    bmax = np.full(bins.max() + 1, -np.inf)
    np.minimum.at(bmin, bins, b.min(axis=1))
    np.maximum.at(bmax, bins, b.max(axis=1))
    ok = np.isfinite(bmin)
    short_mm = float((bmax[ok] - bmin[ok]).max()) if ok.any() else 0.0
    short_mm = min(short_mm, long_mm)
    p1 = (hull[i, 0] / sx, hull[i, 1] / sy)
    p2 = (hull[j, 0] / sx, hull[j, 1] / sy)
    return {"long_mm": long_mm, "short_mm": short_mm, "long_axis_px": [float(p1[0]), float(p1[1]), float(p2[0]), float(p2[1])], "area_mm2": area}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    aa = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    ab = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = aa[:, None] + ab[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def box_iomin(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box's area."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    aa = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    ab = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    small = np.minimum(aa[:, None], ab[None])
    return np.where(small > 0, ix * iy / np.maximum(small, 1e-12), 0.0)


# --------------------------------------------------------------------------------------------
# results


@dataclass
class Detection:
    id: int
    z: int  # canonical slice index
    slice: int  # slice index in the input file's grid
    score: float
    box: np.ndarray  # canonical slice pixels, x1 y1 x2 y2 (pixel-edge coordinates)
    mask: np.ndarray | None  # bool (y2-y1, x2-x1) crop at (mask_y0, mask_x0)
    mask_origin: tuple[int, int] = (0, 0)  # (x0, y0) of the crop in the slice
    measures: dict = field(default_factory=dict)
    candidate: int = 0

    def full_mask(self, shape: tuple[int, int]) -> np.ndarray:
        out = np.zeros(shape, dtype=bool)
        if self.mask is not None:
            x0, y0 = self.mask_origin
            h, w = self.mask.shape
            out[y0 : y0 + h, x0 : x0 + w] = self.mask
        return out


@dataclass
class Candidate:
    id: int
    detections: list[Detection]
    info: dict = field(default_factory=dict)


@dataclass
class PredictionResult:
    scan: Scan
    spec: ModelSpec
    settings: PredictSettings
    detections: list[Detection]
    candidates: list[Candidate]
    processed: list[int]  # canonical slices used as key slices
    seconds: float = 0.0
    model_info: dict = field(default_factory=dict)

    @property
    def slice_of_canonical(self) -> np.ndarray:
        return canonical_to_original_slices(self.scan)


def canonical_to_original_slices(scan: Scan) -> np.ndarray:
    """Index along the input's slice axis for each canonical slice."""
    n = scan.hu.shape[0]
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    a, b = scan.original_slice_index(0), scan.original_slice_index(n - 1)
    if abs(a - b) == n - 1:
        return np.linspace(a, b, n).round().astype(np.int64)
    return np.array([scan.original_slice_index(z) for z in range(n)], dtype=np.int64)


def key_slices(scan: Scan, slices: tuple[int, int] | None) -> list[int]:
    """Canonical key slices for an [start, stop) range of original slice indices (None: all)."""
    orig = canonical_to_original_slices(scan)
    n = len(orig)
    if slices is None:
        return list(range(n))
    start, stop = slices
    lo = 0 if start is None else start
    hi = n if stop is None else stop
    if lo < 0 or lo >= n or hi <= lo or hi > n:
        what = f"--slice {lo}" if hi == lo + 1 else f"--slices {lo}:{hi}"
        raise A3DError(f"{scan.source}: {what} out of range; the scan has slices 0..{n - 1}")
    return sorted(int(z) for z in np.nonzero((orig >= lo) & (orig < hi))[0])


def predict_scan(
    scan: Scan,
    model,
    spec: ModelSpec,
    settings: PredictSettings,
    progress: Callable[[int, int], None] | None = None,
) -> PredictionResult:
    """Run ``model`` over the key slices of ``scan``; detections above the score threshold, with
    measurements, grouped into 3D candidates."""
    t0 = time.perf_counter()
    keys = key_slices(scan, settings.slices)
    orig = canonical_to_original_slices(scan)
    builder = ContextBuilder(scan, spec)
    fit = builder.fit
    sx, sy, sz = scan.spacing
    h, w = scan.hu.shape[1:]
    dets: list[Detection] = []
    bs = max(1, int(settings.batch_size))
    for start in range(0, len(keys), bs):
        batch = keys[start : start + bs]
        builder.forget_below(min(batch) - int(math.ceil(spec.depth * spec.slice_mm / sz)) - 2)
        images = np.stack([builder.build(k) for k in batch])
        outs = run_model(model, images, sz, settings.device, settings.amp)
        for k, o in zip(batch, outs):
            keep = o["scores"] >= settings.score_threshold
            boxes = fit.boxes_back(o["boxes"][keep])
            scores = o["scores"][keep]
            masks = o.get("masks")
            masks = masks[keep] if masks is not None else None
            for n in range(len(scores)):
                b = boxes[n]
                if b[2] - b[0] <= 0 or b[3] - b[1] <= 0:
                    continue
                if masks is not None:
                    full = fit.mask_back(masks[n], settings.mask_threshold)
                else:  # no mask head: the box interior
                    full = np.zeros((h, w), dtype=bool)
                    full[int(b[1]) : int(math.ceil(b[3])), int(b[0]) : int(math.ceil(b[2]))] = True
                ys, xs = np.nonzero(full)
                if len(xs):
                    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
                    crop = full[y0:y1, x0:x1].copy()
                else:
                    x0 = y0 = 0
                    crop = None
                meas = diameters(full, sx, sy) if crop is not None else {"long_mm": 0.0, "short_mm": 0.0, "long_axis_px": None, "area_mm2": 0.0}
                dets.append(
                    Detection(
                        id=0, z=int(k), slice=int(orig[k]), score=float(scores[n]), box=b.astype(np.float64),
                        mask=crop, mask_origin=(int(x0), int(y0)), measures=meas,
                    )
                )
        if progress:
            progress(min(start + bs, len(keys)), len(keys))
    dets.sort(key=lambda d: (d.z, -d.score))
    for i, d in enumerate(dets, 1):
        d.id = i
    cands = group_candidates(dets, set(keys), settings.link_iou, scan)
    return PredictionResult(scan, spec, settings, dets, cands, keys, time.perf_counter() - t0)


def group_candidates(dets: list[Detection], processed: set[int], link_iou: float, scan: Scan) -> list[Candidate]:
    """Union detections on adjacent processed slices whose boxes overlap: IoU > link_iou, or the
    smaller box at least half covered by the other (a lesion's tip is smaller than its middle)."""
    parent = list(range(len(dets)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_z: dict[int, list[int]] = {}
    for i, d in enumerate(dets):
        by_z.setdefault(d.z, []).append(i)
    for z, idx in by_z.items():
        nxt = by_z.get(z + 1)
        if not nxt or (z + 1) not in processed:
            continue
        ba = np.stack([dets[i].box for i in idx])
        bb = np.stack([dets[j].box for j in nxt])
        link = (box_iou(ba, bb) > link_iou) | (box_iomin(ba, bb) >= 0.5)
        for a, b in zip(*np.nonzero(link)):
            ra, rb = find(idx[a]), find(nxt[b])
            if ra != rb:
                parent[rb] = ra
    groups: dict[int, list[Detection]] = {}
    for i, d in enumerate(dets):
        groups.setdefault(find(i), []).append(d)
    cands = [Candidate(0, sorted(g, key=lambda d: (d.z, -d.score))) for g in groups.values()]
    cands.sort(key=lambda c: -max(d.score for d in c.detections))
    sx, sy, sz = scan.spacing
    for cid, c in enumerate(cands, 1):
        c.id = cid
        for d in c.detections:
            d.candidate = cid
        c.info = _candidate_info(c, scan)
    return cands


def _candidate_info(c: Candidate, scan: Scan) -> dict:
    sx, sy, sz = scan.spacing
    zs = sorted({d.z for d in c.detections})
    best = max(c.detections, key=lambda d: d.score)
    largest = max(c.detections, key=lambda d: d.measures.get("long_mm", 0.0))
    # volume: per slice, the union of the candidate's masks on that slice
    area_per_z: dict[int, float] = {}
    for z in zs:
        ds = [d for d in c.detections if d.z == z]
        if len(ds) == 1:
            area_per_z[z] = ds[0].measures.get("area_mm2", 0.0)
        else:
            m = np.zeros(scan.hu.shape[1:], dtype=bool)
            for d in ds:
                m |= d.full_mask(m.shape)
            area_per_z[z] = float(m.sum()) * sx * sy
    volume = sum(area_per_z.values()) * sz
    # mask-weighted centroid in canonical voxels
    tot = 0.0
    acc = np.zeros(3)
    for d in c.detections:
        if d.mask is None:
            continue
        ys, xs = np.nonzero(d.mask)
        n = len(xs)
        acc += [xs.sum() + n * (d.mask_origin[0]), ys.sum() + n * d.mask_origin[1], n * d.z]
        tot += n
    if tot > 0:
        cx, cy, cz = acc / tot
    else:
        b = best.box
        cx, cy, cz = (b[0] + b[2]) / 2 - 0.5, (b[1] + b[3]) / 2 - 0.5, best.z
    x1 = min(d.box[0] for d in c.detections)
    y1 = min(d.box[1] for d in c.detections)
    x2 = max(d.box[2] for d in c.detections)
    y2 = max(d.box[3] for d in c.detections)
    corners = [scan.physical_point(x - 0.5, y - 0.5, z) for x, y, z in ((x1, y1, zs[0] - 0.5), (x2, y2, zs[-1] + 0.5))]
    lo = np.minimum(corners[0], corners[1])
    hi = np.maximum(corners[0], corners[1])
    return {
        "key_detection": best.id,
        "key_slice": best.slice,
        "key_canonical_slice": best.z,
        "max_score": float(best.score),
        "mean_score": float(np.mean([d.score for d in c.detections])),
        "n_detections": len(c.detections),
        "n_slices": len(zs),
        "canonical_slices": [int(zs[0]), int(zs[-1])],
        "slices": sorted({int(d.slice) for d in c.detections}),
        "z_extent_mm": float(len(zs) * sz),
        "volume_mm3": float(volume),
        "volume_ml": float(volume / 1000.0),
        "long_axis_mm": float(largest.measures.get("long_mm", 0.0)),
        "short_axis_mm": float(largest.measures.get("short_mm", 0.0)),
        "measured_on_slice": int(largest.slice),
        "centroid_lps": [float(v) for v in scan.physical_point(cx, cy, cz)],
        "centroid_canonical_index": [float(cx), float(cy), float(cz)],
        "bbox_lps_min": [float(v) for v in lo],
        "bbox_lps_max": [float(v) for v in hi],
    }


def detection_record(d: Detection, scan: Scan) -> dict:
    """JSON-ready description of one detection."""
    sx, sy, sz = scan.spacing
    x1, y1, x2, y2 = (float(v) for v in d.box)
    # pixel-edge coordinates -> ITK continuous index (voxel centres at integers): minus 0.5
    c1 = scan.physical_point(x1 - 0.5, y1 - 0.5, d.z)
    c2 = scan.physical_point(x2 - 0.5, y2 - 0.5, d.z)
    centre = scan.physical_point((x1 + x2) / 2 - 0.5, (y1 + y2) / 2 - 0.5, d.z)
    o1 = np.array(scan.original_index(c1))
    o2 = np.array(scan.original_index(c2))
    oc = scan.original_index(centre)
    m = d.measures
    return {
        "id": d.id,
        "candidate": d.candidate,
        "slice": d.slice,
        "canonical_slice": d.z,
        "score": d.score,
        "box_px": [x1, y1, x2, y2],
        "box_mm": [x1 * sx, y1 * sy, x2 * sx, y2 * sy],
        "width_mm": (x2 - x1) * sx,
        "height_mm": (y2 - y1) * sy,
        "box_lps": [[float(v) for v in c1], [float(v) for v in c2]],
        "center_lps": [float(v) for v in centre],
        "center_original_index": [float(v) for v in oc],
        "box_original_index_min": [float(v) for v in np.minimum(o1, o2)],
        "box_original_index_max": [float(v) for v in np.maximum(o1, o2)],
        "long_axis_mm": float(m.get("long_mm", 0.0)),
        "short_axis_mm": float(m.get("short_mm", 0.0)),
        "long_axis_px": m.get("long_axis_px"),
        "mask_area_mm2": float(m.get("area_mm2", 0.0)),
        "mask_pixels": int(d.mask.sum()) if d.mask is not None else 0,
        "mask_outline_px": _outline(d),
        "slice_file": _slice_file(scan, d.slice),
    }


def _outline(d: Detection) -> list[list[int]]:
    """Outer boundary of the mask's largest component: [x, y] pixel indices (canonical slice)."""
    import cv2

    if d.mask is None or not d.mask.any():
        return []
    contours, _ = cv2.findContours(d.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    c = max(contours, key=cv2.contourArea).reshape(-1, 2)
    x0, y0 = d.mask_origin
    return [[int(x) + x0, int(y) + y0] for x, y in c]


def _slice_file(scan: Scan, index: int) -> str | None:
    """DICOM/PNG inputs: the file holding this slice (original order), else None."""
    files = scan.slice_files
    if files and 0 <= index < len(files):
        import os

        return os.path.basename(files[index])
    return None


# --------------------------------------------------------------------------------------------
# model loading


def load_predictor(checkpoint: str, device: str = "cpu"):
    """(model in eval mode, ModelSpec, info dict) from an ``a3d train`` checkpoint."""
    import os

    if not os.path.isfile(checkpoint):
        raise A3DError(f"{checkpoint}: checkpoint file not found")
    try:
        from a3d.engine.evaluate import load_model
    except ImportError as e:
        raise A3DError(f"{checkpoint}: cannot load checkpoints: the detector engine (a3d.engine.evaluate.load_model) is not installed ({e})") from e
    try:
        model, config = load_model(checkpoint, device)
    except A3DError:
        raise
    except Exception as e:  # pickle/unpickling errors, state-dict mismatches, zip errors
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise A3DError(f"{checkpoint}: not a compatible a3d checkpoint ({type(e).__name__}: {msg[:160]})") from e
    spec = model_spec(config)
    model.eval()
    info = {"checkpoint": os.path.abspath(checkpoint), "slices": spec.depth, "image_size": spec.size, "operator": spec.operator, "name": spec.name}
    return model, spec, info
