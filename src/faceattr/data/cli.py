"""`faceattr cache`: show and delete the decode and distillation caches (nothing prunes them by itself)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add the `cache` subcommand."""
    p = sub.add_parser(
        "cache",
        help="list or delete cached decoded images and teacher predictions",
        description="List the caches under $FACEATTR_CACHE (default ~/.cache/faceattr), most recently used first; "
        "--clear deletes them all, --older-than DAYS only those unused for that long. Only faceattr's own files "
        "are touched, and a deleted cache is rebuilt the next time it is needed.",
    )
    p.add_argument("--dir", default="", help="cache folder (default: $FACEATTR_CACHE or ~/.cache/faceattr)")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--clear", action="store_true", help="delete every cache")
    action.add_argument("--older-than", type=float, metavar="DAYS", help="delete caches not used for DAYS days")
    p.set_defaults(func=_run)


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GiB"


def _run(args: argparse.Namespace) -> int:
    import datetime as dt

    from faceattr.data.cache import default_cache_dir, list_caches, remove_caches

    folder = args.dir or str(default_cache_dir())
    if args.clear or args.older_than is not None:
        removed = remove_caches(folder, older_than_days=0.0 if args.clear else args.older_than)
        left = list_caches(folder)
        print(f"{folder}: deleted {len(removed)} cache(s), {_size(sum(e.size for e in removed))}; "
              f"{len(left)} left, {_size(sum(e.size for e in left))}")
        return 0
    entries = list_caches(folder)
    if not entries:
        print(f"{folder}: no caches")
        return 0
    print(f"{'last used':<17} {'size':>10}  {'kind':<8} name")
    for e in entries:
        when = dt.datetime.fromtimestamp(e.last_used).strftime("%Y-%m-%d %H:%M")
        print(f"{when:<17} {_size(e.size):>10}  {e.kind:<8} {e.name}")
    print(f"{folder}: {len(entries)} cache(s), {_size(sum(e.size for e in entries))} "
          "(faceattr cache --older-than DAYS or --clear deletes them)")
    return 0
