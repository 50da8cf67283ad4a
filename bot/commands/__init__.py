"""CLI command groups: each module exposes ``register(subparsers)``."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo


def when(ts: float | None, timezone: str) -> str:
    """A unix time as the operators read it: in ``export.timezone``, to the second."""
    if not ts:
        return "-"
    try:
        return datetime.fromtimestamp(ts, ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):  # beyond what a date can hold
        return f"unix time {ts:.0f} (out of range)"
