"""The 2D -> 3D converter on torchvision models and a small UNet (eval mode, depth-constant inputs)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import a3d
from a3d.converter import DepthKeepingUpsample, SliceLinear
from a3d.errors import ConversionError
from a3d.ops import A3D, I3D, NoFusion, Operator, set_thickness


class UNet(nn.Module):
    """A small 2-level UNet: convs, BN, max pool, ConvTranspose2d, bilinear upsample, skip cat, Dropout2d."""

    def __init__(self, cin=3, c=8, classes=2):
        super().__init__()

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        self.enc1 = block(cin, c)
        self.pool = nn.MaxPool2d(2)
        self.enc2 = block(c, 2 * c)
        self.enc3 = block(2 * c, 4 * c)
        self.drop = nn.Dropout2d(0.2)
        self.up3 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec2 = block(4 * c + 2 * c, 2 * c)
        self.up2 = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.dec1 = block(2 * c, c)
        self.head = nn.Conv2d(c, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.drop(self.enc3(self.pool(e2)))
        d2 = self.dec2(torch.cat([self.up3(e3), e2], 1))
        d1 = self.dec1(torch.cat([self.up2(d2), e1], 1))
        return self.head(d1)


def _randomise_bn(model):
    g = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _prepare(model3d, name, batch):
    if name == "a3d":
        with torch.no_grad():
            for m in model3d.modules():
                if isinstance(m, A3D):
                    m.P.copy_(torch.eye(m.depth).unsqueeze(2).expand_as(m.P))
    if name == "alignshift":
        set_thickness(model3d, torch.full((batch,), 5.0))
    return model3d.eval()


def _compare(model2d, name, x2d, depth=3, atol=1e-4):
    model2d.eval()
    with torch.no_grad():
        ref = model2d(x2d)
        m3 = _prepare(a3d.convert(model2d, name, depth), name, x2d.shape[0])
        y = m3(x2d.unsqueeze(2).expand(-1, -1, depth, -1, -1).contiguous())
    if ref.dim() == 4:  # dense output: every slice
        assert y.shape == (ref.shape[0], ref.shape[1], depth, *ref.shape[2:])
        for d in range(depth):
            torch.testing.assert_close(y[:, :, d], ref, rtol=1e-3, atol=atol)
    else:
        assert y.shape == ref.shape
        torch.testing.assert_close(y, ref, rtol=1e-3, atol=atol)
    return m3


EXACT_OPS = ["none", "p3d", "a3d", "alignshift"]


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None, num_classes=10)
    _randomise_bn(m)
    return m


@pytest.mark.parametrize("name", EXACT_OPS)
def test_resnet18(resnet18, name):
    torch.manual_seed(1)
    _compare(resnet18, name, torch.randn(2, 3, 32, 32))


def test_resnet50():
    torch.manual_seed(0)
    m = torchvision.models.resnet50(weights=None, num_classes=10)
    _randomise_bn(m)
    _compare(m, "a3d", torch.randn(1, 3, 32, 32), depth=2)


@pytest.mark.parametrize("name", ["none", "alignshift"])
def test_densenet121(name):
    torch.manual_seed(0)
    m = torchvision.models.densenet121(weights=None, num_classes=10)
    _randomise_bn(m)
    _compare(m, name, torch.randn(1, 3, 32, 32), depth=2)


def test_vgg11_and_flatten_averages_slices():
    torch.manual_seed(0)
    m = torchvision.models.vgg11(weights=None, num_classes=10).eval()
    m3 = _compare(m, "none", torch.randn(1, 3, 32, 32), depth=2)
    assert isinstance(m3.avgpool, nn.AdaptiveAvgPool3d) and m3.avgpool.output_size == (None, 7, 7)
    assert isinstance(m3.classifier[0], SliceLinear) and m3.classifier[0].spatial == 49
    # different slices: the first linear sees the slice-mean of the pooled features
    x = torch.randn(1, 3, 2, 32, 32)
    with torch.no_grad():
        feats = torch.stack([m.avgpool(m.features(x[:, :, d])) for d in range(2)]).mean(0)
        ref = m.classifier(torch.flatten(feats, 1))
        torch.testing.assert_close(m3(x), ref, rtol=1e-4, atol=1e-4)
    del m3


def test_resnet18_logits_are_mean_of_slice_logits(resnet18):
    torch.manual_seed(2)
    x = torch.randn(2, 3, 3, 32, 32)
    m3 = a3d.convert(resnet18, "none", 3).eval()
    with torch.no_grad():
        ref = torch.stack([resnet18.eval()(x[:, :, d]) for d in range(3)]).mean(0)
        torch.testing.assert_close(m3(x), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", EXACT_OPS)
def test_unet(name):
    torch.manual_seed(0)
    m = UNet()
    _randomise_bn(m)
    m3 = _compare(m, name, torch.randn(2, 3, 16, 20))
    assert isinstance(m3.up2, nn.ConvTranspose3d) and m3.up2.kernel_size == (1, 2, 2)
    assert isinstance(m3.up3, DepthKeepingUpsample) and m3.up3.mode == "trilinear"
    assert isinstance(m3.drop, nn.Dropout3d)
    assert isinstance(m3.pool, nn.MaxPool3d) and m3.pool.kernel_size == (1, 2, 2)
    assert m3.pool.stride == (1, 2, 2) and m3.pool.padding == (0, 0, 0)


def test_unet_odd_size_and_different_slices():
    torch.manual_seed(0)
    m = UNet().eval()
    m3 = a3d.convert(m, "none", 4).eval()
    x = torch.randn(1, 3, 4, 12, 16)
    with torch.no_grad():
        y = m3(x)
        for d in range(4):
            torch.testing.assert_close(y[:, :, d], m(x[:, :, d]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["i3d", "tsm"])
def test_i3d_tsm_interior_on_small_net(name):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1)).eval()
    d = 7
    x = torch.randn(1, 16, 10, 10)
    with torch.no_grad():
        ref = m(x)
        y = a3d.convert(m, name, d).eval()(x.unsqueeze(2).expand(-1, -1, d, -1, -1).contiguous())
    for i in range(2, d - 2):  # two layers: borders reach 2 slices in
        torch.testing.assert_close(y[:, :, i], ref, rtol=1e-4, atol=1e-5)


def test_state_dict_carries_over_and_copy(resnet18):
    m3 = a3d.convert(resnet18, "none", 3)
    sd2, sd3 = resnet18.state_dict(), m3.state_dict()
    assert set(sd2) == set(sd3)
    for k, v in sd2.items():
        if k.endswith("weight") and v.dim() == 4:
            assert torch.equal(sd3[k], v.unsqueeze(2)), k
        else:
            assert torch.equal(sd3[k], v), k
    assert isinstance(resnet18.conv1, nn.Conv2d)  # the original is untouched
    m3a = a3d.convert(resnet18, "a3d", 3)
    assert set(m3a.state_dict()) - set(sd2) == {k + ".P" for k, m in m3a.named_modules() if isinstance(m, A3D)}


def test_fuse_selection(resnet18):
    m = a3d.convert(resnet18, "i3d", 3, fuse="layer1.*")
    kinds = {q: type(mod) for q, mod in m.named_modules() if isinstance(mod, Operator)}
    assert kinds["layer1.0.conv1"] is I3D and kinds["layer2.0.conv1"] is NoFusion and kinds["conv1"] is NoFusion
    m = a3d.convert(resnet18, "i3d", 3, fuse=lambda q, c: c.kernel_size == (3, 3) and q != "conv1")
    kinds = {q: type(mod) for q, mod in m.named_modules() if isinstance(mod, Operator)}
    assert kinds["layer2.0.downsample.0"] is NoFusion and kinds["layer2.0.conv2"] is I3D
    m = a3d.convert(resnet18, "a3d", 3, fuse=False)
    assert not any(isinstance(mod, A3D) for mod in m.modules())
    assert m.layer3[1].conv2.layer_name == "layer3.1.conv2"


@pytest.mark.parametrize("how", ["green", "sum"])
def test_first_conv_grey(resnet18, how):
    m3 = a3d.convert(resnet18, "none", 2, first_conv=how).eval()
    w = resnet18.conv1.weight
    exp = w[:, 1:2] if how == "green" else w.sum(1, keepdim=True)
    torch.testing.assert_close(m3.conv1.weight[:, :, 0], exp)
    x = torch.randn(1, 1, 32, 32)
    rgb = torch.cat([torch.zeros_like(x), x, torch.zeros_like(x)], 1) if how == "green" else x.expand(-1, 3, -1, -1)
    with torch.no_grad():
        torch.testing.assert_close(m3(x.unsqueeze(2).expand(-1, -1, 2, -1, -1)), resnet18.eval()(rgb),
                                   rtol=1e-4, atol=1e-4)


def test_converted_bn_keeps_statistics(resnet18):
    m3 = a3d.convert(resnet18, "none", 3)
    assert isinstance(m3.bn1, nn.BatchNorm3d)
    assert torch.equal(m3.bn1.running_var, resnet18.bn1.running_var)
    assert torch.equal(m3.layer1[0].bn2.weight, resnet18.layer1[0].bn2.weight)
    assert isinstance(m3.maxpool, nn.MaxPool3d) and m3.maxpool.kernel_size == (1, 3, 3)
    assert m3.maxpool.padding == (0, 1, 1) and m3.maxpool.stride == (1, 2, 2)
    assert isinstance(m3.avgpool, nn.AdaptiveAvgPool3d) and m3.avgpool.output_size == (None, 1, 1)


class _Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, 4, 1, 1))

    def forward(self, x):
        return x * self.scale


@pytest.mark.parametrize(
    "bad,qual,kind",
    [
        (nn.Conv1d(4, 4, 3), "body.1", "Conv1d"),
        (nn.LayerNorm(4), "body.1", "LayerNorm"),
        (_Custom(), "body.1", "_Custom"),
    ],
)
def test_unconvertible_layer_named(bad, qual, kind):
    m = nn.Sequential()
    m.add_module("stem", nn.Conv2d(3, 4, 3))
    m.add_module("body", nn.Sequential(nn.ReLU(), bad))
    with pytest.raises(ConversionError) as e:
        a3d.convert(m, "a3d", 3)
    assert qual in str(e.value) and kind in str(e.value) and "expected" in str(e.value)
    # keep= leaves it alone
    a3d.convert(m, "a3d", 3, keep="body.1")


def test_bad_arguments():
    with pytest.raises(ConversionError, match="unknown operator"):
        a3d.convert(nn.Conv2d(1, 1, 1), "x3d", 3)
    with pytest.raises(ConversionError, match="3 \\(RGB\\)"):
        a3d.convert(nn.Sequential(nn.Conv2d(1, 2, 3)), "none", 3, first_conv="green")
    conv = a3d.convert(nn.Conv2d(2, 2, 3), "tsm", 3)  # a bare conv converts to the operator itself
    assert conv.name == "tsm"


def test_upsample_size_and_nearest():
    m = nn.Sequential(nn.Upsample(size=(6, 8), mode="nearest"), nn.UpsamplingBilinear2d(scale_factor=2))
    m3 = a3d.convert(m, "none", 3)
    x = torch.randn(1, 2, 3, 3, 4)
    y = m3(x)
    assert y.shape == (1, 2, 3, 12, 16)
    for d in range(3):
        torch.testing.assert_close(y[:, :, d], m(x[:, :, d]))
