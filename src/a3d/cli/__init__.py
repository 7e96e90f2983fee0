"""The ``a3d`` command line: one subcommand module per area, each with ``add_parser``.

Only this package reads argv or calls ``sys.exit``. Every subcommand turns expected failures
(bad input files, bad configs) into one line on stderr and exit code 2, via :class:`a3d.errors.A3DError`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from a3d import __version__
from a3d.cli.help import A3DParser
from a3d.errors import A3DError

# (module under a3d.cli, what it adds): each module defines add_parser(subparsers). Building the
# parser imports these modules only: none may import torch at module level (`a3d --help` stays fast).
_COMMANDS = ("cost", "data", "train", "eval", "eval3d", "report", "grid", "demo", "predict", "export", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = A3DParser(
        prog="a3d",
        description="Universal lesion detection in CT with 3D context fusion (A3D and six other operators).",
        epilog="Run `a3d COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"a3d {__version__}",
                        help="print the version of a3d and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"a3d.cli.{name}").add_parser(sub)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, but key=value overrides may also follow options (``a3d train CFG k=v
    --out R k2=v2``): argparse fills a positional list from one run of words only, the rest come back
    unrecognised and are appended here, in order, to the command's ``overrides``."""
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in w and not w.startswith("-") for w in extra):
        args.overrides = [*(args.overrides or []), *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    try:
        code = args.func(args)
    except A3DError as e:
        print(f"a3d {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"a3d {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
