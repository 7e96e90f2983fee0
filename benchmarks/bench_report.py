"""Benchmark: the size of report.html (the viewer's embedded CT) for a 300 x 512 x 512 scan, the way
it is stored against the alternatives, and how long it takes to write and to open in chromium.

    python benchmarks/bench_report.py [--ct ../shared/data/example_ct.nii.gz] [--noise 12] [--no-browser]
                                      [--open-large] [--open-timeout 600] [--out benchmarks/results/report.md]

The real CT (122 x 101 x 112 voxels of 3 mm) is measured as it is (size, writing, opening in
chromium) and resampled (linear) to 512 x 512 x 300; resampling
smooths it, so a second volume adds Gaussian noise of ``--noise`` HU inside the body (thin-slice CT
has 10-20 HU), which is what makes CT hard to compress. Each storage is measured on the same volume:
the page's own (8-bit companded codes, one greyscale JPEG per slice, base64; with the JPEG's error in
codes, max and mean), the same codes as lossless PNG slices (the former storage), as one gzipped
NIfTI, and int16 HU as gzipped NIfTI (base64 each), as bytes in the page.

Opening: the real CT as it is, and with ``--open-large`` also the noisy 300-slice page, until the viewer
is ready or ``--open-timeout`` seconds; the page's loading marks (``performance.mark`` in
``viewer.js``: CT decoded, volumes read, each volume added to NiiVue, ready) are logged as they
happen, so a page that does not get ready still shows where its time went.
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
from a3d.predict.viewer import decode_slice, encode_slice, hu_to_code

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
    """Bytes in the page of the alternatives to the JPEG slices (PNG level 4 as the page had it, gzip
    level 6, base64)."""
    import cv2

    codes = hu_to_code(hu)
    png = sum(_b64_len(cv2.imencode(".png", c, [cv2.IMWRITE_PNG_COMPRESSION, 4])[1].tobytes()) for c in codes)
    i16 = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    return {"8-bit codes, PNG slices (lossless, before)": png,
            "8-bit codes, one gzipped NIfTI": _b64_len(gzip.compress(codes.tobytes(), 6)),
            "int16 HU, one gzipped NIfTI": _b64_len(gzip.compress(i16.tobytes(), 6))}


def jpeg_error(hu: np.ndarray) -> tuple[int, float]:
    """Max and mean absolute error, in codes, of the page's JPEG slices decoded (as a browser does)."""
    worst, total = 0, 0
    for z in range(hu.shape[0]):
        codes = hu_to_code(hu[z])
        err = np.abs(decode_slice(encode_slice(codes)).astype(np.int16) - codes)
        worst, total = max(worst, int(err.max())), total + int(err.sum())
    return worst, total / hu.size


# the page's loading marks go to the console as they are made, even while the page is busy
_LOG_MARKS = """const mark = performance.mark.bind(performance);
performance.mark = (name) => { console.log("a3d-mark " + name + " " + performance.now()); return mark(name); };"""


