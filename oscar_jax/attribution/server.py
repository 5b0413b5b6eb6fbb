"""The web page and JSON API over a trusted database: is this image a copy of a trusted
original? (`oscar serve` starts it.)

Routes (every error is JSON ``{"error": "what was wrong and what to do"}`` with a 4xx status):

* ``GET /``: the page (self-contained: no external scripts, styles or fonts; works offline).
* ``POST /api/query``: the image as multipart field ``image`` or as the raw request body;
  ``?explain=1`` adds the heatmap (``method="oscar"`` databases), ``?name=`` names a raw body.
  Answers ``TrustedDatabase.query``'s dict. 400: no image or an empty one; 415: not a
  decodable image; 413: over ``--max_upload_mb``.
* ``GET /api/originals/<id>``: one original's record (provenance included); 404 if unknown.
* ``GET /api/originals/<id>/image``: the original's stored image bytes, with their mime type.
* ``GET /api/health``: number of originals, method, code bits and decision thresholds.

The server is waitress (a production, pure-Python, threaded WSGI server). A query is CPU work
(decode, hash, search, geometric verification) and ``TrustedDatabase.query`` is thread-safe,
so it runs in the request thread; ``--threads`` bounds how many run at once.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.resources
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import faiss
import flask
import waitress.server
from werkzeug.exceptions import HTTPException

from preprocessing.images import ImageDecodeError

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_MB = 20.0
# Uploads with more pixels are refused from their header, before anything is decoded: a
# 1 MB JPEG can hold 60 megapixels (180 MB of RGB, gigabytes in the heatmap's arithmetic).
DEFAULT_MAX_MEGAPIXELS = 25.0
# Formats the one decode path (preprocessing.images) reads; named in errors so a person knows
# what to send instead.
_FORMATS = "JPEG, PNG, WebP, GIF, BMP or TIFF"
_TRUE = ("1", "true", "yes", "on")


class Database(Protocol):
    """What the app needs of `database.TrustedDatabase` (tests may pass a fake)."""

    method: str
    bits: int
    thresholds: dict

    def __len__(self) -> int: ...

    def query(self, image: bytes, *, name: str = "query", explain: bool = False,
              max_pixels: int = ...) -> dict: ...

    def original(self, entry_id: int) -> dict: ...

    def original_image(self, entry_id: int) -> tuple[bytes, str]: ...


class ApiError(Exception):
    """A client error (no usable image, unknown id): `status` and `message` become the answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> tuple[flask.Response, int]:
    return flask.jsonify(error=message), status


def _too_large_message(max_upload_bytes: int) -> str:
    return (
        f"the upload is larger than the limit of {max_upload_bytes / 2**20:.3g} MB; send a "
        "smaller image (e.g. re-saved as JPEG or scaled down), or start the server with a larger "
        "--max_upload_mb"
    )


def _http_error_message(error: HTTPException) -> str:
    """Words for werkzeug's own errors (unknown route, wrong method, malformed request)."""
    if error.code == 404:
        return (
            f"no such page or API route: {flask.request.path}; the API is POST /api/query, "
            "GET /api/originals/<id>, GET /api/originals/<id>/image and GET /api/health"
        )
    if error.code == 405:
        allowed = ", ".join(sorted(getattr(error, "valid_methods", None) or []))
        return f"{flask.request.method} is not allowed on {flask.request.path}; use {allowed}"
    return f"{error.name}: {error.description}"


def _read_upload(request: flask.Request) -> tuple[bytes, str]:
    """The image bytes and a name for them, from multipart field `image` or the raw body.

    Only a multipart body is parsed as a form: `curl --data-binary @x.jpg` labels the raw
    bytes `application/x-www-form-urlencoded`, and parsing those as a form would eat them.
    """
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("image")
        if upload is None:
            fields = sorted(set(request.files) | set(request.form))
            raise ApiError(
                400,
                "no image in the form: send the file in the multipart field 'image' "
                f"(fields received: {', '.join(fields) or 'none'})",
            )
        name = upload.filename or "upload"
        data = upload.read()
        if not data:
            raise ApiError(400, f"the uploaded file {name!r} is empty (0 bytes); choose an image")
        return data, name
    data = request.get_data(cache=False)
    if not data:
        raise ApiError(
            400,
            "no image received: send it as the multipart form field 'image' "
            "(curl -F image=@photo.jpg) or as the raw request body (curl --data-binary @photo.jpg)",
        )
    return data, request.args.get("name", "upload")


def _entry_or_404(fetch: Callable[[int], Any], entry_id: int) -> Any:
    try:
        return fetch(entry_id)
    except KeyError:
        raise ApiError(
            404, f"no original with id {entry_id}; ids come from /api/query results"
        ) from None


