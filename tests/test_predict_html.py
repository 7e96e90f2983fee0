"""`report.html`'s viewer in a real browser: Playwright driving Debian's chromium (never a downloaded
browser) opens the page from disk and checks what a person sees, from screenshots: the CT in the
soft-tissue window, the wheel and keys changing the slice, a click on a candidate going to its key
slice, the score slider hiding candidates; no console errors, no network.

Needs the ``playwright`` package (the ``test`` extra) and ``chromium`` (``apt-get install -y
chromium``); without them the tests skip, except under CI=true where they fail. Screenshots go to
the test's tmp_path and, under CI, to ``$A3D_TEST_ARTIFACTS`` (default ``test-artifacts/``)
``/report-viewer/`` for a person to look at.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from a3d import predict as P
from a3d.config import Config, DataConfig, ModelConfig
from a3d.data import scans as S
from a3d.predict.overlays import candidate_rgb
from a3d.predict.viewer import decode_slice, encode_slice
from test_predict_support import REPO, BlobDetector, synthetic_nifti

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-sync"]
SOFT_TISSUE_GREY = (40 - (40 - 400 / 2)) / 400 * 255  # the phantom's 40 HU tissue in W400/L40: 127.5
LUNG_GREY = (40 - (-600 - 1500 / 2)) / 1500 * 255  # in W1500/L-600: 236.3


def _missing(msg: str):
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"no {CHROMIUM}; install it with: apt-get install -y chromium")
    return sync_playwright


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("html")
    path, *_ = synthetic_nifti(tmp / "scan.nii.gz")
    cfg = Config(model=ModelConfig(slices=3), data=DataConfig(size=128))
    res = P.predict_scan(S.read_scan(path), BlobDetector(), cfg, P.PredictSettings())
    doc = P.write_outputs(res, tmp / "out")
    return tmp / "out" / "report.html", doc


@pytest.fixture()
def shots(tmp_path, request):
    """Where screenshots go: tmp_path/shots, and under CI also the artefact folder."""
    folder = tmp_path / "shots"
    folder.mkdir()
    yield folder
    if os.environ.get("CI") == "true":
        dest = Path(os.environ.get("A3D_TEST_ARTIFACTS", REPO / "test-artifacts")) / "report-viewer" / request.node.name
        shutil.copytree(folder, dest, dirs_exist_ok=True)


class Page:
    """One page of a fresh headless chromium, recording console errors and every request."""

    def __init__(self, pw, tmp: Path):
        self.context = pw.chromium.launch_persistent_context(
            str(tmp / "profile"), executable_path=CHROMIUM, args=FLAGS, headless=True,
            viewport={"width": 1280, "height": 860})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def open(self, url: str) -> str:
        self.page.goto(url)
        self.page.wait_for_function("['ready', 'error'].includes(document.body.dataset.viewer)", timeout=60_000)
        return self.attr("viewer")

    def attr(self, name: str) -> str:
        return self.page.evaluate(f"document.body.dataset[{name!r}]")

    def canvas(self, save: Path | None = None) -> np.ndarray:
        """The viewer canvas as NiiVue draws it (BGR; the page's text labels, SVG above it, left out),
        after the next frames; ``save``: also a screenshot with the labels, for a person."""
        self.page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        canvas = self.page.locator("#nv-canvas")
        if save is not None:
            canvas.screenshot(path=str(save))
        self.page.evaluate("document.getElementById('nv-labels').style.visibility = 'hidden'")
        png = canvas.screenshot()
        self.page.evaluate("document.getElementById('nv-labels').style.visibility = ''")
        return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)

    def wait_attr(self, name: str, value: str) -> None:
        self.page.wait_for_function(f"document.body.dataset[{name!r}] === {value!r}", timeout=10_000)


def _colour_pixels(img: np.ndarray, rgb) -> int:
    """Pixels tinted in a candidate's colour (its mask, box or axes over the CT): their colour away
    from grey points the way the candidate's does (cosine > 0.95) by at least 40 levels."""
    px = img[..., ::-1].astype(np.float64)
    chroma = px - px.mean(axis=2, keepdims=True)
    ref = np.asarray(rgb, np.float64) - np.mean(rgb)
    norm = np.linalg.norm(chroma, axis=2)
    cos = (chroma @ ref) / np.maximum(norm * np.linalg.norm(ref), 1e-9)
    return int(((norm > 40) & (cos > 0.95)).sum())


def _tissue_grey(img: np.ndarray) -> float:
    """Median grey of the body: the pixels that are neither air (black) nor coloured."""
    grey = img.mean(axis=2)
    plain = img.max(axis=2) - img.min(axis=2) < 12
    return float(np.median(grey[plain & (grey > 40)]))


def test_html_is_self_contained(report):
    html, doc = report
    text = html.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", text)
    assert "<script src" not in text and "@import" not in text
    assert len(re.findall(r'<tr class="candidate"', text)) == len(doc["candidates"]) == 2


def test_viewer_in_chromium(report, tmp_path, shots):
    sync_playwright = _playwright()
    html, doc = report
    cands = doc["candidates"]
    with sync_playwright() as pw:
        b = Page(pw, tmp_path)
        try:
            assert b.open(html.as_uri()) == "ready", b.page.locator("#viewer-error").text_content()
            # it opens on the best candidate's key slice, soft-tissue window: the body is mid-grey
            assert int(b.attr("z")) == cands[0]["key_canonical_slice"] and b.attr("window") == "400,40"
            first = b.canvas(shots / "1_opened.png")
            grey = first.mean(axis=2)
            assert (grey < 10).mean() > 0.2 and (grey > 60).mean() > 0.2  # air and body, like a CT
            assert abs(_tissue_grey(first) - SOFT_TISSUE_GREY) < 12
            rgb = {c["id"]: candidate_rgb(c["id"]) for c in cands}
            assert _colour_pixels(first, rgb[1]) > 50  # candidate 1's box on its key slice
            # the wheel moves one slice, and the picture changes with it
            box = b.page.locator("#nv-canvas").bounding_box()
            b.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            z0 = int(b.attr("z"))
            b.page.mouse.wheel(0, 120)
            b.page.wait_for_function(f"document.body.dataset.z !== '{z0}'", timeout=10_000)
            z1 = int(b.attr("z"))
            assert abs(z1 - z0) == 1 and int(b.attr("slice")) == z1  # stored RAS: the slice axis is not flipped
            moved = b.canvas(shots / "2_wheel.png")
            assert np.abs(moved.astype(int) - first.astype(int)).mean() > 0.5
            # keys: one slice up
            b.page.keyboard.press("ArrowUp")
            b.wait_attr("z", str(z1 + 1))
            # clicking candidate 2 goes to its key slice, where its box is drawn
            b.page.click('tr.candidate[data-candidate-id="2"]')
            b.wait_attr("z", str(cands[1]["key_canonical_slice"]))
            on2 = b.canvas(shots / "3_candidate2.png")
            assert _colour_pixels(on2, rgb[2]) > 50
            # lung window: the same tissue brighter, as W1500/L-600 puts it
            b.page.click("button[data-preset='lung']")
            b.wait_attr("window", "1500,-600")
            assert abs(_tissue_grey(b.canvas(shots / "4_lung.png")) - LUNG_GREY) < 12
            b.page.click("button[data-preset='soft tissue']")
            # the slider above candidate 2's score hides it: its pixels vanish, the list shrinks
            b.page.locator("#score-slider").fill(f"{(cands[0]['max_score'] + cands[1]['max_score']) / 2:.3f}")
            b.wait_attr("visibleCandidates", "1")
            hidden = b.canvas(shots / "5_slider.png")
            assert _colour_pixels(hidden, rgb[2]) == 0
            assert b.page.locator("tr.candidate:visible").count() == 1
            b.page.screenshot(path=str(shots / "6_page.png"))
            assert not b.errors, b.errors
            assert set(b.requests) == {html.as_uri()}, b.requests  # nothing but the page itself
        finally:
            b.context.close()


def test_viewer_reports_corrupt_data(report, tmp_path):
    """Control: a page whose CT slice was damaged says so (each decoded slice's mean is checked)."""
    sync_playwright = _playwright()
    html, _ = report
    text = html.read_text()
    m = re.search(r'"slices":\["([A-Za-z0-9+/=]+)"', text)
    shape = decode_slice(base64.b64decode(m.group(1))).shape
    bad_jpeg = encode_slice(np.full(shape, 200, np.uint8))  # a valid JPEG of the right size, wrong pixels
    bad = tmp_path / "bad.html"
    bad.write_text(text.replace(m.group(1), base64.b64encode(bad_jpeg).decode(), 1))
    with sync_playwright() as pw:
        b = Page(pw, tmp_path)
        try:
            assert b.open(bad.as_uri()) == "error"
            assert "decoded wrongly" in b.page.locator("#viewer-error").text_content()
        finally:
            b.context.close()


def test_chromium_decodes_the_slices_as_opencv(report, tmp_path):
    """Chromium's JPEG decoder gives the page exactly the codes OpenCV's gives (both libjpeg-turbo),
    on which the writer's error is measured (test_viewer_data): the bound in the docs holds there."""
    sync_playwright = _playwright()
    html, _ = report
    stored = re.search(r'"slices":\[([^\]]+)\]', html.read_text()).group(1).replace('"', "").split(",")
    with sync_playwright() as pw:
        b = Page(pw, tmp_path)
        try:
            b.open(html.as_uri())
            for z in (0, len(stored) // 2):
                got = b.page.evaluate(_DECODE_JS, stored[z])
                want = decode_slice(base64.b64decode(stored[z]))
                np.testing.assert_array_equal(np.array(got["codes"], np.uint8).reshape(got["h"], got["w"]), want)
        finally:
            b.context.close()


_DECODE_JS = """async (b64) => {
  const bin = atob(b64), raw = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) raw[i] = bin.charCodeAt(i);
  const bmp = await createImageBitmap(new Blob([raw], {type: "image/jpeg"}), {colorSpaceConversion: "none", premultiplyAlpha: "none"});
  const ctx = new OffscreenCanvas(bmp.width, bmp.height).getContext("2d");
  ctx.drawImage(bmp, 0, 0);
  const px = ctx.getImageData(0, 0, bmp.width, bmp.height).data;
  return {w: bmp.width, h: bmp.height, codes: Array.from(px.filter((_, i) => i % 4 === 0))};
}"""


def test_viewer_with_many_candidates(tmp_path, shots):
    """Beyond 127 candidates the label volumes are uint16: the page still colours only the candidates
    (the background stays the CT) and lists them all."""
    sync_playwright = _playwright()
    path, *_ = synthetic_nifti(tmp_path / "scan.nii.gz", lesions=[])
    scan = S.read_scan(path)
    dets = []
    for z in range(2, 12):  # 13 boxes a slice, rows 7 px apart from slice to slice: 130 separate candidates
        for k in range(13):
            x, y = 10 + 6 * k, 5 + 7 * (z - 2)
            full = np.zeros(scan.hu.shape[1:], bool)
            full[y : y + 4, x : x + 4] = True
            dets.append(P.Detection(len(dets) + 1, z, z, 0.99 - 0.003 * len(dets), np.array([x, y, x + 4, y + 4], float),
                                    full[y : y + 4, x : x + 4].copy(), (x, y), P.diameters(full, *scan.spacing[:2])))
    cands = P.group_candidates(dets, set(range(scan.hu.shape[0])), 0.3, scan)
    assert len(cands) == 130
    cfg = Config(model=ModelConfig(slices=3), data=DataConfig(size=128))
    res = P.PredictionResult(scan, cfg, P.PredictSettings(), dets, cands, list(range(scan.hu.shape[0])))
    P.write_outputs(res, tmp_path / "out", P.OutputOptions(overlays=False, markups=False))
    html = tmp_path / "out" / "report.html"
    with sync_playwright() as pw:
        b = Page(pw, tmp_path)
        try:
            assert b.open(html.as_uri()) == "ready"
            img = b.canvas(shots / "many.png")
            plain = (img.max(axis=2) - img.min(axis=2)) < 12
            assert plain.mean() > 0.8  # CT grey or air nearly everywhere
            assert _colour_pixels(img, candidate_rgb(1)) > 10
            assert b.page.locator("tr.candidate").count() == 130
            assert not b.errors, b.errors
        finally:
            b.context.close()
