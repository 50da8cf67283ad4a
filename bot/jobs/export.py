"""The nightly blacklist export: page through WeChat, snapshot, diff, reconcile, write files."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bot.config import ExportConfig
from bot.core.errors import BotError
from bot.core.paging import (
    BlacklistPage,
    Progress,
    RetryPolicy,
    end_text,
    is_retryable,
    next_begin,
)
from bot.core.timefmt import day_of, hour_start
from bot.core.wording import plural
from bot.jobs.export_files import (
    CHUNK,
    csv_chunks,
    export_paths,
    notify,
    one_chunk,
    remove_old_files,
    write_atomic,
)
from bot.jobs.report import Finding, ReportData, render_html, summary_json, summary_text
from bot.storage.ports import ActionQueue, ExportStorage, Snapshots

log = logging.getLogger(__name__)
T = TypeVar("T")

SAMPLE = 50  # OpenIDs listed per finding in the report
LOCK_TTL = 600.0  # seconds; refreshed every page, so only a dead holder lets it lapse


class ExportError(BotError):
    """The export could not complete; the day's previous snapshot and files are untouched."""


class ExportSkipped(ExportError):
    """The export did not start: another is running, or the API may not be called."""


class BlacklistSource(Protocol):
    """Where the blacklist comes from: the WeChat client, or a test's own source."""

    async def get_blacklist_page(self, begin_openid: str) -> BlacklistPage: ...


# ---------------------------------------------------------------- paging


