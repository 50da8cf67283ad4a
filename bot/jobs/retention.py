"""Retention: purge followers' words older than ``storage.retention_days``, hourly."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from bot.storage.ports import Retention

log = logging.getLogger(__name__)

PURGE_INTERVAL_SECONDS = 3600.0
PURGE_CHUNK = 5000


async def purge_loop(retention: Retention, days: int,
                     clock: Callable[[], float] = time.time) -> None:
    """Purge old message content in small transactions, hourly; never die of an error."""
    while True:
        try:
            purged = await purge_old_content(retention, int(clock()) - days * 86400, clock())
        except Exception as exc:  # a database error of either backend: try next hour
            log.error("purging message content failed, retrying next hour: %s", exc)
        else:
            if purged:
                log.info("purged followers' words from %d rows older than %d days", purged,
                         days)
        await asyncio.sleep(PURGE_INTERVAL_SECONDS)


async def purge_old_content(retention: Retention, before: int, now: float) -> int:
    """Purge in chunks so pushes keep committing in between; return rows purged."""
    total = 0
    while True:
        purged = await retention.purge_content(before, PURGE_CHUNK, now)
        total += purged
        if purged < PURGE_CHUNK:
            return total
