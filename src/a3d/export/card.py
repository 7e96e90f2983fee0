"""The model card (``README.md``) of an export folder, written from what the checkpoint records.

Sections in the Hugging Face model-card order: front matter (YAML), model, training data, results
from the run, intended use, limitations, how to load, the deployment graphs and their check.
Nothing in it is guessed: a figure the checkpoint does not hold is said to be unknown.
"""

from __future__ import annotations

from typing import Optional, Sequence

from a3d.config import Config
from a3d.export.deploy import Parity, input_names, output_names

_OPERATORS = {
    "none": "no 3D fusion (each slice through the 2D network; context only from the input channels)",
    "i3d": "I3D (3 x 3 x 3 convolutions inflated from 2D)",
    "p3d": "P3D (2D in-plane convolutions followed by 1D convolutions along z)",
    "acs": "ACS (channels split into axial, coronal and sagittal 2D convolutions)",
    "tsm": "TSM (a fixed part of the channels shifted by one slice)",
    "alignshift": "AlignShift (channel shifts scaled by the slice thickness)",
    "a3d": "A3D (asymmetric 3D context fusion: learned per-channel mixing of the slices, then 2D convolutions)",
}


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _front_matter(cfg: Config) -> list[str]:
    return ["---", "library_name: a3d", "pipeline_tag: object-detection",
            f"tags: [{', '.join(dict.fromkeys(['a3d', 'computed-tomography', 'lesion-detection', cfg.model.operator]))}]",
            "---", ""]


def _model(cfg: Config, ckpt: dict, params: int) -> list[str]:
    m, d = cfg.model, cfg.data
    return [
        f"# {cfg.name}: CT lesion detector ({m.operator}, {m.slices} slices)", "",
        (cfg.description + "\n") if cfg.description else "",
        f"Universal lesion detection in CT with 3D context fusion, trained with a3d {ckpt.get('a3d_version', '?')} "
        "(the detector of *Asymmetric 3D Context Fusion for Universal Lesion Detection*, MICCAI 2021).", "",
        "## Model", "",
        f"- 3D context operator: {_OPERATORS.get(m.operator, m.operator)}",
        f"- Backbone: truncated DenseNet-121 made 3D with that operator; Mask R-CNN heads (torchvision) on the "
        f"key slice{'' if m.mask else ', without the mask branch'}; {params / 1e6:.1f} M parameters",
        f"- Input: {m.slices} slices {d.context_spacing_mm:g} mm apart (key slice in the middle), "
        f"{d.size} x {d.size} pixels, HU clipped to [-1024, 2050] and mapped to [-50, 205]",
        f"- Output: up to {m.detections} boxes per key slice with scores (>= {m.score_thresh:g})"
        + (", a mask per box" if m.mask else ""),
        "",
    ]


def _data(cfg: Config, ckpt: dict) -> list[str]:
    d = cfg.data
    samples = ckpt.get("samples") or {}
    sizes = ", ".join(f"{k}: {v} key slices" for k, v in samples.items() if v is not None) or "not recorded"
    masks = "no masks" if not d.masks else f"masks from `{d.mask_dir}/`" + (
        " (GrabCut weak masks from the RECIST diameters)" if d.mask_dir == "masks" else "")
    return [
        "## Training data", "",
        f"- Root: `{d.root}` (DeepLesion layout: `DL_info.csv`, `Images_png/`); splits `{d.train_split}` "
        f"(training) and `{d.val_split}` (validation) of its `Train_Val_Test` column",
        f"- Sizes: {sizes}; {masks}",
        f"- Trained {ckpt.get('iteration', '?')} iterations (batch {cfg.train.batch_size} per process, "
        f"lr {cfg.train.lr:g} for {cfg.train.lr_reference_batch} images)", "",
    ]


