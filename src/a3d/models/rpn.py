"""The RPN: torchvision's RegionProposalNetwork with the authors' anchor labels (mmdetection 1.x).

Why a subclass: torchvision's ``Matcher`` (allow_low_quality_matches) makes each ground truth's
best anchors positive at any IoU and labels every anchor, while the authors' RPN
(``MaxIoUAssigner`` + ``anchor_target`` in mmdetection 1.x, ``densenet_*.py``: ``min_pos_iou=0.3``,
``allowed_border=0``) differs in two ways, both fields of :class:`a3d.config.ModelConfig`:

- ``min_pos_iou`` (``model.rpn_min_pos_iou``, 0.3): a ground truth's best anchors become positives
  only where that IoU is >= 0.3 (0.0: torchvision's labels);
- ``allowed_border`` (``model.rpn_allowed_border``, 0): anchors reaching more than this many pixels
  beyond the image (its unpadded extent) are neither positive nor negative (-1: all anchors count,
  torchvision). Boxes are torchvision's pixel-edge boxes, so "inside" is ``x1 >= -b`` and
  ``x2 <= W + b`` (mmdetection's inclusive ``x2 < W + b``).

Anchors (:class:`OffsetAnchorGenerator`, ``model.anchor_offset``): mmdetection 1.x centres a stride-4
cell's anchors at (stride - 1) / 2 = 1.5 px (the centre of its 4 x 4 pixels in pixel-index
coordinates), torchvision at 0; with the offset 1.5 (the paper configs) the anchors are
mmdetection's exactly (as pixel-edge boxes). The field defaults to 0 so that checkpoints whose stored
config predates it predict as before.

Heads (:class:`Float32OutRPNHead`, :class:`NarrowRPNHead`): torchvision's RPNHead with float32
outputs under autocast, and a narrower 3x3 conv for the small presets.

Labels: 1 positive, 0 negative, -1 ignored; the order of mmdetection's assigner: negatives below
``bg_iou_thresh``, positives from ``fg_iou_thresh``, then each ground truth's best anchors (every
tie, the later ground truth winning), which regress towards that ground truth.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import boxes as box_ops

__all__ = ["Float32OutRPNHead", "MaxIoURPN", "NarrowRPNHead", "OffsetAnchorGenerator", "max_iou_labels", "inside_flags"]


class OffsetAnchorGenerator(AnchorGenerator):
    """torchvision's AnchorGenerator with every anchor moved by ``offset`` px along x and y."""

    def __init__(self, sizes, aspect_ratios, offset: float = 0.0):
        super().__init__(sizes, aspect_ratios)
        self.offset = float(offset)
        self.cell_anchors = [a + self.offset for a in self.cell_anchors]


def inside_flags(anchors: Tensor, image_size: tuple[int, int], allowed_border: int) -> Tensor:
    """(A,) bool: anchors (A, 4) within ``allowed_border`` px of the (H, W) image; all when < 0."""
    if allowed_border < 0:
        return torch.ones(anchors.shape[0], dtype=torch.bool, device=anchors.device)
    h, w = float(image_size[0]), float(image_size[1])
    b = float(allowed_border)
    return ((anchors[:, 0] >= -b) & (anchors[:, 1] >= -b) & (anchors[:, 2] <= w + b)
            & (anchors[:, 3] <= h + b))


def max_iou_labels(iou: Tensor, inside: Tensor, fg_iou: float, bg_iou: float,
                   min_pos_iou: float) -> tuple[Tensor, Tensor]:
    """mmdetection's MaxIoUAssigner on an IoU matrix (G, A) over anchors flagged ``inside`` (A,).

    Returns (labels float (A,): 1 / 0 / -1, ground-truth index int64 (A,), meaningful where 1).
    """
    iou = iou.masked_fill(~inside[None, :], -1.0)  # outside anchors take no part
    max_iou, gt_index = iou.max(dim=0)
    labels = torch.full_like(max_iou, -1.0)
    labels[(max_iou >= 0) & (max_iou < bg_iou)] = 0.0
    labels[max_iou >= fg_iou] = 1.0
    best = iou.max(dim=1).values
    for i in range(iou.shape[0]):
        if best[i] >= 0 and best[i] >= min_pos_iou:
            ties = iou[i] == best[i]
            labels[ties] = 1.0
            gt_index[ties] = i
    return labels, gt_index


class MaxIoURPN(RegionProposalNetwork):
    """torchvision's RPN whose :meth:`assign_targets_to_anchors` follows :func:`max_iou_labels`.

    Each target needs ``image_size`` (H, W: the image's unpadded extent) when ``allowed_border >= 0``;
    :class:`a3d.models.detector.A3DDetector` puts it there.
    """

    def __init__(self, *args, allowed_border: int = 0, min_pos_iou: float = 0.3, **kwargs):
        super().__init__(*args, **kwargs)
        self.allowed_border = int(allowed_border)
        self.min_pos_iou = float(min_pos_iou)

    def assign_targets_to_anchors(self, anchors: list[Tensor],
                                  targets: list[dict[str, Tensor]]) -> tuple[list[Tensor], list[Tensor]]:
        labels, matched = [], []
        for a, t in zip(anchors, targets):
            gt = t["boxes"]
            if gt.numel() == 0:  # as torchvision: every anchor negative
                labels.append(torch.zeros(a.shape[0], dtype=torch.float32, device=a.device))
                matched.append(torch.zeros_like(a))
                continue
            if self.allowed_border >= 0 and "image_size" not in t:
                raise ValueError("MaxIoURPN: each target needs 'image_size' (H, W) to flag border anchors")
            size = tuple(int(v) for v in t["image_size"]) if self.allowed_border >= 0 else (0, 0)
            inside = inside_flags(a, size, self.allowed_border)
            lab, idx = max_iou_labels(box_ops.box_iou(gt, a), inside, self.proposal_matcher.high_threshold,
                                      self.proposal_matcher.low_threshold, self.min_pos_iou)
            labels.append(lab)
            matched.append(gt[idx])
        return labels, matched


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
