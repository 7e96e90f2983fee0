"""The authors' detector targets and init (mmdetection 1.x), each a config field with torchvision's
behaviour one override away: RPN labels on hand-built anchors, the box loss by hand, init statistics."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection.rpn import RegionProposalNetwork

from a3d.models import build_detector
from a3d.models.roi_heads import init_box_head
from fixtures_train import small_config

GT = torch.tensor([[10.0, 10.0, 42.0, 42.0],  # A: well inside
                   [0.0, 40.0, 20.0, 60.0],  # B: on the left border
                   [30.0, 50.0, 34.0, 54.0]])  # C: 4 x 4, no anchor reaches IoU 0.3
ANCHORS = torch.tensor([
    [10.0, 10.0, 42.0, 42.0],  # 0: IoU 1 with A -> positive
    [-6.0, 10.0, 26.0, 42.0],  # 1: crosses the left border (IoU 1/3 with A)
    [50.0, 0.0, 70.0, 20.0],  # 2: crosses the right border, IoU 0 -> would be negative
    [-2.0, 40.0, 18.0, 60.0],  # 3: crosses the border, IoU 0.82 with B -> would be positive
    [28.0, 48.0, 36.0, 56.0],  # 4: C's best anchor, IoU 16/64 = 0.25
    [10.0, 10.0, 42.0, 26.0],  # 5: IoU 0.5 with A -> between thresholds
    [44.0, 44.0, 60.0, 60.0],  # 6: IoU 0 with every box -> negative
])


# the authors' four settings (the paper configs' defaults; the tiny preset uses torchvision's)
PAPER = ("model.rpn_min_pos_iou=0.3", "model.rpn_allowed_border=0", "model.box_loss_beta=1.0",
         "model.box_head_init=mmdet")


@pytest.fixture(scope="module")
def models(synth_root):
    torch.manual_seed(0)
    paper = build_detector(small_config(synth_root, *PAPER).model)
    tv = build_detector(small_config(synth_root, "model.rpn_min_pos_iou=0", "model.rpn_allowed_border=-1",
                                     "model.box_loss_beta=0.1111111111111111",
                                     "model.box_head_init=torchvision").model)
    return paper, tv


def _target(boxes=GT, size=(64, 64)):
    return {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64), "image_size": size}


def test_rpn_labels_on_hand_built_anchors(models):
    """Border anchors are ignored whatever their IoU; C gets no positive (best IoU 0.25 < 0.3), its
    best anchor stays negative; with torchvision's settings anchor 3 is positive and C takes anchor 4.
    Fails if border anchors are labelled, if low-quality matches ignore the 0.3 floor, or if the
    model's RPN is not the subclass."""
    paper, tv = models
    labels, matched = paper.rpn.assign_targets_to_anchors([ANCHORS], [_target()])
    assert labels[0].tolist() == [1.0, -1.0, -1.0, -1.0, 0.0, -1.0, 0.0]
    assert torch.equal(matched[0][0], GT[0])
    labels, matched = tv.rpn.assign_targets_to_anchors([ANCHORS], [_target()])
    assert labels[0].tolist() == [1.0, -1.0, 0.0, 1.0, 1.0, -1.0, 0.0]
    assert torch.equal(matched[0][3], GT[1]) and torch.equal(matched[0][4], GT[2])
    # a border of 2 px lets anchor 3 (2 px outside) in, not anchor 1 (6 px) or 2 (6 px)
    paper.rpn.allowed_border = 2
    try:
        labels, _ = paper.rpn.assign_targets_to_anchors([ANCHORS], [_target()])
    finally:
        paper.rpn.allowed_border = 0
    assert labels[0].tolist() == [1.0, -1.0, -1.0, 1.0, 0.0, -1.0, 0.0]


def test_torchvision_option_reproduces_torchvision_labels(models):
    """With min_pos_iou 0 and no border the labels are torchvision's own Matcher's, on random boxes.
    Fails if the mmdetection assigner's order (negatives, positives, best anchors) is wrong."""
    _, tv = models
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        xy = torch.rand(300, 2, generator=g) * 60 - 5
        anchors = torch.cat([xy, xy + 4 + torch.rand(300, 2, generator=g) * 40], 1)
        gxy = torch.rand(4, 2, generator=g) * 50
        gt = torch.cat([gxy, gxy + 2 + torch.rand(4, 2, generator=g) * 30], 1)
        ours, _ = tv.rpn.assign_targets_to_anchors([anchors], [_target(gt)])
        ref, _ = RegionProposalNetwork.assign_targets_to_anchors(tv.rpn, [anchors], [{"boxes": gt}])
        assert torch.equal(ours[0], ref[0])


