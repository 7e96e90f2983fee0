"""``a3d report``: one Table 2-style Markdown table and one overlaid FROC plot from several runs.

    a3d report runs/none_x3 runs/a3d_x3 runs/a3d_x7 --out report/

Each RUN_DIR holds a metrics.json written by ``a3d eval`` (or the trainer). Writes report.md,
froc.png and froc.svg to --out.
"""

from __future__ import annotations


from a3d.evaluation.report import write_report


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="Table 2-style comparison of runs (Markdown + overlaid FROC plot)",
        description=__doc__,
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directory holding metrics.json (or the file itself)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def run(args) -> int:
    paths = write_report(args.run_dirs, args.out)
    print((paths["markdown"]).read_text(), end="")
    print(f"wrote {', '.join(p.name for p in paths.values())} to {args.out}")
    return 0
