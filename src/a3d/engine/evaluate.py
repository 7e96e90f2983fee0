"""Running a trained detector over a DeepLesion split: predictions and the validation FROC.

- :func:`load_model`: checkpoint -> (model in eval mode, Config); format checked, model rebuilt from
  the stored config, weights loaded with ``torch.load(weights_only=True)``.
- :func:`predict_dataset`: model + dataset -> ``list[ImagePredictions]`` in the original image's
  pixel coordinates (the dataset's padding dropped and resize undone, :class:`a3d.data.resize.FitPad`),
  one per key slice, in dataset order.
- :func:`split_dataset`: Config + data root + split -> the DeepLesionDataset the model reads
  (its slices, context rule for its operator, image size and padding, context spacing; no masks).
- :func:`predict_split`: checkpoint path + data root + split -> predictions.
- :func:`evaluate_dataset`: predictions + the dataset's ground truth -> FROC result.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from a3d.config import Config, config_from_dict
from a3d.data.dataset import DeepLesionDataset, collate
from a3d.data.resize import FitPad
from a3d.engine.checkpoint import load_checkpoint, load_model_state
from a3d.engine.distributed import resolve_device
from a3d.evaluation.froc import FROCResult, froc
from a3d.evaluation.predictions import ImagePredictions
from a3d.models.detector import build_detector
from a3d.progress import Progress


def load_model(checkpoint_path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, Config]:
    """(detector in eval mode on ``device``, its Config) from an ``a3d train`` checkpoint file or an
    ``a3d export`` folder (:func:`a3d.engine.checkpoint.load_checkpoint`)."""
    ckpt = load_checkpoint(checkpoint_path)
    cfg = config_from_dict(ckpt["config"], f"{checkpoint_path} (stored config)")
    model = build_detector(cfg.model, pretrained=False)
    load_model_state(model, ckpt["model"], str(checkpoint_path))
    device = resolve_device(device) if isinstance(device, str) else device
    return model.to(device).eval(), cfg


@torch.no_grad()
def predict_dataset(model: nn.Module, dataset, batch_size: int = 2, device: str | torch.device | None = None,
                    workers: int = 0, amp: Optional[torch.dtype] = None, progress: bool = False,
                    keep_masks: bool = False) -> list[ImagePredictions]:
    """Detections for every sample of ``dataset`` (a DeepLesionDataset) as ImagePredictions."""
    model = getattr(model, "module", model)
    was_training = model.training
    model.eval()
    heads = getattr(model, "roi_heads", None)
    had_masks = getattr(heads, "infer_masks", None)
    if had_masks is not None:
        heads.infer_masks = keep_masks
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=collate)
    out = []
    bar = Progress(len(loader), "predict", "batch", enabled=progress)
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        thickness = torch.stack([t["thickness"] for t in targets]).to(device)
        sizes = [tuple(int(v) for v in t["image_size"]) for t in targets]
        with torch.autocast(device_type=device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            dets = model(images, thickness=thickness, image_sizes=sizes)
        for t, det in zip(targets, dets):
            g = FitPad.of_target(t, images.shape[-2:])
            boxes = g.to_original(det["boxes"].float().cpu().numpy().astype(np.float64))
            scores = det["scores"].float().cpu().numpy().astype(np.float64)
            masks = g.masks_to_original(det["masks"].cpu().numpy()) if keep_masks and "masks" in det else None
            out.append(ImagePredictions(image_id=t["image_id"], boxes=boxes, scores=scores, masks=masks))
        bar.update()
    bar.close()
    model.train(was_training)
    if had_masks is not None:
        heads.infer_masks = had_masks
    return out


def ground_truth_boxes(dataset) -> list[np.ndarray]:
    """Per sample, the (G, 4) GT boxes in original pixel coordinates (from ``dataset.records``)."""
    return [np.stack([r.box for r in group]).astype(np.float64) for group in dataset.records]


def evaluate_dataset(preds: Sequence[ImagePredictions], dataset) -> FROCResult:
    """DeepLesion FROC of ``preds`` (in dataset order) against the dataset's ground truth."""
    gt = ground_truth_boxes(dataset)
    return froc([p.boxes for p in preds], [p.scores for p in preds], gt)


def split_dataset(cfg: Config, data_root: str | os.PathLike, split: str) -> DeepLesionDataset:
    """A split of the DeepLesion-layout dataset at ``data_root`` as the model of ``cfg`` reads it:
    ``cfg.model.slices`` context slices by the context rule of ``cfg.model.operator``
    (``cfg.data.context_spacing_mm``), fitted in ``cfg.data.size`` and padded to
    ``cfg.data.pad_divisor``; no masks (evaluation needs only boxes)."""
    return DeepLesionDataset(data_root, split=split, slices=cfg.model.slices, size=cfg.data.size, masks=False,
                             context_spacing_mm=cfg.data.context_spacing_mm, operator=cfg.model.operator,
                             pad_divisor=cfg.data.pad_divisor)


def predict_split(checkpoint: str | os.PathLike, data_root: str | os.PathLike, split: str = "val",
                  batch_size: int = 2, device: str | torch.device = "auto", workers: int = 0,
                  progress: bool = False, keep_masks: bool = False) -> list[ImagePredictions]:
    """Predictions of the checkpoint file ``checkpoint`` on a split of the dataset at ``data_root``
    (:func:`split_dataset`; boxes returned in the original image's pixel coordinates)."""
    model, cfg = load_model(checkpoint, device)
    return predict_dataset(model, split_dataset(cfg, data_root, split), batch_size=batch_size, workers=workers,
                           progress=progress, keep_masks=keep_masks)
