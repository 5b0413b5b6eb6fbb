"""The attribution web server: JSON API errors, concurrency on a real waitress server, the CLI,
and the page end to end in headless Chromium.

Browser tests need Debian's chromium and chromedriver (`apt-get install chromium
chromium-driver`); they skip without them unless OSCAR_REQUIRE_BROWSER=1 (CI), where they
fail. OSCAR_SCREENSHOT=docs/serve.png saves a screenshot of the page for the README.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from oscar_jax import serve
from oscar_jax.attribution import server
from oscar_jax.attribution.database import TrustedDatabase
from preprocessing.images import encode_jpeg, encode_png
from tests.samples import photo

# Originals are stored small: geometric verification (SIFT) of every query is most of the
# cost of a request, and the tests are about the server, not about large photos.
ORIGINALS = ("astronaut", "chelsea", "coffee", "moon", "retina")
ORIGINAL_SIDE = 256
PROVENANCE = {
    name: {"author": f"{name} photographer", "source": "scikit-image sample data",
           "licence": "public domain or CC0 (scikit-image)"}
    for name in ORIGINALS
}
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
VERDICT_TEXT = {
    "match": "Benign copy of a trusted original",
    "manipulated": "Manipulated: derived from a trusted original but changed",
    "unknown": "No trusted original found",
}


def _benign_copy(name: str) -> bytes:
    """The original re-encoded as JPEG at quality 75 and scaled down to 3/4."""
    return encode_jpeg(photo(name, ORIGINAL_SIDE * 3 // 4), quality=75)


def _make_db(path: str, names: tuple[str, ...] = ORIGINALS, **create_args) -> TrustedDatabase:
    """A database holding the photos `names` (256 pixels, PNG) with their PROVENANCE."""
    db = TrustedDatabase.create(path, **create_args)
    try:
        db.add([encode_png(photo(n)) for n in names], names=[f"{n}.png" for n in names],
               provenance=[PROVENANCE[n] for n in names])
    except BaseException:
        db.close()
        raise
    return db


@pytest.fixture(scope="module")
def phash_db(tmp_path_factory) -> Iterator[TrustedDatabase]:
    path = str(tmp_path_factory.mktemp("serve") / "trusted.sqlite")
    _make_db(path, method="phash").close()
    # Reopened, as the server finds a database made beforehand by `oscar_jax.attribute add`.
    db = TrustedDatabase.open(path)
    yield db
    db.close()


def _multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _request(url: str, body: bytes | None = None, content_type: str | None = None):
    """(status, headers, body bytes), 4xx and 5xx included."""
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read()


def _query(base: str, data: bytes, name: str, multipart: bool) -> tuple[int, dict]:
    if multipart:
        body, content_type = _multipart("image", name, data)
        status, _, answer = _request(f"{base}/api/query", body, content_type)
    else:
        status, _, answer = _request(f"{base}/api/query?name={name}", data,
                                     "application/octet-stream")
    return status, json.loads(answer)


def _summary(answer: dict) -> tuple:
    """What must not depend on concurrency: verdict, original, distances, candidates."""
    original = answer["original"]
    return (
        answer["verdict"],
        original and (original["id"], original["distance"], original["inliers"]),
        answer["query"]["code"],
        tuple((c["id"], c["distance"], c["inliers"], c["verified"]) for c in answer["candidates"]),
    )


# ---- API: answers and 4xx, on Flask's test client --------------------------------------------


@pytest.fixture(scope="module")
def client(phash_db):
    return server.create_app(phash_db, max_upload_bytes=50_000).test_client()


def _assert_error(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    message = response.get_json()["error"]
    for word in words:
        assert word in message, message
    return message


def test_query_answers_the_database(client, phash_db):
    copy = _benign_copy("chelsea")
    response = client.post("/api/query?explain=1",
                           data={"image": (io.BytesIO(copy), "cat.jpg")})
    assert response.status_code == 200, response.data
    answer = response.get_json()
    assert answer["verdict"] == "match"
    assert answer["original"]["name"] == "chelsea.png"
    assert answer["original"]["provenance"] == PROVENANCE["chelsea"]
    assert answer["query"]["name"] == "cat.jpg"
    assert "heatmap" not in answer  # only OSCAR-Net databases explain
    assert _summary(answer) == _summary(phash_db.query(copy, name="cat.jpg"))
    # The raw body works too, also labelled as a form the way `curl --data-binary` does.
    raw = client.post("/api/query?name=cat.jpg", data=copy,
                      content_type="application/x-www-form-urlencoded")
    assert raw.status_code == 200 and _summary(raw.get_json()) == _summary(answer)


def test_originals_and_health(client, phash_db):
    answer = client.post("/api/query", data=_benign_copy("coffee")).get_json()
    entry_id = answer["original"]["id"]
    entry = client.get(f"/api/originals/{entry_id}").get_json()
    assert entry["provenance"] == PROVENANCE["coffee"]
    image = client.get(entry["image_url"])
    assert image.status_code == 200
    assert (image.data, image.mimetype) == phash_db.original_image(entry_id)
    health = client.get("/api/health").get_json()
    assert health["originals"] == len(ORIGINALS)
    assert (health["method"], health["bits"]) == ("phash", 64)
    assert health["thresholds"] == phash_db.thresholds
    page = client.get("/")
    assert page.status_code == 200 and b'id="verdict"' in page.data
    assert "script-src 'sha256-" in page.headers["Content-Security-Policy"]


def test_not_an_image_is_415(client):
    response = client.post("/api/query", data={"image": (io.BytesIO(b"plain text"), "notes.jpg")})
    _assert_error(response, 415, "notes.jpg", "not an image", "Upload a JPEG")
    truncated = _benign_copy("astronaut")[:300]
    _assert_error(client.post("/api/query", data=truncated), 415, "Upload a JPEG")


def test_empty_and_missing_uploads_are_400(client):
    empty = client.post("/api/query", data={"image": (io.BytesIO(b""), "empty.jpg")})
    _assert_error(empty, 400, "empty.jpg", "empty", "choose an image")
    _assert_error(client.post("/api/query"), 400, "no image", "curl -F image=@")
    missing = client.post("/api/query", data={"photo": (io.BytesIO(b"x"), "a.jpg")})
    _assert_error(missing, 400, "field 'image'", "fields received: photo")


def test_upload_over_the_limit_is_413(client):
    big = b"\xff\xd8" + bytes(60_000)
    for response in (
        client.post("/api/query", data={"image": (io.BytesIO(big), "big.jpg")}),
        client.post("/api/query", data=big, content_type="image/jpeg"),
    ):
        _assert_error(response, 413, "larger than the limit", "--max_upload_mb")


def test_unknown_ids_and_routes_are_404(client):
    _assert_error(client.get("/api/originals/999"), 404, "no original with id 999")
    _assert_error(client.get("/api/originals/999/image"), 404, "no original with id 999")
    _assert_error(client.get("/api/originals/abc"), 404, "/api/originals/<id>")
    _assert_error(client.get("/nothing/here"), 404, "no such page")
    _assert_error(client.get("/api/query"), 405, "POST")


# ---- the real server: concurrency, size limits through waitress, the CLI ---------------------


def test_concurrent_queries_equal_sequential_ones(phash_db, capsys):
    """8 client threads x 50 requests on loopback, several images mixed, multipart and raw
    bodies alternating: every answer equals that of the same image asked alone."""
    # Photos with few SIFT keypoints: verification is most of a query's cost, and what is
    # tested here is the server. phantom and cell are not in the database (unknown).
    images = {f"{n}_copy.jpg": _benign_copy(n) for n in ("moon", "retina")}
    images.update({f"{n}.png": encode_png(photo(n)) for n in ("phantom", "cell")})
    names = sorted(images)
    threads, per_thread = 8, 50
    with server.serving(server.create_app(phash_db), threads=threads) as base:
        expected = {}
        for name in names:
            status, answer = _query(base, images[name], name, multipart=True)
            assert status == 200, answer
            expected[name] = _summary(answer)

        def client_thread(t: int) -> list[tuple[str, int, tuple | dict]]:
            results = []
            for i in range(per_thread):
                name = names[(t + i) % len(names)]
                status, answer = _query(base, images[name], name, multipart=bool(i % 2))
                results.append((name, status, _summary(answer) if status == 200 else answer))
            return results

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            results = [r for rs in pool.map(client_thread, range(threads)) for r in rs]
        elapsed = time.perf_counter() - start
    assert {e[0] for e in expected.values()} == {"match", "unknown"}
    assert len(results) == threads * per_thread
    for name, status, summary in results:
        assert status == 200, (name, summary)
        assert summary == expected[name], name
    with capsys.disabled():
        print(f"\n{len(results)} concurrent queries in {elapsed:.1f} s: "
              f"{len(results) / elapsed:.1f} requests/s")


def test_waitress_returns_the_json_413(phash_db):
    limit = 50_000
    with server.serving(server.create_app(phash_db, max_upload_bytes=limit), threads=2) as base:
        status, headers, body = _request(f"{base}/api/query", bytes(2 * limit), "image/jpeg")
        assert status == 413 and "--max_upload_mb" in json.loads(body)["error"]
        body, content_type = _multipart("image", "big.jpg", bytes(2 * limit))
        status, headers, body = _request(f"{base}/api/query", body, content_type)
        assert status == 413 and "--max_upload_mb" in json.loads(body)["error"]
        # Far over the limit, waitress refuses before reading the body (its own message).
        status, _, _ = _request(f"{base}/api/query", bytes(5 * limit), "image/jpeg")
        assert status == 413


def test_cli_serves_a_database(phash_db, tmp_path):
    log = tmp_path / "serve.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "oscar_jax.serve", "--db", phash_db.path, "--port", "0",
             "--threads", "2"],
            stdout=subprocess.PIPE, stderr=stderr, text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
    try:
        line = process.stdout.readline()
        assert "http://" in line, log.read_text()
        base = line.split("http://", 1)[1].split("/", 1)[0]
        status, _, body = _request(f"http://{base}/api/health")
        assert status == 200 and json.loads(body)["originals"] == len(ORIGINALS)
        status, _, body = _request(f"http://{base}/api/query", _benign_copy("moon"), "image/jpeg")
        assert status == 200 and json.loads(body)["verdict"] == "match"
    finally:
        process.terminate()
        # SIGTERM stops the server cleanly (database closed, exit status 0).
        assert process.wait(timeout=30) == 0, log.read_text()
    assert "query 'upload'" in log.read_text()


def test_cli_names_a_missing_database(tmp_path, capsys):
    assert serve.main(["--db", str(tmp_path / "none.sqlite")]) == 2
    assert "no trusted database" in capsys.readouterr().err


# ---- the page, end to end in headless Chromium -----------------------------------------------


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package (pip install 'selenium>=4.20,<5')")
    if missing:
        reason = (f"browser test needs {', '.join(missing)}: "
                  "apt-get install chromium chromium-driver")
        if os.environ.get("OSCAR_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--window-size=1280,1400"):
        options.add_argument(flag)
    # An explicit driver path: selenium-manager would otherwise try to download one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _upload(driver, base: str, path: str) -> None:
    """Opens the page afresh, picks `path` in the file input, waits for a verdict or an error."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base + "/")
    WebDriverWait(driver, 30).until(
        lambda d: "trusted originals" in d.find_element(By.ID, "health").text)
    driver.find_element(By.ID, "file").send_keys(path)
    WebDriverWait(driver, 120).until(
        lambda d: d.find_element(By.ID, "result").is_displayed()
        or d.find_element(By.ID, "error").is_displayed())


