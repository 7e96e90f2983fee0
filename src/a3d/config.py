"""Typed configuration: dataclasses, TOML loading, ``key=value`` overrides, validation.

One :class:`Config` object travels from the TOML file through ``a3d.engine`` into ``a3d.models``
and ``a3d.data``; nothing else reads config files. A config is plain data: ``config_to_dict`` gives
the dict stored inside checkpoints and ``config_from_dict`` rebuilds (and re-validates) it.

Loading: ``load_config(name_or_path, overrides)`` where ``name_or_path`` is a TOML file or the name
of a packaged config (``a3d_x7``, ``tiny``; see :func:`packaged_configs`), and each override is
``section.key=value`` (``model.operator=acs``, ``train.epochs=2``, ``model.anchor_sizes=16,32``).
Values are parsed with the type the dataclass field declares. An unknown key, a wrong type or a value
out of range raises :class:`a3d.errors.A3DError` naming the key, before anything runs.

Learning rate: ``train.lr`` is the rate for a total batch of ``train.lr_reference_batch`` images
(0.02 for 4 images: the authors trained 1 image per GPU on up to 4 GPUs); the rate used is
``lr * batch_size * world_size / lr_reference_batch`` (linear scaling).
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from a3d.errors import A3DError

# Same tuple as a3d.ops.OPERATORS (kept here so that loading a config does not import torch; a test
# checks the two agree).
OPERATORS = ("none", "i3d", "p3d", "acs", "tsm", "alignshift", "a3d")
AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass(frozen=True)
class ModelConfig:
    """Backbone + Mask R-CNN heads (spec sections 3 and 4)."""

    operator: str = "a3d"
    slices: int = 3
    # "imagenet": torchvision DenseNet-121 weights from the torch hub cache; "none": random init;
    # anything else: path to a torchvision densenet121 state-dict file.
    pretrained: str = "imagenet"
    checkpointing: bool = False  # gradient checkpointing of the dense layers
    num_classes: int = 2  # background + lesion
    mask: bool = True  # mask branch (Dice loss on GrabCut weak masks)
    # RPN, on the single stride-4 map
    anchor_sizes: tuple[int, ...] = (16, 24, 32, 48, 96, 192)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    anchor_offset: float = 0.0  # px; the paper configs' 1.5 = mmdetection's cell centre (0: torchvision's)
    rpn_fg_iou: float = 0.7
    rpn_bg_iou: float = 0.3
    rpn_batch_per_image: int = 32
    rpn_positive_fraction: float = 0.5
    rpn_pre_nms_train: int = 12000
    rpn_post_nms_train: int = 2000
    rpn_pre_nms_test: int = 6000
    rpn_post_nms_test: int = 300
    rpn_nms: float = 0.7
    rpn_channels: int = 0  # RPN 3x3 conv width; 0 = the input's (512, torchvision's RPNHead)
    # the authors' (mmdetection) RPN labels; torchvision's: rpn_min_pos_iou = 0, rpn_allowed_border = -1
    rpn_min_pos_iou: float = 0.3  # a GT's best anchors are positive only from this IoU
    rpn_allowed_border: int = 0  # anchors reaching further (px) outside the image are ignored; -1: none
    # box head
    roi_size: int = 7
    roi_sampling_ratio: int = 2
    fc_width: int = 2048
    bbox_reg_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0)
    roi_batch_per_image: int = 64
    roi_positive_fraction: float = 0.25
    roi_fg_iou: float = 0.5
    roi_bg_iou: float = 0.5
    box_loss_beta: float = 1.0  # SmoothL1 beta of the box head (the authors'; torchvision's: 1/9)
    box_head_init: str = "mmdet"  # mmdet (xavier FCs, N(0, .01) / N(0, .001) outputs) | torchvision
    # mask head
    mask_roi_size: int = 14
    mask_channels: int = 256
    mask_convs: int = 4
    dice_smooth: float = 0.01
    # test time
    score_thresh: float = 5e-5
    nms: float = 0.5
    detections: int = 50
    mask_threshold: float = 0.5


@dataclass(frozen=True)
class DataConfig:
    root: str = "data/DeepLesion"
    size: int = 512  # slices are resized to fit size x size keeping their aspect ratio
    pad_divisor: int = 32  # ... and padded (bottom, right; with air) to multiples of this
    masks: bool = True  # lesion masks for the mask branch (files under root/<mask_dir>/)
    mask_dir: str = "masks"  # "masks": GrabCut weak masks (a3d data masks); synthetic data: "masks_true"
    train_split: str = "train"
    val_split: str = "val"
    # context slices are resampled this far apart along z (mm; the paper's 2 mm), in training,
    # evaluation and prediction alike
    context_spacing_mm: float = 2.0
    # augmentation (training only)
    flip: bool = True  # random horizontal flip
    augment: bool = True  # shift / scale / rotate
    shift: float = 0.04
    scale: float = 0.2
    rotate: float = 15.0
    augment_p: float = 0.8
    augment_interpolation: str = "bicubic"  # the authors' (albumentations) | bilinear
    augment_border: str = "reflect101"  # the authors' (albumentations) | constant (air)
    workers: int = 4  # data-loader worker processes per training process


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 1  # images per process (per GPU)
    lr: float = 0.02  # for a total batch of lr_reference_batch images; scaled linearly
    lr_reference_batch: int = 4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_factor: float = 0.01
    lr_steps: tuple[int, ...] = (9, 16)  # epochs after which lr *= lr_gamma
    lr_gamma: float = 0.1
    clip_grad: float = 35.0  # max gradient norm; 0 = no clipping
    max_iters: int = 0  # 0: epochs x iterations per epoch; else stop there (lr steps scaled to it)
    amp: str = "auto"  # auto (bf16 on GPU, off on CPU) | off | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # CPU threads for torch; 0 = auto (torch's default, 1 when the CPUs are already busy)
    sync_bn: bool = True  # SyncBatchNorm when world size > 1 on GPU
    seed: int = 0
    checkpoint_every: int = 1000  # iterations; checkpoints are also written after every epoch
    val_every: int = 1  # epochs; 0 = no validation
    val_batch_size: int = 2
    log_every: int = 20  # iterations between TensorBoard scalars


@dataclass(frozen=True)
class Config:
    name: str = "custom"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
_TOP_LEVEL = {"name": str, "description": str}


# --------------------------------------------------------------------------------------- types


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp) -> str:
    if typing.get_origin(tp) is tuple:
        (inner, _) = typing.get_args(tp)
        return f"list of {inner.__name__}"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, tp, value, source: str):
    """A TOML value (or a value parsed from an override) checked/converted to ``tp``."""

    def bad():
        raise A3DError(f"{source}: {key} must be {_type_name(tp)}, got {type(value).__name__} {value!r}")

    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            bad()
        return tuple(_coerce(f"{key}[{i}]", inner, v, source) for i, v in enumerate(value))
    accepted = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(tp)
    if accepted is None:
        raise TypeError(f"unsupported config type {tp} for {key}")
    if not isinstance(value, accepted) or (tp is not bool and isinstance(value, bool)):
        bad()
    return float(value) if tp is float else value


def _parse_text(key: str, tp, text: str):
    """Parse an override's text as ``tp`` (the dataclass field type)."""
    t = text.strip()
    try:
        if typing.get_origin(tp) is tuple:
            inner = typing.get_args(tp)[0]
            t = t.strip("[]()")
            parts = [p.strip() for p in t.split(",") if p.strip()]
            return tuple(_parse_text(f"{key}[{i}]", inner, p) for i, p in enumerate(parts))
        if tp is bool:
            low = t.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            return int(t)
        if tp is float:
            return float(t)
        if tp is str:
            if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
                t = t[1:-1]
            return t
    except ValueError:
        raise A3DError(f"override {key}={text}: expected {_type_name(tp)}") from None
    raise TypeError(f"unsupported config type {tp} for {key}")


