"""``a3d grid [--configs ...] [--out DIR] [--preset tiny|paper] [--split val|test] [key=value ...]``:
train and evaluate every operator at 3 and 7 slices, then write the Table 2-style report."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("grid", help="train + evaluate operators x slices; Table 2-style report",
                              description=__doc__)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="overrides for every run, e.g. data.root=data/synth train.epochs=2")
    p.add_argument("--configs", nargs="+", default=None,
                   help="cells as <operator>_x<slices> (default: all 14)")
    p.add_argument("--out", default="grid_out", help="output folder (runs/<name>/, report/)")
    p.add_argument("--preset", choices=("tiny", "paper"), default="tiny",
                   help="tiny: the tiny preset per cell; paper: the packaged paper configs")
    p.add_argument("--split", default="val", choices=("val", "test"), help="split to evaluate (default val)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    # torch: imported when the command runs, so that `a3d --help` and the other commands start without it
    from a3d.engine.grid import run_grid

    res = run_grid(args.configs, args.out, args.preset, args.overrides, args.split, progress=not args.no_progress)
    for r in res["runs"]:
        print(f"{r.name:16s} average sensitivity {100 * r.average:6.2f}%  ({r.iterations} iterations)")
    print(f"report: {res['report'].get('markdown', next(iter(res['report'].values())))}")
    return 0
