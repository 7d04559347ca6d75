"""The page in a real headless Chromium (the distribution's package, driven by Playwright)."""

import shutil

import pytest
from playwright.sync_api import sync_playwright

from tests.fake_model import write_fake_model
from tests.serve_helpers import red_blob_png, server_process

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_fake_model(tmp_path_factory.mktemp("serve_page") / "fake.onnx")


def test_upload_shows_overlays_and_top_k_without_console_errors(model_path, tmp_path):
    assert CHROMIUM, "Chromium is not installed (apt-get install -y chromium)"
    photo = tmp_path / "photo.png"
    photo.write_bytes(red_blob_png())
    problems: list[str] = []
    with server_process(model_path) as (_, url), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(url + "/")
        page.wait_for_selector(".method")  # the model card arrived
        page.check(".method[value=layercam]")
        page.fill("#topk", "2")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("img.overlay", timeout=20_000)
        overlays = page.locator("img.overlay")
        assert overlays.count() == 4  # gradcam and layercam, two classes each
        assert all(overlays.nth(i).evaluate("img => img.complete && img.naturalWidth") == 48 for i in range(4))
        rows = page.locator(".prediction")
        assert rows.count() == 2
        assert rows.first.inner_text().startswith("red")
        assert page.text_content("#error") == ""
        browser.close()
    assert problems == []
