"""The RoI heads: torchvision's RoIHeads with the authors' box loss, box-head init and a Dice mask loss.

Why a subclass (each choice a field of :class:`a3d.config.ModelConfig`, the authors' value the default):

- box loss: SmoothL1 with ``beta = model.box_loss_beta`` (1.0: mmdetection's ``SharedFCBBoxHead``
  in the authors' ``densenet_*.py``; torchvision's ``fastrcnn_loss`` fixes 1/9), summed over the
  positive RoIs' class-specific deltas and divided by the number of sampled RoIs (both libraries);
- box-head init (:func:`init_box_head`, ``model.box_head_init``): ``"mmdet"`` (the authors') sets the
  two shared FCs xavier-uniform with bias 0, the classifier N(0, 0.01) and the regression N(0, 0.001)
  with biases 0; ``"torchvision"`` keeps nn.Linear's default;
- mask loss: Dice (sigmoid, smooth 0.01, per RoI, averaged) instead of BCE (the authors' ``DiceLoss``).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_inference, project_masks_on_boxes

__all__ = ["DiceRoIHeads", "dice_mask_loss", "box_head_loss", "init_box_head", "BOX_HEAD_INITS"]

BOX_HEAD_INITS = ("mmdet", "torchvision")


def box_head_loss(class_logits: Tensor, box_regression: Tensor, labels: list[Tensor],
                  regression_targets: list[Tensor], beta: float) -> tuple[Tensor, Tensor]:
    """(classification loss, box loss) of sampled RoIs: cross-entropy over all; SmoothL1(beta) of the
    positives' deltas for their class, summed and divided by the number of RoIs (torchvision's
    ``fastrcnn_loss`` with ``beta`` free). Shapes: logits (N, K), regression (N, 4K)."""
    labels_all = torch.cat(labels, dim=0)
    targets = torch.cat(regression_targets, dim=0)
    cls_loss = F.cross_entropy(class_logits, labels_all)
    pos = torch.where(labels_all > 0)[0]
    reg = box_regression.reshape(box_regression.shape[0], -1, 4)[pos, labels_all[pos]]
    box_loss = F.smooth_l1_loss(reg, targets[pos], beta=beta, reduction="sum") / labels_all.numel()
    return cls_loss, box_loss


def init_box_head(box_head: TwoMLPHead, predictor: FastRCNNPredictor, scheme: str) -> None:
    """Initialise the box head in place: ``"mmdet"`` (see the module docstring) or ``"torchvision"``."""
    if scheme == "torchvision":
        return
    if scheme != "mmdet":
        raise ValueError(f"box head init must be one of {', '.join(BOX_HEAD_INITS)}, got {scheme!r}")
    for fc in (box_head.fc6, box_head.fc7):
        nn.init.xavier_uniform_(fc.weight)
        nn.init.zeros_(fc.bias)
    nn.init.normal_(predictor.cls_score.weight, 0.0, 0.01)
    nn.init.zeros_(predictor.cls_score.bias)
    nn.init.normal_(predictor.bbox_pred.weight, 0.0, 0.001)
    nn.init.zeros_(predictor.bbox_pred.bias)


def dice_mask_loss(
    mask_logits: Tensor,
    proposals: list[Tensor],
    gt_masks: list[Tensor],
    gt_labels: list[Tensor],
    mask_matched_idxs: list[Tensor],
    smooth: float = 0.01,
) -> Tensor:
    """Dice loss between sigmoid mask predictions and GT masks cropped to the positive proposals.

    Per RoI: 1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s), averaged over RoIs; p = sigmoid of the
    logits of the RoI's GT class, t = the GT mask RoIAligned to M x M (M = logits size, 28).
    """
    m = mask_logits.shape[-1]
    labels = torch.cat([gl[idx] for gl, idx in zip(gt_labels, mask_matched_idxs)], dim=0)
    targets = [project_masks_on_boxes(gm, p, idx, m) for gm, p, idx in zip(gt_masks, proposals, mask_matched_idxs)]
    targets = torch.cat(targets, dim=0)
    if targets.numel() == 0:
        return mask_logits.sum() * 0
    logits = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]
    p = torch.sigmoid(logits.float()).flatten(1)
    t = targets.float().flatten(1)
    dice = (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return (1 - dice).mean()


class DiceRoIHeads(RoIHeads):
    """torchvision's RoIHeads (box + mask branches) with :func:`box_head_loss` (``box_loss_beta``) and
    a Dice mask loss; no keypoint branch.

    Training targets without ``masks`` give a zero mask loss (still connected to the graph, so DDP
    sees every parameter used).
    """

    def __init__(self, *args, dice_smooth: float = 0.01, box_loss_beta: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.dice_smooth = dice_smooth
        self.box_loss_beta = box_loss_beta
        self.infer_masks = True  # at test time, skip the mask branch when False (boxes only: faster)

    def check_targets(self, targets: Optional[list[dict[str, Tensor]]]) -> None:
        # torchvision's requires "masks" whenever there is a mask branch; here they are optional
        if targets is None:
            raise ValueError("targets are needed in training mode")
        for key in ("boxes", "labels"):
            if not all(key in t for t in targets):
                raise ValueError(f"every target needs {key!r}")

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: Optional[list[dict[str, Tensor]]] = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("targets are needed in training mode")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_roi_pool(features, proposals, image_shapes)
        box_features = self.box_head(box_features)
        class_logits, box_regression = self.box_predictor(box_features)

        result: list[dict[str, Tensor]] = []
        losses: dict[str, Tensor] = {}
        if self.training:
            loss_classifier, loss_box_reg = box_head_loss(
                class_logits.float(), box_regression.float(), labels, regression_targets, self.box_loss_beta
            )
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
        else:
            boxes, scores, det_labels = self.postprocess_detections(
                class_logits.float(), box_regression.float(), proposals, image_shapes
            )
            result = [{"boxes": b, "labels": l, "scores": s} for b, l, s in zip(boxes, det_labels, scores)]

        if self.has_mask() and (self.training or self.infer_masks):
            if self.training:
                mask_proposals, pos_matched_idxs = [], []
                for img_id in range(len(proposals)):
                    pos = torch.where(labels[img_id] > 0)[0]
                    mask_proposals.append(proposals[img_id][pos])
                    pos_matched_idxs.append(matched_idxs[img_id][pos])
            else:
                mask_proposals = [r["boxes"] for r in result]
            mask_features = self.mask_roi_pool(features, mask_proposals, image_shapes)
            mask_features = self.mask_head(mask_features)
            mask_logits = self.mask_predictor(mask_features)
            if self.training:
                if all("masks" in t for t in targets):
                    losses["loss_mask"] = dice_mask_loss(
                        mask_logits,
                        mask_proposals,
                        [t["masks"] for t in targets],
                        [t["labels"] for t in targets],
                        pos_matched_idxs,
                        self.dice_smooth,
                    )
                else:
                    losses["loss_mask"] = mask_logits.sum() * 0
            else:
                probs = maskrcnn_inference(mask_logits.float(), [r["labels"] for r in result])
                for prob, r in zip(probs, result):
                    r["masks"] = prob
        return result, losses
