"""``a3d serve``: a3d as a DICOM node (receive CT series, send DICOM SEG and SR back); ``a3d serve
status``: its queue. See docs/serve.md."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from a3d.cli.options import DEVICE_HELP, device
from a3d.errors import A3DError

log = logging.getLogger("a3d.serve")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve", help="run as a DICOM node: receive CT series, send DICOM SEG and SR back",
        description=("Run a3d as a DICOM node: a Storage SCP receives CT series (C-STORE, any transfer syntax a3d "
                     "decodes); a series with no new instance for --stable-seconds becomes a job on the model; its "
                     "DICOM SEG and SR go to every --send-to (C-STORE) and --stow (STOW-RS) destination. Everything "
                     "is kept in --work-dir (a persistent queue: a restart resumes it). `a3d serve status "
                     "--work-dir DIR` prints the queue. See docs/serve.md."))
    p.add_argument("action", nargs="?", choices=("status",), help="status: print the queue of --work-dir and exit")
    p.add_argument("--work-dir", required=True, help="folder for received instances, results and the queue")
    p.add_argument("--json", action="store_true", help="status: print JSON (for machines)")
    p.add_argument("--checkpoint", help="checkpoint written by `a3d train` or an `a3d export` folder (loaded once)")
    p.add_argument("--port", type=int, default=11112, help="TCP port to listen on (default 11112)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: every interface)")
    p.add_argument("--ae-title", default="A3D", help="this node's AE title (default A3D)")
    p.add_argument("--send-to", action="append", default=[], metavar="AE@HOST:PORT",
                   help="send results by C-STORE to this DICOM node (repeatable)")
    p.add_argument("--stow", action="append", default=[], metavar="URL",
                   help="send results by STOW-RS to this DICOMweb base URL (repeatable)")
    p.add_argument("--allow-ae", nargs="+", default=[], metavar="AE", help="accept associations only from these calling AE titles")
    p.add_argument("--stable-seconds", type=float, default=30.0,
                   help="a series is complete when no instance arrived for this long (default 30)")
    p.add_argument("--keep-days", type=float, default=None,
                   help="remove received instances and results of jobs ended this many days ago (default: keep)")
    p.add_argument("--send-attempts", type=int, default=8, help="tries per destination before a job fails (default 8)")
    p.add_argument("--retry-seconds", type=float, default=10.0,
                   help="wait after a failed send, doubling after each failure up to 300 s (default 10)")
    p.add_argument("--tls-cert", help="PEM certificate (chain) of this node: accept DICOM TLS only")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p.add_argument("--score-threshold", type=float, default=0.5, help="keep detections with score >= this (default 0.5)")
    p.add_argument("--device", default="auto", type=device, help=DEVICE_HELP)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="compute precision of the model (as a3d predict; default auto)")
    p.add_argument("--batch-size", type=int, default=None, help="key slices per forward pass (default 4 on a GPU, 1 on the CPU)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    if args.action == "status":
        from a3d.serve.status import status_text

        print(status_text(args.work_dir, args.json))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    node = build_node(args)
    stop = node.stop_event.set
    signal.signal(signal.SIGTERM, lambda *_: stop())
    signal.signal(signal.SIGINT, lambda *_: stop())
    node.run()
    return 0


def _check(args) -> None:
    if not args.checkpoint:
        raise A3DError("--checkpoint CKPT is required (only `a3d serve status` works without it)")
    if not 0 < args.port < 65536:
        raise A3DError(f"--port {args.port}: expected 1..65535")
    if not 1 <= len(args.ae_title) <= 16:
        raise A3DError(f"--ae-title {args.ae_title!r}: expected 1 to 16 characters")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise A3DError("--tls-cert and --tls-key go together (this node's certificate and its private key)")
    for name in ("tls_cert", "tls_key"):
        path = getattr(args, name)
        if path and not Path(path).is_file():
            raise A3DError(f"{path}: --{name.replace('_', '-')} file not found")
    if not 0 <= args.score_threshold <= 1:
        raise A3DError(f"--score-threshold {args.score_threshold}: expected a value in [0, 1]")
    if args.send_attempts < 1 or args.retry_seconds <= 0 or args.stable_seconds < 0:
        raise A3DError("--send-attempts must be >= 1, --retry-seconds > 0 and --stable-seconds >= 0")


def build_node(args):
    """The node of these arguments, its model loaded (one-line A3DError for anything unusable)."""
    _check(args)
    from a3d.predict import loading
    from a3d.predict.precision import resolve_precision
    from a3d.predict.results import PredictSettings
    from a3d.serve.jobs import JobRunner
    from a3d.serve.node import Node, NodeConfig
    from a3d.serve.scp import tls_context
    from a3d.serve.send import parse_send_to, parse_stow

    destinations = tuple(parse_send_to(t) for t in args.send_to) + tuple(parse_stow(u) for u in args.stow)
    loading.check_device(args.device)
    resolve_precision(args.precision, args.device)
    batch = args.batch_size or (4 if args.device.startswith("cuda") else 1)
    settings = PredictSettings(score_threshold=args.score_threshold, batch_size=batch, device=args.device,
                               precision=args.precision)
    model, cfg = loading.load_predictor(args.checkpoint, args.device)
    try:
        ssl_context = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    except (OSError, ValueError) as e:
        raise A3DError(f"{args.tls_cert}: cannot use as the TLS certificate with {args.tls_key} ({e})") from None
    config = NodeConfig(Path(args.work_dir), args.ae_title, args.host, args.port, destinations, tuple(args.allow_ae),
                        args.stable_seconds, args.keep_days, args.send_attempts, args.retry_seconds)
    return Node(config, JobRunner(Path(args.work_dir), model, cfg, settings, args.checkpoint), ssl_context)