async def fetch_page(source: BlacklistSource, begin: str, policy: RetryPolicy,
                     sleep: Callable[[float], Awaitable[Any]], progress: Progress
                     ) -> BlacklistPage:
    """One page, retried on transient errors up to the policy's bound."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return await source.get_blacklist_page(begin)
        except BotError as exc:
            if not is_retryable(exc) or attempt == policy.attempts:
                raise ExportError(f"getblacklist failed after {attempt} attempt(s) at page "
                                  f"{progress.pages + 1}: {exc}") from exc
            wait = policy.delay(attempt, exc)
            log.warning("getblacklist page %d failed (%s); retry in %.1fs",
                        progress.pages + 1, exc, wait)
            progress.retries += 1
            await sleep(wait)
    raise AssertionError("unreachable")


async def page_into(snapshots: Snapshots, source: BlacklistSource, snapshot_id: int, *,
                    policy: RetryPolicy, sleep: Callable[[float], Awaitable[Any]],
                    on_page: Callable[[Progress], None], keep_lock: Callable[[], Awaitable[None]]
                    ) -> Progress:
    """Page through the whole blacklist into a staged snapshot; each OpenID kept once."""
    progress, begin, seen = Progress(), "", {""}
    while True:
        page = await fetch_page(source, begin, policy, sleep, progress)
        new = 0
        for chunk in _chunks(list(page.openids), CHUNK):
            new += await snapshots.add_entries(snapshot_id, list(chunk))
        progress.pages += 1
        progress.kept += new
        progress.total = page.total
        on_page(progress)
        following, why = next_begin(page, begin, seen, new)
        if following is None:
            progress.end = why
            return progress
        seen.add(following)
        begin = following
        await keep_lock()


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# ---------------------------------------------------------------- scans and report data


async def scan(snapshots: Snapshots, name: str, params: list[Any], sample: int = SAMPLE
               ) -> tuple[int, list[str]]:
    """Run a keyset scan chunk by chunk: (how many flagged, the first ``sample``)."""
    count, first, after = 0, list[str](), ""
    while True:
        last, flagged = await snapshots.scan_chunk(name, params, after, CHUNK)
        count += len(flagged)
        first.extend(flagged[: max(0, sample - len(first))])
        if last is None:
            return count, first
        after = last


async def build_report(snapshots: Snapshots, day: str, tz: str, *, reconcile: bool = True,
                       queue: ActionQueue | None = None, now: float = 0.0) -> ReportData:
    """Everything the report shows for the day's snapshot, read from the database;
    ``queue`` tells whether sending is paused at ``now`` (the report's attention box)."""
    current = await snapshots.get(day)
    if current is None:
        raise ExportError(f"no complete snapshot for {day}: run `python -m bot export` first")
    prev = await snapshots.previous(day)
    data = ReportData(day=day, timezone=tz, taken_at=current.taken_at, total=current.total,
                      previous_day=prev.day if prev else None,
                      previous_total=prev.total if prev else None,
                      previous_taken_at=prev.taken_at if prev else None)
    if prev is not None:
        if prev.total and not await snapshots.has_entries(prev.id):
            data.notes.append(f"the {prev.day} snapshot's entries were pruned by retention: "
                              "no per-OpenID diff")
        else:
            data.added = await scan(snapshots, "missing_from", [prev.id, current.id])
            data.removed = await scan(snapshots, "missing_from", [current.id, prev.id])
    since = prev.taken_at if prev else current.taken_at - 86400
    await _activity(snapshots, data, since, current.taken_at)
    if queue is not None:
        state = await queue.state("blacklist", now, 1)
        if state.paused_until > now:
            data.paused_until, data.paused_reason = state.paused_until, state.paused_reason
    if reconcile:
        data.findings = await reconcile_findings(snapshots, current.id, current.taken_at)
    else:
        data.notes.append("reconciliation with our records is shown for the latest "
                          "snapshot only")
    return data


async def _activity(snapshots: Snapshots, data: ReportData, since: int, until: int) -> None:
    data.window = (since, until)
    data.actions = await snapshots.action_counts(since, until)
    data.failures = await snapshots.action_failures(since, until)
    data.failed = await snapshots.failed_actions(since, until)
    data.rule_hits = await snapshots.rule_hits(since, until)
    end = hour_start(until, data.timezone)  # whole clock hours, labelled as they start
    data.hourly = await snapshots.decisions_per_hour(end)
    data.hourly_start = end - len(data.hourly) * 3600


async def reconcile_findings(snapshots: Snapshots, snapshot_id: int, taken_at: int
                             ) -> list[Finding]:
    """The platform against our own records, as of the snapshot."""
    added = await scan(snapshots, "hand_added", [taken_at, snapshot_id])
    removed = await scan(snapshots, "hand_removed", [snapshot_id, taken_at])
    count, rows = await snapshots.unreflected_actions(snapshot_id, SAMPLE)
    return [
        Finding("hand_added", "On the platform's blacklist but not blacklisted by us "
                "(added by hand on the platform?)", *added),
        Finding("hand_removed", "Blacklisted by us but absent from the platform "
                "(removed by hand on the platform?)", *removed),
        Finding("unreflected", "Our queued or failed actions the platform does not show",
                count, [f"{r['kind']} {r['openid']} ({r['status']}"
                        + (f", errcode {r['errcode']}: {r['errmsg'] or ''}"
                           if r["errcode"] is not None else "") + ")" for r in rows]),
    ]


async def write_report(directory: str | Path, data: ReportData) -> dict[str, Path]:
    """Write the day's HTML report and JSON summary atomically; return all three paths."""
    paths = export_paths(directory, data.day)
    await write_atomic(paths["html"], one_chunk(render_html(data)))
    text = json.dumps(summary_json(data), ensure_ascii=False, indent=2) + "\n"
    await write_atomic(paths["json"], one_chunk(text))
    return paths


# ---------------------------------------------------------------- the job


@dataclass
class ExportResult:
    """What one export produced."""

    day: str
    total: int
    paths: dict[str, Path]
    progress: Progress
    report: ReportData
    notes: list[str] = field(default_factory=list)


@dataclass
class Exporter:
    """Runs the export end to end; time, sleep and progress reporting are injectable."""

    storage: ExportStorage
    source: BlacklistSource
    config: ExportConfig
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    policy: RetryPolicy = RetryPolicy()
    on_page: Callable[[Progress], None] = lambda _p: None
    notify_ssl: ssl.SSLContext | None = None  # None: the system's trusted CAs
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:"
                       f"{secrets.token_hex(3)}")
    # The scheduled time this run serves: skipped if a run (another replica's) finished
    # after it, so replicas sharing one database export once a night.
    due: float | None = None

    async def run(self) -> ExportResult:
        """Export now: lock, page, swap the day's snapshot, write files, prune."""
        started = self.clock()
        holder = await self._lock(started)
        if holder is not None:
            raise ExportSkipped(f"another export is running ({holder}); try again later")
        try:
            last = await self.storage.snapshots.read_last_run() if self.due else None
            if self.due is not None and last is not None and last >= self.due:
                raise ExportSkipped("the export due then already ran (another replica)")
            return await self._run(started)
        finally:
            await self.storage.leases.release(self.owner)

    async def _run(self, started: float) -> ExportResult:
        day = day_of(started, self.config.timezone)
        snapshots = self.storage.snapshots
        await purge_leftovers(snapshots)
        token = secrets.token_hex(4)
        sid = await snapshots.create_staging(day, int(started), token)
        paths = export_paths(self.config.dir, day)
        try:
            progress = await page_into(snapshots, self.source, sid, policy=self.policy,
                                       sleep=self.sleep, on_page=self.on_page,
                                       keep_lock=self._keep_lock)
            await write_atomic(paths["csv"], csv_chunks(snapshots, sid))
        except Exception:
            # On cancellation (shutdown) the next run's purge_leftovers cleans up instead.
            await _drop_snapshot(snapshots, sid)
            raise
        log.info("export %s: %d OpenIDs in %s; paging ended: %s", day, progress.kept,
                 plural(progress.pages, "page"), end_text(progress.end))
        notes = _consistency_notes(progress)
        # A snapshot the day already had stays as its earlier run, which the report
        # compares with; promote hands back the one that superseded run may drop.
        superseded = await snapshots.promote(sid, day, progress.kept, token)
        if superseded is not None:
            await _drop_snapshot(snapshots, superseded)
        data = await build_report(snapshots, day, self.config.timezone,
                                  queue=self.storage.actions, now=self.clock())
        data.notes.extend(notes)
        await write_report(self.config.dir, data)
        finished = self.clock()
        await snapshots.set_paths(sid, str(paths["csv"]), str(paths["html"]))
        await snapshots.write_last_run(finished, day)
        await prune(snapshots, self.config, finished)
        if self.config.notify_url:
            await notify(self.config.notify_url, summary_text(data),
                         allow_private=self.config.notify_allow_private,
                         ssl_context=self.notify_ssl)
        return ExportResult(day, progress.kept, paths, progress, data, notes)

    async def _lock(self, now: float) -> str | None:
        """Take or refresh the export lock; the other holder's name when it is taken."""
        return await self.storage.leases.acquire(self.owner, now, LOCK_TTL)

    async def _keep_lock(self) -> None:
        holder = await self._lock(self.clock())
        if holder is not None:
            raise ExportError(f"lost the export lock to {holder}")


