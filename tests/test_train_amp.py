"""Mixed precision training on CPU (torch supports both bf16 and fp16 autocast on CPU): bf16
autocast, and fp16 autocast with a GradScaler, each with gradient clipping."""

from __future__ import annotations

import pytest
import torch

from a3d.engine.checkpoint import load_checkpoint
from a3d.engine.train import train
from fixtures_train import small_config

QUIET = dict(progress=False, log=lambda s: None)
CLIP = 0.05


@pytest.fixture
def conv_dtypes():
    """The output dtypes of every Conv3d forward while the test runs."""
    seen: set[torch.dtype] = set()

    def hook(module, args, output):
        if isinstance(module, torch.nn.Conv3d):
            seen.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    yield seen
    handle.remove()


def _first_step_gradient_norm(ckpt: dict) -> float:
    """With momentum and no weight decay, each momentum buffer after the first step is the gradient
    the optimizer applied (clipped and unscaled): their joint norm is that gradient's norm."""
    bufs = [s["momentum_buffer"] for s in ckpt["optimizer"]["state"].values()]
    assert bufs and all(b is not None for b in bufs)
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(b.double()) for b in bufs])))


@pytest.mark.parametrize("amp, dtype", [("off", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_amp_training_clips_the_true_gradient(amp, dtype, synth_root, tmp_path, conv_dtypes):
    """Fails if autocast is not entered (convolutions stay float32), if fp16 runs without its
    GradScaler (no scaler state), if clipping is skipped, or if it sees the scaled fp16 gradient
    (``scaler.unscale_`` removed: the applied gradient's norm is then CLIP / 65536)."""
    cfg = small_config(synth_root, "train.max_iters=1", f"train.amp={amp}", f"train.clip_grad={CLIP}",
                       "train.weight_decay=0", "train.threads=1")
    # a quarter of the loss: with the authors' head init, the full first gradient times GradScaler's
    # initial 2^16 overflows fp16 and the step is skipped (normal AMP behaviour, but it leaves no
    # momentum to read); clipping still brings the smaller gradient down to CLIP
    train(cfg, tmp_path / "run", loss_hook=lambda it, losses: {k: v * 0.25 for k, v in losses.items()}, **QUIET)
    assert conv_dtypes == {dtype}
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    # the tiny model's first gradient is far larger than CLIP: clipping brings it to CLIP exactly
    assert _first_step_gradient_norm(ckpt) == pytest.approx(CLIP, rel=1e-3)
    if amp == "fp16":
        assert ckpt["scaler"]["scale"] == 2.0**16  # GradScaler's initial scale: the step was not skipped
    else:
        assert ckpt["scaler"] == {}
