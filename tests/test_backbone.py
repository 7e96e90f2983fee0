"""The 3D DenseNet-121 backbone (spec section 3): structure, shapes, weight loading, checkpointing."""

from __future__ import annotations

import re

import pytest
import torch
import torchvision
from torch import nn

from a3d.errors import A3DError
from a3d.models import densenet121_3d
from a3d.ops import A3D, NoFusion, Operator, set_thickness


def test_shapes_and_out_channels():
    torch.manual_seed(0)
    m = densenet121_3d("a3d", 3)
    assert m.out_channels == 512
    with torch.no_grad():
        assert m(torch.randn(2, 1, 3, 32, 32)).shape == (2, 512, 8, 8)
        assert m(torch.randn(1, 1, 3, 40, 24)).shape == (1, 512, 10, 6)
    with pytest.raises(A3DError, match=r"\(B, 1, 3, H, W\)"):
        m(torch.randn(1, 1, 7, 64, 64))


def test_structure():
    m = densenet121_3d("a3d", 7)
    f = m.features
    assert isinstance(f.conv0, NoFusion) and f.conv0.in_channels == 1 and f.conv0.out_channels == 64
    assert f.conv0.kernel_size == (7, 7) and f.conv0.stride == (2, 2) and f.conv0.padding == (3, 3)
    assert f.conv0.bias is None
    assert isinstance(f.norm0, nn.BatchNorm3d)
    assert (f.pool0.kernel_size, f.pool0.stride, f.pool0.padding) == ((1, 3, 3), (1, 2, 2), (0, 1, 1))
    layers = {1: 6, 2: 12, 3: 24}
    for b, n in layers.items():
        block = getattr(f, f"denseblock{b}")
        assert len(block) == n
        for layer in block.values():
            assert isinstance(layer.conv1, A3D) and isinstance(layer.conv2, A3D)
            assert layer.conv1.out_channels == 128 and layer.conv2.out_channels == 32
            assert layer.conv1.P.shape == (7, 7, layer.conv1.in_channels)
    for t in (1, 2):
        tr = getattr(f, f"transition{t}")
        assert isinstance(tr.conv, NoFusion)
        assert tr.pool.kernel_size == (1, 2, 2) and tr.pool.stride == (1, 2, 2)
    assert not hasattr(f, "transition3") and not hasattr(f, "denseblock4") and not hasattr(f, "norm5")
    assert [tuple(s.weight.shape) for s in m.squeeze] == [(c, c, 7, 1, 1) for c in (256, 512, 1024)]
    assert all(s.bias is None for s in m.squeeze)
    assert [tuple(l.weight.shape) for l in m.lateral] == [(512, c, 1, 1) for c in (256, 512, 1024)]
    assert all(torch.all(l.bias == 0) for l in m.lateral)
    # kaiming-uniform a=1: bound = sqrt(3 / fan_in)
    assert m.lateral[0].weight.abs().max() <= (3 / 256) ** 0.5 + 1e-6
    ops = [q for q, mod in m.named_modules() if isinstance(mod, Operator)]
    assert len(ops) == 1 + 2 * 42 + 2


def _torchvision_old_style_file(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.densenet121(weights=None).eval()
    g = torch.Generator().manual_seed(1)
    for mod in tv.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    sd = tv.state_dict()
    old = {}
    for k, v in sd.items():  # the released checkpoints' "norm.1" naming, without num_batches_tracked
        if k.endswith("num_batches_tracked"):
            continue
        old[re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k)] = v
    assert any(".norm.1." in k for k in old)
    path = tmp_path / "densenet121-a639ec97.pth"
    torch.save(old, path)
    return tv, path


def test_loads_torchvision_weights_green_channel(tmp_path):
    tv, path = _torchvision_old_style_file(tmp_path)
    m = densenet121_3d("none", 3, pretrained=path).eval()
    f = m.features
    assert torch.equal(f.conv0.weight, tv.features.conv0.weight[:, 1:2].unsqueeze(2))
    w2 = tv.features.denseblock2.denselayer3.conv2.weight
    assert torch.equal(f.denseblock2.denselayer3.conv2.weight, w2.unsqueeze(2))
    assert torch.equal(f.denseblock3.denselayer24.norm1.running_var, tv.features.denseblock3.denselayer24.norm1.running_var)
    # the converted features on a depth-constant grey input = the 2D features on (0, x, 0)
    x = torch.randn(1, 1, 32, 32)
    rgb = torch.cat([torch.zeros_like(x), x, torch.zeros_like(x)], 1)
    with torch.no_grad():
        ref = tv.features[:9](rgb)  # conv0 ... denseblock3
        y = f(x.unsqueeze(2).expand(-1, -1, 3, -1, -1))
    for d in range(3):
        torch.testing.assert_close(y[:, :, d], ref, rtol=1e-4, atol=1e-4)


def test_hub_cache(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    with pytest.raises(A3DError, match="hub cache"):
        densenet121_3d("none", 3, pretrained="hub")
    tv, path = _torchvision_old_style_file(tmp_path)
    (hub / "checkpoints").mkdir(parents=True)
    path.rename(hub / "checkpoints" / path.name)
    m = densenet121_3d("tsm", 3, pretrained="hub")
    assert torch.equal(m.features.conv0.weight[:, 0, 0], tv.features.conv0.weight[:, 1])


def test_bad_pretrained_files(tmp_path):
    with pytest.raises(A3DError, match="not found"):
        densenet121_3d("none", 3, pretrained=tmp_path / "missing.pth")
    p = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), p)
    with pytest.raises(A3DError, match="DenseNet-121"):
        densenet121_3d("none", 3, pretrained=p)


def test_checkpointing_with_alignshift_matches():
    torch.manual_seed(0)
    m = densenet121_3d("alignshift", 3)
    x = torch.randn(2, 1, 3, 16, 16)
    t = torch.tensor([1.0, 5.0])

    def grads(ckpt):
        m.zero_grad()
        m.set_checkpointing(ckpt)
        set_thickness(m, t)
        m(x).square().mean().backward()
        return {k: p.grad.clone() for k, p in m.named_parameters()}

    plain, ckpt = grads(False), grads(True)
    assert sum(1 for mod in m.modules() if getattr(mod, "memory_efficient", False)) == 42
    for k in plain:
        torch.testing.assert_close(plain[k], ckpt[k], rtol=1e-4, atol=1e-6, msg=k)
    m2 = densenet121_3d("alignshift", 3, checkpoint=True)
    with pytest.raises(A3DError, match="set_thickness"):
        m2(x)
    with pytest.raises(TypeError):  # one door: set_thickness (the detector's forward calls it), not forward
        m2(x, thickness=t)
    set_thickness(m2, t)
    m2(x).sum().backward()
