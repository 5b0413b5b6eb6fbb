r"""Serve the attribution page and JSON API over a trusted database.

    oscar serve --db trusted.sqlite --workdir runs/demo --port 8000
    oscar serve --db trusted.sqlite --host 0.0.0.0 --threads 16 --max_upload_mb 20

then open http://127.0.0.1:8000/ and drop a photo on the page, or from a shell:

    curl -F image=@photo.jpg 'http://127.0.0.1:8000/api/query?explain=1'
    curl --data-binary @photo.jpg http://127.0.0.1:8000/api/query

The routes are described in `oscar_jax.attribution.server`. SIGTERM or Ctrl-C stops the
server and closes the database.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from oscar_jax import cli
from oscar_jax.attribution.database import TrustedDatabase
from oscar_jax.attribution.server import (
    DEFAULT_MAX_MEGAPIXELS,
    DEFAULT_MAX_UPLOAD_MB,
    create_app,
    make_server,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, help="the trusted database (SQLite file)")
    parser.add_argument("--workdir", help="training workdir of the model (if it moved)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free)")
    parser.add_argument("--threads", type=int, default=8, help="requests handled at once")
    parser.add_argument("--max_upload_mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                        help="larger uploads are refused with 413")
    parser.add_argument("--max_megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS,
                        help="images with more pixels are refused with 413 before decoding")


def run(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise ValueError("--max_upload_mb and --max_megapixels must be positive")
    # One line per request from the server's own logger; libraries stay at warnings.
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s", force=True)
    logging.getLogger("oscar_jax").setLevel(logging.INFO)
    with TrustedDatabase.open(args.db, workdir=args.workdir) as db:
        app = create_app(db, max_upload_bytes=int(args.max_upload_mb * 2**20),
                         max_pixels=int(args.max_megapixels * 1e6))
        try:
            server = make_server(app, host=args.host, port=args.port, threads=args.threads)
        except OSError as error:
            raise OSError(f"cannot listen on {args.host}:{args.port}: "
                          f"{error.strerror or error}; pick another --port (0: any free "
                          "port) or stop what uses it") from error
        print(f"warming up {db.method} on a stored original...", file=sys.stderr, flush=True)
        db.warm_up()
        print(f"serving {len(db)} trusted originals ({db.method}) on "
              f"http://{args.host}:{server.effective_port}/ with {args.threads} threads; "
              "Ctrl-C stops", flush=True)
        # waitress ends its loop on SystemExit as on Ctrl-C: `kill` (a service manager's stop)
        # then closes the database too.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            server.run()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            server.close()
    return 0


def main(argv=None) -> int:
    return cli.module_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
