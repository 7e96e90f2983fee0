"""What a batch scan's outputs were made from (``DIR/<scan>/record.json``), so that the same command
again skips the scans whose outputs are still what it would write.

A record holds fingerprints, not copies:

- the input: for a file its absolute path, size and ``mtime_ns`` (a detached ``.nhdr``/``.mhd``
  header: of its data files too); for a folder its path and a SHA-256 of the sorted list of
  (relative path, size, ``mtime_ns``) of every file below it: a file added, removed, replaced or
  touched changes it, and nothing is read but the directory entries;
- the checkpoint: a SHA-256 of its content (an export folder: of each of its files). Content, not
  size + time: the checkpoint is read once per run anyway, so hashing it costs one more read
  (about 0.3 s per 100 MB), and a copy of the same weights (another machine of a multi-node run,
  a fresh download, ``cp`` without ``-p``) still matches, while retrained weights of the same
  size never do;
- the settings and options that change the outputs: :class:`PredictSettings` but the device and
  the batch size (they change floating-point rounding only), with the precision as it will run;
  every :class:`ReadOptions` value (``--dl-info`` as its fingerprint) and :class:`OutputOptions`;
- the a3d version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from a3d import __version__
from a3d.data.scans import volume_files, volume_kind
from a3d.errors import A3DError

RECORD_FILE = "record.json"
RECORD_FORMAT = "a3d-predict-record"
RECORD_VERSION = 1
# what each part of ``made_from`` is called in a log line saying why a scan is redone
PART_NAMES = {"input": "input", "checkpoint": "checkpoint", "settings": "settings", "a3d_version": "a3d version"}
_CHUNK = 1 << 22
# PredictSettings fields that change only floating-point rounding, not what is found
_NOT_RECORDED = ("device", "batch_size")


def _stat(path: Path) -> list:
    st = path.stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def input_fingerprint(path: str | os.PathLike) -> dict:
    """Fingerprint of a scan input (file or folder), from directory entries only."""
    p = Path(path).absolute()
    try:
        if p.is_file():
            return {"path": str(p), "files": [[f.name, *_stat(f)] for f in volume_files(p, volume_kind(p))]}
        listing = sorted([str(f.relative_to(p)), *_stat(f)] for f in p.rglob("*") if f.is_file())
    except OSError as e:
        raise A3DError(f"{p}: cannot be read ({e.strerror or e})") from None
    digest = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    return {"path": str(p), "files": len(listing), "sha256": digest}


def checkpoint_fingerprint(path: str | os.PathLike) -> dict:
    """SHA-256 of a checkpoint file's content, or of every file of an ``a3d export`` folder."""
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    h = hashlib.sha256()
    try:
        for f in files:
            h.update(f"{f.relative_to(p) if p.is_dir() else ''}\0".encode())
            with open(f, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
    except OSError as e:
        raise A3DError(f"{path}: checkpoint cannot be read ({e.strerror or e})") from None
    return {"sha256": h.hexdigest(), "bytes": sum(f.stat().st_size for f in files)}


def _plain(value):
    """Dataclass values as JSON-ready data (tuples as lists, paths as strings)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def settings_record(settings, precision: str, read, outputs) -> dict:
    """The options that change a scan's outputs (``precision``: what ``settings.precision`` resolves to)."""
    s = {k: _plain(v) for k, v in dataclasses.asdict(settings).items() if k not in _NOT_RECORDED}
    s["precision"] = precision
    r = {k: _plain(v) for k, v in dataclasses.asdict(read).items()}
    if read.dl_info is not None:
        r["dl_info"] = input_fingerprint(read.dl_info)
    return {"predict": s, "read": r, "outputs": {k: _plain(v) for k, v in dataclasses.asdict(outputs).items()}}


def made_from(input_path: str | os.PathLike, common: dict) -> dict:
    """A scan's ``made_from``: its input's fingerprint plus ``common`` (checkpoint, settings, version)."""
    return {"input": input_fingerprint(input_path), **common}


def common_record(checkpoint: str | os.PathLike, settings: dict) -> dict:
    """The parts of ``made_from`` every scan of a run shares (``settings``: :func:`settings_record`)."""
    return {"checkpoint": checkpoint_fingerprint(checkpoint), "settings": settings, "a3d_version": __version__}


def stored_record(folder: Path) -> dict | None:
    """The record of a complete earlier output folder, or None (absent, unreadable, incomplete)."""
    try:
        rec = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(rec, dict) and rec.get("format") == RECORD_FORMAT and isinstance(rec.get("made_from"), dict)
    return rec if ok and (folder / "predictions.json").is_file() else None


def changed_parts(old: dict, new: dict) -> list[str]:
    """Names of the parts of ``made_from`` that differ ([] = the outputs are still valid)."""
    return [name for key, name in PART_NAMES.items() if old.get(key) != new.get(key)]


def record_doc(made: dict, detections: int, candidates: int) -> dict:
    """``record.json``: what the outputs were made from, and what they hold."""
    return {"format": RECORD_FORMAT, "version": RECORD_VERSION, "made_from": made, "detections": detections,
            "candidates": candidates}
