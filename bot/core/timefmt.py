"""Unix times and durations as people read them: the one format for the CLI, the report
and the log, always in ``export.timezone`` and always labelled with its UTC offset."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

SECONDS = "%Y-%m-%d %H:%M:%S"
MINUTES = "%Y-%m-%d %H:%M"
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def _moment(ts: float, timezone: str | None) -> datetime:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.astimezone(ZoneInfo(timezone)) if timezone else moment.astimezone()


def offset(moment: datetime) -> str:
    """The UTC offset of an aware datetime as ``+08:00`` (``+00:00`` for UTC)."""
    return moment.isoformat()[-6:] if moment.utcoffset() else "+00:00"


def local_time(ts: float, timezone: str | None = None, fmt: str = SECONDS) -> str:
    """``ts`` in ``timezone`` (the machine's own zone when None), formatted with ``fmt``,
    unlabelled: for parts of a label, such as a chart's hour ticks."""
    return _moment(ts, timezone).strftime(fmt)


def labelled(ts: float, timezone: str, fmt: str = SECONDS) -> str:
    """``ts`` in ``timezone`` with its offset: ``2026-12-02 11:00:00 +08:00``."""
    moment = _moment(ts, timezone)
    return f"{moment.strftime(fmt)} {offset(moment)}"


def when(ts: float | None, timezone: str) -> str:
    """A unix time as the operators read it: in ``export.timezone``, to the second, with
    its offset (``-`` when unset)."""
    if not ts:
        return "-"
    try:
        return labelled(ts, timezone)
    except (OverflowError, OSError, ValueError):  # beyond what a date can hold
        return f"unix time {ts:.0f} (out of range)"


def when_long(ts: float, timezone: str) -> str:
    """A time a sentence turns on (when sending resumes): to the minute, with the offset
    and the zone's name: ``2026-12-02 11:00 +08:00 (Asia/Shanghai)``."""
    try:
        return f"{labelled(ts, timezone, MINUTES)} ({timezone})"
    except (OverflowError, OSError, ValueError):
        return f"unix time {ts:.0f} (out of range)"


def zone_label(ts: float, timezone: str) -> str:
    """The zone as a heading names it: ``Asia/Shanghai, UTC+08:00``."""
    return f"{timezone}, UTC{offset(_moment(ts, timezone))}"


def day_of(ts: float, tz: str) -> str:
    """The calendar day (YYYY-MM-DD) of ``ts`` in ``tz``."""
    return datetime.fromtimestamp(ts, ZoneInfo(tz)).date().isoformat()


def hour_start(ts: float, tz: str) -> int:
    """The start of the clock hour ``ts`` falls in, in ``tz`` (zones off by :30 too)."""
    moment = datetime.fromtimestamp(ts, ZoneInfo(tz))
    return int(moment.replace(minute=0, second=0, microsecond=0).timestamp())


def span(seconds: float) -> str:
    """A duration as a rule file writes it (``duration: 7d``): in the largest unit that
    holds it exactly, ``1d``, ``12h``, ``90m``, ``45s``."""
    whole = int(round(seconds))
    for unit, size in _UNITS:
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


class ZoneFormatter(logging.Formatter):
    """Log records stamped in one zone (``export.timezone``) with the offset:
    ``2026-12-02 11:00:00.123 +08:00``, so a log line reads like the CLI's times."""

    def __init__(self, fmt: str, timezone: str):
        super().__init__(fmt)
        self.zone = ZoneInfo(timezone)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        """The record's time in the zone, to the millisecond, labelled."""
        moment = datetime.fromtimestamp(record.created, self.zone)
        return f"{moment.strftime(datefmt or SECONDS)}.{int(record.msecs):03d} {offset(moment)}"
