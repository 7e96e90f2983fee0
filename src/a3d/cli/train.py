"""``a3d train CONFIG [--resume] [--out RUN_DIR] [key=value ...]``: train a detector.

CONFIG is a TOML file or a packaged config name (``a3d_x7``, ``tiny``, ...). Overrides use dotted
keys typed by the config dataclasses (``model.operator=acs train.epochs=2``); an unknown key or a
wrong type is rejected before anything runs. Multi-GPU: ``torchrun --nproc_per_node N -m a3d train ...``.
"""

from __future__ import annotations

from pathlib import Path

from a3d.config import apply_overrides, config_from_dict, load_config
from a3d.errors import A3DError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a detector from a config (TOML file or packaged name)",
                              description=__doc__)
    p.add_argument("config", nargs="?", default=None, help="TOML file or packaged config name (e.g. a3d_x7, tiny); "
                                  "with --resume and no config, the run's stored config is used")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=2")
    p.add_argument("--out", default=None, help="run folder (default runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    # a3d.engine imports torch: loaded when the command runs, not when `a3d --help` builds the parser
    from a3d.engine.checkpoint import load_checkpoint
    from a3d.engine.train import train

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # `a3d train --resume --out RUN key=value`: no config given
        overrides.insert(0, config)
        config = None
    if config is None or (args.resume and config == "-"):
        if not (args.resume and args.out):
            raise A3DError("train: give a CONFIG (or --resume --out RUN_DIR to reuse the run's stored config)")
        ckpt = load_checkpoint(Path(args.out) / "last.pt")
        cfg = config_from_dict(apply_overrides(ckpt["config"], overrides), f"{args.out}/last.pt + overrides")
    else:
        cfg = load_config(config, overrides)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    res = train(cfg, out, resume=args.resume, progress=not args.no_progress)
    if res.last_checkpoint is not None:
        best = f", best val average sensitivity {res.best_metric:.4f}" if res.best_metric >= 0 else ""
        print(f"trained {res.iterations} iterations in {res.seconds / 60:.1f} min{best}; checkpoints in {out}")
    return 0
