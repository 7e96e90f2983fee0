"""The output folder of ``a3d predict`` appears whole or not at all (a3d.io.atomic_dir)."""

from __future__ import annotations

import os

import pytest

from a3d.io import atomic_dir


def _listing(folder):
    return sorted((p.relative_to(folder).as_posix(), p.read_text()) for p in folder.rglob("*") if p.is_file())


def test_atomic_dir_replaces_whole_or_leaves_untouched(tmp_path):
    """Success: the new folder replaces the old one entirely (no old file survives), mode 0755, no
    temporary folders left. Failure inside the block: the old folder is exactly as it was and the
    temporary one is gone. Fails if atomic_dir writes into ``out`` directly, merges into it, or
    leaves its temporary folder behind."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            assert tmp != out and tmp.parent == out.parent
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert _listing(out) == [("old.txt", "old")]
    assert os.listdir(tmp_path) == ["out"]
    with atomic_dir(out) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "new.txt").write_text("new")
        assert _listing(out) == [("old.txt", "old")]  # nothing visible until the block ends
    assert _listing(out) == [("sub/new.txt", "new")]
    assert os.listdir(tmp_path) == ["out"]
    assert (out.stat().st_mode & 0o777) == 0o755