def _wait_loaded(driver, element_id: str) -> int:
    """naturalWidth of the image once it has loaded (0 if it failed)."""
    from selenium.webdriver.support.ui import WebDriverWait

    script = f"const i = document.getElementById('{element_id}'); return i.complete && i.src;"
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(script))
    return driver.execute_script(f"return document.getElementById('{element_id}').naturalWidth")


def _text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def test_page_shows_match_provenance_and_errors(browser, phash_db, tmp_path):
    from selenium.webdriver.common.by import By

    copy = tmp_path / "astronaut_shared.jpg"
    copy.write_bytes(_benign_copy("astronaut"))
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("meeting notes, not a picture")
    with server.serving(server.create_app(phash_db), threads=4) as base:
        _upload(browser, base, str(copy))
        assert not browser.find_element(By.ID, "error").is_displayed(), _text(browser, "error")
        assert _text(browser, "verdict-text") == VERDICT_TEXT["match"]
        assert browser.find_element(By.ID, "verdict").get_attribute("class") == "match"
        assert _wait_loaded(browser, "original-image") == ORIGINAL_SIDE
        assert _wait_loaded(browser, "query-image") == ORIGINAL_SIDE * 3 // 4
        provenance = _text(browser, "provenance")
        assert "astronaut photographer" in provenance and "astronaut.png" in provenance
        assert "astronaut.png" in _text(browser, "candidates")
        assert not browser.find_element(By.ID, "heatmap").is_displayed()

        unknown = tmp_path / "phantom.png"
        unknown.write_bytes(encode_png(photo("phantom")))
        _upload(browser, base, str(unknown))
        assert _text(browser, "verdict-text") == VERDICT_TEXT["unknown"]
        assert not browser.find_element(By.ID, "original-image").is_displayed()
        assert not browser.find_element(By.ID, "provenance").is_displayed()

        _upload(browser, base, str(not_image))
        error = _text(browser, "error")
        assert "notes.jpg" in error and "not an image" in error, error
        assert not browser.find_element(By.ID, "result").is_displayed()


