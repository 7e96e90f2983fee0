"""a3d.models.weights: one meaning of "imagenet"/"hub" for every entry point; never a download."""

from __future__ import annotations

import pytest
import torch

from a3d.errors import A3DError
from a3d.models.weights import IMAGENET_DENSENET121, resolve_pretrained


@pytest.fixture
def hub(tmp_path, monkeypatch):
    d = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(d))
    return d / "checkpoints"


def test_imagenet_is_torchvision_exact_file(hub):
    """Fails if the resolver globs (densenet121-*.pth) instead of taking torchvision's exact file name,
    or if "hub" and "imagenet" resolve differently."""
    hub.mkdir(parents=True)
    (hub / "densenet121-zzzzzzzz.pth").write_bytes(b"not the one")
    with pytest.raises(A3DError, match=IMAGENET_DENSENET121):
        resolve_pretrained("imagenet")
    (hub / IMAGENET_DENSENET121).write_bytes(b"x")
    assert IMAGENET_DENSENET121 == "densenet121-a639ec97.pth"
    assert resolve_pretrained("imagenet") == resolve_pretrained("hub") == str(hub / IMAGENET_DENSENET121)
    assert resolve_pretrained(" ImageNet ") == str(hub / IMAGENET_DENSENET121)


def test_random_init_and_paths(tmp_path, hub):
    """Fails if "none"/None stop meaning random init, or a missing path passes silently."""
    assert resolve_pretrained(None) is None and resolve_pretrained("none") is None and resolve_pretrained("") is None
    f = tmp_path / "my.pth"
    f.write_bytes(b"x")
    assert resolve_pretrained(f) == str(f)
    with pytest.raises(A3DError, match="nope.pth.*file not found"):
        resolve_pretrained(tmp_path / "nope.pth")
    with pytest.raises(A3DError, match="hub cache"):  # empty cache: says where to put the file
        resolve_pretrained("hub")
