r"""oscar-jax: OSCAR-Net image hashes, Hamming search, the paper's benchmarks and attribution.

    oscar train --config configs/demo.py --workdir runs/demo
    oscar hash --workdir runs/demo photo.jpg other.png
    oscar index search --index photos.faiss --codes queries.npy -k 10
    oscar evaluate --workdir runs/demo --distractors train
    oscar separation --workdir runs/demo
    oscar attribute query --db trusted.sqlite found.jpg
    oscar explain --workdir runs/demo --out heat.png query.jpg original.jpg
    oscar serve --db trusted.sqlite --port 8000

Each tool is also `python -m oscar_jax.<tool>` with the same arguments. The tools other
than `train` (absl flags and ml_collections configs, as the trainer's design asks) share one
layout: `-h` prints the usage, what the tool does, its arguments and examples; a mistake
ends in one line, `<tool>: error: what was wrong and what to do`, on stderr. Exit status: 0
done; 1 the tool ran but some inputs failed (each is named on stderr); 2 nothing was done
(bad arguments, or a workdir, database or file that cannot be used). `OSCAR_DEBUG=1` shows
the traceback behind an error line.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType

from absl import logging

from oscar_jax import __version__
from preprocessing.images import image_files

# Tool name -> the module that implements it (imported only when that tool runs, so
# `oscar index` does not load JAX).
COMMANDS = {
    "train": "oscar_jax.train",
    "hash": "oscar_jax.hash",
    "index": "oscar_jax.index",
    "evaluate": "oscar_jax.evaluate",
    "separation": "oscar_jax.separation",
    "attribute": "oscar_jax.attribute",
    "explain": "oscar_jax.explain",
    "serve": "oscar_jax.serve",
}
# Errors that mean "the input cannot be used": shown as one line, not a traceback.
USER_ERRORS = (OSError, ValueError)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's and examples' line breaks; wider option column."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=32)


def summary(doc: str | None) -> str:
    """The first paragraph of a module docstring, on one line."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def description(doc: str | None) -> str:
    """The prose of a module docstring: its paragraphs without the indented examples."""
    paragraphs = (doc or "").strip().split("\n\n")
    return "\n\n".join(p for p in paragraphs if not p.startswith("    "))


def examples(doc: str | None) -> str:
    """The indented lines of a module docstring (its example commands), as an epilog."""
    lines = [line[2:] for line in (doc or "").splitlines() if line.startswith("    ")]
    return "examples:\n" + "\n".join(lines) if lines else ""


def new_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """A tool's parser in the shared layout: usage, what the tool does (the module
    docstring's prose), arguments, examples (its indented lines); every tool takes
    --version, --verbose and --debug."""
    parser = argparse.ArgumentParser(prog=prog, description=description(doc),
                                     epilog=examples(doc), formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"oscar-jax {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="show the libraries' INFO logs and warnings")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback behind an error line (or OSCAR_DEBUG=1)")
    return parser


def add_subcommand(subparsers, name: str, help_text: str, run: Callable
                   ) -> argparse.ArgumentParser:
    """A subcommand (`oscar index build`, `oscar attribute query`) in the shared layout."""
    parser = subparsers.add_parser(name, help=help_text, description=help_text,
                                   formatter_class=HelpFormatter)
    parser.set_defaults(run=run)
    return parser


def comma_list(text: str) -> list[str]:
    """'a,b, c' -> ['a', 'b', 'c'] (for list-valued options)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def input_paths(arguments: Sequence[str], *, null: bool = False) -> list[str]:
    """The paths given as arguments or, with none, read from stdin: one a line, kept exactly
    (only the line break is removed), or NUL-separated with `null` (`find -print0`).
    Folders become the image files under them (`preprocessing.images.image_files`)."""
    if not arguments:
        if sys.stdin.isatty():
            raise ValueError("give image paths or folders, or pipe paths on stdin, one a line")
        text = sys.stdin.read()
        if null:
            arguments = [p for p in text.split("\0") if p]
        else:
            arguments = [line.removesuffix("\r") for line in text.split("\n")
                         if line.strip()]
    return image_files(list(arguments))


def quiet_libraries(verbose: bool = False) -> None:
    """Keeps library chatter (absl INFO from orbax and TFDS, Python warnings) off the terminal,
    unless `verbose`."""
    if verbose:
        logging.set_verbosity(logging.INFO)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.set_verbosity(logging.ERROR)
    warnings.filterwarnings("ignore")


def run_tool(module: ModuleType, prog: str, argv: Sequence[str] | None) -> int:
    """Parses `argv` with the module's `add_arguments` and runs the chosen subcommand's
    `run` (`add_subcommand`) or else the module's `run(args) -> int`."""
    parser = new_parser(prog, module.__doc__)
    module.add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # -h, or a usage error argparse has already printed
        return int(exit_.code or 0)
    quiet_libraries(args.verbose)
    try:
        run = args.run if hasattr(args, "run") else module.run
        return int(run(args) or 0)
    except USER_ERRORS as error:
        if args.debug or os.environ.get("OSCAR_DEBUG"):
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def module_main(module: ModuleType, argv: Sequence[str] | None = None) -> int:
    """`python -m oscar_jax.<tool>`: the tool, named by its module."""
    return run_tool(module, f"python -m {module.__spec__.name}", argv)


def main(argv: Sequence[str] | None = None) -> int:
    """The `oscar` console script: `oscar TOOL [arguments]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        print(f"oscar-jax {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = ["usage: oscar TOOL [arguments]   (oscar TOOL -h for a tool's help)", "",
                 summary(__doc__), "", "tools:"]
        for name, module_name in COMMANDS.items():
            doc = importlib.util.find_spec(module_name)
            lines.append(f"  {name:<{width}}  {_first_line(doc.origin)}")
        known = not argv or argv[0] in ("-h", "--help")
        print("\n".join(lines), file=sys.stdout if known else sys.stderr)
        if not known:
            print(f"oscar: error: unknown tool {argv[0]!r}", file=sys.stderr)
        return 0 if known else 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name])
    if name == "train":
        return module.run_command_line(["oscar train", *rest])
    return run_tool(module, f"oscar {name}", rest)


def _first_line(path: str | None) -> str:
    """The first line of a module's docstring, read from its file (nothing is imported)."""
    import ast

    with open(path, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    return doc.strip().splitlines()[0].rstrip(".") if doc.strip() else ""


if __name__ == "__main__":
    sys.exit(main())
