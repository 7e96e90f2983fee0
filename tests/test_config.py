"""Configs: the 14 paper configs + tiny load and say what their names say; overrides are typed;
unknown keys / wrong types are rejected naming the key; configs round-trip through dicts and TOML."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from a3d.config import (
    OPERATORS,
    Config,
    config_from_dict,
    config_to_dict,
    load_config,
    override_config,
    packaged_configs,
    to_toml,
)
from a3d.errors import A3DError

PAPER = [f"{op}_x{d}" for op in OPERATORS for d in (3, 7)]


def test_operators_match_ops_package():
    import a3d.ops

    assert tuple(a3d.ops.OPERATORS) == OPERATORS


def test_all_packaged_configs_present():
    names = packaged_configs()
    assert sorted(PAPER + ["tiny"]) == sorted(names)


@pytest.mark.parametrize("name", PAPER)
def test_paper_config_states_its_name(name):
    op, d = name.rsplit("_x", 1)
    cfg = load_config(name)
    assert cfg.name == name
    assert cfg.model.operator == op and cfg.model.slices == int(d)
    # fully stated: every dataclass field is written in the file
    from a3d.config import config_path

    raw = tomllib.loads(config_path(name).read_text())
    for section, values in config_to_dict(cfg).items():
        if isinstance(values, dict):
            assert set(raw[section]) == set(values), f"{name}: [{section}] not fully stated"
    # the paper's recipe (spec section 4)
    m, t = cfg.model, cfg.train
    assert m.pretrained == "imagenet"
    assert m.anchor_sizes == (16, 24, 32, 48, 96, 192) and m.aspect_ratios == (0.5, 1.0, 2.0)
    assert (m.rpn_pre_nms_train, m.rpn_post_nms_train, m.rpn_pre_nms_test, m.rpn_post_nms_test) == (12000, 2000, 6000, 300)
    assert m.fc_width == 2048 and m.roi_batch_per_image == 64 and m.rpn_batch_per_image == 32
    assert m.bbox_reg_weights == (10.0, 10.0, 5.0, 5.0)
    assert (t.epochs, t.lr, t.lr_steps, t.warmup_iters, t.clip_grad, t.weight_decay) == (20, 0.02, (9, 16), 500, 35.0, 1e-4)
    assert cfg.data.size == 512
    # the authors' detector targets, init and input geometry (issue 9; docs/fidelity.md)
    assert (m.rpn_min_pos_iou, m.rpn_allowed_border, m.box_loss_beta, m.box_head_init) == (0.3, 0, 1.0, "mmdet")
    assert m.anchor_offset == 1.5
    assert (cfg.data.pad_divisor, cfg.data.augment_interpolation, cfg.data.augment_border) == (32, "bicubic", "reflect101")
    assert m.score_thresh == (0.001 if op == "alignshift" else 5e-5)


def test_tiny_is_small_and_random_init():
    cfg = load_config("tiny")
    assert cfg.model.pretrained == "none" and cfg.data.size <= 128 and cfg.model.fc_width < 2048


def test_overrides_are_typed():
    cfg = load_config("tiny", ["model.operator=acs", "train.epochs=2", "train.lr=1e-3", "model.mask=false",
                               "model.anchor_sizes=8,16", "model.aspect_ratios=[1]", "data.root='x y'"])
    assert cfg.model.operator == "acs" and cfg.train.epochs == 2 and cfg.train.lr == 1e-3
    assert cfg.model.mask is False and cfg.model.anchor_sizes == (8, 16) and cfg.model.aspect_ratios == (1.0,)
    assert cfg.data.root == "x y"


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.operatr=acs", "model.operatr"),
        ("trian.epochs=2", "trian.epochs"),
        ("epochs=2", "epochs"),
        ("train.epochs=two", "train.epochs"),
        ("train.epochs=2.5", "train.epochs"),
        ("model.mask=maybe", "model.mask"),
        ("model.operator=c3d", "model.operator"),
        ("model.slices=4", "model.slices"),
        ("train.amp=fp8", "train.amp"),
        ("model.anchor_sizes=a,b", "model.anchor_sizes"),
        ("data.context_spacing_mm=0", "data.context_spacing_mm"),  # fails without its range check
    ],
)
def test_bad_override_names_the_key(override, key):
    with pytest.raises(A3DError, match=key.replace(".", r"\.")):
        load_config("tiny", [override])


def test_bad_toml_values_name_the_key(tmp_path):
    d = config_to_dict(load_config("tiny"))
    d["train"]["epochs"] = "3"
    with pytest.raises(A3DError, match=r"train\.epochs"):
        config_from_dict(d)
    d = config_to_dict(load_config("tiny"))
    d["model"]["widht"] = 3
    with pytest.raises(A3DError, match=r"model\.widht"):
        config_from_dict(d)
    d = config_to_dict(load_config("tiny"))
    d["model"]["mask"] = 1  # int is not bool
    with pytest.raises(A3DError, match=r"model\.mask"):
        config_from_dict(d)
    p = tmp_path / "bad.toml"
    p.write_text("[model\noperator = 'a3d'\n")
    with pytest.raises(A3DError, match="bad.toml"):
        load_config(p)
    with pytest.raises(A3DError, match="no_such_config"):
        load_config("no_such_config")


def test_round_trip_dict_and_toml(tmp_path):
    cfg = load_config("a3d_x7", ["train.epochs=3"])
    assert config_from_dict(config_to_dict(cfg)) == cfg
    p = tmp_path / "c.toml"
    p.write_text(to_toml(cfg))
    assert load_config(p) == cfg
    assert isinstance(override_config(cfg, ["model.slices=3"]), Config)


def test_cli_rejects_unknown_key_before_running(tmp_path):
    r = subprocess.run([sys.executable, "-m", "a3d.cli", "train", "tiny", "model.nope=1", "--out", str(tmp_path / "r")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "model.nope" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
