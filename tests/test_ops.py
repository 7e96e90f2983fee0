"""The seven operators against independent references (explicit loops, hand-built tensors)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from a3d.errors import A3DError, ConversionError
from a3d.ops import OPERATORS, a3d_fuse, a3d_fuse_reference, from_conv2d, set_thickness

torch.manual_seed(0)


def _conv(ci=8, co=6, k=3, stride=1, padding=1, dilation=1, groups=1, bias=True, **kw):
    torch.manual_seed(1)
    return nn.Conv2d(ci, co, k, stride, padding, dilation, groups, bias, **kw)


def _per_slice(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([conv(x[:, :, d]) for d in range(x.shape[2])], dim=2)


def _ready(op, batch):
    set_thickness(op, torch.full((batch,), 3.0))
    return op


GEOMETRIES = [
    dict(),  # 3x3 same
    dict(k=3, stride=2, padding=1),
    dict(k=1, padding=0),
    dict(k=3, padding=2, dilation=2),
    dict(ci=8, co=6, k=3, groups=2),
    dict(k=7, stride=2, padding=3, bias=False),
    dict(k=3, padding=0),
]


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("geom", GEOMETRIES)
@pytest.mark.parametrize("hw", [(9, 11), (8, 8)])
def test_shapes_match_2d_conv(name, geom, hw):
    conv = _conv(**geom)
    d = 3
    x = torch.randn(2, conv.in_channels, d, *hw)
    op = _ready(from_conv2d(name, conv, d), 2)
    y = op(x)
    ref = conv(x[:, :, 0])
    assert y.shape == (2, conv.out_channels, d, *ref.shape[-2:])


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_none_equals_per_slice_conv2d(geom):
    conv = _conv(**geom)
    x = torch.randn(2, conv.in_channels, 4, 9, 10)
    y = from_conv2d("none", conv, 4)(x)
    torch.testing.assert_close(y, _per_slice(conv, x), rtol=1e-5, atol=1e-5)


def test_none_reflect_padding_mode():
    conv = _conv(padding_mode="reflect")
    x = torch.randn(1, 8, 3, 7, 9)
    torch.testing.assert_close(from_conv2d("none", conv, 3)(x), _per_slice(conv, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("geom", [dict(), dict(k=5, padding=2), dict(k=3, padding=2, dilation=2), dict(stride=2)])
def test_i3d_depth_constant_input_equals_2d_on_interior(geom):
    conv = _conv(**geom)
    k, dil = conv.kernel_size[0], conv.dilation[0]
    d = 2 * dil * (k // 2) + 3
    s = torch.randn(2, conv.in_channels, 1, 10, 10)
    x = s.expand(-1, -1, d, -1, -1).contiguous()
    op = from_conv2d("i3d", conv, d)
    assert op.weight.shape[2] == k
    torch.testing.assert_close(op.weight.sum(2), conv.weight, rtol=1e-5, atol=1e-6)
    y = op(x)
    assert y.shape[2] == d
    ref = conv(s[:, :, 0])
    lo = dil * (k // 2)
    for i in range(lo, d - lo):
        torch.testing.assert_close(y[:, :, i], ref, rtol=1e-4, atol=1e-5)
    # the border slices see zero padding: they differ
    assert not torch.allclose(y[:, :, 0], ref, atol=1e-4)


def test_p3d_at_init_equals_none():
    conv = _conv()
    x = torch.randn(2, 8, 5, 9, 9)
    torch.testing.assert_close(from_conv2d("p3d", conv, 5)(x), from_conv2d("none", conv, 5)(x), rtol=0, atol=1e-6)
    p = from_conv2d("p3d", conv, 5)
    assert p.weight_depth.shape == (6, 6, 3, 1, 1)
    assert p.weight_depth[:, :, 1, 0, 0].equal(torch.eye(6))
    assert p.weight_depth[:, :, [0, 2]].abs().sum() == 0


def test_a3d_identity_equals_none_exactly():
    conv = _conv()
    x = torch.randn(2, 8, 7, 9, 9)
    op = from_conv2d("a3d", conv, 7)
    with torch.no_grad():
        op.P.copy_(torch.eye(7).unsqueeze(2).expand(7, 7, 8))
    assert torch.equal(op(x), from_conv2d("none", conv, 7)(x))


def test_a3d_init_and_slow_reference():
    torch.manual_seed(3)
    conv = _conv()
    d = 5
    op = from_conv2d("a3d", conv, d)
    assert op.P.shape == (d, d, 8)
    noise = op.P.detach() - torch.eye(d).unsqueeze(2)
    assert noise.abs().max() <= 0.1 and noise.abs().max() > 0.05
    assert noise.std() > 0.03  # per element, not one value per channel
    with torch.no_grad():
        op.P.copy_(torch.randn(d, d, 8))
    x = torch.randn(2, 8, d, 6, 7)
    fused = torch.zeros_like(x)
    for b in range(2):
        for c in range(8):
            for k in range(d):
                for j in range(d):
                    fused[b, c, k] += op.P[j, k, c].item() * x[b, c, j]
    torch.testing.assert_close(op(x), _per_slice(conv, fused), rtol=1e-4, atol=1e-4)


def test_a3d_gradient_reaches_p_and_matches_einsum():
    conv = _conv()
    op = from_conv2d("a3d", conv, 3)
    x = torch.randn(2, 8, 3, 6, 6, requires_grad=True)
    op(x).square().sum().backward()
    assert op.P.grad is not None and op.P.grad.abs().sum() > 0
    gp, gx = op.P.grad.clone(), x.grad.clone()
    op.P.grad = None
    x.grad = None
    xf = torch.einsum("bcdhw,dkc->bckhw", x, op.P)
    F.conv3d(xf, op.weight, op.bias, 1, (0, 1, 1)).square().sum().backward()
    torch.testing.assert_close(gp, op.P.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gx, x.grad, rtol=1e-4, atol=1e-4)


def test_a3d_wrong_depth_raises():
    op = from_conv2d("a3d", _conv(), 3)
    op.layer_name = "features.block.conv1"
    with pytest.raises(ConversionError, match=r"features\.block\.conv1.*D=3.*D=7"):
        op(torch.randn(1, 8, 7, 5, 5))


def _identity_conv(c):
    conv = nn.Conv2d(c, c, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(c).view(c, c, 1, 1))
    return conv


def test_tsm_hand_built_shift():
    c, d = 16, 4  # fold = 2
    x = torch.randn(2, c, d, 3, 3)
    exp = torch.zeros_like(x)
    for i in range(d):
        if i + 1 < d:
            exp[:, 0:2, i] = x[:, 0:2, i + 1]
        if i - 1 >= 0:
            exp[:, 2:4, i] = x[:, 2:4, i - 1]
        exp[:, 4:, i] = x[:, 4:, i]
    assert torch.equal(from_conv2d("tsm", _identity_conv(c), d)(x), exp)


@pytest.mark.parametrize("t,a", [(1.0, 0.0), (2.0, 0.0), (3.0, 1.0 / 3.0), (5.0, 0.6)])
def test_alignshift_hand_built_blend(t, a):
    c, d = 16, 4
    x = torch.randn(2, c, d, 3, 3)
    exp = x.clone()
    for i in range(d - 1):  # first group blends with the next slice, last slice unchanged
        exp[:, 0:2, i] = a * x[:, 0:2, i] + (1 - a) * x[:, 0:2, i + 1]
    for i in range(1, d):  # second group blends with the previous slice, first slice unchanged
        exp[:, 2:4, i] = a * x[:, 2:4, i] + (1 - a) * x[:, 2:4, i - 1]
    op = from_conv2d("alignshift", _identity_conv(c), d)
    assert set_thickness(op, torch.tensor([t, t])) == 1
    torch.testing.assert_close(op(x), exp, rtol=1e-6, atol=1e-6)
    if t <= 2:  # full shift: as TSM except the border slices
        tsm = from_conv2d("tsm", _identity_conv(c), d)(x)
        torch.testing.assert_close(op(x)[:, :4, 1:-1], tsm[:, :4, 1:-1])


def test_alignshift_per_sample_thickness():
    c, d = 8, 3  # fold = 1
    x = torch.randn(2, c, d, 2, 2)
    op = from_conv2d("alignshift", _identity_conv(c), d)
    set_thickness(op, torch.tensor([1.0, 5.0]))
    y = op(x)
    torch.testing.assert_close(y[0, 0, 0], x[0, 0, 1])
    torch.testing.assert_close(y[1, 0, 0], 0.6 * x[1, 0, 0] + 0.4 * x[1, 0, 1])
    torch.testing.assert_close(y[1, 1, 2], 0.6 * x[1, 1, 2] + 0.4 * x[1, 1, 1])


def test_alignshift_without_thickness_raises():
    op = from_conv2d("alignshift", _conv(), 3)
    op.layer_name = "layer1.0.conv2"
    with pytest.raises(ConversionError, match=r"layer1\.0\.conv2.*set_thickness"):
        op(torch.randn(1, 8, 3, 5, 5))
    set_thickness(op, [2.0, 3.0, 5.0])
    with pytest.raises(A3DError, match="batch of 1"):
        op(torch.randn(1, 8, 3, 5, 5))


def test_alignshift_thickness_survives_checkpoint_recomputation():
    torch.manual_seed(4)
    c, d = 16, 5
    net = nn.Sequential(
        nn.Sequential(from_conv2d("alignshift", nn.Conv2d(c, c, 3, padding=1), d), nn.ReLU()),
        from_conv2d("alignshift", nn.Conv2d(c, c, 3, padding=1), d),
    )
    x = torch.randn(2, c, d, 6, 6, requires_grad=True)
    t = torch.tensor([1.5, 5.0])
    assert set_thickness(net, t) == 2
    net(x).square().sum().backward()
    ref = [p.grad.clone() for p in net.parameters()] + [x.grad.clone()]
    net.zero_grad()
    x.grad = None
    set_thickness(net, t)
    y = checkpoint(net, x, use_reentrant=False)
    y.square().sum().backward()
    got = [p.grad for p in net.parameters()] + [x.grad]
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b)
    # clearing the thickness makes the layers refuse to run
    set_thickness(net, None)
    with pytest.raises(ConversionError):
        net(x)


def _acs_reference(conv: nn.Conv2d, x: torch.Tensor, split) -> torch.Tensor:
    w, b = conv.weight, conv.bias
    p, s, dl = conv.padding[0], conv.stride[0], conv.dilation[0]
    a, c, _ = split
    outs = [
        F.conv3d(x, w[:a].unsqueeze(2), b[:a], (1, s, s), (0, p, p), (1, dl, dl)),
        F.conv3d(x, w[a : a + c].unsqueeze(3), b[a : a + c], (1, s, s), (p, 0, p), (dl, 1, dl)),
        F.conv3d(x, w[a + c :].unsqueeze(4), b[a + c :], (1, s, s), (p, p, 0), (dl, dl, 1)),
    ]
    return torch.cat(outs, 1)


@pytest.mark.parametrize("co,split", [(9, (3, 3, 3)), (7, (3, 2, 2)), (8, (3, 3, 2))])
@pytest.mark.parametrize("geom", [dict(), dict(stride=2), dict(k=5, padding=2), dict(padding=2, dilation=2)])
def test_acs_equals_three_view_convolutions(co, split, geom):
    conv = _conv(co=co, **geom)
    x = torch.randn(2, 8, 5, 9, 10)
    op = from_conv2d("acs", conv, 5)
    assert op.acs_kernel_split == split
    torch.testing.assert_close(op(x), _acs_reference(conv, x, split), rtol=1e-5, atol=1e-5)


def test_acs_depth_kept_without_same_padding():
    conv = _conv(k=3, padding=0)
    y = from_conv2d("acs", conv, 4)(torch.randn(1, 8, 4, 9, 9))
    assert y.shape == (1, 6, 4, 7, 7)


def test_acs_groups_split_in_whole_groups():
    conv = _conv(ci=8, co=8, groups=4)
    op = from_conv2d("acs", conv, 3)
    assert op.acs_kernel_split == (4, 2, 2)
    x = torch.randn(1, 8, 3, 6, 6)
    # axial part equals a per-slice grouped conv restricted to those groups
    ax = _per_slice(conv, x)[:, :4]
    torch.testing.assert_close(op(x)[:, :4], ax, rtol=1e-5, atol=1e-5)


def _n(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("ci,co,k", [(64, 32, 3), (128, 32, 3), (256, 128, 1), (32, 64, 3)])
@pytest.mark.parametrize("d", [3, 7])
def test_table1_parameter_ratios(ci, co, k, d):
    conv = nn.Conv2d(ci, co, k, padding=k // 2, bias=False)
    base = _n(from_conv2d("none", conv, d))
    assert base == co * ci * k * k
    ratio = {name: _n(from_conv2d(name, conv, d)) / base for name in OPERATORS}
    assert ratio["i3d"] == pytest.approx(k)
    # P3D's depth conv is (3, 1, 1): 1 + 3 Co / (Ci K^2), which is Table 1's 1 + Co/(Ci K) for K = 3
    assert ratio["p3d"] == pytest.approx(1 + 3 * co / (ci * k * k))
    if k == 3:
        assert ratio["p3d"] == pytest.approx(1 + co / (ci * k))
    assert ratio["acs"] == ratio["tsm"] == ratio["alignshift"] == 1
    assert ratio["a3d"] == pytest.approx(1 + d * d / (co * k * k))


def test_from_conv2d_rejects_bad_input():
    with pytest.raises(ConversionError, match="unknown operator"):
        from_conv2d("foo", _conv(), 3)
    with pytest.raises(ConversionError, match="Conv1d"):
        from_conv2d("none", nn.Conv1d(2, 2, 3), 3)
    op = from_conv2d("none", _conv(), 3)
    with pytest.raises(ConversionError, match="5D"):
        op(torch.randn(1, 8, 5, 5))


@pytest.mark.parametrize("name", OPERATORS)
def test_all_operators_backward(name):
    conv = _conv()
    op = _ready(from_conv2d(name, conv, 3), 2)
    x = torch.randn(2, 8, 3, 6, 6, requires_grad=True)
    op(x).sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in op.parameters())


def test_a3d_fuse_gradcheck_and_layouts():
    from a3d.ops import a3d_fuse, a3d_fuse_reference

    x = torch.randn(2, 4, 3, 3, 2, dtype=torch.double, requires_grad=True)
    p = torch.randn(3, 3, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(a3d_fuse, (x, p))
    xt = torch.randn(2, 3, 4, 5, 6).transpose(1, 2)  # non-contiguous input
    p = torch.randn(3, 3, 4)
    torch.testing.assert_close(a3d_fuse(xt, p), a3d_fuse_reference(xt, p), rtol=1e-5, atol=1e-5)


# --- A3D's fused kernels (a3d.ops.fusion) ------------------------------------------------------------

A3D_GEOMETRIES = [
    dict(k=1, padding=0),
    dict(),  # 3x3 same, with bias
    dict(k=3, stride=2, padding=1, bias=False),
    dict(k=3, padding=2, dilation=2),
    dict(k=3, groups=2),
    dict(padding_mode="reflect"),
]


def _a3d_reference(op, x):
    """The paper's einsum, then the 2D conv applied per slice by F.conv2d (independent of ops.base)."""
    xf = torch.einsum("bcdhw,dkc->bckhw", x, op.P)
    w2d, pad = op.weight[:, :, 0], op.padding
    if op.padding_mode != "zeros":
        xf, pad = F.pad(xf, (pad[1], pad[1], pad[0], pad[0], 0, 0), mode=op.padding_mode), (0, 0)
    return torch.stack(
        [F.conv2d(xf[:, :, i], w2d, op.bias, op.stride, pad, op.dilation, op.groups) for i in range(xf.shape[2])], 2
    )


