"""The page in a real headless Chromium (the distribution's package, driven by Playwright)."""

import shutil

import pytest
from playwright.sync_api import sync_playwright

from runtime.methods import METHODS
from tests.fake_model import write_fake_model
from tests.serve_helpers import red_blob_png, server_process

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_fake_model(tmp_path_factory.mktemp("serve_page") / "fake.onnx")


def watch(page, problems: list[str]) -> None:
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))


def test_upload_shows_overlays_and_top_k_without_console_errors(model_path, tmp_path):
    assert CHROMIUM, "Chromium is not installed (apt-get install -y chromium)"
    photo = tmp_path / "photo.png"
    photo.write_bytes(red_blob_png())
    problems: list[str] = []
    with server_process(model_path) as (_, url), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        watch(page, problems)
        page.goto(url + "/")
        page.wait_for_selector(".method")  # the model card arrived
        # every method the server has, from its card: a new one appears without touching the page
        assert page.locator(".method").evaluate_all("boxes => boxes.map(b => b.value)") == list(METHODS)
        assert page.is_hidden("#keyform")
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


def test_the_page_asks_for_the_key_and_keeps_within_max_maps(model_path, tmp_path):
    assert CHROMIUM, "Chromium is not installed (apt-get install -y chromium)"
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    photo = tmp_path / "photo.png"
    photo.write_bytes(red_blob_png())
    problems: list[str] = []
    with server_process(model_path, "--api-key-file", str(key_file), "--max-maps", "3") as (_, url), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(url + "/")
        page.wait_for_selector("#keyform", state="visible")
        assert "API key" in page.text_content("#error")
        page.fill("#key", "s3cret")
        page.click("#keyform button")
        page.wait_for_selector(".method")
        assert page.is_hidden("#keyform") and page.text_content("#error") == ""
        page.check(".method[value=layercam]")
        page.fill("#topk", "4")  # 2 methods x 4 classes = 8 maps: the page asks for 2 x 1
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("img.overlay", timeout=20_000)
        assert page.locator("img.overlay").count() == 2
        assert page.locator(".prediction").count() == 4
        assert page.text_content("#error") == ""
        browser.close()
    assert problems == []
