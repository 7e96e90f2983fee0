"""The detector: every operator at 3 and 7 slices trains (finite losses, gradients), infers (<= 50
detections in the image), is built per spec section 4, and handles thickness / pretrained / masks."""

from __future__ import annotations

import pytest
import torch

from a3d.config import OPERATORS, load_config
from a3d.errors import A3DError
from a3d.models import build_detector
from fixtures_train import small_config

pytestmark = pytest.mark.usefixtures("cpu_threads")


@pytest.fixture(scope="module")
def batch(synth_root):
    from a3d.data import DeepLesionDataset, collate

    out = {}
    for d in (3, 7):
        ds = DeepLesionDataset(synth_root, "train", slices=d, size=64, mask_dir="masks_true")
        out[d] = collate([ds[0], ds[1]])
    return out


@pytest.mark.parametrize("slices", [3, 7])
@pytest.mark.parametrize("operator", OPERATORS)
def test_train_step_and_inference_every_operator(synth_root, batch, operator, slices):
    torch.manual_seed(0)
    cfg = small_config(synth_root, f"model.operator={operator}", f"model.slices={slices}")
    model = build_detector(cfg.model)
    images, targets = batch[slices]
    assert images.shape[1:3] == (1, slices)
    thickness = torch.stack([t["thickness"] for t in targets])
    model.train()
    losses = model(images, thickness=thickness, targets=targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        dets = model(images, thickness=thickness)
    assert len(dets) == 2
    for d in dets:
        n = d["boxes"].shape[0]
        assert n <= 50 and d["scores"].shape == (n,) and d["masks"].shape == (n, 64, 64)
        assert (d["boxes"] >= 0).all() and (d["boxes"] <= 64).all()


@pytest.mark.parametrize("operator", ["none", "a3d"])
def test_loss_falls_on_a_fixed_batch(synth_root, batch, operator):
    torch.manual_seed(0)
    cfg = small_config(synth_root, f"model.operator={operator}", "model.rpn_batch_per_image=100000",
                       "model.roi_batch_per_image=100000")  # use every anchor / RoI: no sampling noise
    model = build_detector(cfg.model).train()
    images, targets = batch[3]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    history = []
    for _ in range(8):
        loss = sum(model(images, targets=targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert all(map(lambda v: v == v, history))
    assert min(history[-3:]) < 0.8 * history[0], history


def test_paper_structure():
    cfg = load_config("a3d_x3", ["model.pretrained=none"])
    m = build_detector(cfg.model)
    rpn, roi = m.rpn, m.roi_heads
    assert rpn.anchor_generator.num_anchors_per_location() == [18]
    assert rpn.anchor_generator.sizes == ((16, 24, 32, 48, 96, 192),)
    assert rpn._pre_nms_top_n == {"training": 12000, "testing": 6000}
    assert rpn._post_nms_top_n == {"training": 2000, "testing": 300}
    assert rpn.nms_thresh == 0.7 and rpn.fg_bg_sampler.batch_size_per_image == 32
    assert rpn.proposal_matcher.high_threshold == 0.7 and rpn.proposal_matcher.low_threshold == 0.3
    assert rpn.head.conv[0][0].in_channels == 512 and rpn.head.conv[0][0].out_channels == 512
    assert roi.box_roi_pool.output_size == (7, 7) and roi.box_roi_pool.sampling_ratio == 2
    assert roi.box_head.fc6.out_features == 2048 and roi.box_head.fc7.out_features == 2048
    assert roi.box_predictor.bbox_pred.out_features == 8  # class-specific, 2 classes
    assert roi.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert roi.fg_bg_sampler.batch_size_per_image == 64 and roi.fg_bg_sampler.positive_fraction == 0.25
    assert roi.mask_roi_pool.output_size == (14, 14)
    convs = [mod for mod in roi.mask_head.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert len(convs) == 4 and all(c.out_channels == 256 and c.kernel_size == (3, 3) for c in convs)
    assert roi.mask_predictor.conv5_mask.stride == (2, 2)
    assert (roi.score_thresh, roi.nms_thresh, roi.detections_per_img) == (5e-5, 0.5, 50)
    assert m.mask_threshold == 0.5


def test_dice_loss():
    from a3d.models.detector import dice_mask_loss

    gt = torch.zeros(1, 32, 32, dtype=torch.uint8)
    gt[0, 8:24, 8:24] = 1
    box = torch.tensor([[8.0, 8.0, 24.0, 24.0]])
    perfect = torch.full((1, 2, 28, 28), 20.0)
    wrong = torch.full((1, 2, 28, 28), -20.0)
    args = ([box], [gt], [torch.ones(1, dtype=torch.int64)], [torch.zeros(1, dtype=torch.int64)])
    assert float(dice_mask_loss(perfect, *args)) < 0.05  # RoIAlign blurs the target border
    assert float(dice_mask_loss(wrong, *args)) > 0.99
    empty = dice_mask_loss(perfect[:0], [box[:0]], [gt], [torch.ones(1, dtype=torch.int64)],
                           [torch.zeros(0, dtype=torch.int64)])
    assert float(empty) == 0.0


def test_input_checks_and_thickness(synth_root, batch):
    cfg = small_config(synth_root, "model.operator=alignshift")
    m = build_detector(cfg.model).eval()
    images, targets = batch[3]
    with pytest.raises(A3DError, match="alignshift operator needs each sample's slice thickness"):
        m(images)
    with pytest.raises(A3DError, match="slices"):
        m(batch[7][0], thickness=[2.0, 2.0])
    with pytest.raises(A3DError, match=r"\(B, 1, D, H, W\)"):
        m(images[:, 0])
    with pytest.raises(A3DError, match="one per image"):
        m(images, thickness=[2.0])
    with torch.no_grad():
        m(images, thickness=[1.0, 5.0])


def test_thickness_is_the_forward_argument(synth_root, batch):
    """The detector's ``thickness`` argument (second, before ``targets``) reaches every AlignShift layer
    and changes the result; targets' ``thickness`` entries are not a way in. Fails if the detector stops
    calling set_thickness on its backbone, or reads the thickness from the targets again."""
    from a3d.ops import AlignShift

    torch.manual_seed(0)
    m = build_detector(small_config(synth_root, "model.operator=alignshift").model)
    images, targets = batch[3]
    layers = [mod for mod in m.backbone.modules() if isinstance(mod, AlignShift)]
    assert layers
    m.eval()
    with torch.no_grad():
        thin = m(images, torch.tensor([1.0, 5.0]))  # positional: thickness comes second
        assert all(torch.equal(layer.thickness, torch.tensor([1.0, 5.0])) for layer in layers)
        thick = m(images, thickness=[8.0, 8.0])
        assert all(torch.equal(layer.thickness, torch.tensor([8.0, 8.0])) for layer in layers)
    assert not torch.allclose(thin[0]["scores"][:5], thick[0]["scores"][:5])
    m.train()
    assert all("thickness" in t for t in targets)
    with pytest.raises(A3DError, match="thickness="):
        m(images, targets=targets)
    assert torch.isfinite(sum(m(images, thickness=[1.0, 5.0], targets=targets).values()))


def test_targets_without_masks_give_zero_mask_loss(synth_root, batch):
    cfg = small_config(synth_root)
    m = build_detector(cfg.model).train()
    images, targets = batch[3]
    targets = [{k: v for k, v in t.items() if k != "masks"} for t in targets]
    assert float(m(images, targets=targets)["loss_mask"].detach()) == 0.0


def test_pretrained_missing_is_a_clear_error(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(A3DError, match="model.pretrained=none"):
            build_detector(load_config("none_x3").model)
    finally:
        torch.hub.set_dir(old)
    with pytest.raises(A3DError, match="no such file"):
        build_detector(load_config("none_x3", [f"model.pretrained={tmp_path / 'nope.pth'}"]).model)


def test_pretrained_from_local_file(tmp_path, synth_root):
    import torchvision

    torch.manual_seed(0)
    path = tmp_path / "densenet121.pth"
    ref = torchvision.models.densenet121().state_dict()
    torch.save(ref, path)
    cfg = small_config(synth_root, f"model.pretrained={path}", "model.operator=none")
    m = build_detector(cfg.model)
    # some 3x3 dense-layer kernel of the backbone equals the file's 2D kernel
    w2 = ref["features.denseblock1.denselayer1.conv2.weight"]
    found = any(p.shape[-2:] == w2.shape[-2:] and p.numel() == w2.numel() and torch.allclose(p.reshape(w2.shape), w2)
                for p in m.backbone.parameters())
    assert found