def test_page_shows_the_heatmap_of_an_oscar_database(browser, tiny_trained, tmp_path):
    from selenium.webdriver.common.by import By

    workdir = tiny_trained[0]
    db = _make_db(str(tmp_path / "oscar.sqlite"), ORIGINALS[:3], method="oscar",
                  workdir=workdir)
    copy = tmp_path / "chelsea_shared.jpg"
    copy.write_bytes(_benign_copy("chelsea"))
    try:
        db.warm_up()  # what `python -m oscar_jax.serve` does before it listens
        assert db._explainer is not None, "warm_up compiles the explainer of an oscar database"
        expected = db.query(copy.read_bytes(), name=copy.name)
        # The tiny model is trained for two steps, so its distance may call the copy
        # manipulated; geometric verification must still find the original.
        assert expected["original"] and expected["original"]["name"] == "chelsea.png"
        with server.serving(server.create_app(db), threads=2) as base:
            _upload(browser, base, str(copy))
            assert not browser.find_element(By.ID, "error").is_displayed(), _text(browser, "error")
            assert _text(browser, "verdict-text") == VERDICT_TEXT[expected["verdict"]]
            assert _wait_loaded(browser, "original-image") == ORIGINAL_SIDE
            assert browser.find_element(By.ID, "heatmap").is_displayed()
            assert _wait_loaded(browser, "heatmap") > 0
            assert "chelsea photographer" in _text(browser, "provenance")
            screenshot = os.environ.get("OSCAR_SCREENSHOT")
            if screenshot:
                # The whole page: the window grows to the document (twice, as the first
                # resize can reflow it).
                for _ in range(2):
                    height = browser.execute_script(
                        "return document.documentElement.scrollHeight")
                    browser.set_window_size(1280, height + 140)
                os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
                browser.save_screenshot(screenshot)
    finally:
        db.close()
