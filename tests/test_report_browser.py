"""report.html in a real headless browser (Debian's chromium + chromium-driver, driven by selenium from PyPI).

Checked: the page loads with no console error, the verdict and task filters hide and show the right rows, every
picture decodes and renders (element screenshots are not blank), and the page makes no network request: the only
URLs it loads are its own file and the data: URIs of its pictures. The page is opened from a folder that holds
nothing but report.html, as a mailed report would be.

Skipped with the reason when selenium or the browser packages are missing (.ci/run installs them with apt-get).
"""
from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rgpt4d_sdk.analyze.report import write_report
from rgpt4d_sdk.eval.metrics import summarize

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

selenium = pytest.importorskip("selenium", reason="selenium is not installed (it comes with pip install -e .[test])")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Debian's chromium and chromium-driver packages are not installed (apt-get install -y chromium "
           "chromium-driver; .ci/run does this)")


def _picture(path: Path, size, seed: int) -> None:
    """A picture with structure (gradient + stripes), so a rendered copy is visibly not blank."""
    w, h = size
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    img = np.stack([x, x[:, ::-1], (np.arange(h)[:, None] * 7 + seed * 40) % 256 + 0 * x], -1).astype(np.uint8)
    img[:, ::16] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="JPEG", quality=85)


def _row(i, clip, task, fmt, **kw):
    row = {"id": f"{clip}-q{i}", "unit_id": clip, "status": "ok", "source": "nuscenes", "scene": "scene-1",
           "camera": "CAM_FRONT", "clip_index": 0, "timestamps_s": [0.0, 0.5], "task": task, "format": fmt,
           "question": f"Q{i} about <obj_1>?", "options": [], "regions": [], "timings": {"decode": 0.1},
           "media": {"som": f"media/{clip}/som.jpg", "strip": f"media/{clip}/strip.jpg"}}
    row.update(kw)
    return row


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    rows = [
        _row(0, "clip-a", "direction", "mc", options=["left", "right"], answer_choice="B", truth="B"),
        _row(1, "clip-a", "distance", "numeric", answer_value=30.0, truth=10.0, unit="m"),
        _row(2, "clip-b", "distance", "numeric", answer_value=10.0, truth=10.0, unit="m"),
        _row(3, "clip-b", "speed", "numeric", status="error", error="ImageError: corrupt JPEG"),
        _row(4, "clip-c", "direction", "mc", options=["left", "right"], answer_choice="A", truth="B"),
    ]
    for k, unit in enumerate(("clip-a", "clip-b", "clip-c")):
        _picture(run / "media" / unit / "som.jpg", (320, 180), k)
        _picture(run / "media" / unit / "strip.jpg", (640, 60), k + 3)
    report = write_report(run, rows, summarize(rows), title="browser check")
    alone = tmp_path_factory.mktemp("mailed") / "report.html"  # the page without its media/ folder
    shutil.copy(report, alone)
    return alone


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download a driver or a browser
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,2000", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-default-apps", "--disable-sync"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        d = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    except Exception as e:  # a browser that cannot start here (no display libraries, sandbox) is a skip, said so
        pytest.skip(f"headless chromium does not start on this machine: {type(e).__name__}: {e}")
    yield d
    d.quit()


@pytest.fixture(scope="module")
def loaded(driver, page):
    driver.get(page.as_uri())
    driver.execute_script("return document.readyState")
    return driver


def test_no_console_errors(loaded):
    errors = [e for e in loaded.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]
    assert errors == []


def test_no_network_request(loaded, page):
    urls = []
    for entry in loaded.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    assert page.as_uri() in urls
    others = [u for u in urls if u != page.as_uri() and not u.startswith("data:")]
    assert others == [], others


def test_pictures_render(loaded):
    from selenium.webdriver.common.by import By

    imgs = loaded.find_elements(By.CSS_SELECTOR, "img")
    assert len(imgs) == 6
    for img in imgs:
        assert loaded.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
        loaded.execute_script("arguments[0].scrollIntoView()", img)
        shot = np.asarray(Image.open(io.BytesIO(img.screenshot_as_png)).convert("RGB"), dtype=np.int16)
        assert shot.size and shot.std() > 10, "a picture rendered blank"
        assert (shot < 240).mean() > 0.2, "a picture rendered (nearly) white"


def _visible_rows(driver):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('tr.q')).filter(r => r.offsetParent !== null)"
        ".map(r => [r.dataset.v, r.dataset.task, r.closest('section').querySelector('h3').textContent])")


def _choose(driver, select_id, value):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, select_id)).select_by_value(value)


def test_filter_works(loaded):
    assert len(_visible_rows(loaded)) == 5
    _choose(loaded, "fv", "right")
    shown = _visible_rows(loaded)
    assert shown and all(v == "right" for v, _, _ in shown)
    assert {s for _, _, s in shown} == {"clip-a", "clip-b"}
    hidden_sections = loaded.execute_script(
        "return Array.from(document.querySelectorAll('section.clip')).filter(s => s.hidden)"
        ".map(s => s.querySelector('h3').textContent)")
    assert hidden_sections == ["clip-c"]  # a clip with no matching row disappears
    _choose(loaded, "ft", "distance")
    assert [(v, t) for v, t, _ in _visible_rows(loaded)] == [("right", "distance")]
    _choose(loaded, "fv", "error")
    _choose(loaded, "ft", "")
    assert [(v, t) for v, t, _ in _visible_rows(loaded)] == [("error", "speed")]
    _choose(loaded, "fv", "")
    assert len(_visible_rows(loaded)) == 5
