"""The page, in a real headless Chromium: enter the key, upload two photos, watch them reach READY,
search, see the grid. Screenshots go to test-artifacts/ (desktop and phone widths)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import psycopg
import pytest

from photoembed.faces import samples
from photoembed.seeding import seed_library
from photoembed.storage import LocalStorage
from tests.conftest import TEST_API_KEY, new_database, start_api
from tests.helpers import encode, make_person_photo, make_photo, wait_until

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
PHOTO_URL = re.compile(r"/photos/[0-9a-f-]{36}$")  # one photo's status
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
        "document.querySelector('#search-status').textContent.includes('of Lin')"
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


def test_people_by_face_named_inline_boxes_reassigned_and_every_photo_listed(
    settings, postgres, start_service, browser, tmp_path
):

    # given an API with the face stage on a database of its own, and a photo whose stored bytes
    # are damaged before any worker sees it
    settings = settings.model_copy(
        update={"faces_enabled": True, "database_url": new_database(postgres, "browser")}
    )
    faces = samples.real_faces()
    with start_api(settings, start_service) as api:

        def upload(image, person_id=None) -> str:
            data = {"person_id": person_id} if person_id else {}
            response = api.post("/photos", files={"file": ("p.jpg", encode(image))}, data=data)
            assert response.status_code == 202, response.text
            return str(response.json()["id"])

        damaged = upload(make_photo(77))
        with psycopg.connect(
            settings.database_url.replace("postgresql+psycopg", "postgresql")
        ) as conn:
            storage_key = conn.execute(
                "SELECT storage_key FROM photos WHERE id = %s", (damaged,)
            ).fetchone()[0]
        LocalStorage(settings.storage_dir).path_for(storage_key).write_bytes(
            b"\xff\xd8" + b"0" * 99
        )
        start_service("worker", settings).wait_for_log("selfcheck.passed", timeout=180)

        # and Grace Hopper in three photos nobody labelled, Eileen Collins labelled once, and a
        # photo of both, uploaded without a person: eight photos in all
        variants = samples.variants(faces["hopper"], samples.FACE_SIDE["hopper"])
        eileen = api.post("/persons", json={"name": "Eileen"}).json()
        api.post("/persons", json={"name": "Grace (duplicate)"})
        ids = [upload(variants[v]) for v in ("mirror", "dim", "jpeg-q30")]
        ids += [upload(faces["astronaut"], eileen["id"]), upload(make_photo(78))]
        ids += [upload(make_photo(79))]
        group = upload(samples.group_photo(["astronaut", "hopper"], faces))

        def settled() -> bool:
            photos = [api.get(f"/photos/{i}").json() for i in [*ids, group]]
            return all(p["faces_status"] == "DONE" for p in photos)

        wait_until(settled, timeout=180, interval=0.5)
        assert api.get(f"/photos/{damaged}").json()["status"] == "FAILED"
        base = str(api.base_url)

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(base + "/")
    page.fill("#key-input", TEST_API_KEY)
    page.press("#key-input", "Enter")
    page.wait_for_selector("#app:not([hidden])")

    # then, with no person picked, the Photos view lists all eight, newest first, the failed one
    # with its reason and a Retry button
    page.wait_for_function("document.querySelectorAll('#photos .card').length === 8")
    failed = page.locator("#photos .card[data-status=FAILED]")
    assert failed.count() == 1 and "not a recognised image" in failed.inner_text()
    assert failed.locator("button.retry").count() == 1
    page.select_option("#photos-status", "FAILED")
    page.wait_for_function("document.querySelectorAll('#photos .card').length === 1")
    page.select_option("#photos-status", "")
    page.wait_for_function("document.querySelectorAll('#photos .card').length === 8")

    # the People view shows Eileen and the unnamed person the faces made, each with a cover face
    page.wait_for_function("document.querySelectorAll('#people .card').length === 3")
    page.wait_for_function(
        "document.querySelectorAll('#people img[src^=blob]').length === 2"  # Eileen's and one
    )
    assert "not named yet" in page.inner_text("#people-status")
    unnamed = page.locator("#people .card:has(.unnamed)")
    assert "4 face(s)" in unnamed.inner_text()  # three photos and the group photo
    page.screenshot(path=str(ARTIFACTS / "people-desktop.png"), full_page=True)

    # naming them inline, with the keyboard
    unnamed.locator("input").focus()
    page.keyboard.type("Grace")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#people-status').textContent === 'Named Grace'")
    assert page.locator("#people .card .unnamed").count() == 0

    # merging a duplicate person into Grace, picked from her card
    page.click("#people .card:has-text('Grace') button.open")
    page.wait_for_selector("#merge-row:not([hidden])")
    page.select_option("#merge-from", label="Grace (duplicate)")
    page.click("#merge-button")
    page.wait_for_function(
        "document.querySelector('#gallery-status').textContent.includes('merged into Grace')"
    )
    assert page.locator("#people .card").count() == 2

    # the group photo shows both faces with the right names over it
    page.click(f"#photos .card[data-photo-id='{group}'] button.open-photo")
    page.wait_for_selector("#photo-dialog[open]")
    page.wait_for_function("document.querySelectorAll('#photo-frame .face-box').length === 2")
    names = page.eval_on_selector_all(
        "#photo-frame .face-box",
        "boxes => boxes.sort((a, b) => a.offsetLeft - b.offsetLeft).map(b => b.innerText)",
    )
    assert names == ["Eileen", "Grace"]
    # drawn over a closer look than the 256 px thumbnail (the photo is 895 px wide)
    assert page.evaluate("document.querySelector('#photo-image').naturalWidth") == 895
    page.screenshot(path=str(ARTIFACTS / "photo-faces-desktop.png"), full_page=True)

    # re-assigning a face with the keyboard: Eileen's face is said to be nobody known
    select = page.locator("#face-list li >> nth=0 >> select")
    select.focus()
    select.select_option("")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#faces-status').textContent === 'Saved'")
    names = page.eval_on_selector_all(
        "#photo-frame .face-box",
        "boxes => boxes.sort((a, b) => a.offsetLeft - b.offsetLeft).map(b => b.innerText)",
    )
    assert names == ["?", "Grace"]
    page.keyboard.press("Escape")

    # the phone width: people and a photo's faces, no sideways scrolling
    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.goto(base + "/")
    phone.fill("#key-input", TEST_API_KEY)
    phone.click("#key-form button")
    phone.wait_for_function("document.querySelectorAll('#people .card').length === 2")
    phone.wait_for_function("document.querySelectorAll('#photos .card').length === 8")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"page scrolls sideways on a phone ({width}px)"
    phone.screenshot(path=str(ARTIFACTS / "people-phone.png"), full_page=True)
    phone.click(f"#photos .card[data-photo-id='{group}'] button.open-photo")
    phone.wait_for_function("document.querySelectorAll('#photo-frame .face-box').length === 2")
    phone.wait_for_function("document.querySelectorAll('#face-list img[src^=blob]').length === 2")
    phone.screenshot(path=str(ARTIFACTS / "photo-faces-phone.png"))


def test_the_photos_view_of_a_large_library_pages_as_it_scrolls_and_fills_the_window(
    postgres, settings, start_service, browser
):
    # given a library of 5,000 READY photos of 100 people (put in by COPY: their files are not on
    # disk, so every thumbnail fails) and one photo just uploaded, PENDING (no worker runs)
    url = new_database(postgres, "library")
    seeded = seed_library(url.replace("postgresql+psycopg", "postgresql"), 5000,
                          clip_model="test-clip", face_model="test-faces")  # fmt: skip
    settings = settings.model_copy(update={"database_url": url})
    with start_api(settings, start_service) as api:
        pending = api.post("/photos", files={"file": ("new.jpg", encode(make_photo(5)))})
        assert pending.status_code == 202, pending.text

        # when the page is opened on a desktop window
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.goto(str(api.base_url) + "/")
        page.fill("#key-input", TEST_API_KEY)
        page.click("#key-form button")
        page.wait_for_function("document.querySelectorAll('#photos .card').length >= 48")

        # then it holds a page or two of cards, not the library, across the window's width
        first = page.locator("#photos .card").count()
        assert first < 200
        assert page.evaluate("document.querySelector('#app').getBoundingClientRect().width") > 1200
        # the PENDING photo shows a placeholder, not an image without a picture
        newest = page.locator("#photos .card").first
        assert newest.get_attribute("data-status") == "PENDING"
        assert "processing" in newest.inner_text() and newest.locator("img").count() == 0

        # when the user scrolls to the end, more cards come, still not all
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        page.wait_for_function(f"document.querySelectorAll('#photos .card').length > {first}")
        assert page.locator("#photos .card").count() < 5000

        # and the People panel draws a page of the 100 people, the next on "Show more people"
        assert page.locator("#people .card").count() == 48
        assert "100 people" in page.inner_text("#people-status")
        assert "(48 shown)" in page.inner_text("#people-status")
        page.click("#people-more")
        assert page.locator("#people .card").count() == 96
        page.click("#people-more")
        assert page.locator("#people .card").count() == 100
        assert page.locator("#people-more").is_hidden()

        # and a thumbnail that failed three times more offers Retry, which works once the
        # photo's file is there
        page.evaluate("window.scrollTo(0, 0)")
        card = page.locator(f"#photos .card[data-photo-id='{seeded.photo_ids[-1]}']")
        card.locator("button.retry-thumbnail").wait_for(timeout=30_000)
        newest_seeded = LocalStorage(settings.storage_dir).path_for(
            f"{len(seeded.photo_ids) - 1:064x}"
        )
        newest_seeded.parent.mkdir(parents=True, exist_ok=True)
        newest_seeded.write_bytes(encode(make_person_photo(4, 1)))
        card.locator("button.retry-thumbnail").click()
        page.wait_for_function(
            f"document.querySelector(\"#photos .card[data-photo-id='{seeded.photo_ids[-1]}'] img\")"
            "?.src.startsWith('blob:')"
        )
        page.evaluate("document.querySelector('#photos-title').scrollIntoView()")
        page.screenshot(path=str(ARTIFACTS / "photos-library-desktop.png"))

        phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
        phone.goto(str(api.base_url) + "/")
        phone.fill("#key-input", TEST_API_KEY)
        phone.click("#key-form button")
        phone.wait_for_function("document.querySelectorAll('#photos .card').length >= 48")
        assert phone.locator("#photos .card").count() < 200
        phone.evaluate("document.querySelector('#photos-title').scrollIntoView()")
        phone.screenshot(path=str(ARTIFACTS / "photos-library-phone.png"))


def test_the_page_shows_the_keys_library_and_only_what_its_scopes_allow(api, browser):
    # given a library with a photo, and three keys of it: read only, upload only, everything
    library = api.post("/libraries", json={"name": "Studio Nord"}).json()

    def key(*scopes: str) -> str:
        made = api.post(f"/libraries/{library['id']}/keys", json={"scopes": list(scopes)})
        assert made.status_code == 201, made.text
        return str(made.json()["key"])

    full, reader, uploader = key("read", "upload", "manage"), key("read"), key("upload")
    photo = httpx.post(
        str(api.base_url) + "/photos",
        headers={"Authorization": f"Bearer {full}"},
        files={"file": ("p.jpg", encode(make_photo(77)))},
    )
    assert photo.status_code == 202, photo.text

    def opened(secret: str):  # type: ignore[no-untyped-def]
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(str(api.base_url) + "/")
        page.fill("#key-input", secret)
        page.click("#key-form button")
        page.wait_for_selector("#app:not([hidden])")
        page.wait_for_function("document.body.dataset.scopes !== undefined")
        return page

    # when the read-only key opens the page
    page = opened(reader)
    page.wait_for_selector("#photos .card")
    # then it names the library, shows the photos, and offers no upload and no delete
    assert "Studio Nord" in page.inner_text("header")
    assert page.locator("#drop-zone").is_hidden() and page.locator("#person-create").is_hidden()
    assert page.locator("#photos .card").count() == 1
    assert page.locator("#photos .card button.delete-photo").is_hidden()
    assert page.locator("#photos-title").is_visible() and page.locator("#search-form").is_visible()
    page.screenshot(path=str(ARTIFACTS / "read-only-key.png"), full_page=True)

    # and an upload-only key gets the upload zone, without the library's photos or search
    page = opened(uploader)
    assert page.locator("#drop-zone").is_visible()
    assert page.locator("#photos-title").is_hidden() and page.locator("#search-form").is_hidden()
    assert "may only upload" in page.inner_text("#scope-note")

    # and a key with every scope sees all of it, delete buttons too
    page = opened(full)
    page.wait_for_selector("#photos .card")
    assert page.locator("#drop-zone").is_visible()
    assert page.locator("#photos .card button.delete-photo").is_visible()


def test_a_hundred_uploads_turn_ready_on_the_page_over_one_event_stream(
    settings, postgres, start_service, browser, tmp_path
):
    # given an API and a worker on a database of their own (a hundred photos more would change
    # other tests' searches of the shared one), and a page that counts the requests it makes
    settings = settings.model_copy(update={"database_url": new_database(postgres, "hundred")})
    api = start_api(settings, start_service)
    worker = start_service("worker", settings)
    worker.wait_for_log("selfcheck.passed", timeout=240)
    files = []
    for n in range(100):
        path = tmp_path / f"upload-{n:03d}.jpg"
        path.write_bytes(encode(make_photo(3000 + n, (320, 240))))
        files.append(str(path))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests: list[tuple[str, str]] = []
    page.on("request", lambda request: requests.append((request.method, request.url)))
    page.goto(str(api.base_url) + "/")
    page.fill("#key-input", TEST_API_KEY)
    page.click("#key-form button")
    page.wait_for_selector("#app:not([hidden])")

    # when 100 photos are uploaded at once
    page.set_input_files("#file-input", files)
    page.wait_for_function(
        "document.querySelectorAll('#uploads li[data-status=READY]').length === 100",
        timeout=300_000,
    )
    # then the page listed them, and every card shown is READY with its picture
    page.wait_for_function(
        "[...document.querySelectorAll('#photos .card')].filter(c => c.dataset.status === 'READY'"
        " && c.querySelector('img')?.src.startsWith('blob:')).length >= 48",
        timeout=60_000,
    )
    cards = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#photos .card')]"
        ".map(c => [c.dataset.photoId, c.dataset.status]))"
    )
    rows = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#uploads li')]"
        ".map(r => [r.dataset.photoId, r.dataset.status]))"
    )
    assert len(rows) == 100 and set(rows.values()) == {"READY"}
    shown = set(cards) & set(rows)
    assert len(shown) >= 48
    assert all(cards[photo] == rows[photo] == "READY" for photo in shown)
    # and it learned all of that from one event stream, never asking about a photo
    streams = [url for method, url in requests if url.endswith("/events")]
    polled = [url for method, url in requests if method == "GET" and PHOTO_URL.search(url)]
    assert len(streams) == 1, streams
    assert polled == [], polled[:5]
    page.screenshot(path=str(ARTIFACTS / "hundred-uploads.png"), full_page=False)
    api.close()