@pytest.mark.parametrize("geom", A3D_GEOMETRIES)
def test_a3d_layer_gradcheck_float64(geom):
    """Fails if the fusion's backward (dX, dP, blocked) or its composition with the conv is wrong for
    any conv geometry."""
    op = from_conv2d("a3d", _conv(**{"ci": 4, "co": 4, **geom}), 3).double()
    with torch.no_grad():
        op.P.copy_(torch.randn_like(op.P))
    x = torch.randn(2, 4, 3, 5, 6, dtype=torch.double, requires_grad=True)
    params = [op.P, op.weight] + ([op.bias] if op.bias is not None else [])

    def f(x, *ps):
        return torch.func.functional_call(op, dict(zip(["P", "weight", "bias"], ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True)
    torch.testing.assert_close(op(x), _a3d_reference(op, x))


@pytest.mark.parametrize("block_bytes", [1, 200, 1 << 30])
@pytest.mark.parametrize("needs", ["all", "no_x", "no_p"])
def test_a3d_blocked_backward_matches_einsum(monkeypatch, block_bytes, needs):
    """Blocks of 1 channel, of uneven size (tail block) and one block give the einsum's gradients,
    also when x or P needs none. Fails if a block boundary skips or repeats a channel, or if dX/dP
    are dropped when only one of them is needed."""
    from a3d.ops import fusion

    monkeypatch.setattr(fusion, "BLOCK_BYTES", block_bytes)
    torch.manual_seed(5)
    op = from_conv2d("a3d", _conv(ci=7, co=5), 3)
    op.P.requires_grad_(needs != "no_p")
    x = torch.randn(2, 7, 3, 4, 5, requires_grad=needs != "no_x")
    g = torch.randn(2, 5, 3, 4, 5)
    wrt = [t for t in (x, op.P, op.weight, op.bias) if t.requires_grad]
    got = torch.autograd.grad(op(x), wrt, g)
    ref = torch.autograd.grad(_a3d_reference(op, x), wrt, g)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a3d_fuse_standalone_grads_match_einsum(monkeypatch):
    """Fails if a3d_fuse's own backward (dX into a new tensor) differs from the einsum's."""
    from a3d.ops import fusion

    monkeypatch.setattr(fusion, "BLOCK_BYTES", 100)
    x = torch.randn(2, 5, 4, 3, 3, requires_grad=True)
    p = torch.randn(4, 4, 5, requires_grad=True)
    g = torch.randn(2, 5, 4, 3, 3)
    got = torch.autograd.grad(a3d_fuse(x, p), [x, p], g)
    ref = torch.autograd.grad(a3d_fuse_reference(x, p), [x, p], g)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("geom", [dict(), dict(k=1, padding=0), dict(stride=2, padding_mode="replicate")])
def test_a3d_paths_agree_bitwise_and_identity_is_none(geom):
    """The custom autograd node (grad on) and the plain ops (no_grad, as in inference and export) give
    the same bits; with P = identity both equal none exactly. Fails if the two paths compute the
    fusion differently."""
    conv = _conv(**geom)
    op, none = from_conv2d("a3d", conv, 5), from_conv2d("none", conv, 5)
    x = torch.randn(2, 8, 5, 9, 9)
    y_grad = op(x)
    nodes, seen = [y_grad.grad_fn], []
    while nodes:  # the autograd graph back from the output
        n = nodes.pop()
        seen.append(type(n).__name__)
        nodes += [f for f, _ in n.next_functions if f is not None]
    assert "_FuseBackward" in seen
    with torch.no_grad():
        assert torch.equal(op(x), y_grad)
        op.P.copy_(torch.eye(5).unsqueeze(2).expand(5, 5, 8))
        ref = none(x)
        assert torch.equal(op(x), ref)
    assert torch.equal(op(x), ref)


def test_a3d_checkpoint_and_autocast():
    """Recomputation under checkpoint gives the plain gradients; bfloat16 autocast runs the plain ops
    (autocast casts them) and stays close to fp32. Fails if the custom node breaks either."""
    torch.manual_seed(6)
    net = nn.Sequential(from_conv2d("a3d", _conv(co=8), 3), nn.ReLU(), from_conv2d("a3d", _conv(k=1, padding=0), 3))
    x = torch.randn(2, 8, 3, 6, 6, requires_grad=True)
    net(x).square().sum().backward()
    ref = [p.grad.clone() for p in net.parameters()] + [x.grad.clone()]
    net.zero_grad()
    x.grad = None
    checkpoint(net, x, use_reentrant=False).square().sum().backward()
    for a, b in zip(ref, [p.grad for p in net.parameters()] + [x.grad]):
        torch.testing.assert_close(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    torch.testing.assert_close(y.float(), net(x), rtol=0.05, atol=0.05)


def _ort_run(model, x):
    import io
    import inspect

    ort = pytest.importorskip("onnxruntime")
    buf = io.BytesIO()
    kw = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(model, (x,), buf, input_names=["x"], output_names=["y"], opset_version=17, **kw)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])


@pytest.mark.parametrize("what", ["layer", "resnet18"])
def test_a3d_traces_and_exports_to_onnx(what):
    """torch.jit.trace (saved and reloaded) and ONNX in onnxruntime reproduce PyTorch's output, with
    the parameters requiring grad. Fails if the A3D forward goes through the custom autograd Function
    while tracing or exporting (a PythonOp: not serialisable, not exportable)."""
    import io

    import torchvision

    import a3d

    torch.manual_seed(7)
    if what == "layer":
        model, x = from_conv2d("a3d", _conv(), 3), torch.randn(2, 8, 3, 10, 12)
        with torch.no_grad():
            model.P.copy_(torch.randn_like(model.P))
    else:
        model, x = a3d.convert(torchvision.models.resnet18(num_classes=10), "a3d", 3), torch.randn(1, 3, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        ref = model(x)
    traced = torch.jit.trace(model, (x,))
    assert "PythonOp" not in str(traced.graph)
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_ort_run(model, x), ref, rtol=1e-4, atol=1e-4)
