"""User-facing errors: one line that says what went wrong and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["FaceattrError", "did_you_mean", "resolve_names"]


class FaceattrError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits non-zero."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest choice to `name`, or '' when none is close."""
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[close[0]]}?)" if close else ""


def resolve_names(requested: Iterable[str], available: list[str], what: str = "attribute") -> list[str]:
    """Map names case-insensitively onto `available`, raising FaceattrError with a did-you-mean on a miss."""
    lookup = {a.lower(): a for a in available}
    out: list[str] = []
    for name in requested:
        key = name.strip().lower()
        if key not in lookup:
            raise FaceattrError(
                f"unknown {what} '{name}'{did_you_mean(name, available)}; "
                f"choose from: {', '.join(available)}"
            )
        if lookup[key] not in out:
            out.append(lookup[key])
    return out
