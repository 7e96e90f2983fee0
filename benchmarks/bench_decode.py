"""Benchmark: DICOM decode time per slice for each transfer syntax a3d reads, as a ratio to the
uncompressed file, all measured side by side in one run.

    python benchmarks/bench_decode.py [--slices 8] [--rounds 7] [--out benchmarks/results/decode.md]

The series is the test suite's real-looking one (tests/dicom_fixtures.py ``real_looking_series``: the
real CT ../shared/data/example_ct_sm.nii.gz at 512 x 512, 12-bit unsigned, CT noise, two planted
lesions), encoded by the test suite's encoders (tests/dicom_encode.py: pydicom, dcmtk, openjph).
"a3d" is what a3d does per slice: read the file with pydicom and decode its frame with the plugin
a3d chooses (``a3d.data.scans.dicom_pixels.decode_frame``). For context, the same file through
another pydicom plugin where one exists, and through SimpleITK's ReadImage (GDCM: main's decoder
before issue 18). Process CPU time, one thread, rounds interleaved over the syntaxes, median per slice.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the test suite's series and encoders: one definition of each

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from pydicom.pixels import get_decoder  # noqa: E402

from a3d.data.scans.dicom_pixels import PLUGINS, decode_frame, transfer_syntax  # noqa: E402
from a3d.data.scans.geometry import _sitk  # noqa: E402
from a3d.io import write_text_atomic  # noqa: E402
from dicom_encode import SYNTAXES, encode_series  # noqa: E402
from dicom_fixtures import real_looking_series  # noqa: E402

CT = REPO / ".." / "shared" / "data" / "example_ct_sm.nii.gz"


def _a3d(path: Path) -> None:
    decode_frame(pydicom.dcmread(path), 0, str(path))


def _alternative(path: Path, plugin: str) -> None:
    ds = pydicom.dcmread(path)
    get_decoder(transfer_syntax(ds)).as_array(ds, index=0, decoding_plugin=plugin)


def _sitk_read(path: Path) -> None:
    sitk = _sitk()
    sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _cpu_per_slice(fn, files: list[Path]) -> float:
    t0 = time.process_time()
    for f in files:
        fn(f)
    return (time.process_time() - t0) / len(files)


def _alternative_plugin(name: str) -> str | None:
    ts = SYNTAXES[name][0]
    if ts not in PLUGINS:
        return None
    chosen = PLUGINS[ts][0]
    alt = {"gdcm": None, "pylibjpeg": "gdcm", "pyjpegls": "gdcm"}[chosen]
    if ts == pydicom.uid.RLELossless:
        alt = "pydicom"
    return alt if alt in get_decoder(ts).available_plugins else None


def _works(fn, path: Path) -> bool:
    try:
        fn(path)
        return True
    except Exception:  # the other decoder does not handle this syntax: left blank in the table
        return False


def measure(root: Path, slices: int, rounds: int) -> list[dict]:
    real_looking_series(CT, root / "explicit-le-src", slices=slices)
    rows = []
    for name in SYNTAXES:
        folder = encode_series(root / "explicit-le-src", root / name, name)
        files = sorted(folder.iterdir())
        alt = _alternative_plugin(name)
        cands = {"a3d": _a3d}
        if alt and _works(lambda p: _alternative(p, alt), files[0]):
            cands["alt"] = lambda p, alt=alt: _alternative(p, alt)
        cands["sitk"] = _sitk_read if _works(_sitk_read, files[0]) else None
        rows.append({"name": name, "files": files, "alt": alt if "alt" in cands else None,
                     "kb": sum(f.stat().st_size for f in files) / len(files) / 1024,
                     "cands": {k: v for k, v in cands.items() if v}, "t": {k: [] for k in cands if cands[k]}})
    for _ in range(rounds):  # interleaved: every syntax and decoder once per round
        for r in rows:
            for key, fn in r["cands"].items():
                r["t"][key].append(_cpu_per_slice(fn, r["files"]))
    return rows


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report(rows: list[dict], slices: int, rounds: int, command: str) -> str:
    base = statistics.median(rows[0]["t"]["a3d"])
    lines = [
        "# DICOM decode benchmark", "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {_cpu_name()}, {os.cpu_count()} cores (shared with other jobs); Python {platform.python_version()}, "
        f"pydicom {pydicom.__version__}, numpy {np.__version__}; 1 thread, process CPU time, {rounds} interleaved rounds, medians",
        f"- series: {slices} slices of 512 x 512, 12-bit unsigned (tests/dicom_fixtures.py real_looking_series)",
        f"- command: `{command}`", "",
        "| transfer syntax | kB per slice | a3d: pydicom + plugin, ms per slice | ratio to uncompressed | "
        "other pydicom plugin, ms | SimpleITK (GDCM), ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ts = SYNTAXES[r["name"]][0]
        med = {k: statistics.median(v) * 1000 for k, v in r["t"].items()}
        plugin = PLUGINS.get(ts, ("pydicom",))[0]
        if r["name"] == "jpeg-extended-12bit":
            plugin = "SimpleITK"
        alt = f"{med['alt']:.2f} ({r['alt']})" if "alt" in med else ""
        sitk = f"{med['sitk']:.2f}" if "sitk" in med else "fails"
        lines.append(f"| {r['name']} ({ts.name}) | {r['kb']:.0f} | {med['a3d']:.2f} ({plugin}) | "
                     f"{med['a3d'] / (base * 1000):.2f} | {alt} | {sitk} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "decode.md"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(Path(tmp), args.slices, args.rounds)
        text = report(rows, args.slices, args.rounds, " ".join(["python benchmarks/bench_decode.py", *(argv or sys.argv[1:])]))
    write_text_atomic(Path(args.out), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
