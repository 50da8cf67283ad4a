"""APScheduler wiring: the nightly export on its cron, a run missed while down caught up once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.config import Config
from bot.jobs.export import (
    BlacklistSource,
    Exporter,
    ExportError,
    ExportResult,
    ExportSkipped,
)
from bot.metrics import Metrics
from bot.storage.ports import ExportStorage

log = logging.getLogger(__name__)

EXPORT_JOB = "export"
IntervalJob = tuple[Callable[[], Awaitable[Any]], float]
# previous_fire's search: its first window, and where it gives up (longer than the
# period of any 5-field cron, even 29 February on a given weekday).
FIRST_LOOKBACK = timedelta(minutes=1)
MAX_LOOKBACK = timedelta(days=50 * 366)
TICK = timedelta(microseconds=1)


def _last_fire_between(trigger: BaseTrigger, start: datetime, end: datetime
                       ) -> datetime | None:
    last = None
    fire = trigger.get_next_fire_time(None, start)
    while fire is not None and fire <= end:
        last = fire
        fire = trigger.get_next_fire_time(fire, fire + TICK)
    return last


def previous_fire(trigger: BaseTrigger, now: datetime, after: datetime | None = None
                  ) -> datetime | None:
    """The trigger's latest fire time at or before ``now`` and later than ``after``.

    APScheduler 3 triggers only look forward, so walk forward from ever earlier starts
    (the lookback doubles) until a window holds a fire time, reaches ``after`` or passes
    MAX_LOOKBACK; the doubling keeps each walk to the few fire times near the latest.
    """
    lookback = FIRST_LOOKBACK
    while True:
        start = now.astimezone(UTC) - lookback
        if after is not None and start <= after:
            start, lookback = after.astimezone(UTC) + TICK, MAX_LOOKBACK  # the last window
        last = _last_fire_between(trigger, start, now)
        if last is not None or lookback >= MAX_LOOKBACK:
            return last
        lookback *= 2


def missed_run(trigger: BaseTrigger, last_run: float | None, now: float, tz: ZoneInfo
               ) -> datetime | None:
    """The latest scheduled time before ``now`` if no run succeeded since it, else None.

    However long ago that fire time was (within one period of the cron by construction),
    one run catches it up; earlier missed fire times are covered by that same run.
    """
    after = None if last_run is None else datetime.fromtimestamp(last_run, tz)
    return previous_fire(trigger, datetime.fromtimestamp(now, tz), after)


class ExportScheduler:
    """Runs the export on ``export.cron`` in ``export.timezone``, never two at once.

    ``source_factory`` returns the WeChat client (None in dry-run: the export is then
    skipped and says why). ``interval_jobs`` are extra ``(async callable, seconds)`` jobs
    the same scheduler runs (e.g. expiry checks). ``trigger`` replaces the cron (tests).
    """

    def __init__(self, config: Config, storage: ExportStorage,
                 source_factory: Callable[[], BlacklistSource | None],
                 metrics: Metrics | None = None, *, interval_jobs: Sequence[IntervalJob] = (),
                 clock: Callable[[], float] = time.time,
                 trigger: BaseTrigger | None = None,
                 exporter_factory: Callable[..., Exporter] = Exporter,
                 after_run: Callable[[], Awaitable[None]] | None = None):
        self.config = config
        self.storage = storage
        self.tz = ZoneInfo(config.export.timezone)
        self.trigger = trigger or CronTrigger.from_crontab(config.export.cron, timezone=self.tz)
        self._source_factory = source_factory
        self._metrics = metrics
        self._interval_jobs = list(interval_jobs)
        self._clock = clock
        self._exporter_factory = exporter_factory
        self._after_run = after_run  # nightly work beside the export (retraining)
        self._lock = asyncio.Lock()
        self._scheduler: AsyncIOScheduler | None = None
        self.last_result: ExportResult | None = None
        self.last_error: str | None = None
        self.runs = 0

    async def start(self) -> None:
        """Start the scheduler; if a run was missed while the service was down, run it now."""
        sched = AsyncIOScheduler(timezone=self.tz, event_loop=asyncio.get_running_loop())
        # A fire missed while running (loop blocked, host suspended) still runs, once.
        sched.add_job(self._scheduled, self.trigger, id=EXPORT_JOB, coalesce=True,
                      max_instances=1, misfire_grace_time=None)
        for i, (fn, seconds) in enumerate(self._interval_jobs):
            sched.add_job(fn, IntervalTrigger(seconds=seconds, timezone=self.tz),
                          id=f"interval-{i}", coalesce=True, max_instances=1,
                          misfire_grace_time=max(1, int(seconds)))
        sched.start()
        self._scheduler = sched
        job = sched.get_job(EXPORT_JOB)
        log.info("export scheduled %r (%s); next run %s", self.config.export.cron,
                 self.config.export.timezone, job.next_run_time if job else None)
        if self._source_factory() is None:
            log.warning("export: dry-run (%s): scheduled exports are skipped, the WeChat API "
                        "is not called", self.config.dry_run_reason or "no API client")
            return  # nothing to catch up: a catch-up would only record a skip
        last = await self.storage.snapshots.read_last_run()
        missed = missed_run(self.trigger, last, self._clock(), self.tz)
        if missed is not None:
            log.warning("the export due at %s did not run (service down?): running it now",
                        missed.isoformat())
            sched.modify_job(EXPORT_JOB, next_run_time=datetime.now(self.tz))

    async def stop(self) -> None:
        """Stop scheduling; wait for a running export to finish."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        async with self._lock:
            pass

    async def run_now(self, *, due: float | None = None) -> ExportResult:
        """Run the export now; ExportError if one is running or the API cannot be called
        (or, with ``due``, if a run after that scheduled time already finished)."""
        if self._lock.locked():
            raise ExportSkipped("an export is already running in this process")
        async with self._lock:
            source = self._source_factory()
            if source is None:
                raise ExportSkipped(f"export skipped: dry-run ({self.config.dry_run_reason}), "
                                  "so the WeChat API is not called")
            extra = {} if due is None else {"due": due}
            exporter = self._exporter_factory(self.storage, source, self.config.export,
                                              clock=self._clock, **extra)
            return await exporter.run()

    async def _scheduled(self) -> None:
        """The cron job: run, count the outcome, never raise into APScheduler."""
        self.runs += 1
        outcome = "ok"
        try:
            fire = previous_fire(self.trigger, datetime.fromtimestamp(self._clock(), self.tz))
            self.last_result = await self.run_now(due=fire.timestamp() if fire else None)
            self.last_error = None
            log.info("scheduled export %s: %d OpenIDs -> %s", self.last_result.day,
                     self.last_result.total,
                     ", ".join(str(p) for p in self.last_result.paths.values()))
        except asyncio.CancelledError:
            # Shutting down (APScheduler cancels a running job on shutdown): the export
            # is left unrecorded, so the next start catches it up; its staged snapshot
            # is purged then. Said in one line, not a traceback.
            self.last_error = "interrupted by shutdown"
            log.warning("export interrupted by shutdown: the next start runs it again")
            return
        except ExportError as exc:
            outcome = "skipped" if isinstance(exc, ExportSkipped) else "failed"
            self.last_error = str(exc)
            log.error("scheduled export %s: %s", outcome, exc)
        except Exception as exc:  # logged and counted: the schedule must go on
            outcome, self.last_error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("scheduled export failed")
        if self._metrics is not None:
            self._metrics.exports.labels(outcome).inc()
        if self._after_run is not None:
            try:
                await self._after_run()
            except Exception:  # logged: the schedule must go on
                log.exception("nightly work after the export failed")
