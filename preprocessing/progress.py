"""Progress bars that suit both a terminal and a log file.

On a terminal this is an ordinary tqdm bar on stderr. When stderr is a file or a pipe (a
`make demo > log`, a Slurm job), tqdm's carriage-return updates would pile up into one line of
thousands of characters; there the bar instead prints a short status line every
`LOG_INTERVAL_S` seconds and once at the end.
"""

from __future__ import annotations

import sys
from typing import IO

from tqdm import tqdm

LOG_INTERVAL_S = 30.0  # seconds between status lines when stderr is not a terminal
LOG_WIDTH = 100  # characters per status line in a log


class _LineWriter:
    """A file wrapper that turns tqdm's '\\r'-refreshed status into one line per refresh."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, stream: IO[str] | None = None) -> tqdm:
    """A tqdm bar on `stream` (stderr by default), written as separate lines in logs."""
    stream = sys.stderr if stream is None else stream
    if _is_terminal(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=stream,
                    dynamic_ncols=True)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable,
                file=_LineWriter(stream), ncols=LOG_WIDTH, mininterval=LOG_INTERVAL_S,
                maxinterval=LOG_INTERVAL_S)
