"""Counts as people write them: ``1 action``, ``2 actions``."""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``count`` and ``noun``, pluralised (``many``, or ``noun`` + s, unless one)."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"
