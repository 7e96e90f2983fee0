"""``a3d export CHECKPOINT --out DIR [--format safetensors torchscript onnx]``: a trained model as a
folder in the Hugging Face layout (model.safetensors, config.json, README.md model card), which
``a3d predict --checkpoint DIR`` and ``a3d eval DIR`` load, plus optional deployment graphs
(model.torchscript.pt, model.onnx) checked against PyTorch. See docs/export.md."""

from __future__ import annotations

FORMATS = ("safetensors", "torchscript", "onnx")  # the torch-free copy of a3d.export.FORMATS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="a checkpoint as safetensors + config + model card; TorchScript, ONNX",
                              description=__doc__)
    p.add_argument("checkpoint", help="checkpoint written by a3d train (best.pt or last.pt) or an export folder")
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--format", nargs="+", choices=FORMATS, default=["safetensors"], dest="formats",
                   help="what to write: safetensors (always: the weights, config.json and README.md), "
                        "torchscript (model.torchscript.pt), onnx (model.onnx; needs the export extra)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=run)


def run(args) -> int:
    # torch and torchvision: imported when the command runs, so that `a3d --help` starts without them
    from a3d.export import export_checkpoint

    res = export_checkpoint(args.checkpoint, args.out, args.formats, overwrite=args.overwrite)
    print(f"exported {args.checkpoint} -> {res.out} ({', '.join(res.files)})")
    return 0
