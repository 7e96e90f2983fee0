"""a3d.predict inference: the typed config drives the model input, and the detector's one door
(``forward(images, thickness=...)``) receives the scan's slice interval (precision: tests/test_predict_precision.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from a3d import predict as P
from a3d.config import Config, DataConfig, ModelConfig, load_config
from a3d.data import scans as S
from a3d.data.slices import hu_to_input
from a3d.models import build_detector
from a3d.ops import AlignShift
from fixtures_train import small_overrides
from test_predict_support import make_image, phantom

IDENTITY = (1, 0, 0, 0, 1, 0, 0, 0, 1)


def _ramp_scan(spacing_z: float) -> S.Scan:
    """10 slices of constant HU -500, -400, ... so that a context slice's value tells its z position."""
    hu = np.stack([np.full((16, 16), v, np.float32) for v in np.arange(10) * 100.0 - 500])
    img = make_image(hu, (1, 1, spacing_z), (0, 0, 0), IDENTITY)
    return S.Scan(hu=hu, image=img, original=img, source="ramp", kind="nifti", name="ramp")


def test_context_spacing_comes_from_the_config():
    """data.context_spacing_mm sets how far apart the context slices are (positions k + j * spacing / 5 mm).
    Fails if prediction ignores the config and uses a fixed 2 mm."""
    scan = _ramp_scan(5.0)
    for spacing in (2.0, 5.0, 7.5):
        cfg = Config(model=ModelConfig(slices=5), data=DataConfig(size=16, context_spacing_mm=spacing))
        x = P.ContextBuilder(scan, cfg).build(5)
        want = hu_to_input(np.array([-500 + 100 * (5 + j * spacing / 5.0) for j in range(-2, 3)], np.float32))
        np.testing.assert_allclose(x[:, 8, 8], want, atol=1e-4, err_msg=f"context_spacing_mm={spacing}")


@pytest.fixture(scope="module")
def alignshift_model():
    cfg = load_config("tiny", [*small_overrides("unused"), "model.operator=alignshift"])
    torch.manual_seed(0)
    return build_detector(cfg.model).eval(), cfg


def test_alignshift_detector_gets_the_scans_slice_interval(alignshift_model):
    """predict_scan hands the real detector its per-sample thickness through forward(thickness=): every
    AlignShift layer holds the scan's z spacing, once per key slice of the batch. Fails if prediction
    stops passing thickness= (the detector then refuses to run) or passes another value."""
    model, cfg = alignshift_model
    hu = phantom((6, 40, 48))
    img = make_image(hu, (0.8, 0.8, 3.5), (0, 0, 0), IDENTITY)
    scan = S.Scan(hu=hu, image=img, original=img, source="p", kind="nifti", name="p")
    res = P.predict_scan(scan, model, cfg, P.PredictSettings(score_threshold=0.0, batch_size=2, slices=(2, 4)))
    layers = [m for m in model.backbone.modules() if isinstance(m, AlignShift)]
    assert layers and all(torch.equal(m.thickness, torch.tensor([3.5, 3.5])) for m in layers)
    assert res.processed == [2, 3] and res.detections and {d.slice for d in res.detections} <= {2, 3}