# ------------------------------------------------------------------------------ dict <-> Config


def config_from_dict(d: dict, source: str = "config") -> Config:
    """Strictly build a Config from a plain dict (TOML or a checkpoint's ``config``); validates it."""
    if not isinstance(d, dict):
        raise A3DError(f"{source}: expected a table of sections, got {type(d).__name__}")
    top = {}
    sections = {}
    for key, value in d.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise A3DError(f"{source}: [{key}] must be a table")
            cls = _SECTIONS[key]
            types_ = _field_types(cls)
            kwargs = {}
            for k, v in value.items():
                if k not in types_:
                    raise A3DError(f"{source}: unknown key {key}.{k} (known: {', '.join(types_)})")
                kwargs[k] = _coerce(f"{key}.{k}", types_[k], v, source)
            sections[key] = cls(**kwargs)
        elif key in _TOP_LEVEL:
            top[key] = _coerce(key, _TOP_LEVEL[key], value, source)
        else:
            known = ", ".join([*_TOP_LEVEL, *_SECTIONS])
            raise A3DError(f"{source}: unknown key {key} (known: {known})")
    cfg = Config(**top, **sections)
    validate(cfg, source)
    return cfg


def config_to_dict(cfg: Config) -> dict:
    """Plain dict (str/int/float/bool/list only): what checkpoints store."""

    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    out: dict[str, Any] = {"name": cfg.name, "description": cfg.description}
    for section in _SECTIONS:
        obj = getattr(cfg, section)
        out[section] = {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    return out


def validate(cfg: Config, source: str = "config") -> None:
    """Range checks, each naming its key."""
    m, d, t = cfg.model, cfg.data, cfg.train

    def need(ok: bool, key: str, what: str):
        if not ok:
            value = getattr({"model": m, "data": d, "train": t}[key.split(".")[0]], key.split(".")[1])
            raise A3DError(f"{source}: {key} = {value!r}: expected {what}")

    need(m.operator in OPERATORS, "model.operator", f"one of {', '.join(OPERATORS)}")
    need(m.slices >= 1 and m.slices % 2 == 1, "model.slices", "an odd number >= 1 (3 or 7 in the paper)")
    need(m.num_classes >= 2, "model.num_classes", ">= 2 (background + lesion)")
    need(len(m.anchor_sizes) > 0 and all(s > 0 for s in m.anchor_sizes), "model.anchor_sizes", "positive sizes")
    need(len(m.aspect_ratios) > 0 and all(r > 0 for r in m.aspect_ratios), "model.aspect_ratios", "positive ratios")
    need(len(m.bbox_reg_weights) == 4, "model.bbox_reg_weights", "4 numbers")
    for key in ("rpn_fg_iou", "rpn_bg_iou", "rpn_positive_fraction", "rpn_nms", "roi_positive_fraction",
                "roi_fg_iou", "roi_bg_iou", "nms", "mask_threshold"):
        need(0.0 <= getattr(m, key) <= 1.0, f"model.{key}", "a number in [0, 1]")
    need(m.rpn_bg_iou <= m.rpn_fg_iou, "model.rpn_bg_iou", "<= model.rpn_fg_iou")
    need(0.0 <= m.rpn_min_pos_iou <= 1.0, "model.rpn_min_pos_iou", "a number in [0, 1] (0: torchvision's)")
    need(m.rpn_allowed_border >= -1, "model.rpn_allowed_border", ">= 0 pixels, or -1 (every anchor counts)")
    need(m.box_loss_beta > 0, "model.box_loss_beta", "> 0 (the authors': 1.0; torchvision's: 1/9)")
    need(m.box_head_init in ("mmdet", "torchvision"), "model.box_head_init", "mmdet or torchvision")
    need(m.roi_bg_iou <= m.roi_fg_iou, "model.roi_bg_iou", "<= model.roi_fg_iou")
    for key in ("rpn_batch_per_image", "rpn_pre_nms_train", "rpn_post_nms_train", "rpn_pre_nms_test",
                "rpn_post_nms_test", "roi_size", "fc_width", "roi_batch_per_image", "mask_roi_size",
                "mask_channels", "detections"):
        need(getattr(m, key) >= 1, f"model.{key}", "a positive integer")
    need(m.rpn_channels >= 0, "model.rpn_channels", ">= 0 (0 = the backbone's width)")
    need(m.roi_sampling_ratio >= 0, "model.roi_sampling_ratio", ">= 0")
    need(m.mask_convs >= 0, "model.mask_convs", ">= 0")
    need(m.dice_smooth >= 0, "model.dice_smooth", ">= 0")
    need(0.0 <= m.score_thresh < 1.0, "model.score_thresh", "a number in [0, 1)")
    need(d.size >= 32 and d.size % 16 == 0, "data.size", "a multiple of 16, at least 32")
    need(d.pad_divisor >= 1, "data.pad_divisor", ">= 1 (the authors': 32)")
    need(d.augment_interpolation in ("bicubic", "bilinear"), "data.augment_interpolation", "bicubic or bilinear")
    need(d.augment_border in ("reflect101", "constant"), "data.augment_border", "reflect101 or constant")
    need(d.workers >= 0, "data.workers", ">= 0")
    need(d.context_spacing_mm > 0, "data.context_spacing_mm", "a positive distance in mm (the paper: 2)")
    need(0.0 <= d.augment_p <= 1.0, "data.augment_p", "a number in [0, 1]")
    need(t.epochs >= 1, "train.epochs", ">= 1")
    need(t.batch_size >= 1, "train.batch_size", ">= 1")
    need(t.lr > 0, "train.lr", "> 0")
    need(t.lr_reference_batch >= 1, "train.lr_reference_batch", ">= 1")
    need(t.weight_decay >= 0, "train.weight_decay", ">= 0")
    need(t.warmup_iters >= 0, "train.warmup_iters", ">= 0")
    need(0 < t.warmup_factor <= 1, "train.warmup_factor", "a number in (0, 1]")
    need(all(s >= 1 for s in t.lr_steps) and list(t.lr_steps) == sorted(t.lr_steps), "train.lr_steps",
         "increasing epochs >= 1")
    need(t.clip_grad >= 0, "train.clip_grad", ">= 0 (0 = off)")
    need(t.max_iters >= 0, "train.max_iters", ">= 0 (0 = epochs x iterations per epoch)")
    need(t.amp in AMP_MODES, "train.amp", f"one of {', '.join(AMP_MODES)}")
    need(t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:"), "train.device",
         "auto, cpu, cuda or cuda:N")
    need(t.threads >= 0, "train.threads", ">= 0 (0 = auto)")
    need(t.checkpoint_every >= 0, "train.checkpoint_every", ">= 0 (0 = only after each epoch)")
    need(t.val_every >= 0, "train.val_every", ">= 0 (0 = never)")
    need(t.val_batch_size >= 1, "train.val_batch_size", ">= 1")
    need(t.log_every >= 1, "train.log_every", ">= 1")


# ---------------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise A3DError(f"override {text!r}: expected key=value, e.g. model.operator=acs")
    key, value = text.split("=", 1)
    return key.strip(), value


def apply_overrides(d: dict, overrides: Iterable[str], source: str = "override") -> dict:
    """Return a copy of the plain config dict ``d`` with ``key=value`` overrides applied (typed)."""
    import copy

    d = copy.deepcopy(d)
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        if len(parts) == 1 and parts[0] in _TOP_LEVEL:
            d[parts[0]] = _parse_text(key, _TOP_LEVEL[parts[0]], value)
            continue
        if len(parts) != 2 or parts[0] not in _SECTIONS:
            raise A3DError(f"override {text!r}: unknown key {key} (use section.key with section one of "
                           f"{', '.join(_SECTIONS)})")
        section, name = parts
        types_ = _field_types(_SECTIONS[section])
        if name not in types_:
            raise A3DError(f"override {text!r}: unknown key {key} (known in [{section}]: {', '.join(types_)})")
        d.setdefault(section, {})[name] = _parse_text(key, types_[name], value)
    return d


# ------------------------------------------------------------------------------------ loading


def packaged_configs() -> list[str]:
    """Names of the configs shipped in ``a3d/configs`` (without ``.toml``)."""
    folder = resources.files("a3d") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def config_path(name_or_path: str | Path) -> Path:
    """A TOML path, or the packaged config of that name."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise A3DError(f"config file {p} not found")
        return p
    packaged = resources.files("a3d") / "configs" / f"{name_or_path}.toml"
    if not packaged.is_file():
        raise A3DError(f"config {name_or_path!r}: no such file and no packaged config of that name "
                       f"(packaged: {', '.join(packaged_configs())})")
    return Path(str(packaged))


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise A3DError(f"{path}: not valid TOML ({e})") from None


def load_config(name_or_path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Read a TOML config (file or packaged name), apply ``key=value`` overrides, validate."""
    path = config_path(name_or_path)
    d = read_toml(path)
    overrides = list(overrides)
    d = apply_overrides(d, overrides)
    source = str(path) + (" + overrides" if overrides else "")
    return config_from_dict(d, source)


def override_config(cfg: Config, overrides: Iterable[str]) -> Config:
    """A copy of ``cfg`` with typed ``key=value`` overrides applied."""
    return config_from_dict(apply_overrides(config_to_dict(cfg), list(overrides)), "overrides")


def replace(cfg: Config, **sections: dict) -> Config:
    """A copy of ``cfg`` with fields replaced, e.g. ``replace(cfg, train={"epochs": 2})``."""
    d = config_to_dict(cfg)
    for section, values in sections.items():
        if isinstance(values, dict):
            d.setdefault(section, {}).update(values)
        else:
            d[section] = values
    return config_from_dict(d, "replace")


# ------------------------------------------------------------------------------------- TOML out


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(cfg: Config | dict) -> str:
    """The config as TOML text (loads back to the same Config)."""
    d = config_to_dict(cfg) if isinstance(cfg, Config) else cfg
    lines = [f"{k} = {_toml_value(d[k])}" for k in _TOP_LEVEL if k in d]
    for section in _SECTIONS:
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in d.get(section, {}).items()]
    return "\n".join(lines) + "\n"


def diff(a: Config | dict, b: Config | dict, section: str | None = None) -> list[str]:
    """Keys (``section.key``) whose values differ between two configs."""
    da = config_to_dict(a) if isinstance(a, Config) else a
    db = config_to_dict(b) if isinstance(b, Config) else b
    out = []
    for s in ([section] if section else list(_SECTIONS)):
        sa, sb = da.get(s, {}), db.get(s, {})
        for k in sorted(set(sa) | set(sb)):
            if sa.get(k) != sb.get(k):
                out.append(f"{s}.{k}")
    return out


__all__ = [
    "OPERATORS", "Config", "ModelConfig", "DataConfig", "TrainConfig", "load_config", "config_from_dict",
    "config_to_dict", "apply_overrides", "override_config", "packaged_configs", "config_path", "to_toml",
    "validate", "diff", "replace",
]