def open_in_chromium(html: Path, tmp: Path, timeout_s: float) -> dict:
    """Seconds from navigation until the viewer says it is ready (None past ``timeout_s``; Debian's
    chromium, software WebGL), and the seconds at which each loading mark was made."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright  # the test extra: only when opening is measured

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync"]
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(tmp / "profile"), executable_path="/usr/bin/chromium",
                                                    args=flags, headless=True)
        try:
            page = ctx.new_page()
            page.add_init_script(_LOG_MARKS)
            t0, marks = time.perf_counter(), {}
            page.on("console", lambda m: marks.setdefault(m.text.split()[1], time.perf_counter() - t0)
                    if m.text.startswith("a3d-mark") else None)
            try:
                page.goto(html.as_uri(), timeout=timeout_s * 1000)
                page.wait_for_function("['ready', 'error'].includes(document.body.dataset.viewer)",
                                       timeout=max(1.0, timeout_s - (time.perf_counter() - t0)) * 1000)
            except PlaywrightTimeout:
                return {"open_s": None, "marks": marks}
            if page.evaluate("document.body.dataset.viewer") != "ready":
                raise RuntimeError(page.locator("#viewer-error").text_content())
            return {"open_s": time.perf_counter() - t0, "marks": marks}
        finally:
            ctx.close()


def measure(scan: Scan, open_timeout_s: float | None) -> dict:
    res = PredictionResult(scan, Config(), PredictSettings(), [], [], list(range(scan.hu.shape[0])))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_outputs(res, Path(tmp) / "out", OutputOptions(markups=False))
        write_s = time.perf_counter() - t0
        html = Path(tmp) / "out" / "report.html"
        row = {"report.html (8-bit codes, JPEG slices)": html.stat().st_size, "write_s": write_s}
        row.update(alternatives(scan.hu))
        row["code_error"] = jpeg_error(scan.hu)
        row["open"] = open_in_chromium(html, Path(tmp), open_timeout_s) if open_timeout_s else None
    return row


def _opened(r: dict, timeout_s: float) -> str:
    if r["open"] is None:
        return "-"
    return f"{r['open']['open_s']:.0f}" if r["open"]["open_s"] is not None else f"not ready in {timeout_s:.0f}"


def _marks(name: str, r: dict) -> str:
    steps = ", ".join(f"{k.removeprefix('a3d:')} {v:.1f} s" for k, v in r["open"]["marks"].items())
    return f"- {name}: {steps or 'no mark'}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ct", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "example_ct.nii.gz"))
    ap.add_argument("--noise", type=float, default=12.0)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--open-large", action="store_true", help="also open the noisy 300-slice page in chromium")
    ap.add_argument("--open-timeout", type=float, default=600.0, help="seconds to wait for a page to get ready")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "report.md"))
    args = ap.parse_args(argv)
    timeout = None if args.no_browser else args.open_timeout
    rows = {}
    for noise in (0.0, args.noise):  # the 300-slice volumes; only the noisy one is opened, and only if asked
        opened = timeout if noise and args.open_large else None
        rows[f"resampled{f' + {noise:g} HU noise' if noise else ''}"] = measure(resampled_ct(Path(args.ct), noise), opened)
    native = read_scan(args.ct)
    rows[f"the real CT as it is, {' x '.join(str(v) for v in native.hu.shape[::-1])}"] = measure(native, timeout)
    for k, v in rows.items():
        print(k, v, file=sys.stderr)
    keys = [k for k, v in next(iter(rows.values())).items() if isinstance(v, int)]
    lines = ["# report.html of a 300 x 512 x 512 scan", "",
             f"`python benchmarks/bench_report.py --noise {args.noise:g}{' --open-large' if args.open_large else ''}`, "
             f"{dt.date.today().isoformat()}, {platform.processor() or platform.machine()} (2 cores, shared), the real CT "
             f"({Path(args.ct).name}) resampled to 512 x 512 x 300.", "",
             "| volume | " + " | ".join(f"{k}, MB" for k in keys) + " | JPEG error, codes (max / mean) | write s | open in chromium s |",
             "| --- |" + " ---: |" * (len(keys) + 3)]
    for name, r in rows.items():
        worst, mean = r["code_error"]
        lines.append(f"| {name} | " + " | ".join(f"{r[k] / 1e6:.1f}" for k in keys)
                     + f" | {worst} / {mean:.2f} | {r['write_s']:.1f} | {_opened(r, args.open_timeout)} |")
    lines += ["", "report.html holds NiiVue (2.3 MB) and the page besides the CT; the alternatives are the CT alone. "
              "Open: from navigation to the viewer ready, in chromium with software WebGL (--disable-gpu). "
              "The page's loading marks, seconds from navigation:", ""]
    lines += [_marks(name, r) for name, r in rows.items() if r["open"] is not None]
    write_text_atomic(Path(args.out), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0

if __name__ == "__main__":
    sys.exit(main())
