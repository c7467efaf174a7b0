"""The web console: served (or not) on the HTTP port, and a job run from headless Chromium.

The browser test drives the system's Chromium (Debian package `chromium`, which .ci/run
installs) with Playwright in a worker thread, while the server runs in the test's own
Trio loop: one page load, a real clip set into the file input, a thumbnail made, and the
downloaded result probed. With CONSOLE_SCREENSHOT=path (not FFSERVE_*: those are config
overrides, refused when unknown) it also saves its screenshot of the finished job there
(that is how docs/console.png is made).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import Media, StartServer
from tests.helpers import probe

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


async def test_console_off_is_404(start_server: StartServer) -> None:
    server = await start_server(server={"console": False})
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            for path in ("/", "/console/console.js", "/console/schema.json"):
                assert (await http.get(path)).status_code == 404, path
            assert (await http.get("/ready")).status_code == 200


async def test_console_page_policy_and_schema(start_server: StartServer) -> None:
    server = await start_server()
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            page = await http.get("/")
            schema = (await http.get("/console/schema.json")).json()
            script = await http.get("/console/console.js")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert f"connect-src 'self' ws://127.0.0.1:{server.port}" in policy
    assert "default-src 'none'" in policy
    assert "script-src 'self';" in policy
    # Nothing from elsewhere: every src/href in the page is a path on this server.
    assert "http://" not in page.text and "https://" not in page.text
    assert script.headers["content-type"].startswith("text/javascript")
    assert schema["ws_port"] == server.port
    assert schema["auth_required"] is False
    assert "thumbnail" in schema["operations"]


def drive_console(url: str, clip: Path, out: Path, shot: Path) -> dict[str, Any]:
    """In a worker thread: run a thumbnail job in the console; save the download and a
    screenshot. Every wait is bounded by Playwright's timeouts."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.set_default_timeout(60_000)
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]")
            page.set_input_files("#file-input", str(clip))
            page.select_option("#operation", "thumbnail")
            page.fill("#opt-width", "320")
            page.fill("#opt-timestamp", "1")
            page.click("#start")
            page.wait_for_selector("#results img")
            page.wait_for_selector("#job[data-state=done]")
            loaded = page.evaluate(
                "() => { const i = document.querySelector('#results img');"
                " return i.complete && i.naturalWidth; }"
            )
            with page.expect_download() as download:
                page.click("#results a[download]")
            download.value.save_as(out)
            page.locator("#metadata-box summary").click()
            page.screenshot(path=str(shot), full_page=True)
            return {
                "stage": page.text_content("#stage"),
                "metadata": json.loads(page.text_content("#metadata") or "{}"),
                "image_width": loaded,
                "filename": download.value.suggested_filename,
                "errors": errors,
            }
        finally:
            browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package chromium)")
async def test_thumbnail_from_the_console_in_chromium(
    start_server: StartServer, media: Media, tmp_path: Path
) -> None:
    server = await start_server()
    out = tmp_path / "downloaded.jpg"
    shot = tmp_path / "console.png"
    url = f"http://127.0.0.1:{server.http_port}/"
    with trio.fail_after(180):
        # Not abandoned on cancel: Playwright's own timeouts end the thread, and its
        # `finally` closes the browser, so no Chromium outlives the test.
        seen = await trio.to_thread.run_sync(drive_console, url, media.clip, out, shot)
    wanted = os.environ.get("CONSOLE_SCREENSHOT")
    if wanted:
        shutil.copyfile(shot, wanted)

    assert seen["stage"] == "done"
    assert seen["errors"] == []
    assert seen["image_width"] == 320
    assert seen["filename"].endswith(".jpg")
    assert seen["metadata"]["width"] == 320
    probed = probe(out)
    (stream,) = probed["streams"]
    assert stream["codec_name"] == "mjpeg"
    # 640x360 fitted into width 320: the aspect ratio is kept.
    assert (stream["width"], stream["height"]) == (320, 180)
    assert out.stat().st_size == seen["metadata"]["size_bytes"]
