"""Unix times as people read them: one format for the CLI, the report and the log."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

SECONDS = "%Y-%m-%d %H:%M:%S"
MINUTES = "%Y-%m-%d %H:%M"


def local_time(ts: float, timezone: str | None = None, fmt: str = SECONDS) -> str:
    """``ts`` in ``timezone`` (the machine's own zone when None), formatted with ``fmt``."""
    moment = datetime.fromtimestamp(ts, UTC)
    return (moment.astimezone(ZoneInfo(timezone)) if timezone else moment.astimezone()
            ).strftime(fmt)


def when(ts: float | None, timezone: str) -> str:
    """A unix time as the operators read it: in ``export.timezone``, to the second."""
    if not ts:
        return "-"
    try:
        return local_time(ts, timezone)
    except (OverflowError, OSError, ValueError):  # beyond what a date can hold
        return f"unix time {ts:.0f} (out of range)"


def day_of(ts: float, tz: str) -> str:
    """The calendar day (YYYY-MM-DD) of ``ts`` in ``tz``."""
    return datetime.fromtimestamp(ts, ZoneInfo(tz)).date().isoformat()
