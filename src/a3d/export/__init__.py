"""``a3d export``: a trained checkpoint as a folder in the layout model hubs use, plus deployment graphs.

- :func:`export_checkpoint` (:mod:`a3d.export.folder`): ``model.safetensors``, ``config.json``,
  ``README.md`` (model card, :mod:`a3d.export.card`), and on request ``model.torchscript.pt`` /
  ``model.onnx`` (:mod:`a3d.export.deploy`), each checked against PyTorch.
- Reading an export folder back is :func:`a3d.engine.checkpoint.load_checkpoint` (a folder is a
  checkpoint), so ``a3d predict`` and ``a3d eval`` take either.

The input/output contract of the deployment graphs: :mod:`a3d.export.deploy` and docs/export.md.
"""

from a3d.export.deploy import DeployDetector, Parity, phantom_input
from a3d.export.folder import DEPLOY_FILES, FORMATS, ExportResult, check_export_args, export_checkpoint

__all__ = ["DEPLOY_FILES", "DeployDetector", "ExportResult", "FORMATS", "Parity", "check_export_args",
           "export_checkpoint", "phantom_input"]
