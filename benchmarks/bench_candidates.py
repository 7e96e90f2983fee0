"""Benchmark: do the 3D candidates of `a3d predict` count lesions? Before (the former grouping) and after
(per-slice suppression + one-to-one linking, measured on the key slice), on synthetic labelled volumes
with known lesions, scored with the LUNA16 protocol of `a3d eval3d`.

    python benchmarks/bench_candidates.py --checkpoint /tmp/viewer_demo/run/best.pt [--cases 24] [--seed 7]
                                          [--out benchmarks/results/candidates.md]

The checkpoint is a trained detector (`a3d demo --out DIR --minutes 4` gives DIR/run/best.pt; it is
not part of the repository). `a3d data synth-nifti` writes the volumes and their label maps (1 lesion,
2 vessel); the true lesions are the label's 26-connected components as `a3d data import` finds them,
as LUNA16 findings (world centre, diameter: the importer's rule), vessels as excluded findings. The
model runs once per volume at score 0.05 (detections kept raw); both groupings then see the same
detections, at score >= 0.05 and >= 0.5. Per setting: CPM (a3d.evaluation.froc3d, what `a3d eval3d`
runs), true lesions split into several candidates, candidates covering two or more true lesions (a
candidate covers a lesion when its masks hold at least 10 % of the lesion's voxels), and the median
absolute error of the long axis (the highest-scoring candidate covering each lesion, against the
same measurement, a3d.predict.diameters, on the true mask's largest cross-section).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import SimpleITK as sitk

from a3d.boxes import box_iomin, box_iou
from a3d.data.importer.lesions import find_lesions
from a3d.data.importer.series import finding
from a3d.data.scans import read_scan
from a3d.data.synth.nifti import generate_nifti
from a3d.evaluation import Candidates, Findings, froc3d
from a3d.io import write_text_atomic
from a3d.predict import (PredictSettings, diameters, load_predictor, predict_scan, suppress_duplicates,
                         suppress_fragments)
from a3d.predict import inference
from a3d.predict.candidates import candidate_info, group_candidates
from a3d.predict.geometry import interpolated_canonical
from a3d.predict.results import Candidate, Detection, PredictionResult

COVER = 0.1  # a candidate covers a lesion holding at least this fraction of its voxels
LINK_IOU = 0.3


def _before_groups(dets, processed: set[int], skipped: set[int]) -> list[list]:
    """The former grouping (a3d before issue 20), kept here only to measure against: union-find over
    "overlaps a box on the next processed slice" (IoU > 0.3 or intersection over the smaller >= 0.5)."""
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
        zn = z + 1
        while zn in skipped:
            zn += 1
        nxt = by_z.get(zn)
        if not nxt or zn not in processed:
            continue
        ba, bb = np.stack([dets[i].box for i in idx]), np.stack([dets[j].box for j in nxt])
        for a, b in zip(*np.nonzero((box_iou(ba, bb) > LINK_IOU) | (box_iomin(ba, bb) >= 0.5))):
            ra, rb = find(idx[a]), find(nxt[b])
            if ra != rb:
                parent[rb] = ra
    groups: dict[int, list] = {}
    for i, d in enumerate(dets):
        groups.setdefault(find(i), []).append(d)
    return list(groups.values())


def _candidates(dets, res, after: bool, lesion_id: np.ndarray) -> list[dict]:
    """[{centre (world mm), score, long (mm), overlap ((L + 1,) voxels in each true lesion, 0: none)}]
    of one grouping; ``lesion_id``: (z, y, x) true lesion number + 1 per voxel, 0 elsewhere."""
    scan, processed = res.scan, set(res.processed)
    dets = copy.deepcopy(dets)
    if after:
        dets = suppress_fragments(suppress_duplicates(dets), processed, LINK_IOU, scan)
        for i, d in enumerate(dets, 1):
            d.id = i
        cands = group_candidates(dets, processed, LINK_IOU, scan)
        longs = [c.info["long_axis_mm"] for c in cands]
    else:
        cands = [Candidate(0, sorted(g, key=lambda d: (d.z, -d.score)))
                 for g in _before_groups(dets, processed, interpolated_canonical(scan))]
        for c in cands:
            c.info = candidate_info(c, scan)  # its centroid and max score are the former ones
        longs = [max(d.measures.get("long_mm", 0.0) for d in c.detections) for c in cands]  # the former rule
    n = int(lesion_id.max()) + 1
    out = []
    for c, long in zip(cands, longs):
        union: dict[int, np.ndarray] = {}
        for d in c.detections:
            m = d.full_mask(lesion_id.shape[1:])
            union[d.z] = union[d.z] | m if d.z in union else m
        overlap = sum(np.bincount(lesion_id[z][m], minlength=n) for z, m in union.items())
        out.append({"centre": c.info["centroid_lps"], "score": c.info["max_score"], "long": long, "overlap": overlap})
    return out


def _truth(label_path: Path):
    """(lesion findings, vessel findings, lesion number + 1 per voxel, true long axes mm) of one volume."""

    lab = read_scan(label_path)
    values = np.rint(lab.hu).astype(np.int64)
    lesions = find_lesions(values, [1], lab.spacing)
    vessels = find_lesions(values, [2], lab.spacing)
    cc = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray((values == 1).astype(np.uint8)), True))
    lesion_id = np.zeros(values.shape, np.int64)
    for k, les in enumerate(lesions, 1):
        ys, xs = np.nonzero(les.mask)
        lesion_id[cc == cc[les.key, ys[0], xs[0]]] = k
    longs = [diameters(les.mask, lab.spacing[0], lab.spacing[1])["long_mm"] for les in lesions]
    return [finding(les, lab) for les in lesions], [finding(v, lab) for v in vessels], lesion_id, longs


def _score(cases: list[dict], after: bool, threshold: float) -> dict:
    ann, exc, cand = ([], [], [])
    split = merged = 0
    errors = []
    for case in cases:
        uid = case["uid"]
        cands = _candidates([d for d in case["raw"] if d.score >= threshold], case["res"], after, case["lesion_id"])
        cand += [(uid, c["centre"], c["score"]) for c in cands]
        ann += [(uid, f) for f in case["lesions"]]
        exc += [(uid, f) for f in case["vessels"]]
        size = np.bincount(case["lesion_id"].ravel(), minlength=len(case["lesions"]) + 1)
        covers = [[k for k in range(len(case["lesions"])) if c["overlap"][k + 1] >= COVER * size[k + 1]] for c in cands]
        merged += sum(len(k) >= 2 for k in covers)
        for k in range(len(case["lesions"])):
            mine = [c for c, cov in zip(cands, covers) if k in cov]
            split += len(mine) >= 2
            if mine:
                errors.append(abs(max(mine, key=lambda c: c["score"])["long"] - case["longs"][k]))

    def findings(rows):
        return Findings(tuple(u for u, _ in rows), np.array([[f["coordX"], f["coordY"], f["coordZ"]] for _, f in rows]).reshape(-1, 3),
                        np.array([f["diameter_mm"] for _, f in rows]))

    cs = Candidates(tuple(u for u, _, _ in cand), np.array([c for _, c, _ in cand]).reshape(-1, 3), np.array([s for _, _, s in cand]))
    r = froc3d(findings(ann), cs, [c["uid"] for c in cases], findings(exc))
    return {"cpm": r.cpm, "candidates": len(cand), "lesions": len(ann), "found": len(errors), "split": split,
            "merged": merged, "long_err": float(np.median(errors)) if errors else float("nan")}


def _predict(image: Path, model, cfg, device: str, cache: Path | None) -> dict:
    """The scan's raw detections at score >= 0.05 (before suppression) and the result they came with;
    ``cache``: a folder where they are kept (npz + JSON, per volume) and read back on the next run."""
    scan = read_scan(image)
    stem = image.name.removesuffix(".nii.gz")
    if cache is not None and (cache / f"{stem}.json").is_file():
        return {"res": _cached_result(scan, cfg, cache / stem), "raw": _load_raw(cache / stem)}
    # the raw detections: neither suppressed nor grouped here (each grouping below does its own)
    with mock.patch.object(inference, "suppress_duplicates", lambda dets: list(dets)), \
            mock.patch.object(inference, "group_candidates", lambda *a: []):
        res = predict_scan(scan, model, cfg, PredictSettings(score_threshold=0.05, device=device, batch_size=1))
    if cache is not None:
        _save_raw(cache / stem, res)
    return {"res": res, "raw": res.detections}


def _save_raw(stem: Path, res) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    dets = res.detections
    crops = [d.mask if d.mask is not None else np.zeros((0, 0), bool) for d in dets]
    np.savez_compressed(f"{stem}.npz", boxes=np.array([d.box for d in dets]).reshape(-1, 4),
                        bits=np.concatenate([c.ravel() for c in crops] or [np.zeros(0, bool)]))
    meta = {"processed": [int(z) for z in res.processed],
            "dets": [{"z": d.z, "slice": d.slice, "score": d.score, "origin": list(d.mask_origin), "shape": list(c.shape),
                      "measures": d.measures} for d, c in zip(dets, crops)]}
    write_text_atomic(Path(f"{stem}.json"), json.dumps(meta))


def _load_raw(stem: Path) -> list[Detection]:
    meta = json.loads(Path(f"{stem}.json").read_text())
    arrays = np.load(f"{stem}.npz")
    out, at = [], 0
    for m, box in zip(meta["dets"], arrays["boxes"]):
        h, w = m["shape"]
        crop = arrays["bits"][at : at + h * w].reshape(h, w) if h * w else None
        at += h * w
        out.append(Detection(0, m["z"], m["slice"], m["score"], box, crop, tuple(m["origin"]), m["measures"]))
    return out


def _cached_result(scan, cfg, stem: Path) -> PredictionResult:
    processed = json.loads(Path(f"{stem}.json").read_text())["processed"]
    return PredictionResult(scan, cfg, PredictSettings(score_threshold=0.05), [], [], processed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--cases", type=int, default=24)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "candidates.md"))
    ap.add_argument("--cache", help="keep the model's raw detections here (and reuse them: same checkpoint, cases, seed)")
    args = ap.parse_args(argv)
    cache = Path(args.cache) if args.cache else None
    t0 = time.perf_counter()
    model, cfg = load_predictor(args.checkpoint, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_nifti(Path(tmp) / "nifti", args.cases, args.seed, size=cfg.data.size)
        cases = []
        for image in sorted((root / "imagesTr").glob("*.nii.gz")):
            lesions, vessels, lesion_id, longs = _truth(root / "labelsTr" / image.name)
            case = {"uid": image.name.removesuffix(".nii.gz"), "lesions": lesions, "vessels": vessels,
                    "lesion_id": lesion_id, "longs": longs, **_predict(image, model, cfg, args.device, cache)}
            cases.append(case)
            print(f"{case['uid']}: {len(lesions)} lesions, {len(case['raw'])} detections >= 0.05", file=sys.stderr)
    rows = [(thr, after, _score(cases, after, thr)) for thr in (0.5, 0.05) for after in (False, True)]
    _write(args, rows, cases, time.perf_counter() - t0)
    return 0


def _write(args, rows, cases, seconds: float) -> None:
    n_slices = sum(c["res"].scan.hu.shape[0] for c in cases)
    lines = [
        "# 3D candidates: before and after issue 20", "",
        f"`python benchmarks/bench_candidates.py --checkpoint {args.checkpoint} --cases {args.cases} --seed {args.seed}{' --cache ' + args.cache if args.cache else ''}`, "
        f"{dt.date.today().isoformat()}, {platform.processor() or platform.machine()}, {seconds / 60:.1f} min"
        + (f" (the model's raw detections read from --cache {args.cache})" if args.cache else "") + ".", "",
        f"{len(cases)} synthetic volumes (`a3d data synth-nifti --seed {args.seed}`), {n_slices} slices, "
        f"{sum(len(c['lesions']) for c in cases)} true lesions; the same raw detections for both groupings.", "",
        "| score >= | grouping | candidates | CPM | lesions hit by a candidate's masks | lesions split in 2+ candidates "
        "| candidates covering 2+ lesions | median long-axis error mm |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for thr, after, m in rows:
        lines.append(f"| {thr:g} | {'after' if after else 'before'} | {m['candidates']} | {m['cpm']:.3f} | "
                     f"{m['found']} of {m['lesions']} | {m['split']} | {m['merged']} | {m['long_err']:.1f} |")
    lines += ["", "Before: union of every overlapping pair on adjacent slices, long axis the longest of any detection. "
              "After: per-slice suppression (IoU > 0.3, or 70 % inside a higher-scoring box), one-to-one links, "
              "tracks that are parts of a better kept track dropped (centred inside its mask, or a fifth of their mask "
              "inside its mask on most of their slices), long axis on the key slice (largest mask area)."]
    write_text_atomic(Path(args.out), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
