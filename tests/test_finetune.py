"""Fine-tuning: ``model.pretrained`` naming an a3d checkpoint loads its whole detector, checked."""

from __future__ import annotations

import os

import pytest
import torch

from a3d.cli import main
from a3d.engine.train import train
from a3d.errors import A3DError
from a3d.models.detector import build_detector
from fixtures_train import small_config, small_overrides


def _state(ckpt_path):
    return torch.load(ckpt_path, map_location="cpu", weights_only=True)["model"]


def test_checkpoint_as_pretrained_loads_every_detector_weight(synth_root, tiny_checkpoint):
    """Every tensor of the built detector (backbone, RPN, box and mask heads, BN statistics) is the
    checkpoint's. Fails if the checkpoint is not loaded (or only its backbone is)."""
    stored = _state(tiny_checkpoint)
    torch.manual_seed(123)
    model = build_detector(small_config(synth_root, f"model.pretrained={tiny_checkpoint}").model)
    own = model.state_dict()
    assert set(own) == set(stored)
    for k, v in own.items():
        assert torch.equal(v, stored[k]), k
    torch.manual_seed(123)
    fresh = build_detector(small_config(synth_root).model).state_dict()
    assert not torch.equal(fresh["roi_heads.box_predictor.cls_score.weight"],
                           stored["roi_heads.box_predictor.cls_score.weight"])


@pytest.mark.parametrize("override, words", [
    ("model.operator=acs", ["model.operator='a3d'", "model.operator='acs'", "same operator"]),
    ("model.slices=5", ["model.slices=3", "model.slices=5", "same slices"]),
    ("model.fc_width=32", ["do not fit", "model.fc_width"]),
])
def test_mismatched_checkpoint_is_refused_naming_the_setting(synth_root, tiny_checkpoint, override, words):
    """Another operator, slice count or head width: one A3DError naming the setting. Fails if the
    operator/slices check is dropped (the weights would then load into a different model, or fail
    with a key listing that does not say why)."""
    with pytest.raises(A3DError) as e:
        build_detector(small_config(synth_root, f"model.pretrained={tiny_checkpoint}", override).model)
    msg = str(e.value)
    assert str(tiny_checkpoint) in msg and all(w in msg for w in words), msg


def test_cli_train_refuses_a_foreign_checkpoint_in_one_line(synth_root, tiny_checkpoint, tmp_path, capsys):
    rc = main(["train", "tiny", *small_overrides(synth_root), f"model.pretrained={tiny_checkpoint}",
               "model.operator=tsm", "train.max_iters=1", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "model.operator='a3d'" in err, err


def test_fine_tuning_starts_from_the_checkpoint(synth_root, tiny_checkpoint, tmp_path):
    """One small-lr step from a checkpoint stays next to its weights; the same step from random init
    is far from them. Fails if a3d train ignores a checkpoint given as model.pretrained."""
    base = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    g = torch.Generator().manual_seed(7)  # weights far from any seeded initialisation
    base["model"] = {k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                     for k, v in base["model"].items()}
    torch.save(base, tmp_path / "base.pt")
    runs = {}
    for name, extra in (("ft", [f"model.pretrained={tmp_path / 'base.pt'}"]), ("scratch", [])):
        cfg = small_config(synth_root, *extra, "train.max_iters=1", "train.lr=0.0002", "train.warmup_iters=0")
        train(cfg, tmp_path / name, progress=False, log=lambda s: None)
        runs[name] = _state(tmp_path / name / "last.pt")
    params = [k for k, _ in build_detector(small_config(synth_root).model).named_parameters()]

    def dist(state):
        return float(sum(((state[k] - base["model"][k]) ** 2).sum() for k in params)) ** 0.5

    assert dist(runs["ft"]) < 0.05 * dist(runs["scratch"])


def test_unsafe_pickle_is_not_run(synth_root, tmp_path):
    """A pickle that would run code is refused with one error, and its code does not run."""
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    bad = tmp_path / "evil.pt"
    torch.save({"format": 1, "model": Evil(), "config": {"model": {}}}, bad)
    with pytest.raises(A3DError):
        build_detector(small_config(synth_root, f"model.pretrained={bad}").model)
    assert not marker.exists()
