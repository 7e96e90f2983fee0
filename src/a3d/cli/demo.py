"""``a3d demo [--out DIR] [--minutes M] [key=value ...]``: synthetic data, a few minutes of training
of the tiny preset, evaluation before/after, and a report folder (FROC table, curves, overlays)."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="train the tiny preset on synthetic data and report (a few minutes)",
                              description=__doc__)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="tiny-preset overrides, e.g. model.operator=acs model.slices=7")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--minutes", type=float, default=6.0,
                   help="total time budget in minutes, at least 1 (default 6)")
    p.add_argument("--patients", type=int, default=60, help="synthetic patients, at least 3 (default 60)")
    p.add_argument("--seed", type=int, default=0, help="synthetic data seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    # torch: imported when the command runs, so that `a3d --help` and the other commands start without it
    from a3d.engine.demo import run_demo

    r = run_demo(args.out, minutes=args.minutes, patients=args.patients, seed=args.seed,
                 overrides=args.overrides, progress=not args.no_progress)
    print(f"demo: average sensitivity (0.5-4 FPs/image) untrained {100 * r.untrained_average:.1f}% -> "
          f"trained {100 * r.trained_average:.1f}% after {r.iterations} iterations; "
          f"{r.seconds / 60:.1f} min; report in {r.report}")
    return 0
