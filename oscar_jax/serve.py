r"""A web page and JSON API over a trusted database: is this image a copy of a trusted original?

    python -m oscar_jax.serve --db trusted.sqlite --workdir runs/demo --port 8000
    python -m oscar_jax.serve --db trusted.sqlite --host 0.0.0.0 --threads 16 --max_upload_mb 20

then open http://127.0.0.1:8000/ and drop a photo on the page, or from a shell:

    curl -F image=@photo.jpg 'http://127.0.0.1:8000/api/query?explain=1'
    curl --data-binary @photo.jpg http://127.0.0.1:8000/api/query

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

import argparse
import contextlib
import hashlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import flask
import waitress.server
from werkzeug.exceptions import HTTPException

from preprocessing.images import ImageDecodeError

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_MB = 20.0
# Formats the one decode path (preprocessing.images) reads; named in errors so a person knows
# what to send instead.
_FORMATS = "JPEG, PNG, WebP, GIF, BMP or TIFF"
_TRUE = ("1", "true", "yes", "on")


class Database(Protocol):
    """What the app needs of `oscar_jax.attribute.TrustedDatabase` (tests may pass a fake)."""

    method: str
    bits: int
    thresholds: dict

    def __len__(self) -> int: ...

    def query(self, image: bytes, *, name: str = "query", explain: bool = False) -> dict: ...

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
    db: Database, *, max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 2**20)
) -> flask.Flask:
    """The Flask app over `db` (a `TrustedDatabase`, open for the app's lifetime).

    Args:
      db: the trusted database; `query` is called from many request threads at once.
      max_upload_bytes: larger request bodies are refused with 413 before they are parsed.
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
            result = db.query(data, name=name, explain=explain)
        except ImageDecodeError as e:
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
        import faiss

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


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m oscar_jax.serve",
        description="Serve the attribution page and JSON API over a trusted database.",
    )
    parser.add_argument("--db", required=True, help="the trusted database (SQLite file)")
    parser.add_argument(
        "--workdir", default=None, help="training workdir of the model (method 'oscar' only)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free)")
    parser.add_argument("--threads", type=int, default=8, help="requests handled at once")
    parser.add_argument(
        "--max_upload_mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
        help="larger uploads are refused with 413",
    )
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.max_upload_mb <= 0:
        parser.error(f"--max_upload_mb must be positive, got {args.max_upload_mb}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from oscar_jax.attribute import AttributionError, TrustedDatabase

    try:
        db = TrustedDatabase.open(args.db, workdir=args.workdir)
    except (AttributionError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        app = create_app(db, max_upload_bytes=int(args.max_upload_mb * 2**20))
        server = make_server(app, host=args.host, port=args.port, threads=args.threads)
        print("compiling the model on a stored original...", file=sys.stderr, flush=True)
        db.warm_up()
        print(
            f"serving {len(db)} trusted originals ({db.method}) on "
            f"http://{args.host}:{server.effective_port}/ with {args.threads} threads; "
            "Ctrl-C stops",
            flush=True,
        )
        # waitress ends its loop on SystemExit as on Ctrl-C: `kill` (a service manager's stop)
        # then closes the database too.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            server.run()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
    finally:
        db.close()
    return 0


# ---------------------------------------------------------------------------------------------
# The page. One document with its style and script inline, so it works offline and needs no
# package data; the Content-Security-Policy allows exactly these two blocks (by hash) and
# requests to this server only.

_CSS = """
:root { color-scheme: light; --ink: #1d2430; --muted: #5b6472; --line: #d5dae1;
  --match: #1a7f37; --match-bg: #e6f4ea; --manip: #8a4b00; --manip-bg: #fff1db;
  --unknown: #4b5563; --unknown-bg: #eef0f3; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--ink); background: #f7f8fa; }
header, main { max-width: 1100px; margin: 0 auto; padding: 1rem 1.25rem; }
header h1 { margin: 0 0 .25rem; font-size: 1.5rem; }
#health { margin: 0; color: var(--muted); font-size: .9rem; }
#drop { display: block; border: 2px dashed #9aa4b2; border-radius: 10px; padding: 1.5rem;
  text-align: center; background: #fff; cursor: pointer; }
#drop.dragging { border-color: #2563eb; background: #eef4ff; }
#drop:focus-within { outline: 3px solid #2563eb; outline-offset: 2px; }
#drop strong { display: block; font-size: 1.1rem; margin-bottom: .5rem; }
#status { min-height: 1.5em; color: var(--muted); margin: .75rem 0; }
#error { border: 2px solid #b3261e; background: #fdecea; color: #6b0f0a;
  border-radius: 8px; padding: .75rem 1rem; margin: .75rem 0; }
#verdict { border-radius: 10px; padding: 1rem 1.25rem; margin: 1rem 0 .25rem;
  font-size: 1.5rem; font-weight: 700; border: 3px solid; }
#verdict.match { color: var(--match); background: var(--match-bg); }
#verdict.manipulated { color: var(--manip); background: var(--manip-bg); }
#verdict.unknown { color: var(--unknown); background: var(--unknown-bg); }
#verdict .icon { margin-right: .5rem; }
#verdict:focus { outline: none; } /* focused for screen readers only; not in the tab order */
#message { margin: .25rem 0 1rem; font-size: 1.1rem; }
.images { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr));
  gap: 1rem; }
figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 8px;
  padding: .75rem; }
figure img { display: block; max-width: 100%; max-height: 420px; margin: 0 auto;
  object-fit: contain; }
figcaption { margin-top: .5rem; color: var(--muted); font-size: .9rem; overflow-wrap: anywhere; }
h2 { font-size: 1.15rem; margin: 1.5rem 0 .5rem; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; }
#provenance th { width: 12rem; }
td.mono, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
  font-size: .85rem; word-break: break-all; }
details { margin: .75rem 0; }
pre { background: #fff; border: 1px solid var(--line); padding: .75rem; overflow: auto;
  font-size: .8rem; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden;
  clip: rect(0 0 0 0); white-space: nowrap; }
"""

_JS = r"""
"use strict";
const VERDICTS = {
  match: {text: "Benign copy of a trusted original", icon: "\u2714"},
  manipulated: {text: "Manipulated: derived from a trusted original but changed",
                icon: "\u26A0"},
  unknown: {text: "No trusted original found", icon: "?"},
};
const $ = (id) => document.getElementById(id);
let queryUrl = null;
let pending = null;

function show(el, visible) { el.hidden = !visible; }

function cell(row, text, header, cls) {
  const c = document.createElement(header ? "th" : "td");
  if (header) c.scope = "row";
  if (cls) c.className = cls;
  c.textContent = text;
  row.appendChild(c);
  return c;
}

function fmt(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function showError(message) {
  $("error-text").textContent = message;
  show($("error"), true);
  $("status").textContent = "";
}

function fillProvenance(original) {
  const body = $("provenance").tBodies[0];
  body.replaceChildren();
  const add = (label, value, mono) => {
    const row = body.insertRow();
    cell(row, label, true);
    cell(row, fmt(value), false, mono ? "mono" : "");
  };
  const prov = original.provenance;
  if (prov && typeof prov === "object" && !Array.isArray(prov)) {
    for (const [key, value] of Object.entries(prov)) add(key, value, false);
  } else if (prov !== null && prov !== undefined) {
    add("provenance", prov, false);
  }
  add("Name", original.name);
  add("Original id", original.id);
  add("Added", original.added_at);
  add("Size", original.width + " \u00D7 " + original.height + " pixels");
  add("SHA-256", original.sha256, true);
  add("Hamming distance", original.distance);
  add("Inliers (geometric verification)", original.inliers);
}

function fillCandidates(candidates) {
  const body = $("candidates").tBodies[0];
  body.replaceChildren();
  candidates.forEach((c, i) => {
    const row = body.insertRow();
    cell(row, String(i + 1));
    cell(row, fmt(c.name));
    cell(row, fmt(c.id));
    cell(row, fmt(c.distance));
    // Verification stops once the verdict is certain: later candidates are not checked.
    const checked = c.verified !== null && c.verified !== undefined;
    cell(row, checked ? fmt(c.inliers) : "\u2014");
    cell(row, checked ? (c.verified ? "yes" : "no") : "not checked");
  });
  show($("no-candidates"), candidates.length === 0);
  show($("candidates"), candidates.length > 0);
}

function render(result, fileName) {
  const v = VERDICTS[result.verdict] || {text: result.verdict, icon: ""};
  const verdict = $("verdict");
  verdict.className = result.verdict;
  verdict.dataset.verdict = result.verdict;
  $("verdict-icon").textContent = v.icon;
  $("verdict-text").textContent = v.text;
  $("message").textContent = result.message || "";
  $("query-image").alt = "Your image: " + fileName;
  $("query-caption").textContent = "Your image: " + fileName +
    (result.query ? " (" + result.query.width + " \u00D7 " + result.query.height + ")" : "");

  const original = result.original;
  show($("original-figure"), !!original);
  show($("provenance-section"), !!original);
  if (original) {
    $("original-image").alt = "Trusted original: " + original.name;
    $("original-image").src = original.image_url;
    $("original-caption").textContent = "Trusted original: " + original.name +
      " (id " + original.id + ", " + original.width + " \u00D7 " + original.height + ")";
    fillProvenance(original);
    $("provenance-json").textContent = JSON.stringify(original.provenance, null, 2);
  } else {
    $("original-image").removeAttribute("src");
  }
  show($("heatmap-figure"), !!result.heatmap);
  if (result.heatmap) $("heatmap").src = result.heatmap;
  else $("heatmap").removeAttribute("src");

  fillCandidates(result.candidates || []);
  const q = result.query || {};
  $("details-line").textContent = "Method " + result.method + ", " + result.bits +
    "-bit code " + (q.code || "") + "; a match needs distance \u2264 " +
    (result.thresholds || {}).match_distance + " and at least " +
    (result.thresholds || {}).min_inliers + " inliers.";
  $("raw-json").textContent = JSON.stringify(result, null, 2);
  show($("result"), true);
  $("status").textContent = "Done.";
  verdict.focus();
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (e) { /* not JSON: fall through */ }
  return "the server answered " + response.status + " " + response.statusText;
}

async function check(file) {
  if (!file) return;
  if (pending) pending.abort();
  const controller = new AbortController();
  pending = controller;
  show($("error"), false);
  show($("result"), false);
  if (queryUrl) URL.revokeObjectURL(queryUrl);
  queryUrl = URL.createObjectURL(file);
  $("query-image").src = queryUrl;
  $("status").textContent = "Checking " + file.name + "\u2026";
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    const response = await fetch("/api/query?explain=1",
                                 {method: "POST", body: form, signal: controller.signal});
    if (!response.ok) {
      showError("Could not check " + file.name + ": " + await errorText(response));
      return;
    }
    render(await response.json(), file.name);
  } catch (e) {
    if (e.name === "AbortError") return;
    showError("Could not reach the server to check " + file.name + ": " + e.message);
  } finally {
    if (pending === controller) pending = null;
  }
}

async function loadHealth() {
  try {
    const response = await fetch("/api/health");
    if (!response.ok) throw new Error(await errorText(response));
    const h = await response.json();
    $("health").textContent = h.originals + " trusted originals, method " + h.method +
      (h.bits ? ", " + h.bits + "-bit codes" : "") + ".";
  } catch (e) {
    $("health").textContent = "Server status unavailable: " + e.message;
  }
}

$("file").addEventListener("change", (e) => check(e.target.files[0]));
const drop = $("drop");
["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (e) => {
  e.preventDefault();
  drop.classList.add("dragging");
}));
["dragleave", "drop"].forEach((type) => drop.addEventListener(type, (e) => {
  e.preventDefault();
  drop.classList.remove("dragging");
}));
drop.addEventListener("drop", (e) => {
  const file = e.dataTransfer && e.dataTransfer.files[0];
  if (file) check(file);
});
$("original-image").addEventListener("error", () => {
  if ($("original-image").getAttribute("src")) {
    showError("The trusted original's image could not be loaded from the server.");
  }
});
loadHealth();
"""

_BODY = """
<header>
  <h1>Image attribution</h1>
  <p id="health" aria-live="polite">Connecting to the server&hellip;</p>
</header>
<main>
  <p>Check whether an image is a copy of a trusted original, and whether it was changed.
     The image is sent to this server only.</p>
  <label id="drop" for="file">
    <strong>Drop an image here, or choose a file</strong>
    <span>JPEG, PNG, WebP, GIF, BMP or TIFF</span><br>
    <input id="file" name="image" type="file" accept="image/*"
           aria-describedby="status">
  </label>
  <p id="status" role="status" aria-live="polite"></p>
  <div id="error" role="alert" hidden><span id="error-text"></span></div>

  <section id="result" aria-labelledby="verdict-text" hidden>
    <div id="verdict" tabindex="-1"><span id="verdict-icon" class="icon" aria-hidden="true">
      </span><span id="verdict-text"></span></div>
    <p id="message"></p>
    <div class="images">
      <figure id="query-figure">
        <img id="query-image" alt="Your image">
        <figcaption id="query-caption">Your image</figcaption>
      </figure>
      <figure id="original-figure" hidden>
        <img id="original-image" alt="Trusted original">
        <figcaption id="original-caption">Trusted original</figcaption>
      </figure>
      <figure id="heatmap-figure" hidden>
        <img id="heatmap" alt="Heatmap over your image of the regions that differ most from
          the trusted original">
        <figcaption>Heatmap on your image: the warmer a region, the more it moves the
          image's code away from the original's.</figcaption>
      </figure>
    </div>

    <section id="provenance-section" aria-labelledby="provenance-title" hidden>
      <h2 id="provenance-title">Provenance of the trusted original</h2>
      <table id="provenance">
        <caption class="visually-hidden">Provenance of the trusted original</caption>
        <tbody></tbody>
      </table>
      <details><summary>Provenance as JSON</summary><pre id="provenance-json"></pre></details>
    </section>

    <section aria-labelledby="candidates-title">
      <h2 id="candidates-title">Nearest trusted originals</h2>
      <p id="no-candidates" hidden>The database returned no candidates.</p>
      <table id="candidates">
        <caption class="visually-hidden">Nearest trusted originals by Hamming distance
        </caption>
        <thead><tr><th scope="col">Rank</th><th scope="col">Name</th><th scope="col">Id</th>
          <th scope="col">Distance (bits)</th><th scope="col">Inliers</th>
          <th scope="col">Verified</th></tr></thead>
        <tbody></tbody>
      </table>
      <p id="details-line" class="mono"></p>
      <details><summary>Full answer as JSON</summary><pre id="raw-json"></pre></details>
    </section>
  </section>
</main>
"""

PAGE_HTML = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Image attribution</title>
<link rel="icon" href="data:,">
<style>{_CSS}</style>
</head>
<body>{_BODY}<script>{_JS}</script>
</body>
</html>
"""


def _csp_hash(text: str) -> str:
    import base64

    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# blob: for the query preview (a local object URL), data: for the heatmap PNG.
PAGE_CSP = (
    f"default-src 'none'; script-src {_csp_hash(_JS)}; style-src {_csp_hash(_CSS)}; "
    "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


if __name__ == "__main__":
    sys.exit(main())
