"""The self-contained HTML report of `a3d predict`, opened in a real headless browser (Debian's chromium).

Needs ``chromium`` on PATH (``apt-get install -y chromium``). Without it the test skips, except under
CI=true where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from a3d import predict as P
from a3d.config import Config, DataConfig, ModelConfig
from a3d.data import scans as S
from test_predict_support import BlobDetector, synthetic_nifti

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    msg = f"no headless browser found (looked for {', '.join(BROWSERS)} on PATH); install it with: apt-get install -y chromium"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def _chromium(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("html")
    path, *_ = synthetic_nifti(tmp / "scan.nii.gz")
    cfg = Config(model=ModelConfig(slices=3), data=DataConfig(size=128))
    res = P.predict_scan(S.read_scan(path), BlobDetector(), cfg, P.PredictSettings())
    doc = P.write_outputs(res, tmp / "out")
    return tmp / "out" / "report.html", doc


def test_html_is_self_contained(report):
    html, doc = report
    text = html.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", text)
    assert len(re.findall(r'src="data:image/png;base64,', text)) == len(doc["candidates"]) == 2


def test_html_in_headless_browser(report, tmp_path):
    browser = _browser()
    html, doc = report
    r = _chromium(browser, tmp_path, "--dump-dom", html.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    # the candidates are listed, one row each, and every embedded overlay decoded (set by the page's
    # own load handler from img.complete && naturalWidth > 0)
    ids = re.findall(r'<tr class="candidate" data-candidate-id="(\d+)"', dom)
    assert [int(i) for i in ids] == [c["id"] for c in doc["candidates"]]
    total = re.search(r'data-images-total="(\d+)"', dom)
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    assert total and loaded, "the page's load handler did not run"
    assert int(total.group(1)) == len(doc["candidates"]) == int(loaded.group(1))
    # a screenshot renders something that is not blank
    shot = tmp_path / "shot.png"
    r = _chromium(browser, tmp_path, f"--screenshot={shot}", "--window-size=1200,1400", html.as_uri())
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    import cv2

    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1400, 1200) and img.std() > 10


def test_html_broken_image_detected(report, tmp_path):
    """Control: a report whose image data is corrupt is reported as not loaded."""
    browser = _browser()
    html, doc = report
    bad = tmp_path / "bad.html"
    bad.write_text(re.sub(r"base64,[A-Za-z0-9+/=]{40}", "base64,AAAA", html.read_text(), count=1))
    dom = _chromium(browser, tmp_path, "--dump-dom", bad.as_uri()).stdout
    assert int(re.search(r'data-images-loaded="(\d+)"', dom).group(1)) == len(doc["candidates"]) - 1