def create_app(
    db: Database, *, max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 2**20),
    max_pixels: int = int(DEFAULT_MAX_MEGAPIXELS * 1e6),
) -> flask.Flask:
    """The Flask app over `db` (a `TrustedDatabase`, open for the app's lifetime).

    Args:
      db: the trusted database; `query` is called from many request threads at once.
      max_upload_bytes: larger request bodies are refused with 413 before they are parsed.
      max_pixels: images with more pixels are refused with 413 from their header alone.
    """
    app = flask.Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_bytes)
    app.json.sort_keys = False  # keep the query answer in the order the database gives it

    @app.errorhandler(ApiError)
    def api_error(error: ApiError):
        return _error(error.status, error.message)

    @app.errorhandler(413)
    def too_large(_: HTTPException):
        return _error(413, _too_large_message(max_upload_bytes))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return _error(error.code or 500, _http_error_message(error))

    @app.errorhandler(Exception)
    def internal_error(error: Exception):
        # Bad input never gets here (it is an ApiError or an ImageDecodeError); this is a bug
        # or a broken database, so the details go to the log, not to the client.
        log.exception("unhandled error on %s %s", flask.request.method, flask.request.path)
        return _error(500, "internal server error; the details are in the server log")

    @app.after_request
    def security_headers(response: flask.Response):
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.get("/")
    def page():
        response = flask.Response(PAGE_HTML, mimetype="text/html")
        response.headers["Content-Security-Policy"] = PAGE_CSP
        return response

    @app.post("/api/query")
    def query():
        data, name = _read_upload(flask.request)
        explain = flask.request.args.get("explain", "").lower() in _TRUE
        start = time.perf_counter()
        try:
            result = db.query(data, name=name, explain=explain, max_pixels=max_pixels)
        except ImageDecodeError as e:
            if "exceeds the limit" in e.reason:
                return _error(413, f"{name!r} is too large: {e.reason.split(';')[0]}. Send a "
                              f"smaller image (at most {max_pixels / 1e6:.3g} megapixels).")
            return _error(
                415, f"{name!r} is not an image this server can read: {e.reason}. "
                f"Upload a {_FORMATS} file."
            )
        log.info("query %r (%d bytes): %s in %.0f ms", name, len(data), result["verdict"],
                 1000 * (time.perf_counter() - start))
        return flask.jsonify(result)

    @app.get("/api/originals/<int:entry_id>")
    def original(entry_id: int):
        return flask.jsonify(_entry_or_404(db.original, entry_id))

    @app.get("/api/originals/<int:entry_id>/image")
    def original_image(entry_id: int):
        data, mime = _entry_or_404(db.original_image, entry_id)
        response = flask.Response(data, mimetype=mime)
        # An id's stored image never changes, so browsers may keep it.
        response.headers["Cache-Control"] = "private, max-age=86400, immutable"
        return response

    @app.get("/api/health")
    def health():
        return flask.jsonify(
            status="ok",
            originals=len(db),
            method=db.method,
            bits=db.bits,
            thresholds=db.thresholds,
            max_upload_bytes=int(max_upload_bytes),
            max_pixels=int(max_pixels),
        )

    return app


def make_server(
    app: flask.Flask,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    threads: int = 8,
    search_threads: int | None = 1,
    socket_map: dict | None = None,
) -> waitress.server.BaseWSGIServer:
    """A bound waitress server (`port=0` picks a free one: `server.effective_port`).

    `server.run()` serves until `server.close()`. Waitress itself refuses bodies over four
    times the app's limit before reading them (with its own plain-text 413), so a client
    cannot make it spool gigabytes to disk; smaller oversize bodies get the app's JSON 413.

    `search_threads` sets faiss's OpenMP threads for the whole process (None: leave them).
    Requests already run in parallel, and an OpenMP team per request thread for a one-code
    search costs more than the search: ~25 ms a query on 2 cores, against ~0.1 ms with 1.
    `socket_map` is waitress's map of open channels (`serving` keeps it to close them all).
    """
    if search_threads is not None:
        faiss.omp_set_num_threads(search_threads)
    limits = {}
    if app.config.get("MAX_CONTENT_LENGTH"):
        limits["max_request_body_size"] = 4 * app.config["MAX_CONTENT_LENGTH"] + 2**20
    return waitress.server.create_server(
        app, map=socket_map, host=host, port=port, threads=threads, ident="oscar-jax", **limits
    )


@contextlib.contextmanager
def serving(
    app: flask.Flask, *, host: str = "127.0.0.1", port: int = 0, threads: int = 8
) -> Iterator[str]:
    """Serves `app` on waitress from a background thread for the `with` block; yields the
    base URL (`http://host:port`). For tests and notebooks: the CLI serves in its main thread.
    """
    sockets: dict = {}
    server = make_server(app, host=host, port=port, threads=threads, socket_map=sockets)
    thread = threading.Thread(target=server.run, name="oscar-jax-serve", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.effective_port}"
    finally:
        # The loop runs until no channel is left, and a browser's keep-alive connections stay
        # open, so every channel is closed, in the loop's own thread (waitress is not
        # thread-safe); then the loop ends and the worker threads are joined.
        closed = threading.Event()

        def close_all() -> None:
            for channel in list(sockets.values()):
                if channel is not server and channel is not server.trigger:
                    channel.close()
            server.close()  # the listening socket and the trigger
            closed.set()

        server.trigger.pull_trigger(close_all)
        closed.wait(timeout=10)
        thread.join(timeout=10)
        server.task_dispatcher.shutdown()


# ---- the page ---------------------------------------------------------------------------------
# One document with its style and script inline (page/index.html, style.css, app.js), so it
# works offline; the Content-Security-Policy allows exactly these two blocks (by hash) and
# requests to this server only.


def _page_file(name: str) -> str:
    return (importlib.resources.files(__package__) / "page" / name).read_text("utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


_CSS, _JS = _page_file("style.css"), _page_file("app.js")
PAGE_HTML = _page_file("index.html").replace("@STYLE@", _CSS).replace("@SCRIPT@", _JS)
# blob: for the query preview (a local object URL), data: for the heatmap PNG.
PAGE_CSP = (
    f"default-src 'none'; script-src {_csp_hash(_JS)}; style-src {_csp_hash(_CSS)}; "
    "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
