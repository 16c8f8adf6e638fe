"""End-to-end test of the web dashboard in a real headless Chromium.

Starts ``$IMGNORM_BIN master --serve --http 127.0.0.1:0`` (both addresses
read from its stderr) and two ``imgnorm worker`` processes, then, in the
browser: logs in with the token, uploads a generated dataset as a ``.zip``,
starts a job, waits for the progress bar to reach 100 % and for the worker
table to list both workers, takes screenshots, and downloads the results
with the browser's HttpOnly session cookie. The archive is checked with
NumPy against its own manifest.

Chromium and chromedriver come from Debian (``scripts/browser-deps.sh``,
called by ``./test.sh``); Selenium is pointed at both binaries explicitly
and runs offline, so it never tries to download a browser. Without a
browser the test is skipped loudly, or fails when
``IMGNORM_REQUIRE_BROWSER=1`` (CI). Screenshots go to
``$IMGNORM_SCREENSHOTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

BIN = os.environ.get("IMGNORM_BIN", "").strip()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
TOKEN = "e2e-token-0123456789abcdef"
# More images make a longer job (e.g. for the screenshot in docs/).
IMAGES = int(os.environ.get("IMGNORM_E2E_IMAGES", "160"))


def _require():
    missing = []
    if not BIN:
        missing.append("IMGNORM_BIN")
    if not CHROMIUM or not CHROMEDRIVER:
        missing.append("chromium/chromedriver (scripts/browser-deps.sh)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (scripts/py-deps.sh)")
    if missing:
        msg = "browser test needs: " + ", ".join(missing)
        if os.environ.get("IMGNORM_REQUIRE_BROWSER") == "1":
            pytest.fail(msg + " (IMGNORM_REQUIRE_BROWSER=1)")
        pytest.skip(msg)


class Proc:
    """A child process whose stderr is collected by a thread."""

    def __init__(self, args: list[str]):
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in stderr:\n" + "\n".join(self.lines))

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def poll(cond, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def api(base: str, path: str, headers: dict[str, str]):
    req = urllib.request.Request(base + path, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.headers, r.read()


@pytest.fixture
def browser(tmp_path):
    _require()
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager go online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
    ]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_dashboard_end_to_end(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    shots = Path(os.environ.get("IMGNORM_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)

    # A dataset in class folders, zipped.
    src = tmp_path / "src"
    subprocess.run(
        [BIN, "gen", "--out", str(src), "--count", str(IMAGES), "--seed", "7",
         "--format", "mixed", "--size", "96x96", "--classes", "3"],
        check=True, capture_output=True,
    )
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(src).as_posix())
        z.writestr("notes.txt", "not an image: dropped")
    n_images = sum(1 for f in src.rglob("*") if f.is_file())

    data = tmp_path / "data"
    master = Proc([BIN, "master", "--serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                   "--data-dir", str(data), "--token", TOKEN, "--batch-size", "8"])
    workers: list[Proc] = []
    try:
        grpc = master.wait_for(r"imgnorm master listening on (\S+)").group(1)
        base = master.wait_for(r"imgnorm dashboard listening on (http://\S+)").group(1)
        for name in ["alpha", "beta"]:
            workers.append(Proc([BIN, "worker", "--master", f"http://{grpc}", "--name", name]))
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        poll(lambda: len([w for w in json.loads(api(base, "/api/v1/workers", bearer)[1])
                          if w["state"] == "alive"]) == 2, 30, "two workers")

        # Log in.
        browser.get(base + "/")
        assert browser.current_url.endswith("/login")
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "login").click()
        poll(lambda: browser.current_url.rstrip("/") == base, 10, "the jobs page after login")
        cookie = browser.get_cookie("imgnorm_token")
        assert cookie and cookie["httpOnly"], cookie

        # Upload the archive as a new dataset.
        browser.get(base + "/new")
        browser.find_element(By.ID, "up-name").send_keys("photos")
        browser.find_element(By.ID, "up-files").send_keys(str(archive))
        browser.find_element(By.ID, "up-submit").click()
        msg = poll(lambda: (t := browser.find_element(By.ID, "up-msg").text) and "created" in t and t,
                   60, "the upload to finish")
        assert f"{n_images} images" in msg, msg
        assert "1 non-image" in msg, msg

        # Start a job with options from the form.
        poll(lambda: Select(browser.find_element(By.ID, "job-dataset")).first_selected_option
             .get_attribute("value") == "photos", 10, "the dataset in the list")
        Select(browser.find_element(By.ID, "job-dtype")).select_by_visible_text("f32")
        browser.find_element(By.ID, "job-submit").click()
        poll(lambda: "/jobs/job-1" in browser.current_url, 10, "the job page")

        # Live progress to 100 %, both workers in the table. The page redraws
        # on every event, so read it in one script call (no stale elements).
        def js(expr):
            return browser.execute_script("return " + expr)

        def bar_value():
            return js("(e => e ? +e.getAttribute('aria-valuenow') : -1)"
                      "(document.querySelector('#progress [role=progressbar]'))")

        seen = set()
        def progressed():
            v = bar_value()
            seen.add(v)
            if 40 <= v <= 90 and not (shots / "job-running.png").exists():
                browser.save_screenshot(str(shots / "job-running.png"))
            return v == 100 and js("document.getElementById('state').textContent") == "done"
        poll(progressed, 120, "the progress bar to reach 100%")
        # The bar moved live, without a reload (unless the job was instant).
        assert len(seen - {-1}) >= 2 or seen == {100}, seen
        names = sorted(js("[...document.querySelectorAll('#workers tr[data-worker] td:first-child')]"
                          ".map(t => t.textContent.trim().split(/\\s+/)[0])"))
        assert names == ["alpha", "beta"], names
        poll(lambda: browser.find_elements(By.ID, "download"), 10, "the download link")
        poll(lambda: not js("document.getElementById('results-card').hidden"), 10,
             "the dataset statistics")
        browser.save_screenshot(str(shots / "job.png"))
        browser.get(base + "/")
        poll(lambda: browser.find_elements(By.CSS_SELECTOR, "#jobs a[href='/jobs/job-1']"), 10, "the jobs list")
        browser.save_screenshot(str(shots / "jobs.png"))
        browser.get(base + "/workers")
        poll(lambda: js("document.querySelectorAll('#workers tr[data-worker]').length") == 2, 10,
             "the workers page")
        browser.save_screenshot(str(shots / "workers.png"))
        browser.set_window_size(390, 844)  # a phone
        browser.get(base + f"/jobs/job-1")
        poll(lambda: bar_value() == 100, 10, "the job page on a phone")
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400, f"page wider than the phone: {width}px"
        browser.save_screenshot(str(shots / "job-phone.png"))

        # Download the results with the browser's session cookie.
        href = js("document.getElementById('download').href")
        headers, body = api(href, "", {"Cookie": f"imgnorm_token={cookie['value']}"})
        assert headers["Content-Type"] == "application/x-tar"
        tar = tarfile.open(fileobj=io.BytesIO(body))
        members = {m.name: m for m in tar.getmembers()}
        rows = [json.loads(line) for line in tar.extractfile(members["job-1/manifest.jsonl"]).read().splitlines()]
        assert len(rows) == n_images
        assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
        for r in rows:
            arr = np.load(io.BytesIO(tar.extractfile(members[f"job-1/{r['output']}"]).read()))
            assert arr.dtype == np.float32
            assert list(arr.shape) == [r["height"], r["width"], r["channels"]]
            assert arr.min() >= 0.0 and arr.max() <= 1.0
        stats = json.loads(tar.extractfile(members["job-1/stats.json"]).read())
        assert stats["counts"]["ok"] == n_images
        _, manifest = api(base, "/api/v1/jobs/job-1/manifest", bearer)
        assert manifest == tar.extractfile(members["job-1/manifest.jsonl"]).read()
    finally:
        for w in workers:
            w.stop()
        master.stop()
