"""Training checkpoints: one ``torch.save`` dict, plain types + tensors, loadable with weights_only=True.

Keys (format 1) of every checkpoint (``last.pt`` and ``best.pt``):

- ``format`` (int, :data:`FORMAT`), ``a3d_version`` (str)
- ``config``: the full config as a plain dict (:func:`a3d.config.config_to_dict`)
- ``model``: state dict of the detector (no DDP ``module.`` prefix)
- ``epoch`` (epoch the next iteration belongs to), ``iteration`` (optimizer steps done)
- ``history``: one record per finished epoch: {"epoch", "iteration", "train_loss", "lr"} and, when
  that epoch was validated, {"val_average", "fps", "val_sensitivities"}
- ``best_metric``: best validation average sensitivity so far (float, -1 if none)
- ``samples``: {"train": key slices trained on, "val": key slices validated on (None: no validation)}

``last.pt`` adds the training state (:data:`TRAINING_KEYS`), which resuming needs:

- ``optimizer``, ``scheduler`` ({"iteration", ...}), ``scaler`` (GradScaler state, {} when unused)
- ``rng``: list (one per rank) of {"python", "numpy", "torch", "cuda"} states as tensors/plain types
- ``iters_per_epoch``, ``total_iters``, ``world_size``, ``epoch_loss`` ([sum, count] of the
  current epoch's losses so far)

``best.pt`` (:func:`weights_only`) holds the rest and ``metrics``, the history record that made it
best (None when no validation ran): half the size (SGD's momentum is as large as the weights).

Writes are atomic (temp file + rename), so a killed run leaves the previous checkpoint intact.

Resuming (:func:`load_for_resume`, :func:`check_same_batch`) refuses a checkpoint of another model
config or another total batch with a one-line A3DError.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import safetensors.torch
import torch

from a3d import __version__
from a3d.config import Config, config_from_dict, diff
from a3d.errors import A3DError
from a3d.io import atomic_path

FORMAT = 1
REQUIRED = ("format", "a3d_version", "config", "model", "epoch", "iteration")
MODEL_TYPE = "a3d-detector"  # config.json's "model_type" in an export folder
TRAINING_KEYS = ("optimizer", "scheduler", "scaler", "rng", "iters_per_epoch", "total_iters", "world_size",
                 "epoch_loss")


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Atomically ``torch.save`` ``state`` (with ``format`` and ``a3d_version`` filled in) to ``path``."""
    state = {"format": FORMAT, "a3d_version": __version__, **state}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def weights_only(state: dict, metrics: dict | None) -> dict:
    """``state`` without the training state (:data:`TRAINING_KEYS`), with ``metrics``: the content of
    ``best.pt``, for inference, evaluation, fine-tuning and export."""
    return {**{k: v for k, v in state.items() if k not in TRAINING_KEYS}, "metrics": metrics}


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """A checkpoint dict from an ``a3d train`` file (``torch.load(weights_only=True)``) or an
    ``a3d export`` folder (:func:`read_export`); other files and formats are refused with a clear
    message (never the advice to load them unsafely)."""
    path = Path(path)
    if path.is_dir():
        ckpt = read_export(path)
    elif not path.is_file():
        raise A3DError(f"{path}: checkpoint not found")
    else:
        try:
            with warnings.catch_warnings():  # a plain pickle's protocol note, before the refusal below
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # pickle errors, truncated files, non-weights-only content
            raise A3DError(f"{path}: {_unreadable(path, e)}") from None
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        raise A3DError(f"{path}: not an a3d checkpoint (no 'format' key; expected a file written by 'a3d train' "
                       "or a folder written by 'a3d export')")
    if ckpt["format"] != FORMAT:
        raise A3DError(f"{path}: checkpoint format {ckpt['format']} (a3d {ckpt.get('a3d_version', '?')}); "
                       f"this a3d reads format {FORMAT}")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise A3DError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return ckpt


def _unreadable(path: Path, error: Exception) -> str:
    """What ``path`` is, for a file that ``torch.load(weights_only=True)`` refused."""
    with open(path, "rb") as f:
        head = f.read(64)
    expected = "expected a checkpoint written by 'a3d train' or a folder written by 'a3d export'"
    torch_like = head[:4] == b"PK\x03\x04" or head[:1] == b"\x80"  # torch.save's zip, or a pickle
    if isinstance(error, pickle.UnpicklingError) and torch_like:
        # PyTorch's own message advises weights_only=False, i.e. running whatever the pickle holds
        return ("a pickle holding arbitrary Python objects (not only tensors and plain values); a3d does not "
                f"load such files, since unpickling them can run code; {expected}")
    if torch_like:
        first = (str(error).strip() or type(error).__name__).splitlines()[0].split(". ")[0][:120]
        return f"a damaged or truncated PyTorch file ({first}); {expected}"
    if head and all(32 <= c < 127 or c in b"\t\r\n" for c in head):
        return f"a text file (starts {head[:24].decode()!r}), not a PyTorch checkpoint; {expected}"
    return f"neither a PyTorch zip archive nor a pickle (starts {head[:8]!r}); {expected}"


