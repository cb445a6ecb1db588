"""The page, in a real headless Chromium: enter the key, upload two photos, watch them reach READY,
search, see the grid. Screenshots go to test-artifacts/ (desktop and phone widths)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
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


def test_gallery_delete_search_by_person_and_size_refusal_in_a_real_browser(
    settings, start_service, browser, tmp_path
):
    # given an API with a small upload limit, a worker, and photos of one person on disk
    settings = settings.model_copy(update={"max_upload_bytes": 150_000})
    api_service = start_service("api", settings)
    api_service.wait_for_log("Uvicorn running on", timeout=60)
    worker = start_service("worker", settings)
    worker.wait_for_log("selfcheck.passed")
    base = f"http://127.0.0.1:{settings.api_port}"
    ARTIFACTS.mkdir(exist_ok=True)
    files = []
    for variant in (11, 12, 13):
        path = tmp_path / f"lin-{variant}.jpg"
        path.write_bytes(encode(make_person_photo(9, variant), quality=80))
        files.append(str(path))
    too_big = tmp_path / "too-big.png"
    too_big.write_bytes(encode(make_person_photo(9, 14, size=(1200, 1600)), "PNG"))
    assert too_big.stat().st_size > 150_000

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(base + "/")
    page.fill("#key-input", TEST_API_KEY)
    page.press("#key-input", "Enter")  # the keyboard submits the key
    page.wait_for_selector("#app:not([hidden])")
    assert "up to 0.1 MB" in page.inner_text("#limit-hint")

    # uploads for a new person; the one over the limit is refused before it is sent
    page.fill("#person-name", "Lin")
    page.click("#person-create")
    page.wait_for_function(
        "document.querySelector('#person-select').selectedOptions[0].text === 'Lin'"
    )
    requests_seen: list[str] = []
    page.on("request", lambda r: requests_seen.append(r.method + " " + r.url))
    page.set_input_files("#file-input", [*files, str(too_big)])
    page.wait_for_function(
        "document.querySelectorAll('#uploads li[data-status=READY]').length === 3", timeout=120_000
    )
    refused = page.inner_text("#uploads li[data-status=REFUSED]")
    assert "larger than the limit" in refused
    assert sum(1 for r in requests_seen if r.startswith("POST") and r.endswith("/photos")) == 3

    # the person's gallery shows each photo with its status and quality
    page.select_option("#gallery-person", label="Lin")
    page.wait_for_function(
        "document.querySelectorAll('#gallery .card[data-status=READY]').length === 3"
    )
    page.wait_for_function(
        "[...document.querySelectorAll('#gallery img')].every(i => i.src.startsWith('blob:'))"
    )
    assert page.inner_text("#gallery").count("quality") == 3
    page.screenshot(path=str(ARTIFACTS / "gallery-desktop.png"), full_page=True)

    # search by person ranks their photos first
    page.click("#search-person")
    page.wait_for_function(
        "document.querySelector('#search-status').textContent.includes('like Lin')"
    )
    first_three = page.eval_on_selector_all(
        "#results .card", "cards => cards.slice(0, 3).map(c => c.dataset.photoId)"
    )
    gallery_ids = page.eval_on_selector_all(
        "#gallery .card", "cards => cards.map(c => c.dataset.photoId)"
    )
    assert set(first_three) == set(gallery_ids)
    page.screenshot(path=str(ARTIFACTS / "search-person-desktop.png"), full_page=True)

    # deleting a photo asks first; cancel keeps it, confirm removes it
    page.click("#gallery .card >> nth=0 >> button.delete-photo")
    page.wait_for_selector("#confirm-dialog[open]")
    page.keyboard.press("Escape")
    assert page.locator("#gallery .card").count() == 3
    doomed = gallery_ids[0]
    page.click("#gallery .card >> nth=0 >> button.delete-photo")
    page.click("#confirm-ok")
    page.wait_for_function("document.querySelectorAll('#gallery .card').length === 2")
    assert doomed not in page.eval_on_selector_all(
        "#gallery .card", "c => c.map(x => x.dataset.photoId)"
    )

    # the phone width: readable, no sideways scrolling, same controls
    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.goto(base + "/")
    phone.fill("#key-input", TEST_API_KEY)
    phone.click("#key-form button")
    phone.wait_for_selector("#app:not([hidden])")
    phone.select_option("#gallery-person", label="Lin")
    phone.wait_for_function(
        "document.querySelectorAll('#gallery .card[data-status=READY]').length === 2"
    )
    phone.wait_for_function(
        "[...document.querySelectorAll('#gallery img')].every(i => i.src.startsWith('blob:'))"
    )
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"page scrolls sideways on a phone ({width}px)"
    phone.screenshot(path=str(ARTIFACTS / "gallery-phone.png"), full_page=True)

    # deleting the person asks, then removes them and their photos
    page.click("#delete-person")
    page.wait_for_selector("#confirm-dialog[open]")
    assert "Delete Lin and all their photos" in page.inner_text("#confirm-text")
    page.click("#confirm-ok")
    page.wait_for_function(
        "document.querySelector('#gallery-status').textContent === 'Lin deleted'"
    )
    assert "Lin" not in page.inner_text("#gallery-person")
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TEST_API_KEY}"}) as client:
        gone = [client.get(f"/photos/{photo_id}").status_code for photo_id in gallery_ids[1:]]
    assert gone == [404] * len(gallery_ids[1:])
