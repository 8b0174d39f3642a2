"""The HTML report opened in a real headless browser (Debian's ``chromium``).

The browser is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``: JSON
messages ending in a NUL byte on file descriptors 3 and 4), so the test needs no package beyond the
standard library. It checks that the page loads without a console message, error or blocked
resource, that every image decodes (``naturalWidth > 0``), that the tables, curves and gallery are
there, and it saves a full-page screenshot to ``tests/artifacts/`` (git-ignored). The whole module
is skipped, with a message, when ``chromium`` is not installed.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli_helpers import (
    fake_results,
    random_png,
)
from tests.conftest import ROOT

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install chromium); the browser test is skipped",
)
ARTIFACTS = ROOT / "tests" / "artifacts"


class Browser:
    """A headless chromium driven over ``--remote-debugging-pipe``; one page."""

    def __init__(self, user_data_dir: Path, *, timeout: float = 60.0):
        self.timeout = timeout
        r_in, self._w = os.pipe()  # we write commands, chromium reads them on fd 3
        self._r, w_out = os.pipe()  # chromium writes answers on fd 4

        def wire():
            os.dup2(r_in, 3)
            os.dup2(w_out, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", "--no-first-run", "--no-default-browser-check",
             "--hide-scrollbars", f"--user-data-dir={user_data_dir}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=wire,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(r_in)
        os.close(w_out)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, *, session: bool = False, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, name: str) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == name:
                return self.events.pop(i)
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._read_message(deadline)
            if m.get("method") == name:
                return m
            self.events.append(m)

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", session=True, expression=expression,
                        returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def problems(self) -> list[str]:
        """Console messages, log entries of level warning/error, uncaught exceptions."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled":
                out.append(f"console.{p.get('type')}: {p.get('args')}")
            elif m == "Runtime.exceptionThrown":
                out.append(f"exception: {p.get('exceptionDetails')}")
            elif m == "Log.entryAdded" and p["entry"]["level"] in ("warning", "error"):
                out.append(f"{p['entry']['level']}: {p['entry']['text']}")
        return out

    def close(self):
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self._w)
        os.close(self._r)


def open_page(browser: Browser, path: Path) -> dict:
    """Load ``path``, wait for the load event, and return what the page holds."""
    browser.call("Page.navigate", session=True, url=path.resolve().as_uri())
    browser.wait_event("Page.loadEventFired")
    return browser.evaluate(
        """(async () => {
          const imgs = Array.from(document.images);
          await Promise.all(imgs.map(i => i.decode().catch(() => null)));
          return {
            title: document.title,
            tables: document.querySelectorAll('table').length,
            rows: document.querySelectorAll('table.results tbody tr').length,
            headers: Array.from(document.querySelectorAll('table.results th')).map(t => t.textContent),
            svgs: document.querySelectorAll('svg polyline').length,
            gallery: document.querySelectorAll('table.gallery img').length,
            images: imgs.map(i => [i.naturalWidth, i.naturalHeight, i.src.slice(0, 22)]),
            width: document.documentElement.scrollWidth,
            height: document.documentElement.scrollHeight,
          };
        })()"""
    )


def screenshot(browser: Browser, info: dict, path: Path) -> Path:
    w, h = max(800, int(info["width"])), min(8000, max(600, int(info["height"])))
    browser.call("Emulation.setDeviceMetricsOverride", session=True, width=w, height=h,
                 deviceScaleFactor=1, mobile=False)
    data = browser.call("Page.captureScreenshot", session=True, format="png",
                        captureBeyondViewport=True)["data"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(data))
    return path


class _Resources(HTMLParser):
    """Every URL the page would fetch: src/href attributes and CSS url(...)."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href") and v:
                self.urls.append(v)
            if k == "style" and v and "url(" in v:
                self.urls.append(v)


# --------------------------------------------------------------------------------------------
# fixtures: an evaluate-style results folder, and the same from the real command


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def test_report_of_evaluate_results_renders_cleanly(tmp_path, browser):
    from cam_core.report import build_report

    folder = fake_results(tmp_path / "results")
    page = build_report(folder)
    assert page == folder / "report.html"
    text = page.read_text()
    parser = _Resources()
    parser.feed(text)
    assert parser.urls and all(u.startswith(("data:image/png;base64,", "#")) for u in parser.urls)
    assert "<script" not in text  # the note above was escaped, and the page has no script
    browser.events.clear()
    info = open_page(browser, page)
    shot = screenshot(browser, info, ARTIFACTS / "report_evaluate.png")
    assert browser.problems() == []
    assert info["title"] == "cam-core evaluate: localisation report"
    assert info["rows"] == 3 and info["headers"] == ["method", "MaxBoxAcc", "MaxBoxAccV2"]
    assert info["svgs"] == 9  # three charts (IoU 0.3/0.5/0.7), three methods each
    assert info["gallery"] == 18  # best 3 + worst 3 for each of three methods
    assert len(info["images"]) == 18
    assert all(w == 96 and h == 80 and src.startswith("data:image/png") for w, h, src in
               info["images"])
    with Image.open(shot) as im:  # the screenshot shows a page, not a blank canvas
        arr = np.asarray(im.convert("RGB"))
    assert arr.shape[1] >= 800 and arr.std() > 10


def test_report_of_a_markdown_results_folder(tmp_path, browser):
    from cam_core.report import build_report

    folder = tmp_path / "bench"
    random_png(folder / "curves.png", seed=3, size=(120, 90))
    random_png(folder / "unlinked.png", seed=4, size=(50, 40))
    (folder / "report.md").write_text(
        "# Bench report\n\nSome *text* with `code` and a [link](https://example.com).\n\n"
        "## Table\n\n| a | b |\n|---|---|\n| 1 | 2.5 |\n| x | y |\n\n"
        "- item one\n- item two\n\n![curves](curves.png)\n\n```\nraw <code>\n```\n"
    )
    page = build_report(folder, out=tmp_path / "page.html")
    text = page.read_text()
    assert "example.com" not in text  # no external link survives
    browser.events.clear()
    info = open_page(browser, page)
    screenshot(browser, info, ARTIFACTS / "report_markdown.png")
    assert browser.problems() == []
    assert info["title"] == "Bench report"
    assert info["tables"] == 1
    sizes = sorted((w, h) for w, h, _ in info["images"])
    assert sizes == [(50, 40), (120, 90)]


def test_browser_check_can_fail(tmp_path, browser):
    # A page with a broken image and a blocked external resource is reported by the same probes.
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><meta http-equiv='
        '"Content-Security-Policy" content="default-src \'none\'; img-src data:"><title>b</title>'
        '</head><body><img src="data:image/png;base64,AAAA"><img src="https://example.com/x.png">'
        "</body></html>"
    )
    browser.events.clear()
    info = open_page(browser, bad)
    assert [w for w, _, _ in info["images"]] == [0, 0]
    assert any("Content Security Policy" in p for p in browser.problems())
