"""Cost accounting of the operators (spec section 7, the paper's Table 1), computed from the model.

Two conventions, both in multiply-accumulates (the paper's "GFLOPs" are ptflops' GMac):

``gflops_paper`` (ptflops-style, as the paper counted):
  convolutions: output elements x input channels per group x kernel volume (+ output elements for
  a bias); affine BatchNorm: 2 x input elements (1 x without affine); ReLU and other activations:
  1 x output elements; pools: input elements; Linear: output elements x in_features (+ bias);
  Upsample: output elements. A3D's fusion counts its weights alone (D x D x Ci per layer), P3D its
  (3, 1, 1) depth conv like any conv. TSM/AlignShift's shifts count nothing.

``gflops_true``: the same element counts for BatchNorm/activations/pools/bias, but every
convolution, matmul and einsum counted by ``torch.utils.flop_counter.FlopCounterMode`` (which
counts FLOPs = 2 x MACs; we halve it to stay in MACs), so A3D's fusion counts what it really costs,
D x D x Ci x H x W per layer and sample.

The counts come from forward hooks on a real forward pass; for the backbone the model is built and
run on the ``meta`` device (shapes only), so a 512 x 512 count takes well under a second per model.
Scope for the backbone (as Table 1): ``features`` only, i.e. conv0 through dense block 3 with
transitions 1-2, without the depth-squeezing convs and laterals; input 1 x 1 x D x size x size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from a3d.models import densenet121_3d
from a3d.ops import A3D, ACS, OPERATORS, P3D, Operator, set_thickness

# Table 1 of the paper (GFLOPs for 3 / 7 slices), for side-by-side display and tests only.
PAPER_TABLE1 = {
    "none": (40.64, 94.83), "i3d": (78.69, 183.61), "p3d": (67.79, 158.18), "acs": (40.64, 94.83),
    "tsm": (40.64, 94.83), "alignshift": (40.64, 94.83), "a3d": (40.64, 94.83),
}

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Hardswish)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
          nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
          nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class Counts:
    """Multiply-accumulates of one forward pass, by kind."""

    conv: int = 0  # convolutions/linear, kernel taps only (the paper's conv count)
    bias: int = 0  # bias additions of convolutions/linear layers
    fusion_paper: int = 0  # A3D fusion counted by its weights (D*D*Ci per layer)
    fusion_true: int = 0  # A3D fusion per position (D*D*Ci*H*W*B per layer)
    elementwise: int = 0  # BatchNorm, activations, pools, upsampling (ptflops-style)
    flop_counter: int = 0  # FlopCounterMode's FLOPs (2 x MACs of conv/mm/bmm/einsum)

    @property
    def paper(self) -> int:
        return self.conv + self.bias + self.fusion_paper + self.elementwise

    @property
    def true(self) -> int:
        return self.flop_counter // 2 + self.bias + self.elementwise


def _kernel_macs(out: torch.Tensor, in_per_group: int, weight: torch.Tensor) -> int:
    """Output elements x input channels per group x kernel volume."""
    return out.numel() * in_per_group * weight[0, 0].numel()


def _operator_counts(op: Operator, x: torch.Tensor, y: torch.Tensor, c: Counts) -> None:
    ipg = op.in_channels // op.groups
    if isinstance(op, ACS):  # three views of K*K taps each (weight is stored 2D)
        c.conv += y.numel() * ipg * op.weight[0, 0].numel()
    else:
        c.conv += _kernel_macs(y, ipg, op.weight)
    if op.bias is not None:
        c.bias += y.numel()
    if isinstance(op, P3D):
        c.conv += _kernel_macs(y, op.out_channels, op.weight_depth)
    if isinstance(op, A3D):
        d, ci = op.depth, op.in_channels
        c.fusion_paper += d * d * ci
        c.fusion_true += d * d * ci * x.shape[0] * x[0, 0, 0].numel()


def count(model: nn.Module, *inputs, forward=None) -> Counts:
    """Counts of one forward pass of ``model`` on ``inputs`` (or of ``forward(*inputs)`` if given,
    with hooks on ``model``'s modules). Works on the meta device."""
    c = Counts()

    def hook(mod, args, out):
        x = args[0] if args else None
        if isinstance(mod, Operator):
            _operator_counts(mod, x, out, c)
        elif isinstance(mod, _CONVS + (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            if isinstance(mod, _CONVS):
                c.conv += _kernel_macs(out, mod.in_channels // mod.groups, mod.weight)
            else:  # ptflops: input elements x out channels per group x kernel volume
                c.conv += x.numel() * (mod.out_channels // mod.groups) * mod.weight[0, 0].numel()
            if mod.bias is not None:
                c.bias += out.numel()
        elif isinstance(mod, nn.Linear):
            c.conv += out.numel() * mod.in_features
            if mod.bias is not None:
                c.bias += out.numel()
        elif isinstance(mod, nn.modules.batchnorm._NormBase):
            c.elementwise += x.numel() * (2 if mod.affine else 1)
        elif isinstance(mod, _ACTIVATIONS):
            c.elementwise += out.numel()
        elif isinstance(mod, _POOLS):
            c.elementwise += x.numel()
        elif isinstance(mod, nn.Upsample) or type(mod).__name__ == "DepthKeepingUpsample":
            c.elementwise += out.numel()

    handles = []
    for mod in model.modules():
        # leaves, and operators (whose internals are not modules anyway)
        if isinstance(mod, Operator) or not any(True for _ in mod.children()):
            handles.append(mod.register_forward_hook(hook))
    try:
        fc = FlopCounterMode(display=False)
        with torch.no_grad(), fc:
            (forward or model)(*inputs)
        c.flop_counter = int(fc.get_total_flops())
    finally:
        for h in handles:
            h.remove()
    return c


def params_fusion(model: nn.Module) -> int:
    """Parameters the fusion adds: every operator's parameters minus those of its 2D conv."""
    n = 0
    for mod in model.modules():
        if isinstance(mod, Operator):
            own = sum(p.numel() for p in mod.parameters(recurse=False))
            kh, kw = mod.kernel_size
            base = mod.out_channels * (mod.in_channels // mod.groups) * kh * kw
            base += 0 if mod.bias is None else mod.out_channels
            n += own - base
    return n


@dataclass
class CostRow:
    operator: str
    slices: int
    params: int
    params_fusion: int
    gflops_paper: float
    gflops_true: float

    def as_dict(self) -> dict:
        return asdict(self)


def backbone_cost(name: str, slices: int, size: int = 512, device: str | torch.device = "meta") -> CostRow:
    """Table 1 figures of ``densenet121_3d(name, slices)`` on a 1 x 1 x slices x size x size input."""
    with torch.device(device):
        model = densenet121_3d(name, slices)
        x = torch.zeros(1, 1, slices, size, size)
    model.eval()
    set_thickness(model, torch.full((1,), 5.0))  # AlignShift needs one; it does not change the counts
    c = count(model.features, x)
    return CostRow(
        operator=name,
        slices=slices,
        params=sum(p.numel() for p in model.parameters()),
        params_fusion=params_fusion(model),
        gflops_paper=round(c.paper / 1e9, 2),
        gflops_true=round(c.true / 1e9, 2),
    )


def cost_table(operators=OPERATORS, slices=(3, 7), size: int = 512) -> list[CostRow]:
    return [backbone_cost(op, n, size) for op in operators for n in slices]


def format_table(rows: list[CostRow], size: int = 512) -> str:
    head = f"{'operator':<11} {'slices':>6} {'params':>11} {'fusion params':>13} {'GFLOPs paper':>12} {'GFLOPs true':>11}"
    if size == 512:
        head += f" {'Table 1':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        line = (f"{r.operator:<11} {r.slices:>6} {r.params:>11,} {r.params_fusion:>13,} "
                f"{r.gflops_paper:>12.2f} {r.gflops_true:>11.2f}")
        if size == 512 and r.operator in PAPER_TABLE1 and r.slices in (3, 7):
            line += f" {PAPER_TABLE1[r.operator][0 if r.slices == 3 else 1]:>8.2f}"
        lines.append(line)
    lines.append(
        f"(backbone conv0 .. dense block 3, input 1x1xDx{size}x{size}; GFLOPs = 1e9 multiply-accumulates; "
        "'paper' counts A3D's fusion by its weights, 'true' per position)"
    )
    return "\n".join(lines)
