"""CLI command groups: each module exposes ``register(subparsers)``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.core.errors import BotError


def when(ts: float | None, timezone: str) -> str:
    """A unix time as the operators read it: in ``export.timezone``, to the second."""
    if not ts:
        return "-"
    try:
        return datetime.fromtimestamp(ts, ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):  # beyond what a date can hold
        return f"unix time {ts:.0f} (out of range)"


def existing_db(path: str | Path, what: str) -> Path:
    """``storage.path`` when the file is there; BotError otherwise (a mistyped path must
    not leave an empty database behind and report that nothing is known)."""
    db_path = Path(path)
    if not db_path.is_file():
        raise BotError(f"no database at {db_path} (storage.path): {what}")
    return db_path