def _consistency_notes(progress: Progress) -> list[str]:
    if progress.total and progress.kept != progress.total:
        note = (f"WeChat reported total {progress.total} but {progress.kept} distinct "
                f"OpenIDs were listed (the list changed during the export?)")
        log.warning("export: %s", note)
        return [note]
    return []


async def _drop_entries(snapshots: Snapshots, snapshot_id: int) -> None:
    """Delete a snapshot's entries chunk by chunk, so pushes commit in between."""
    while await snapshots.delete_entries_chunk(snapshot_id, CHUNK):
        pass


async def _drop_snapshot(snapshots: Snapshots, snapshot_id: int) -> None:
    """Delete a snapshot's entries, then its row."""
    await _drop_entries(snapshots, snapshot_id)
    await snapshots.delete_snapshot_row(snapshot_id)


async def purge_leftovers(snapshots: Snapshots) -> None:
    """Remove staged or replaced snapshots a crashed export left behind."""
    for sid in await snapshots.leftovers():
        await _drop_snapshot(snapshots, sid)


async def prune(snapshots: Snapshots, config: ExportConfig, now: float) -> list[Path]:
    """Remove export files and snapshot entries older than ``export.retention_days``.

    Snapshot rows stay (day, total, paths: the history of totals); only their entries go,
    and never those of the two newest snapshots, which the next export compares against.
    """
    cutoff = day_of(now - config.retention_days * 86400, config.timezone)
    removed = await asyncio.to_thread(remove_old_files, Path(config.dir), cutoff)
    for sid in await snapshots.prunable(cutoff):
        await _drop_entries(snapshots, sid)
    if removed:
        log.info("export retention: removed %d files older than %s", len(removed), cutoff)
    return removed
