"""The detector: the 3D backbone + torchvision's Mask R-CNN parts, 2D heads on the key slice.

Configured per spec section 4 by :class:`a3d.config.ModelConfig` (every size is a field, so the
``tiny`` preset shrinks the same code path; docs/fidelity.md lists each choice against the authors'):

- RPN on the single stride-4 map ``"0"``: anchors 16..192 px x ratios 0.5/1/2 (18 per position),
  fg 0.7 / bg 0.3, a ground truth's best anchors positive only from IoU 0.3, anchors crossing the
  image border ignored (:class:`a3d.models.rpn.MaxIoURPN`), 32 anchors per image at 0.5 positive,
  pre/post NMS 12000/2000 (train), 6000/300 (test), NMS 0.7.
- Box head: RoIAlign 7x7 (sampling 2), two FC of 2048 (xavier-uniform; classifier N(0, 0.01),
  regression N(0, 0.001)), class-specific regression with weights (10, 10, 5, 5) (= target stds
  .1 .1 .2 .2), SmoothL1 beta 1.0, 64 RoIs per image at 0.25 positive, IoU 0.5, ground truth added
  to the proposals (torchvision does that).
- Mask head: RoIAlign 14x14, 4 conv3x3 of 256, deconv x2 to 28x28, **Dice** loss (sigmoid, smooth
  0.01) instead of BCE. Box and mask heads: :class:`a3d.models.roi_heads.DiceRoIHeads`, a RoIHeads
  subclass (no torchvision globals patched).
- Test: score 5e-5 (AlignShift's configs: 0.001), NMS 0.5, 50 detections, masks pasted into the
  image and thresholded at 0.5.

No ``GeneralizedRCNNTransform``: images arrive already sized, padded and normalised ((B, 1, D, H, W)
in [-50, 205]); :class:`A3DDetector` is a thin wrapper that runs the backbone on the volume and gives
the RPN / RoI heads the key slice's geometry (each image's unpadded extent). Outputs are in input
pixel coordinates.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads, paste_masks_in_image
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import MultiScaleRoIAlign

from a3d.config import ModelConfig
from a3d.errors import A3DError
from a3d.models.backbone import densenet121_3d
from a3d.models.roi_heads import DiceRoIHeads, dice_mask_loss, init_box_head
from a3d.models.rpn import Float32OutRPNHead, MaxIoURPN, NarrowRPNHead, OffsetAnchorGenerator
from a3d.models.weights import detector_checkpoint, load_detector_weights, resolve_pretrained
from a3d.ops import set_thickness


class A3DDetector(nn.Module):
    """Backbone on the (B, 1, D, H, W) volume; RPN and RoI heads on its stride-4 key-slice map.

    ``forward(images, thickness=None, targets=None, image_sizes=None)`` (pass all but ``images`` by keyword):

    - ``images``: float (B, 1, D, H, W) in [-50, 205], D = ``model.slices``.
    - ``image_sizes``: each image's (h, w) extent inside the padded input (the authors' ``img_shape``:
      proposals and detections are clipped to it, anchors crossing it are ignored in training).
      Default: each target's ``image_size`` when every target has one (the dataset's targets do),
      else the whole (H, W).
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

    @staticmethod
    def _image_sizes(images: Tensor, image_sizes, targets) -> list[tuple[int, int]]:
        h, w = int(images.shape[-2]), int(images.shape[-1])
        if image_sizes is None and targets is not None and all("image_size" in t for t in targets):
            image_sizes = [t["image_size"] for t in targets]
        if image_sizes is None:
            return [(h, w)] * images.shape[0]
        sizes = [(int(s[0]), int(s[1])) for s in image_sizes]
        if len(sizes) != images.shape[0] or any(not (0 < a <= h and 0 < b <= w) for a, b in sizes):
            raise A3DError(f"image_sizes: expected {images.shape[0]} (h, w) within the input's {h} x {w}, got {sizes}")
        return sizes

    def forward(self, images: Tensor, thickness=None, targets: Optional[list[dict[str, Tensor]]] = None,
                image_sizes=None):
        if images.dim() != 5 or images.shape[1] != 1:
            raise A3DError(f"detector input: expected (B, 1, D, H, W), got {tuple(images.shape)}")
        if images.shape[2] != self.slices:
            raise A3DError(f"detector input: built for {self.slices} slices, got D = {images.shape[2]}")
        if self.training and targets is None:
            raise A3DError("detector: targets are needed in training mode")
        self._set_thickness(images, thickness)
        h, w = images.shape[-2:]
        sizes = self._image_sizes(images, image_sizes, targets)
        if targets is not None:  # the RPN flags border anchors against each image's own extent
            targets = [{**t, "image_size": s} for t, s in zip(targets, sizes)]
        feature = self.backbone(images)
        features = OrderedDict([("0", feature)])
        key = images[:, :, images.shape[2] // 2]  # (B, 1, H, W): only its shape/device are used by the RPN
        image_list = ImageList(key, sizes)
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


def build_detector(model_cfg: ModelConfig, pretrained: Optional[bool] = None) -> A3DDetector:
    """The A3D detector for ``model_cfg``.

    ``pretrained=False`` skips loading ImageNet weights whatever ``model_cfg.pretrained`` says (used
    when the weights come from a checkpoint anyway). A ``model_cfg.pretrained`` naming an a3d
    checkpoint (fine-tuning) loads its whole detector instead (:func:`a3d.models.weights.detector_checkpoint`).
    """
    if not isinstance(model_cfg, ModelConfig):
        raise TypeError(f"build_detector: expected an a3d.config.ModelConfig, got {type(model_cfg).__name__}")
    m = model_cfg
    weights = m.pretrained if pretrained is not False else None
    finetune = detector_checkpoint(weights, m)  # an a3d checkpoint: its detector is loaded below
    backbone = densenet121_3d(m.operator, m.slices, pretrained=None if finetune else weights,
                              checkpoint=m.checkpointing)
    channels = backbone.out_channels

    anchors = OffsetAnchorGenerator((tuple(m.anchor_sizes),), (tuple(m.aspect_ratios),), m.anchor_offset)
    n_anchors = anchors.num_anchors_per_location()[0]
    if m.rpn_channels and m.rpn_channels != channels:
        rpn_head = NarrowRPNHead(channels, n_anchors, m.rpn_channels)
    else:
        rpn_head = Float32OutRPNHead(channels, n_anchors)
    rpn = MaxIoURPN(
        anchors,
        rpn_head,
        fg_iou_thresh=m.rpn_fg_iou,
        bg_iou_thresh=m.rpn_bg_iou,
        batch_size_per_image=m.rpn_batch_per_image,
        positive_fraction=m.rpn_positive_fraction,
        pre_nms_top_n={"training": m.rpn_pre_nms_train, "testing": m.rpn_pre_nms_test},
        post_nms_top_n={"training": m.rpn_post_nms_train, "testing": m.rpn_post_nms_test},
        nms_thresh=m.rpn_nms,
        allowed_border=m.rpn_allowed_border,
        min_pos_iou=m.rpn_min_pos_iou,
    )
    box_pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=m.roi_size, sampling_ratio=m.roi_sampling_ratio)
    box_head = TwoMLPHead(channels * m.roi_size**2, m.fc_width)
    box_predictor = FastRCNNPredictor(m.fc_width, m.num_classes)
    init_box_head(box_head, box_predictor, m.box_head_init)
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
        box_loss_beta=m.box_loss_beta,
        **mask_kwargs,
    )
    model = A3DDetector(backbone, rpn, roi_heads, m)
    if finetune is not None:
        load_detector_weights(model, m, finetune)
    return model


__all__ = ["A3DDetector", "DiceRoIHeads", "Float32OutRPNHead", "MaxIoURPN", "NarrowRPNHead", "build_detector",
           "dice_mask_loss"]
