"""Inference precision of ``a3d predict`` (``--precision``): which dtype, and the model run in it.

- :func:`resolve_precision`: ``auto | fp32 | bf16 | fp16`` + device -> the precision used.
  ``auto`` is bfloat16 on CUDA GPUs that support it and on CPUs with native bfloat16 arithmetic
  (:func:`cpu_has_native_bf16`), float32 elsewhere (other CPUs emulate bfloat16: slower than fp32).
  fp16 is refused on the CPU: oneDNN has no fast float16 path there and float16's range is not
  what the model was trained in.
- :func:`precision_context`: the context one forward pass runs in: ``torch.inference_mode`` and,
  below fp32, autocast to that dtype with the model's 3D pools handing back the autocast dtype
  (CPU autocast runs max/avg_pool3d in float32, which made every dense block concatenate,
  normalise and activate in float32 and cast back before each conv: 1.5x instead of 1.9x).

The detector keeps its RPN and every box coordinate in float32 under autocast (see
:class:`a3d.models.detector.A3DDetector`); fp32 stays the reference (``a3d eval`` runs fp32 unless asked).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from a3d.errors import A3DError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names of native bfloat16 arithmetic


def _cpuinfo_flags(path: str = "/proc/cpuinfo") -> set[str]:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when this CPU computes in bfloat16 natively: torch's own CPU probe (AVX-512 BF16 or AMX
    tiles) where this torch has it, else the ``avx512_bf16`` / ``amx_bf16`` flags of ``cpuinfo``;
    and oneDNN (mkldnn), which runs the convolutions, must be available."""
    if not torch.backends.mkldnn.is_available():
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [p for p in probes if callable(p)]
    try:
        if any(p() for p in probes):
            return True
    except RuntimeError:  # a probe this build cannot run: fall back to the flags
        pass
    return bool(_cpuinfo_flags(cpuinfo) & set(_BF16_CPU_FLAGS))


def resolve_precision(precision: str, device: str) -> str:
    """The precision (fp32, bf16 or fp16) that ``precision`` means on ``device``; A3DError for an
    unknown name or a precision the device cannot run."""
    p = str(precision).lower()
    if p not in PRECISIONS:
        raise A3DError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if p == "auto":
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if kind == "cpu" and cpu_has_native_bf16() else "fp32"
    if p == "fp16" and kind == "cpu":
        raise A3DError("--precision fp16: not on the CPU (no fast float16 path there); use bf16 or fp32, "
                       "or fp16 with --device cuda")
    if p == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise A3DError(f"--precision bf16: {torch.cuda.get_device_name(torch.device(device))} has no bfloat16; "
                       "use fp16 or fp32")
    return p


def _keep_dtype(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.to(inputs[0].dtype)


@contextlib.contextmanager
def precision_context(model: nn.Module, precision: str, device_type: str) -> Iterator[None]:
    """Run ``model``'s forward passes at ``precision`` (fp32, bf16 or fp16, already resolved)."""
    if precision == "fp32":
        with torch.inference_mode():
            yield
        return
    pools = [m for m in model.modules() if isinstance(m, (nn.MaxPool3d, nn.AvgPool3d))]
    hooks = [m.register_forward_hook(_keep_dtype) for m in pools]
    try:
        with torch.inference_mode(), torch.autocast(device_type=device_type, dtype=DTYPES[precision]):
            yield
    finally:
        for h in hooks:
            h.remove()
