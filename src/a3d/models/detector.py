"""The detector: the 3D backbone + torchvision's Mask R-CNN parts, 2D heads on the key slice.

Configured per spec section 4 by :class:`a3d.config.ModelConfig` (every size is a field, so the
``tiny`` preset shrinks the same code path):

- RPN on the single stride-4 map ``"0"``: anchors 16..192 px x ratios 0.5/1/2 (18 per position),
  fg 0.7 / bg 0.3, 32 anchors per image at 0.5 positive, pre/post NMS 12000/2000 (train),
  6000/300 (test), NMS 0.7.
- Box head: RoIAlign 7x7 (sampling 2), two FC of 2048, class-specific regression with weights
  (10, 10, 5, 5) (= target stds .1 .1 .2 .2), 64 RoIs per image at 0.25 positive, IoU 0.5, ground
  truth added to the proposals (torchvision does that).
- Mask head: RoIAlign 14x14, 4 conv3x3 of 256, deconv x2 to 28x28, **Dice** loss (sigmoid, smooth
  0.01) instead of BCE: :class:`DiceRoIHeads`, a RoIHeads subclass (no torchvision globals patched).
- Test: score 5e-5, NMS 0.5, 50 detections, masks pasted into the image and thresholded at 0.5.

No ``GeneralizedRCNNTransform``: images arrive already sized and normalised ((B, 1, D, H, W) in
[-50, 205]); :class:`A3DDetector` is a thin wrapper that runs the backbone on the volume and gives
the RPN / RoI heads the key slice's geometry. Outputs are in input pixel coordinates.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import (
    RoIHeads,
    fastrcnn_loss,
    maskrcnn_inference,
    paste_masks_in_image,
    project_masks_on_boxes,
)
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign

from a3d.config import ModelConfig
from a3d.errors import A3DError
from a3d.ops import set_thickness

# torchvision's ImageNet DenseNet-121 file name in the torch hub cache (<hub dir>/checkpoints/).
IMAGENET_DENSENET121 = "densenet121-a639ec97.pth"


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
    """torchvision's RoIHeads (box + mask branches) with a Dice mask loss; no keypoint branch.

    Training targets without ``masks`` give a zero mask loss (still connected to the graph, so DDP
    sees every parameter used).
    """

    def __init__(self, *args, dice_smooth: float = 0.01, **kwargs):
        super().__init__(*args, **kwargs)
        self.dice_smooth = dice_smooth
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
            loss_classifier, loss_box_reg = fastrcnn_loss(
                class_logits.float(), box_regression.float(), labels, regression_targets
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


class A3DDetector(nn.Module):
    """Backbone on the (B, 1, D, H, W) volume; RPN and RoI heads on its stride-4 key-slice map.

    ``forward(images, thickness=None, targets=None)`` (pass ``thickness`` and ``targets`` by keyword):

    - ``images``: float (B, 1, D, H, W) in [-50, 205], D = ``model.slices``.
    - ``thickness``: each sample's slice interval in mm, (B,) tensor or B numbers; required by the
      ``alignshift`` operator, unused by the others (still checked: one per image). This argument is the one way the thickness
      enters the detector: it is stored on the backbone's AlignShift layers with
      :func:`a3d.ops.set_thickness` (targets' ``thickness`` entries are not read).
    - training: ``targets`` (list of B dicts with ``boxes`` float (N, 4) x1 y1 x2 y2 in pixels,
      ``labels`` int64 (N,), optional ``masks`` uint8 (N, H, W)) -> dict of losses
      ``loss_objectness, loss_rpn_box_reg, loss_classifier, loss_box_reg[, loss_mask]``.
    - eval: -> list of dicts per image: ``boxes`` (K, 4), ``scores`` (K,), ``labels`` (K,) and, with
      the mask branch, ``masks`` uint8 (K, H, W) (probability >= ``mask_threshold``); K <= 50.
    """

    def __init__(self, backbone: nn.Module, rpn: RegionProposalNetwork, roi_heads: RoIHeads, cfg: ModelConfig):
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.slices = cfg.slices
        self.operator = cfg.operator
        self.mask_threshold = cfg.mask_threshold

    def _set_thickness(self, images: Tensor, thickness) -> None:
        if thickness is None:
            if self.operator == "alignshift":
                raise A3DError("detector: the alignshift operator needs each sample's slice thickness; call "
                               "model(images, thickness=t) with t the (B,) slice intervals in mm")
            return
        if isinstance(thickness, (list, tuple)):
            thickness = torch.stack([torch.as_tensor(t, dtype=torch.float32).reshape(()) for t in thickness])
        t = torch.as_tensor(thickness, dtype=torch.float32).reshape(-1).to(images.device)
        if t.numel() != images.shape[0]:
            raise A3DError(f"thickness: expected {images.shape[0]} values (one per image), got {t.numel()}")
        set_thickness(self.backbone, t)

    def forward(self, images: Tensor, thickness=None, targets: Optional[list[dict[str, Tensor]]] = None):
        if images.dim() != 5 or images.shape[1] != 1:
            raise A3DError(f"detector input: expected (B, 1, D, H, W), got {tuple(images.shape)}")
        if images.shape[2] != self.slices:
            raise A3DError(f"detector input: built for {self.slices} slices, got D = {images.shape[2]}")
        if self.training and targets is None:
            raise A3DError("detector: targets are needed in training mode")
        self._set_thickness(images, thickness)
        h, w = images.shape[-2:]
        feature = self.backbone(images)
        features = OrderedDict([("0", feature)])
        key = images[:, :, images.shape[2] // 2]  # (B, 1, H, W): only its shape/device are used by the RPN
        image_list = ImageList(key, [(int(h), int(w))] * images.shape[0])
        # proposals in float32 even under autocast: the anchors take the map's dtype and the head
        # (Float32OutRPNHead) hands back float32 deltas; only its convs run in the autocast dtype
        proposals, rpn_losses = self.rpn(image_list, OrderedDict([("0", feature.float())]), targets)
        detections, roi_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
        if self.training:
            return {**rpn_losses, **roi_losses}
        for det in detections:
            if "masks" in det:
                pasted = paste_masks_in_image(det["masks"], det["boxes"], (int(h), int(w)))
                det["masks"] = (pasted[:, 0] >= self.mask_threshold).to(torch.uint8)
        return detections


class Float32OutRPNHead(RPNHead):
    """torchvision's RPNHead whose objectness and box deltas come out in float32 whatever the autocast
    dtype: torchvision decodes proposals in the deltas' dtype, and bfloat16 coordinates are off by
    pixels at a 512-pixel scale. Its convs run in the autocast dtype (in float32, the 3x3 conv on the
    stride-4 map cost 6 % of a bfloat16 CPU forward). Same parameters and state dict as RPNHead."""

    def forward(self, x: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, deltas = super().forward(x)
        return [t.float() for t in logits], [t.float() for t in deltas]


class NarrowRPNHead(Float32OutRPNHead):
    """Float32OutRPNHead with its 3x3 conv mapping ``in_channels -> channels`` (torchvision keeps
    ``in_channels``); used by small presets (``model.rpn_channels``), same forward and init."""

    def __init__(self, in_channels: int, num_anchors: int, channels: int):
        super().__init__(channels, num_anchors)
        conv = nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)
        nn.init.normal_(conv.weight, std=0.01)
        nn.init.constant_(conv.bias, 0)
        self.conv = nn.Sequential(nn.Sequential(conv, nn.ReLU(inplace=True)))


def resolve_pretrained(value: str) -> Optional[str]:
    """``model.pretrained`` -> what the backbone takes: None, or a state-dict file path.

    "none": random init. "imagenet": torchvision's DenseNet-121 in the torch hub cache. Else a path.
    Never downloads: a missing file is an A3DError saying where to put it.
    """
    v = value.strip()
    if v.lower() in ("none", "", "random"):
        return None
    if v.lower() in ("imagenet", "hub"):
        path = Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_DENSENET121
        if not path.is_file():
            raise A3DError(
                f"model.pretrained = {value!r}: ImageNet DenseNet-121 weights not found at {path}; put "
                f"torchvision's {IMAGENET_DENSENET121} there (or set TORCH_HOME), give its path with "
                "model.pretrained=/path/to/densenet121.pth, or set model.pretrained=none for random init"
            )
        return str(path)
    path = Path(v).expanduser()
    if not path.is_file():
        raise A3DError(f"model.pretrained = {value!r}: no such file (expected a torchvision densenet121 "
                       "state dict, 'imagenet' or 'none')")
    return str(path)


def build_detector(model_cfg: ModelConfig | dict, pretrained: Optional[bool] = None) -> A3DDetector:
    """The A3D detector for ``model_cfg`` (an :class:`a3d.config.ModelConfig` or its dict).

    ``pretrained=False`` skips loading ImageNet weights whatever the config says (used when the
    weights come from a checkpoint anyway).
    """
    if isinstance(model_cfg, dict):
        from a3d.config import config_from_dict

        model_cfg = config_from_dict({"model": model_cfg}, "model config").model
    m = model_cfg
    from a3d.models.backbone import densenet121_3d

    weights = resolve_pretrained(m.pretrained) if pretrained is not False else None
    backbone = densenet121_3d(m.operator, m.slices, pretrained=weights, checkpoint=m.checkpointing)
    channels = backbone.out_channels

    anchors = AnchorGenerator(sizes=(tuple(m.anchor_sizes),), aspect_ratios=(tuple(m.aspect_ratios),))
    n_anchors = anchors.num_anchors_per_location()[0]
    if m.rpn_channels and m.rpn_channels != channels:
        rpn_head = NarrowRPNHead(channels, n_anchors, m.rpn_channels)
    else:
        rpn_head = Float32OutRPNHead(channels, n_anchors)
    rpn = RegionProposalNetwork(
        anchors,
        rpn_head,
        fg_iou_thresh=m.rpn_fg_iou,
        bg_iou_thresh=m.rpn_bg_iou,
        batch_size_per_image=m.rpn_batch_per_image,
        positive_fraction=m.rpn_positive_fraction,
        pre_nms_top_n={"training": m.rpn_pre_nms_train, "testing": m.rpn_pre_nms_test},
        post_nms_top_n={"training": m.rpn_post_nms_train, "testing": m.rpn_post_nms_test},
        nms_thresh=m.rpn_nms,
    )
    box_pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=m.roi_size, sampling_ratio=m.roi_sampling_ratio)
    box_head = TwoMLPHead(channels * m.roi_size**2, m.fc_width)
    box_predictor = FastRCNNPredictor(m.fc_width, m.num_classes)
    mask_kwargs = {}
    if m.mask:
        mask_kwargs = dict(
            mask_roi_pool=MultiScaleRoIAlign(
                featmap_names=["0"], output_size=m.mask_roi_size, sampling_ratio=m.roi_sampling_ratio
            ),
            mask_head=MaskRCNNHeads(channels, [m.mask_channels] * m.mask_convs, dilation=1)
            if m.mask_convs > 0
            else nn.Identity(),
            mask_predictor=MaskRCNNPredictor(m.mask_channels if m.mask_convs > 0 else channels,
                                             m.mask_channels, m.num_classes),
        )
    roi_heads = DiceRoIHeads(
        box_pool,
        box_head,
        box_predictor,
        fg_iou_thresh=m.roi_fg_iou,
        bg_iou_thresh=m.roi_bg_iou,
        batch_size_per_image=m.roi_batch_per_image,
        positive_fraction=m.roi_positive_fraction,
        bbox_reg_weights=tuple(m.bbox_reg_weights),
        score_thresh=m.score_thresh,
        nms_thresh=m.nms,
        detections_per_img=m.detections,
        dice_smooth=m.dice_smooth,
        **mask_kwargs,
    )
    return A3DDetector(backbone, rpn, roi_heads, m)


__all__ = ["A3DDetector", "DiceRoIHeads", "Float32OutRPNHead", "NarrowRPNHead", "build_detector", "dice_mask_loss", "resolve_pretrained"]
