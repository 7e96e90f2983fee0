"""Benchmark: the size of report.html (the viewer's embedded CT) for a 300 x 512 x 512 scan, the way
it is stored against the alternatives, and how long it takes to write and to open in chromium.

    python benchmarks/bench_report.py [--ct ../shared/data/example_ct.nii.gz] [--noise 12] [--no-browser]
                                      [--out benchmarks/results/report.md]

The real CT (122 x 101 x 112 voxels of 3 mm) is measured as it is (size, writing, opening in
chromium) and resampled (linear) to 512 x 512 x 300; resampling
smooths it, so a second volume adds Gaussian noise of ``--noise`` HU inside the body (thin-slice CT
has 10-20 HU), which is what makes CT hard to compress. Each storage is measured on the same volume:
the page's own (8-bit companded codes, one PNG per slice, base64), the same codes as one gzipped NIfTI
(base64), and int16 HU as gzipped NIfTI (base64), each as bytes in the page.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import gzip
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from a3d.config import Config
from a3d.data.scans import Scan, read_scan
from a3d.io import write_text_atomic
from a3d.predict import OutputOptions, PredictionResult, PredictSettings, write_outputs
from a3d.predict.viewer import hu_to_code

SHAPE = (300, 512, 512)  # z, y, x


def resampled_ct(path: Path, noise: float, seed: int = 0) -> Scan:

    src = read_scan(path)
    img = src.image
    size = img.GetSize()
    spacing = [size[i] * img.GetSpacing()[i] / n for i, n in enumerate(SHAPE[::-1])]
    f = sitk.ResampleImageFilter()
    f.SetSize(SHAPE[::-1])
    f.SetOutputSpacing(spacing)
    f.SetOutputOrigin(img.GetOrigin())
    f.SetOutputDirection(img.GetDirection())
    f.SetDefaultPixelValue(-1024.0)
    f.SetInterpolator(sitk.sitkLinear)
    hu = sitk.GetArrayFromImage(f.Execute(_with_hu(img, src.hu))).astype(np.float32)
    if noise:
        rng = np.random.default_rng(seed)
        body = hu > -900
        hu[body] += rng.normal(0, noise, int(body.sum())).astype(np.float32)
    out = sitk.Image(SHAPE[::-1], sitk.sitkUInt8)  # geometry only, as Scan.image
    out.SetSpacing(spacing)
    out.SetOrigin(img.GetOrigin())
    out.SetDirection(img.GetDirection())
    return Scan(hu=hu, image=out, original=out, source=str(path), kind="nifti", name=f"ct_300x512x512_noise{noise:g}")


def _with_hu(ref, hu: np.ndarray):

    im = sitk.GetImageFromArray(hu.astype(np.float32))
    im.CopyInformation(ref)
    return im


def _b64_len(raw: bytes) -> int:
    return len(base64.b64encode(raw))


def alternatives(hu: np.ndarray) -> dict[str, int]:
    """Bytes in the page of the two alternatives to the PNG slices (gzip level 6, base64)."""
    codes = hu_to_code(hu)
    i16 = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    return {"8-bit codes, one gzipped NIfTI": _b64_len(gzip.compress(codes.tobytes(), 6)),
            "int16 HU, one gzipped NIfTI": _b64_len(gzip.compress(i16.tobytes(), 6))}


def open_in_chromium(html: Path, tmp: Path) -> float:
    """Seconds from navigation until the viewer says it is ready (Debian's chromium, software WebGL)."""
    from playwright.sync_api import sync_playwright  # the test extra: only when opening is measured

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync"]
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(tmp / "profile"), executable_path="/usr/bin/chromium",
                                                    args=flags, headless=True)
        try:
            page = ctx.new_page()
            t0 = time.perf_counter()
            page.goto(html.as_uri(), timeout=600_000)
            page.wait_for_function("['ready', 'error'].includes(document.body.dataset.viewer)", timeout=600_000)
            state = page.evaluate("document.body.dataset.viewer")
            if state != "ready":
                raise RuntimeError(page.locator("#viewer-error").text_content())
            return time.perf_counter() - t0
        finally:
            ctx.close()


def measure(scan: Scan, browser: bool) -> dict:
    res = PredictionResult(scan, Config(), PredictSettings(), [], [], list(range(scan.hu.shape[0])))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_outputs(res, Path(tmp) / "out", OutputOptions(markups=False))
        write_s = time.perf_counter() - t0
        html = Path(tmp) / "out" / "report.html"
        row = {"report.html (8-bit codes, PNG slices)": html.stat().st_size, "write_s": write_s}
        row.update(alternatives(scan.hu))
        row["open_s"] = open_in_chromium(html, Path(tmp)) if browser else None
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ct", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "example_ct.nii.gz"))
    ap.add_argument("--noise", type=float, default=12.0)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "report.md"))
    args = ap.parse_args(argv)
    rows = {}
    for noise in (0.0, args.noise):  # the 300-slice volumes: sizes and writing (opening them: below)
        rows[f"resampled{f' + {noise:g} HU noise' if noise else ''}"] = measure(resampled_ct(Path(args.ct), noise), False)
    native = read_scan(args.ct)
    rows[f"the real CT as it is, {' x '.join(str(v) for v in native.hu.shape[::-1])}"] = measure(native, not args.no_browser)
    for k, v in rows.items():
        print(k, v, file=sys.stderr)
    keys = [k for k in next(iter(rows.values())) if not k.endswith("_s")]
    lines = ["# report.html of a 300 x 512 x 512 scan", "",
             f"`python benchmarks/bench_report.py --noise {args.noise:g}`, {dt.date.today().isoformat()}, "
             f"{platform.processor() or platform.machine()} (2 cores, shared), the real CT "
             f"({Path(args.ct).name}) resampled to 512 x 512 x 300.", "",
             "| volume | " + " | ".join(f"{k}, MB" for k in keys) + " | write s | open in chromium s |",
             "| --- |" + " ---: |" * (len(keys) + 2)]
    for name, r in rows.items():
        opened = "-" if r["open_s"] is None else f"{r['open_s']:.0f}"
        lines.append(f"| {name} | " + " | ".join(f"{r[k] / 1e6:.1f}" for k in keys) + f" | {r['write_s']:.1f} | {opened} |")
    lines += ["", "report.html holds NiiVue (2.3 MB) and the page besides the CT; the alternatives are the CT alone. "
              "Open: from navigation to the viewer ready, in chromium with software WebGL (--disable-gpu), "
              "measured on the real CT as it is: the 300-slice page did not get ready within 10 minutes "
              "in software WebGL on this shared 2-core machine (NiiVue renders each layer of the volume "
              "on the GPU; a browser with a GPU is what the page is for)."]
    write_text_atomic(Path(args.out), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
