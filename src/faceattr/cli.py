"""The `faceattr` command: a thin layer over the library, one subcommand per job.

Each area of the package (data, train, evaluate, infer, search, serve) owns a small `cli` module with
`register(subparsers)`, which adds its subcommands and binds each to a handler `(args) -> int`.
Those modules import only argparse at top level, so `faceattr --help` stays fast; handlers import
the heavy parts when they run.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from faceattr import __version__
from faceattr.errors import FaceattrError

__all__ = ["main", "build_parser"]

# Ordered as the data flows; each module has register(subparsers).
COMMAND_MODULES = (
    "faceattr.data.cli",
    "faceattr.train.cli",
    "faceattr.evaluate.cli",
    "faceattr.infer.cli",
    "faceattr.search.cli",
    "faceattr.serve.cli",
    "faceattr.demo",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="faceattr", description="Facial attribute prediction toolkit.")
    parser.add_argument("--version", action="version", version=f"faceattr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that area is not part of this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `faceattr` command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except FaceattrError as e:
        print(f"faceattr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("faceattr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`faceattr cache | head`): stop quietly, as Unix tools do, and keep
        # Python from complaining again when it flushes stdout at exit.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # after BrokenPipeError, its subclass
        import errno

        # The writers of results (checkpoints, caches, index, reports, exports) say this themselves;
        # this catches a full disk anywhere else (a training log, crops, a contact sheet) in one line.
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"faceattr: error: no space left on the disk{where}; free some space and run again", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