def _results(ckpt: dict) -> list[str]:
    history = [h for h in ckpt.get("history") or [] if isinstance(h, dict)]
    metrics = ckpt.get("metrics")
    out = ["## Results from the run", ""]
    if metrics and metrics.get("val_average") is not None:
        fps = metrics.get("fps") or []
        out += [f"Validation FROC of these weights (epoch {metrics.get('epoch')}, iteration "
                f"{metrics.get('iteration')}): average sensitivity at 0.5-4 false positives per image "
                f"**{_pct(metrics['val_average'])} %**.", "",
                "| FPs per image | " + " | ".join(f"{f:g}" for f in fps) + " |",
                "|---|" + "---|" * len(fps),
                "| sensitivity (%) | " + " | ".join(_pct(s) for s in metrics.get("val_sensitivities") or []) + " |", ""]
    else:
        out += ["These weights were not validated during training (no validation FROC recorded for them); "
                "measure them with `a3d eval` before use.", ""]
    if history:
        out += ["Per epoch (mean training loss; validation average sensitivity when validated):", "",
                "| epoch | iteration | train loss | lr | val avg. sensitivity (%) |", "|---|---|---|---|---|"]
        for h in history:
            loss = "-" if h.get("train_loss") is None else f"{h['train_loss']:.4f}"
            lr = "-" if h.get("lr") is None else f"{h['lr']:.2g}"
            out.append(f"| {h.get('epoch')} | {h.get('iteration')} | {loss} | {lr} | {_pct(h.get('val_average'))} |")
        out.append("")
    return out


_USE = """## Intended use

Research on lesion detection in CT: finding candidate lesions on axial slices for a reader to
review, comparing 3D context operators, a starting point for fine-tuning on other CT data. It is
not a medical device and must not be used for diagnosis or treatment decisions.

## Limitations

- The figures above are on the validation split of the training data, measured per key slice with
  the DeepLesion FROC; other scanners, protocols, body regions or populations will score
  differently. Evaluate on your own data (`a3d eval`, `a3d eval3d`) before relying on it.
- One class ("lesion"); boxes are 2D, on the key slice. `a3d predict` groups them into 3D candidates.
- Lesions absent or rare in the training data (type, size, location) are likely missed; scores are
  not calibrated probabilities.
- Inputs must follow the contract above (slice spacing, size, intensity mapping); `a3d predict`
  does that from DICOM or NIfTI.
"""


def _load(names: Sequence[str]) -> list[str]:
    return [
        "## How to load", "",
        "With a3d installed, the folder is a checkpoint:", "",
        "```bash", "a3d predict scan_folder/ --checkpoint THIS_FOLDER --out predictions/", "```", "",
        "```python",
        "from a3d.engine.evaluate import load_model",
        "model, cfg = load_model(\"THIS_FOLDER\")   # detector in eval mode + its a3d Config",
        "```", "",
        "The weights alone (no pickle): `safetensors.torch.load_file(\"THIS_FOLDER/model.safetensors\")`; "
        "`config.json` holds the full a3d config (`config`) and the run's record (`history`, `metrics`).", "",
        "Files: " + ", ".join(f"`{n}`" for n in names) + ".", "",
    ]


def _deploy(cfg: Config, parity: Sequence[Parity], files: Sequence[str]) -> list[str]:
    if not parity:
        return []
    m, s = cfg.model, cfg.data.size
    ins = ", ".join(input_names(cfg))
    graphs = " and ".join(f"`{f}`" for f in files if f.endswith((".onnx", ".torchscript.pt")))
    out = ["## Deployment graphs", "",
           f"{graphs}: the whole detector in eval mode (backbone, RPN, RoI heads, "
           f"NMS{', mask pasting' if m.mask else ''}), batch 1, fixed input size. Inputs ({ins}): `image` float32 "
           f"(1, 1, {m.slices}, {s}, {s}) as above"
           + ("; `thickness` float32 (1,): the slice interval in mm" if m.operator == "alignshift" else "")
           + f". Outputs ({', '.join(output_names(cfg))}): `boxes` float32 (K, 4) x1 y1 x2 y2 in input pixels, "
           "`scores` float32 (K,), `labels` int64 (K,)" + (", `masks` uint8 (K, H, W)" if m.mask else "")
           + f"; K <= {m.detections}, sorted by score.", "",
           "Checked against PyTorch at export, on a CT-like phantom other than the traced input:", ""]
    out += [f"- {p.describe()}" for p in parity]
    return out + [""]


def model_card(cfg: Config, ckpt: dict, params: int, files: Sequence[str], parity: Sequence[Parity] = ()) -> str:
    """README.md text for the export of ``ckpt`` (its config ``cfg``, ``params`` parameters)."""
    lines = [*_front_matter(cfg), *_model(cfg, ckpt, params), *_data(cfg, ckpt), *_results(ckpt), _USE,
             *_load(files), *_deploy(cfg, parity, files)]
    return "\n".join(lines).rstrip() + "\n"
