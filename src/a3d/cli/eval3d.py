"""``a3d eval3d``: volume-level FROC of nodule/lesion candidates with the LUNA16 protocol.

    a3d eval3d ANNOTATIONS CANDIDATES --out DIR [--excluded CSV] [--scans LIST] [--bootstrap 1000]

ANNOTATIONS: seriesuid,coordX,coordY,coordZ,diameter_mm (world mm); CANDIDATES:
seriesuid,coordX,coordY,coordZ,probability. A candidate hits a nodule when its centre lies strictly
inside the nodule's sphere (distance < diameter / 2). Sensitivity at 1/8, 1/4, 1/2, 1, 2, 4, 8 FPs per
scan and their mean, the CPM. Scans: --scans (one seriesuid per line), else every scan named in
ANNOTATIONS or CANDIDATES. Writes metrics.json, froc.csv, nodules.csv, froc.png and froc.svg to --out.
The protocol in full: docs/evaluation.md.
"""

from __future__ import annotations

import sys

from a3d.errors import A3DError
from a3d.evaluation.froc3d import DEFAULT_MAX_PER_SCAN, froc3d
from a3d.evaluation.froc3d_bootstrap import froc3d_ci
from a3d.evaluation.froc3d_io import default_scans, read_candidates, read_findings, read_scan_list
from a3d.evaluation.froc3d_outputs import froc3d_metrics, write_froc3d


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval3d",
        help="volume-level FROC of candidates (LUNA16 protocol: sensitivity at 1/8..8 FPs per scan, CPM)",
        description=__doc__,
    )
    p.add_argument("annotations", help="CSV seriesuid,coordX,coordY,coordZ,diameter_mm (world mm)")
    p.add_argument("candidates", help="CSV seriesuid,coordX,coordY,coordZ,probability (world mm)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--excluded", help="CSV of findings whose candidates are ignored (LUNA16 annotations_excluded.csv; "
                                      "diameter -1 = 10 mm)")
    p.add_argument("--scans", help="file listing the evaluated seriesuids, one per line (default: the scans named in "
                                   "ANNOTATIONS or CANDIDATES); candidates on other scans are left out with a warning")
    p.add_argument("--max-per-scan", type=int, default=DEFAULT_MAX_PER_SCAN,
                   help=f"keep at most this many highest-probability candidates per scan (default {DEFAULT_MAX_PER_SCAN}, "
                        "the official script's; 0 = all)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the scans for the 95%% intervals "
                                                               "(default 1000; 0 = none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.set_defaults(func=run)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def run(args) -> int:
    if args.bootstrap < 0:
        raise A3DError(f"--bootstrap: expected >= 0, got {args.bootstrap}")
    if args.max_per_scan < 0:
        raise A3DError(f"--max-per-scan: expected >= 0, got {args.max_per_scan}")
    annotations = read_findings(args.annotations)
    candidates = read_candidates(args.candidates)
    excluded = read_findings(args.excluded) if args.excluded else None
    if args.scans:
        scans = read_scan_list(args.scans)
    else:
        scans = default_scans(annotations, candidates)
        print(f"note: no --scans: evaluating the {len(scans)} scans named in the annotations or candidates; "
              "a scan with neither is not counted in FPs per scan (give --scans for the exact list)")
    if not scans:
        raise A3DError(f"{args.annotations}, {args.candidates}: no scan named in either file, and no --scans")
    r = froc3d(annotations, candidates, scans, excluded, max_per_scan=args.max_per_scan)
    for w in r.warnings:
        print(f"a3d eval3d: warning: {w}", file=sys.stderr)
    if r.counts["n_nodules"] == 0:
        raise A3DError(f"{args.annotations}: no nodule on the {len(scans)} evaluated scans, so sensitivity is undefined")
    ci = froc3d_ci(r, args.bootstrap, args.seed) if args.bootstrap else None
    inputs = {"annotations": str(args.annotations), "candidates": str(args.candidates),
              "excluded": args.excluded, "scans": args.scans}
    m = froc3d_metrics(r, ci, inputs, args.max_per_scan)
    paths = write_froc3d(args.out, r, m, annotations)

    c = r.counts
    print(f"{c['n_scans']} scans, {c['n_nodules']} nodules, {c['n_candidates']} candidates: "
          f"{c['n_detected']} nodules detected, {c['n_false_positives']} false positives, "
          f"{c['n_ignored_excluded']} on excluded findings and {c['n_double_hits']} double hits ignored")
    if c["n_candidates_dropped"]:
        print(f"note: {c['n_candidates_dropped']} candidates beyond the {args.max_per_scan} highest-probability "
              "of their scan were left out (--max-per-scan)")
    sens = " ".join(f"{f:g}:{_pct(s)}" for f, s in zip(m["fps"], m["sensitivity"]))
    ci_s = f" (95% CI {_pct(ci['cpm'][0])}-{_pct(ci['cpm'][1])})" if ci and None not in ci["cpm"] else ""
    print(f"sensitivity (%) at FPs/scan  {sens}  CPM {_pct(m['cpm'])}{ci_s}")
    print(f"wrote {', '.join(p.name for p in paths.values())} to {args.out}")
    return 0
