"""``a3d export``: the Hugging Face-layout folder (safetensors, config.json, model card) is a checkpoint
for eval/predict; TorchScript and ONNX graphs reproduce PyTorch on inputs other than the traced one."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import safetensors.torch
import torch

from a3d.cli import main
from a3d.engine.checkpoint import load_checkpoint
from a3d.engine.evaluate import load_model, predict_dataset, split_dataset
from a3d.engine.train import train
from a3d.errors import A3DError
from a3d.export import DeployDetector, export_checkpoint
from a3d.export import folder as export_folder
from a3d.export.deploy import Parity
from fixtures_train import small_config
from test_predict_support import synthetic_nifti

pytestmark = pytest.mark.usefixtures("cpu_threads")
QUIET = dict(progress=False, log=lambda s: None)


def _run(synth_root, tmp_path_factory, operator: str):
    """2 iterations, validated; score threshold 0 so that every image has detections to compare."""
    run = tmp_path_factory.mktemp(f"export_{operator}") / "run"
    cfg = small_config(synth_root, f"model.operator={operator}", "model.score_thresh=0", "train.max_iters=2",
                       "train.val_every=1")
    train(cfg, run, **QUIET)
    return run


@pytest.fixture(scope="module")
def shift_run(synth_root, tmp_path_factory):
    """AlignShift: the one operator with a second input (the slice thickness)."""
    return _run(synth_root, tmp_path_factory, "alignshift")


def _val_input(run, synth_root):
    model, cfg = load_model(run / "best.pt")
    image = split_dataset(cfg, synth_root, "val")[0][0][None]  # (1, 1, D, S, S), a real sample
    return model, cfg, image


def test_export_folder_is_a_checkpoint(shift_run, synth_root, tmp_path, capsys):
    """model.safetensors holds best.pt's weights bit for bit, config.json its config and run record,
    README.md the card with the run's own figures; eval and predict load the folder and give what
    best.pt gives.

    Fails if load_checkpoint does not read export folders (eval/predict refuse the folder), if the
    weights are written from another state (e.g. a fresh model), or if the card's figures are not the run's."""
    out = tmp_path / "hub"
    assert main(["export", str(shift_run / "best.pt"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    best = torch.load(shift_run / "best.pt", weights_only=True)
    weights = safetensors.torch.load_file(str(out / "model.safetensors"))
    assert weights.keys() == best["model"].keys()
    assert all(torch.equal(weights[k], best["model"][k]) for k in weights)
    meta = json.loads((out / "config.json").read_text())
    assert meta["model_type"] == "a3d-detector" and meta["config"] == best["config"]
    hist = json.loads((shift_run / "history.json").read_text())
    assert meta["history"] == hist and meta["metrics"] == hist[-1] and "optimizer" not in meta

    card = (out / "README.md").read_text()
    n_train = len(split_dataset(small_config(synth_root), synth_root, "train"))
    for text in ("AlignShift", f"{best['config']['model']['slices']} slices", str(synth_root),
                 f"train: {n_train} key slices", f"**{100 * hist[-1]['val_average']:.1f} %**",
                 f"| 1 | 2 | {hist[-1]['train_loss']:.4f} |", "not a medical device", "--checkpoint THIS_FOLDER"):
        assert text in card, text

    model, cfg = load_model(out)
    ref_model, _ = load_model(shift_run / "best.pt")
    ds = split_dataset(cfg, synth_root, "val")
    a, b = predict_dataset(model, ds), predict_dataset(ref_model, ds)
    assert sum(len(p.scores) for p in a) > 0
    assert all(np.array_equal(p.boxes, q.boxes) and np.array_equal(p.scores, q.scores) for p, q in zip(a, b))

    nifti = synthetic_nifti(tmp_path / "ct.nii.gz")[0]
    assert main(["predict", str(nifti), "--checkpoint", str(out), "--out", str(tmp_path / "pred"), "--slice", "12",
                 "--no-html", "--no-overlays"]) == 0
    assert json.loads((tmp_path / "pred" / "predictions.json").read_text())["model"]["slices"] == cfg.model.slices
    assert main(["eval", str(out), "--data", str(synth_root), "--split", "val", "--out", str(tmp_path / "ev"),
                 "--bootstrap", "0"]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n_predictions"] == sum(len(p.scores) for p in a)


def _outputs_match(ref, got, what: str) -> None:
    assert len(ref) == len(got) == 4, what
    assert ref[0].shape == got[0].shape and ref[0].shape[0] > 0, what
    assert np.abs(ref[0] - got[0]).max() <= 1e-2, what  # pixels
    assert np.abs(ref[1] - got[1]).max() <= 1e-4, what
    assert np.array_equal(ref[2], got[2]), what
    a, b = ref[3].astype(bool), got[3].astype(bool)
    assert (a & b).sum() >= 0.9 * (a | b).sum(), what  # mask IoU: edge pixels at the threshold may flip


def test_torchscript_and_onnx_reproduce_pytorch(shift_run, synth_root, tmp_path):
    """Both graphs, run on a real validation sample (not the phantom they were traced on) at two
    slice thicknesses, give PyTorch's boxes, scores, labels and masks; the thickness is a live input
    (its outputs change with it).

    Fails if the graphs are traced in training mode or with the thickness baked in as a constant
    (the 1 mm outputs would then equal the 5 mm ones), or if the detections are not dynamic in K."""
    import onnxruntime as ort

    out = tmp_path / "deploy"
    res = export_checkpoint(shift_run / "best.pt", out, ["torchscript", "onnx"], log=lambda s: None)
    assert [p.fmt for p in res.parity] == ["torchscript", "onnx"] and all(p.ok and p.detections for p in res.parity)
    model, cfg, image = _val_input(shift_run, synth_root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.10: TorchScript is deprecated
        scripted = torch.jit.load(str(out / "model.torchscript.pt"))
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the mask-pasting loop logs a shape note per detection
    session = ort.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "thickness"]
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels", "masks"]
    results = {}
    for mm in (1.0, 5.0):
        t = torch.tensor([mm])
        with torch.no_grad():
            ref = [v.numpy() for v in DeployDetector(model, True)(image, t)]
            ts = [v.numpy() for v in scripted(image, t)]
        onnx = session.run(None, {"image": image.numpy(), "thickness": t.numpy()})
        _outputs_match(ref, ts, f"torchscript {mm} mm")
        _outputs_match(ref, onnx, f"onnx {mm} mm")
        results[mm] = ref
    assert not np.array_equal(results[1.0][1], results[5.0][1])
    print("parity:", "; ".join(p.describe() for p in res.parity))


def test_a3d_exports_to_torchscript_and_onnx(synth_root, tmp_path_factory, tmp_path):
    """The A3D operator (its fusion a custom autograd Function for training) traces to TorchScript and
    exports to ONNX through its plain-ops forward, and both match PyTorch.

    Fails if the fusion's autograd Function runs while tracing (a prim::PythonOp: TorchScript refused),
    or if the exported fusion is wrong (e.g. P transposed), which the check catches."""
    run = _run(synth_root, tmp_path_factory, "a3d")
    res = export_checkpoint(run / "best.pt", tmp_path / "both", ["torchscript", "onnx"], log=lambda s: None)
    assert [p.fmt for p in res.parity] == ["torchscript", "onnx"], res.parity
    assert all(p.ok and p.detections > 0 for p in res.parity), res.parity
    assert (tmp_path / "both" / "model.torchscript.pt").is_file() and (tmp_path / "both" / "model.onnx").is_file()


def test_export_checks_arguments_first_and_writes_whole_folders(shift_run, tmp_path, monkeypatch, capsys):
    """Bad arguments stop before any work with one line; a graph that fails its check leaves no folder.

    Fails if a failed check still moves the folder into place (atomic_dir bypassed)."""
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    for argv, expected in (
        ([str(shift_run / "best.pt"), "--out", str(taken)], "not empty; pass --overwrite"),
        ([str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o1")], "checkpoint not found"),
        ([str(text), "--out", str(tmp_path / "o2")], "a text file"),
    ):
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err
    assert (taken / "keep.txt").read_text() == "mine" and not (tmp_path / "o2").exists()
    with pytest.raises(SystemExit):
        main(["export", str(shift_run / "best.pt"), "--out", str(tmp_path / "o3"), "--format", "tflite"])

    def failing(model, cfg, fmt, path):
        return Parity(fmt, 3, True, 0.5, 0.0, True, 1.0)  # boxes 0.5 px off: over the tolerance

    monkeypatch.setattr(export_folder, "check_export", failing)
    with pytest.raises(A3DError, match="does not reproduce PyTorch.*0.5 px"):
        export_checkpoint(shift_run / "best.pt", tmp_path / "bad", ["torchscript"], log=lambda s: None)
    assert not (tmp_path / "bad").exists()
    assert load_checkpoint(shift_run / "best.pt")["iteration"] == 2  # the source is untouched
