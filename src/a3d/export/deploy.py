"""The detector as a deployment graph (TorchScript, ONNX), traced and checked against PyTorch.

What is exported: the whole detector in eval mode (backbone, RPN, RoI box and mask heads, their
post-processing: box decoding, NMS, top-50, mask pasting) for one fixed input shape, batch 1:

- inputs: ``image`` float32 (1, 1, D, S, S), D = ``model.slices``, S = ``data.size``: D context
  slices ``data.context_spacing_mm`` apart, key slice in the middle, HU mapped by
  :func:`a3d.data.slices.hu_to_input` (clip to [-1024, 2050], linear to [0, 255], minus 50);
  ``thickness`` float32 (1,), the scan's slice interval in mm, for the ``alignshift`` operator only.
- outputs: ``boxes`` float32 (K, 4) x1 y1 x2 y2 in input pixels, ``scores`` float32 (K,),
  ``labels`` int64 (K,) (1 = lesion), and with the mask head ``masks`` uint8 (K, S, S) (1 inside);
  K <= ``model.detections``, sorted by score, possibly 0.

Tracing runs torchvision's tracing-aware code paths (NMS and mask pasting stay dynamic in K); the
check then runs the saved graph on *another* input (and thickness) than the one traced, so a value
baked into the graph shows up as a mismatch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from a3d.config import Config
from a3d.data.slices import hu_to_input
from a3d.errors import A3DError

OUTPUTS = ("boxes", "scores", "labels", "masks")
ONNX_OPSET = 17
# tolerances of the check (float32 graph vs the same float32 model): boxes in pixels, scores absolute,
# masks as the IoU of all K masks together (edge pixels whose probability is near the 0.5 threshold
# may flip: ONNX Runtime's bilinear resize, used when pasting the masks, rounds differently)
BOX_TOL, SCORE_TOL, MASK_IOU_MIN = 1e-2, 1e-4, 0.9


class DeployDetector(nn.Module):
    """``detector`` in eval mode as a function of tensors only: (image[, thickness]) -> (boxes,
    scores, labels[, masks]) of the single image (the contract in the module docstring)."""

    def __init__(self, detector: nn.Module, masks: bool):
        super().__init__()
        self.detector = detector.eval()
        self.masks = masks

    def forward(self, image: torch.Tensor, thickness: Optional[torch.Tensor] = None):
        det = self.detector(image, thickness=thickness)[0]
        out = (det["boxes"], det["scores"], det["labels"])
        return out + (det["masks"],) if self.masks else out


@dataclass(frozen=True)
class Parity:
    """The exported graph against PyTorch on one input: detections compared and the largest differences."""

    fmt: str
    detections: int  # K of PyTorch
    same_count: bool
    box_px: float  # max |difference| of box coordinates, pixels
    score: float  # max |difference| of scores
    labels_equal: bool
    mask_iou: Optional[float]  # IoU of the union of all masks (1 when both are empty; None: no mask head)

    @property
    def ok(self) -> bool:
        masks_ok = self.mask_iou is None or self.mask_iou >= MASK_IOU_MIN
        return self.same_count and self.labels_equal and self.box_px <= BOX_TOL and self.score <= SCORE_TOL and masks_ok

    def describe(self) -> str:
        if not self.same_count:
            return f"{self.fmt}: a different number of detections than PyTorch"
        masks = "" if self.mask_iou is None else f", mask IoU {self.mask_iou:.4f}"
        return (f"{self.fmt}: {self.detections} detections, max |box difference| {self.box_px:.2g} px, "
                f"max |score difference| {self.score:.2g}, labels {'equal' if self.labels_equal else 'DIFFER'}"
                f"{masks}")


def phantom_input(cfg: Config, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A CT-like (1, 1, D, S, S) input (body, lungs, round soft-tissue lesions, noise) and a thickness
    (1,) in mm, as the check inputs: a model trained on CT finds candidates in it, so the check
    compares boxes, not only empty outputs."""
    d, s = cfg.model.slices, cfg.data.size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    hu = np.full((d, s, s), -1000.0, np.float32)
    hu[:, ((xx - 0.5) / 0.42) ** 2 + ((yy - 0.5) / 0.3) ** 2 <= 1] = 40.0  # body
    for cx in (0.33, 0.67):  # lungs
        hu[:, ((xx - cx) / 0.13) ** 2 + ((yy - 0.47) / 0.2) ** 2 <= 1] = -850.0
    for z in range(d):
        for _ in range(4):  # lesions, a little smaller away from the key slice
            cx, cy, r = rng.uniform(0.25, 0.75), rng.uniform(0.3, 0.7), rng.uniform(0.03, 0.07)
            r *= 1.0 - 0.15 * abs(z - d // 2) / max(1, d // 2)
            hu[z][(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = rng.uniform(20.0, 90.0)
    hu += rng.normal(0.0, 15.0, hu.shape).astype(np.float32)
    image = torch.from_numpy(hu_to_input(hu))[None, None]
    return image, torch.tensor([(2.0, 5.0)[seed % 2]])  # traced and checked with different thicknesses


def _inputs(cfg: Config, seed: int) -> tuple[torch.Tensor, ...]:
    image, thickness = phantom_input(cfg, seed)
    return (image, thickness) if cfg.model.operator == "alignshift" else (image,)


def input_names(cfg: Config) -> list[str]:
    return ["image", "thickness"] if cfg.model.operator == "alignshift" else ["image"]


def output_names(cfg: Config) -> list[str]:
    return list(OUTPUTS if cfg.model.mask else OUTPUTS[:3])


@torch.no_grad()
def export_torchscript(model: nn.Module, cfg: Config, path: Path) -> None:
    """Trace ``model`` (eval, CPU, float32) on a phantom input and save it to ``path``."""
    wrapper = DeployDetector(model, cfg.model.mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings: torchvision's shape arithmetic, expected
        traced = torch.jit.trace(wrapper, _inputs(cfg, 0), check_trace=False)
    python_ops = sorted({n.pyname() for n in traced.inlined_graph.nodes() if n.kind() == "prim::PythonOp"})
    if python_ops:  # a custom autograd Function traced as a call back into Python: not saveable
        raise A3DError(f"TorchScript export: the {cfg.model.operator!r} operator runs Python code in its forward "
                       f"({', '.join(python_ops)}), which TorchScript cannot hold; export --format onnx instead")
    traced.save(str(path))


@torch.no_grad()
def export_onnx(model: nn.Module, cfg: Config, path: Path) -> None:
    """Export ``model`` (eval, CPU, float32) with the TorchScript-based exporter (torch >= 2.4)."""
    wrapper = DeployDetector(model, cfg.model.mask)
    dynamic = {name: {0: "detections"} for name in output_names(cfg)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, _inputs(cfg, 0), str(path), input_names=input_names(cfg),
                          output_names=output_names(cfg), dynamic_axes=dynamic, opset_version=ONNX_OPSET,
                          dynamo=False)


def run_torchscript(path: Path, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.10 marks TorchScript deprecated
        return [t.numpy() for t in torch.jit.load(str(path), map_location="cpu")(*inputs)]


def run_onnx(path: Path, names: list[str], inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    import onnxruntime as ort  # the optional `export` extra: only when an ONNX graph is checked

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the mask-pasting loop logs a shape note per detection
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})


def compare(fmt: str, reference: list[np.ndarray], got: list[np.ndarray]) -> Parity:
    """Outputs of an exported graph against PyTorch's (same order: both are sorted by score)."""
    ref_boxes = reference[0]
    same = len(got) == len(reference) and all(g.shape == r.shape for g, r in zip(got, reference))
    if not same:
        return Parity(fmt, len(ref_boxes), False, float("inf"), float("inf"), False, None)

    def max_diff(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0

    masks = None
    if len(reference) == 4:
        a, b = reference[3].astype(bool), got[3].astype(bool)
        union = int((a | b).sum())
        masks = float((a & b).sum()) / union if union else 1.0
    return Parity(fmt, len(ref_boxes), True, max_diff(ref_boxes, got[0]), max_diff(reference[1], got[1]),
                  bool(np.array_equal(reference[2], got[2])), masks)


def check_export(model: nn.Module, cfg: Config, fmt: str, path: Path) -> Parity:
    """Run the exported graph at ``path`` and PyTorch on a phantom other than the traced one."""
    inputs = _inputs(cfg, 1)
    with torch.no_grad():
        reference = [t.numpy() for t in DeployDetector(model, cfg.model.mask)(*inputs)]
    got = run_torchscript(path, inputs) if fmt == "torchscript" else run_onnx(path, input_names(cfg), inputs)
    return compare(fmt, reference, got)
