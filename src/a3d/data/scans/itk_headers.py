"""NRRD and MetaImage headers, read just far enough for the checks ITK leaves to its error stream:
which data files a header names (detached ``.nhdr``/``.mhd`` headers), and whether an uncompressed
data file holds all the voxels the header promises.

ITK refuses a truncated NRRD or MetaImage file, but its MetaImage reader says why only on stderr
(the exception reads "No such file or directory" for a file cut short); these checks run first so
that the error names the file and what is missing. Formats: http://teem.sourceforge.net/nrrd/format.html
and https://itk.org/Wiki/ITK/MetaIO/Documentation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from a3d.errors import A3DError

_HEADER_MAX = 1 << 16  # bytes read to find a header (real headers are a few hundred bytes)

_NRRD_TYPES = {
    1: ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"),
    2: ("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort", "unsigned short",
        "unsigned short int", "uint16", "uint16_t"),
    4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"),
    8: ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t",
        "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t", "double"),
}
_NRRD_TYPE_BYTES = {name: n for n, names in _NRRD_TYPES.items() for name in names}
_MET_TYPE_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
                   "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
                   "MET_DOUBLE": 8}


@dataclass
class VolumeHeader:
    """What the checks need from a header. ``data_files``: detached data files (empty: attached);
    ``raw_bytes``: voxel bytes of uncompressed data (None: compressed or unknown); ``data_offset``:
    where the voxels start in the (single) data file, -1 = at its end; ``compressed_bytes``: the
    compressed size a MetaImage header states."""

    path: Path
    data_files: list[Path] = field(default_factory=list)
    raw_bytes: int | None = None
    data_offset: int = 0
    compressed_bytes: int | None = None


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(_HEADER_MAX)
    except OSError as e:
        raise A3DError(f"{path}: file cannot be read ({e.strerror or e})") from None


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split()]


def _nrrd_data_files(path: Path, value: str, rest: list[str]) -> list[Path]:
    """``data file: NAME``, ``data file: LIST`` (names on the following lines) or a printf pattern
    ``data file: fmt min max step``; names are relative to the header's folder."""
    parts = value.split()
    if parts and parts[0] == "LIST":
        names = [ln.strip() for ln in rest if ln.strip()]
    elif len(parts) >= 4 and "%" in parts[0]:
        lo, hi, step = (int(v) for v in parts[1:4])
        names = [parts[0] % i for i in range(lo, hi + (1 if step > 0 else -1), step)]
    else:
        names = [value]
    return [Path(n) if Path(n).is_absolute() else path.parent / n for n in names]


def nrrd_header(path: Path) -> VolumeHeader:
    head = _head(path)
    if not head.startswith(b"NRRD"):
        raise A3DError(f"{path}: not a NRRD file (it does not start with the NRRD magic line)")
    text, _, _data = head.partition(b"\n\n")
    lines = text.decode("latin-1").replace("\r", "").split("\n")
    fields, extra = {}, []
    for i, ln in enumerate(lines[1:], 1):
        if ln.startswith("#") or ":=" in ln or ":" not in ln:
            continue
        key, _, value = ln.partition(":")
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() in ("data file", "datafile"):
            extra = lines[i + 1:]
            break
    hdr = VolumeHeader(path)
    value = fields.get("data file", fields.get("datafile"))
    if value is not None:
        hdr.data_files = _nrrd_data_files(path, value, extra)
    size = _NRRD_TYPE_BYTES.get(fields.get("type", "").lower())
    if fields.get("encoding", "").lower() == "raw" and size and "sizes" in fields:
        hdr.raw_bytes = math.prod(_ints(fields["sizes"])) * size
        skip = int(fields.get("byte skip", "0"))
        hdr.data_offset = skip if value is not None or skip < 0 else len(text) + 2 + skip
    return hdr


def metaimage_header(path: Path) -> VolumeHeader:
    head = _head(path)
    fields, end = {}, None
    for m in re.finditer(rb"^[ \t]*([A-Za-z0-9_]+)[ \t]*=[ \t]*(.*?)[ \t]*\r?$", head, flags=re.M):
        key = m.group(1).decode("latin-1")
        fields[key] = m.group(2).decode("latin-1")
        if key == "ElementDataFile":
            end = m.end() + 1
            break
    if end is None or "DimSize" not in fields:
        raise A3DError(f"{path}: not a MetaImage header (no DimSize / ElementDataFile lines)")
    hdr = VolumeHeader(path)
    value = fields["ElementDataFile"]
    local = value.upper() == "LOCAL"
    if not local:
        rest = head[end:].decode("latin-1").split("\n") if value.upper().startswith("LIST") else []
        hdr.data_files = _nrrd_data_files(path, "LIST" if rest else value, rest)
    compressed = fields.get("CompressedData", "False").lower() == "true"
    size = _MET_TYPE_BYTES.get(fields.get("ElementType", "").upper())
    if compressed:
        stated = fields.get("CompressedDataSize")
        hdr.compressed_bytes = int(stated) if stated and stated.isdigit() and len(hdr.data_files) <= 1 else None
        hdr.data_offset = end if local else 0
    elif size:
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        hdr.raw_bytes = math.prod(_ints(fields["DimSize"])) * size * channels
        hdr.data_offset = end if local else int(fields.get("HeaderSize", "0"))
    return hdr


def read_header(path: Path, kind: str) -> VolumeHeader:
    """The header of a NRRD (``kind`` 'nrrd') or MetaImage ('metaimage') file; A3DError if it is
    not one. Unparsable numbers in an otherwise valid header are left for ITK to judge."""
    try:
        return nrrd_header(path) if kind == "nrrd" else metaimage_header(path)
    except ValueError:
        return VolumeHeader(path)


def check_volume_data(path: Path, kind: str, fmt: str) -> VolumeHeader:
    """A3DError naming the file unless every data file the header names exists and an uncompressed
    (or size-stating compressed) data file holds all the bytes the header promises."""
    hdr = read_header(path, kind)
    missing = [p for p in hdr.data_files if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise A3DError(f"{path}: data file {missing[0]} named by this {fmt} header not found{more}")
    need = hdr.raw_bytes if hdr.raw_bytes is not None else hdr.compressed_bytes
    if need is None or len(hdr.data_files) > 1:
        return hdr
    data = hdr.data_files[0] if hdr.data_files else path
    have = data.stat().st_size - max(hdr.data_offset, 0)
    if have < need:
        what = "image data" if hdr.raw_bytes is not None else "compressed image data"
        raise A3DError(f"{data}: truncated {fmt} file ({max(have, 0)} bytes of {what}, expected {need})")
    return hdr


def volume_files(path: str | Path, kind: str | None) -> list[Path]:
    """The files a volume is stored in: the file itself plus, for a detached NRRD/MetaImage header,
    the data files it names (those that exist; a missing one is the reader's error)."""
    path = Path(path)
    if kind not in ("nrrd", "metaimage"):
        return [path]
    try:
        data = read_header(path, kind).data_files
    except A3DError:
        data = []
    return [path, *(p for p in data if p.is_file())]
