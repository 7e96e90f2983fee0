"""``a3d cost``: Table 1 of the paper (parameters and GFLOPs of each operator), computed from the models."""

from __future__ import annotations

import argparse
import json

from a3d.config import OPERATORS  # the torch-free copy of a3d.ops.OPERATORS
from a3d.errors import A3DError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "cost",
        help="parameters and GFLOPs of the backbone for each operator (the paper's Table 1)",
        description=__doc__,
    )
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--size", type=int, default=512, help="input height and width (default 512)")
    p.add_argument("--slices", type=int, nargs="+", default=[3, 7], help="numbers of slices D (default 3 7)")
    p.add_argument("--operators", nargs="+", default=list(OPERATORS), metavar="OP",
                   help=f"operators to count (default all: {' '.join(OPERATORS)})")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    # torch: imported when the command runs, so that `a3d --help` and the other commands start without it
    from a3d.cost import cost_table, format_table

    bad = [o for o in args.operators if o.lower() not in OPERATORS]
    if bad:
        raise A3DError(f"--operators: unknown {', '.join(bad)}; expected some of {', '.join(OPERATORS)}")
    if args.size < 16:
        raise A3DError(f"--size: expected at least 16 (the backbone's stride), got {args.size}")
    if any(d < 1 for d in args.slices):
        raise A3DError(f"--slices: expected positive numbers of slices, got {args.slices}")
    rows = cost_table([o.lower() for o in args.operators], tuple(args.slices), args.size)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=1))
    else:
        print(format_table(rows, args.size))
    return 0