def test_box_loss_by_hand(models):
    """One RoI (the ground truth itself, target deltas 0) whose predicted deltas are the regression
    bias (0.5, -2, 0, 1.5): SmoothL1 beta 1 = 0.125 + 1.5 + 0 + 1.0 = 2.625 over 1 RoI; beta 1/9 =
    4 - 3/18. Fails if the box head keeps torchvision's fixed beta 1/9."""
    expected = {0: 2.625, 1: 4.0 - 3.0 / 18.0}
    for i, model in enumerate(models):
        heads = model.roi_heads
        pred = heads.box_predictor
        with torch.no_grad():
            pred.cls_score.weight.zero_()
            pred.bbox_pred.weight.zero_()
            pred.bbox_pred.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 0.5, -2.0, 0.0, 1.5]))
        heads.train()
        feats = {"0": torch.randn(1, model.backbone.out_channels, 16, 16)}
        target = {"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.ones(1, dtype=torch.int64)}
        _, losses = heads(feats, [torch.zeros(0, 4)], [(64, 64)], [target])
        assert float(losses["loss_box_reg"].detach()) == pytest.approx(expected[i], rel=1e-5)


@torch.no_grad()
def test_box_head_init_statistics(synth_root):
    """The authors' init: shared FCs xavier-uniform (|w| <= sqrt(6 / (fan_in + fan_out)), std = that
    / sqrt(3)), biases 0, classifier N(0, 0.01), regression N(0, 0.001); "torchvision" keeps
    nn.Linear's default (bias not 0). Fails if build_detector skips init_box_head or swaps the stds."""
    torch.manual_seed(0)
    m = build_detector(small_config(synth_root, "model.fc_width=256", *PAPER).model)
    head, pred = m.roi_heads.box_head, m.roi_heads.box_predictor
    for fc in (head.fc6, head.fc7):
        fan_out, fan_in = fc.weight.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert float(fc.weight.abs().max()) <= bound
        assert float(fc.weight.std()) == pytest.approx(bound / math.sqrt(3), rel=0.03)
        assert float(fc.bias.abs().max()) == 0.0
    assert float(pred.cls_score.weight.std()) == pytest.approx(0.01, rel=0.1)
    assert float(pred.bbox_pred.weight.std()) == pytest.approx(0.001, rel=0.1)
    assert abs(float(pred.bbox_pred.weight.mean())) < 2e-4
    assert float(pred.cls_score.bias.abs().max()) == float(pred.bbox_pred.bias.abs().max()) == 0.0
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    tv_head, tv_pred = TwoMLPHead(64, 32), FastRCNNPredictor(32, 2)
    before = tv_head.fc6.weight.clone()
    init_box_head(tv_head, tv_pred, "torchvision")
    assert torch.equal(tv_head.fc6.weight, before) and float(tv_head.fc6.bias.abs().max()) > 0


def test_detections_stay_inside_the_image_extent(synth_root):
    """``image_sizes`` (the unpadded extent) clips the detections, as the authors' img_shape.
    Fails if the detector ignores ``image_sizes`` and clips to the padded input."""
    torch.manual_seed(0)
    model = build_detector(small_config(synth_root, *PAPER).model).eval()
    x = torch.rand(1, 1, 3, 64, 64) * 100
    with torch.no_grad():
        clipped = model(x, image_sizes=[(40, 48)])[0]["boxes"]
        full = model(x)[0]["boxes"]
    assert len(clipped) > 0
    assert float(clipped[:, 2].max()) <= 48 and float(clipped[:, 3].max()) <= 40
    assert float(full[:, 2].max()) > 48 or float(full[:, 3].max()) > 40


def mmdet_anchors(feat_h: int, feat_w: int, stride: int = 4, base: int = 4,
                  scales=(4, 6, 8, 12, 24, 48), ratios=(0.5, 1.0, 2.0)) -> set[tuple]:
    """mmdetection 1.x's AnchorGenerator (centre 0.5 (base - 1), sides base * scale * sqrt-ratio,
    corners rounded, inclusive pixels) re-stated, as pixel-edge boxes (x1 - 0.5, x2 + 0.5)."""
    ctr = 0.5 * (base - 1)
    out = set()
    for r in ratios:
        hr = math.sqrt(r)
        for s in scales:
            ws, hs = base * s / hr, base * s * hr
            x1, y1 = round(ctr - 0.5 * (ws - 1)), round(ctr - 0.5 * (hs - 1))
            x2, y2 = round(ctr + 0.5 * (ws - 1)), round(ctr + 0.5 * (hs - 1))
            for j in range(feat_h):
                for i in range(feat_w):
                    dx, dy = i * stride, j * stride
                    out.add((x1 + dx - 0.5, y1 + dy - 0.5, x2 + dx + 0.5, y2 + dy + 0.5))
    return out


def test_paper_anchors_are_mmdetections():
    """The paper configs' anchors (offset 1.5) are the authors' mmdetection anchors, box for box;
    torchvision's (offset 0, the default for configs that predate the field) sit 1.5 px off.
    Fails if the offset is not applied."""
    from torchvision.models.detection.image_list import ImageList

    from a3d.config import load_config
    from a3d.models.rpn import OffsetAnchorGenerator

    m = load_config("a3d_x3").model
    assert m.anchor_offset == 1.5
    feats = [torch.zeros(1, 1, 3, 4)]
    images = ImageList(torch.zeros(1, 1, 12, 16), [(12, 16)])
    ours = OffsetAnchorGenerator((m.anchor_sizes,), (m.aspect_ratios,), m.anchor_offset)(images, feats)[0]
    assert {tuple(float(v) for v in a) for a in ours} == mmdet_anchors(3, 4)
    tv = OffsetAnchorGenerator((m.anchor_sizes,), (m.aspect_ratios,))(images, feats)[0]
    assert torch.equal(tv + 1.5, ours)