# ---------------------------------------------------------------------------------- export folders

EXPORT_WEIGHTS, EXPORT_CONFIG = "model.safetensors", "config.json"  # the Hugging Face layout's names


def read_export(folder: Path) -> dict:
    """The checkpoint dict of an ``a3d export`` folder: ``config.json`` (every key but ``model``) and
    ``model.safetensors`` (the state dict, read with safetensors: no pickle)."""
    files = [folder / EXPORT_CONFIG, folder / EXPORT_WEIGHTS]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise A3DError(f"{folder}: not an a3d export folder (no {' or '.join(missing)}); expected a file written "
                       "by 'a3d train' or a folder written by 'a3d export'")
    try:
        meta = json.loads(files[0].read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise A3DError(f"{files[0]}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("model_type") != MODEL_TYPE:
        raise A3DError(f"{files[0]}: not an a3d model config (expected \"model_type\": \"{MODEL_TYPE}\")")
    try:
        state = safetensors.torch.load_file(str(files[1]), device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError / OSError for a bad header
        raise A3DError(f"{files[1]}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    return {**{k: v for k, v in meta.items() if k != "model_type"}, "model": state}


# ---------------------------------------------------------------------------------- resume

# train.* keys that may change on resume without a note (they do not change what is learnt)
_FREE_ON_RESUME = ("train.epochs", "train.max_iters", "train.checkpoint_every", "train.val_every",
                   "train.log_every", "train.device")


def load_for_resume(path: Path, cfg: Config, log: Callable[[str], None] = print) -> tuple[dict, Config]:
    """(checkpoint, the config stored in it) of a run's ``last.pt``, to continue training with ``cfg``.

    Refused when ``path`` is missing or holds another model config (naming the differing keys);
    other schedule differences are noted through ``log``.
    """
    if not path.is_file():
        raise A3DError(f"--resume: {path} not found (nothing to resume in {path.parent})")
    ckpt = load_checkpoint(path)
    if any(k not in ckpt for k in ("optimizer", "scheduler", "rng")):
        raise A3DError(f"{path}: holds weights only (no optimizer, schedule or RNG state, like a best.pt), so "
                       "training cannot resume from it; resume needs the run's own last.pt (to train further "
                       f"from these weights, start a new run with model.pretrained={path})")
    stored = config_from_dict(ckpt["config"], f"{path} (stored config)")
    changed = diff(stored, cfg, "model")
    if changed:
        raise A3DError(f"{path}: checkpoint from another model config (differs in {', '.join(changed)}); "
                       "resume with the run's own config or start a new --out folder")
    noted = [k for k in diff(stored, cfg, "train") if k not in _FREE_ON_RESUME]
    if noted:
        log(f"resume: note: config differs from the checkpoint's in {', '.join(noted)}")
    return ckpt, stored


def check_same_batch(ckpt: dict, stored: Config, path: Path, iters_per_epoch: int, world_size: int,
                     batch_size: int) -> None:
    """Refuse to resume with another total batch (world size x batch size) or epoch length: the
    position in the epoch and the data order would not carry over."""
    ck_ipe = int(ckpt.get("iters_per_epoch", iters_per_epoch))
    ck_world = int(ckpt.get("world_size", world_size))
    ck_batch = stored.train.batch_size
    if ck_ipe != iters_per_epoch or ck_world * ck_batch != world_size * batch_size:
        raise A3DError(f"{path}: the checkpoint was taken with {ck_world} process(es) x train.batch_size "
                       f"{ck_batch} ({ck_ipe} iterations per epoch), here {world_size} x {batch_size} "
                       f"({iters_per_epoch}); resume with the same world size and batch size")


# ------------------------------------------------------------------------------------ RNG


def rng_state() -> dict:
    """This process's RNG states as tensors / plain types (weights_only-loadable)."""
    np_state = np.random.get_state()
    state = {
        "python": _plain(random.getstate()),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(x):
    if isinstance(x, tuple):
        return [_plain(v) for v in x]
    return x


def _tuples(x):
    if isinstance(x, list):
        return tuple(_tuples(v) for v in x)
    return x


def model_state(model: torch.nn.Module) -> dict:
    """State dict without DDP's ``module.`` wrapper."""
    return getattr(model, "module", model).state_dict()


def load_model_state(model: torch.nn.Module, state: dict, source: str) -> None:
    """Strictly load ``state``; a mismatch (another config's checkpoint) is an A3DError naming keys."""
    target = getattr(model, "module", model)
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise A3DError(f"{source}: weights do not fit this model structure ({'; '.join(parts)}); "
                       "the checkpoint comes from another config")
    target.load_state_dict(state)
