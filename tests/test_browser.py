"""The page, in a real headless Chromium: enter the key, upload two photos, watch them reach READY,
search, see the grid. Screenshots go to test-artifacts/ (desktop and phone widths)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import TEST_API_KEY
from tests.helpers import encode, make_person_photo

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed for the browser test (.ci/run installs it)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def test_upload_watch_ready_and_search_in_a_real_browser(
    settings, api, start_service, browser, tmp_path
):
    worker = start_service("worker", settings)
    worker.wait_for_log("selfcheck.passed")
    ARTIFACTS.mkdir(exist_ok=True)
    files = []
    for variant in (1, 2):
        path = tmp_path / f"person-{variant}.jpg"
        path.write_bytes(encode(make_person_photo(3, variant)))
        files.append(str(path))

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(str(api.base_url) + "/")
    page.fill("#key-input", TEST_API_KEY)
    page.click("#key-form button")
    page.wait_for_selector("#app:not([hidden])")

    page.fill("#person-name", "Grace")
    page.click("#person-create")
    page.wait_for_function(
        "document.querySelector('#person-select').selectedOptions[0].text === 'Grace'"
    )
    page.set_input_files("#file-input", files)
    page.wait_for_function(
        "document.querySelectorAll('#uploads li[data-status=READY]').length === 2", timeout=120_000
    )
    assert "quality" in page.inner_text("#uploads")
    page.screenshot(path=str(ARTIFACTS / "uploads-desktop.png"), full_page=True)

    page.fill("#search-text", "a person in a striped shirt")
    page.click("#search-form button[type=submit]")
    # The session's database holds other tests' photos too (their files in other folders), so
    # this checks the grid, not which photos a random-weight text query ranks first.
    page.wait_for_function(
        "document.querySelectorAll('#results .card').length >= 2", timeout=60_000
    )
    assert "result(s)" in page.inner_text("#search-status")
    page.screenshot(path=str(ARTIFACTS / "search-desktop.png"), full_page=True)

    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.goto(str(api.base_url) + "/")
    phone.fill("#key-input", TEST_API_KEY)
    phone.click("#key-form button")
    phone.wait_for_selector("#app:not([hidden])")
    phone.set_input_files("#search-file", files[0])
    phone.wait_for_function(
        "document.querySelector('#results .card img[src^=blob]') !== null", timeout=60_000
    )
    # the very photo searched for comes first, captioned with its person
    first = phone.inner_text("#results .card >> nth=0")
    assert first.startswith("Grace") and "1.000" in first, first
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"page scrolls sideways on a phone ({width}px)"
    phone.screenshot(path=str(ARTIFACTS / "search-phone.png"), full_page=True)


def test_a_wrong_key_is_refused_on_the_page(settings, api, browser):
    page = browser.new_page()
    page.goto(str(api.base_url) + "/")
    page.fill("#key-input", "not-the-key")
    page.click("#key-form button")
    page.wait_for_function("document.querySelector('#key-error').textContent.includes('refused')")
    assert page.is_hidden("#app")
