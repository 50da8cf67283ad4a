"""The batcher: claim queued actions, send them in batches of <= 20, settle by error class."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from bot.config import ActionsConfig
from bot.core.errors import InvalidOpenIDError, WeChatAPIError, describe_error, explain
from bot.core.models import ActionKind
from bot.core.outbox import Claimed
from bot.core.settle import (
    Backoff,
    Settlement,
    Verdict,
    settle,
    wait_before_send,
)
from bot.core.timefmt import when_long
from bot.core.wording import plural
from bot.metrics import Metrics
from bot.storage.owners import make_owner
from bot.storage.ports import ActionQueue

log = logging.getLogger(__name__)
T = TypeVar("T")
KINDS = (ActionKind.BLACKLIST, ActionKind.UNBLACKLIST)
DEFAULT_BACKOFF = Backoff()
# Retrying an outcome the database refused (locked, disk full): often, never for long.
DEFAULT_WRITE_BACKOFF = Backoff(base=0.5, cap=10.0)


@dataclass(frozen=True, slots=True)
class GroupOutcome:
    """What sending a group of rows (halves included) came to, for its sibling half."""

    all_done: bool  # every row went through
    found_bad: bool  # a bad OpenID was isolated (failed) among them
    pause: Settlement | None = None  # sending paused: nothing more may be sent now


class BlacklistAPI(Protocol):
    """The two API calls the batcher makes (bot.wechat.api.WeChatClient)."""

    async def batch_blacklist(self, openids: list[str]) -> None: ...
    async def batch_unblacklist(self, openids: list[str]) -> None: ...


class QueueRefused(Exception):
    """The action queue (the database) refused a read or a write: locked, disk full."""


async def _refused_as(call: Awaitable[T]) -> T:
    """Await a queue call; its failure becomes QueueRefused, logged as one line (the store
    logs the database's own error), not a traceback per retry."""
    try:
        return await call
    except Exception as exc:
        raise QueueRefused(f"{exc.__class__.__name__}: {exc}") from exc


# ---------------------------------------------------------------- the batcher


@dataclass(frozen=True, slots=True)
class BatcherStatus:
    """For /healthz: queued actions, whether (and why) sending is paused, and outcomes
    known from WeChat but not yet written (with the storage error that refused them)."""

    pending: int
    paused_until: float
    paused_reason: str
    dry_run: bool
    unsettled: int = 0
    storage_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"pending": self.pending, "paused_until": self.paused_until or None,
                "paused_reason": self.paused_reason or None, "dry_run": self.dry_run,
                "unsettled": self.unsettled, "storage_error": self.storage_error or None}


class Batcher:
    """Sends queued actions: one call in flight per kind, claims shared safely across
    processes, stale claims of dead processes reclaimed, timed blacklists expired.

    In dry-run it never claims, reclaims or settles a row: the database may be shared
    with a live service (a CLI run without secrets), whose queue is not ours to touch.
    It only heartbeats and records expiries as ``dry_run`` would-be unblacklists.

    An outcome the database refuses (locked by another process, disk full) is kept and
    written again, with ``write_backoff``, until it is: the worker claims nothing else
    meanwhile, and a batch WeChat answered is never sent again because its answer could
    not be recorded.
    """

    def __init__(self, queue: ActionQueue, client: BlacklistAPI | None, config: ActionsConfig,
                 metrics: Metrics, *, dry_run: bool, owner: str = "",
                 backoff: Backoff = DEFAULT_BACKOFF,
                 clock: Callable[[], float] = time.time, housekeeping_seconds: float = 10.0,
                 stale_after: float = 60.0, idle_seconds: float = 1.0,
                 rng: random.Random | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 write_backoff: Backoff = DEFAULT_WRITE_BACKOFF, timezone: str = "UTC"):
        if client is None and not dry_run:
            raise ValueError("a Batcher without an API client must run in dry-run mode")
        self.owner = owner or make_owner()
        self._queue = queue
        self._monotonic = monotonic
        self._client, self._config, self._metrics = client, config, metrics
        self._dry_run, self._backoff, self._clock = dry_run, backoff, clock
        self._housekeeping, self._stale_after = housekeeping_seconds, stale_after
        self._idle = idle_seconds
        self._rng = rng or random.Random()
        self._wake = {kind: asyncio.Event() for kind in KINDS}
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: set[ActionKind] = set()
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._flush = False
        self._pending = 0
        self._paused_until, self._paused_reason = 0.0, ""
        self._write_backoff = write_backoff
        self._timezone = timezone  # export.timezone: the log says when sending resumes
        self._unsettled: set[int] = set()  # ids whose outcome waits to be written
        self._claimed: set[int] = set()  # ids this process is sending or settling
        self._storage_error = ""

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Announce this owner, recover claims of dead processes, start the loops."""
        now = self._clock()
        await self._queue.heartbeat(self.owner, now)
        if not self._dry_run:
            recovered = await self._queue.reclaim_stale(now, self._stale_after)
            if recovered:
                log.warning("recovered %s left in flight by a stopped process",
                            plural(recovered, "action"))
        await self._queue.queue_expired(now, dry_run=self._dry_run)
        self._pending = await self._queue.count_active()
        self._stopping = False
        self._stop_event.clear()
        if not self._dry_run:
            for kind in KINDS:
                self._spawn(self._worker(kind), f"batcher-{kind}")
        self._spawn(self._housekeeping_loop(), "batcher-housekeeping")
        mode = "dry-run: no API calls" if self._dry_run else "live"
        log.info("batcher started (%s), %s queued", mode, plural(self._pending, "action"))

    async def stop(self, timeout: float = 15.0) -> None:
        """Let the calls in flight finish (up to ``timeout``), then give back any claim."""
        self._stopping = True
        self._stop_event.set()
        self.wake()
        tasks = list(self._tasks)
        if tasks:
            _, still = await asyncio.wait(tasks, timeout=timeout)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        released = await self._queue.release_owner(self.owner, self._clock())
        if released:
            log.warning("batcher stopped mid-send: %s returned to the queue",
                        plural(released, "action"))

    def wake(self) -> None:
        """New actions were queued: look now (a full batch goes at once)."""
        for event in self._wake.values():
            event.set()

    async def drain(self, timeout: float) -> bool:
        """Send everything queued now, partial batches included; True when nothing is left
        pending (False on timeout, when sending is paused, or in dry-run: nothing is sent)."""
        if self._dry_run:
            return False
        self._flush = True
        self.wake()
        deadline = self._monotonic() + timeout
        try:
            while self._monotonic() < deadline:
                paused_for = self._paused_until - self._clock()
                if paused_for > deadline - self._monotonic() and not self._busy:
                    return False  # paused past the deadline (a pause ending before it,
                    # like 45011's minute, is waited out)
                self._pending = await self._queue.count_active()
                if self._pending == 0:
                    return True
                await asyncio.sleep(0.02)  # polling the queue, not timing logic
            return False
        finally:
            self._flush = False

    @property
    def status(self) -> BatcherStatus:
        """Queued actions (as of the last look) and the pause, for /healthz."""
        paused = self._paused_until > self._clock()
        return BatcherStatus(self._pending, self._paused_until if paused else 0.0,
                             self._paused_reason if paused else "", self._dry_run,
                             len(self._unsettled),
                             self._storage_error if self._unsettled else "")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ loops

    async def _worker(self, kind: ActionKind) -> None:
        while not self._stopping:
            try:
                await self._step(kind)
            except QueueRefused as exc:  # locked or full database: one line, not a trace
                log.warning("batcher %s: the action queue refused (%s); retrying", kind, exc)
                await self._sleep(kind, self._idle)
            except Exception:  # anything else: log with its traceback, back off, go on
                log.exception("batcher %s loop failed; retrying", kind)
                await self._sleep(kind, self._idle)

    async def _step(self, kind: ActionKind) -> None:
        """One look at the queue: wait, or claim a batch and send it."""
        now = self._clock()
        state = await _refused_as(self._queue.state(kind, now, self._config.batch_size))
        self._note_pause(state.paused_until, state.paused_reason)
        wait = wait_before_send(state, now, batch_size=self._config.batch_size,
                                max_delay=self._config.max_delay_seconds,
                                flush=self._flush, idle=self._idle)
        if wait > 0:
            await self._sleep(kind, wait)
            return
        rows = await _refused_as(self._queue.claim(kind, self.owner, now,
                                                   self._config.batch_size))
        if not rows:
            return
        self._claimed.update(r.id for r in rows)
        self._busy.add(kind)
        try:
            await self._process(kind, rows)
        except Exception:
            # Rows not yet settled go back (settled ones are no longer 'sending'); a release
            # that cannot be written would leave them claimed for the life of the process.
            later = self._clock() + self._backoff.delay(max(r.attempts for r in rows),
                                                        self._rng)
            ids = [r.id for r in rows]
            await self._write(ids, lambda: self._queue.release(ids, self._clock(),
                                                               not_before=later))
            raise
        finally:
            self._busy.discard(kind)
            self._claimed.difference_update(r.id for r in rows)
        self.wake()  # settled rows may unblock the other kind's next action for a follower

    async def _sleep(self, kind: ActionKind, seconds: float) -> None:
        event = self._wake[kind]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=min(seconds, self._idle))
        event.clear()

    async def _housekeeping_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), timeout=self._housekeeping)
            if self._stopping:
                return
            try:
                await _refused_as(self.housekeep(self._clock()))
            except QueueRefused as exc:  # retried next round; the loop must live
                log.warning("batcher housekeeping: the action queue refused (%s)", exc)

    async def housekeep(self, now: float) -> None:
        """Heartbeat, recover dead claims and this process's lost ones, queue expired timed
        blacklists (every ~10 s)."""
        await self._queue.heartbeat(self.owner, now)
        if not self._dry_run and await self._queue.reclaim_stale(now, self._stale_after):
            self.wake()
        if not self._dry_run:
            lost = await self._queue.reclaim_own(self.owner, sorted(self._claimed), now,
                                                 self._stale_after)
            if lost:  # claimed, then neither sent nor given back: safe to send again
                log.warning("%s claimed by this process but not in flight returned"
                            " to the queue", plural(lost, "action"))
                self.wake()
        expired = await self._queue.queue_expired(now, dry_run=self._dry_run)
        if expired:
            log.info("%s expired: unblacklist %s", plural(expired, "timed blacklist"),
                     "recorded (dry-run, not sent)" if self._dry_run else "queued")
            self.wake()
        self._pending = await self._queue.count_active()
        self._metrics.pending_actions.set(self._pending)

    # ------------------------------------------------------------ sending

    async def _process(self, kind: ActionKind, rows: list[Claimed]) -> None:
        await self._send_group(kind, rows, None)
        try:
            self._pending = await _refused_as(self._queue.count_active())
        except QueueRefused as exc:  # the rows are settled; housekeeping refreshes the count
            # one line: the store has logged the database's error (a full disk fails
            # every call sharing the push's transaction, this count included)
            log.warning("could not count queued actions after a batch (%s)", exc)
            return
        self._metrics.pending_actions.set(self._pending)

    async def _send_group(self, kind: ActionKind, rows: list[Claimed],
                          known_bad: WeChatAPIError | None) -> GroupOutcome:
        """Send ``rows`` and settle them, halving on 40032 and on 40003/49003.

        ``known_bad`` is the 40003/49003 of a parent batch whose other half all went
        through: these rows must hold the bad OpenID, so they are halved unsent.
        """
        error = known_bad if known_bad is not None else await self._attempt(kind, rows)
        s = settle(error, size=len(rows), attempts=max(r.attempts for r in rows),
                   now=self._clock(), backoff=self._backoff, rng=self._rng)
        if s.verdict not in (Verdict.SPLIT, Verdict.BISECT):
            await self._apply(kind, rows, s)
            return GroupOutcome(
                all_done=s.verdict is Verdict.DONE,
                found_bad=s.verdict is Verdict.FAIL and isinstance(error, InvalidOpenIDError),
                pause=s if s.verdict is Verdict.PAUSE else None)
        left, right = rows[: len(rows) // 2], rows[len(rows) // 2:]
        first = await self._send_group(kind, left, None)
        if first.pause is not None:  # e.g. 45009: every further call would fail alike
            await self._hold(right, first.pause)
            return GroupOutcome(False, first.found_bad, first.pause)
        # The bad OpenID is surely in the right half only when the left half all went
        # through; a left half retried (-1) or with its own bad one proves nothing.
        inherit = error if s.verdict is Verdict.BISECT and first.all_done else None
        second = await self._send_group(kind, right, inherit)
        return GroupOutcome(first.all_done and second.all_done,
                            first.found_bad or second.found_bad, second.pause)

    async def _hold(self, rows: list[Claimed], pause: Settlement) -> None:
        """Back to pending unsent (no attempt counted): sending paused before their turn."""
        ids, now = [r.id for r in rows], self._clock()
        await self._write(ids, lambda: self._queue.release(
            ids, now, not_before=0, errcode=pause.errcode, errmsg=pause.errmsg,
            count_attempt=False))

    async def _attempt(self, kind: ActionKind, rows: list[Claimed]) -> WeChatAPIError | None:
        assert self._client is not None
        openids = [r.openid for r in rows]
        try:
            if kind is ActionKind.BLACKLIST:
                await self._client.batch_blacklist(openids)
            else:
                await self._client.batch_unblacklist(openids)
        except WeChatAPIError as exc:
            return exc
        return None

    async def _apply(self, kind: ActionKind, rows: list[Claimed], s: Settlement) -> None:
        now, ids = self._clock(), [r.id for r in rows]
        if s.verdict is Verdict.DONE:
            await self._write(ids, lambda: self._queue.complete(rows, now))
            self._metrics.actions.labels(str(kind), "done").inc(len(rows))
        elif s.verdict is Verdict.RETRY:
            log.warning("%s of %s: WeChat API %s; retry in %.1f s", kind,
                        plural(len(rows), "follower"), describe_error(s.errcode, s.errmsg),
                        s.not_before - now)
            await self._write(ids, lambda: self._queue.release(
                ids, now, not_before=s.not_before, errcode=s.errcode, errmsg=s.errmsg))
        elif s.verdict is Verdict.PAUSE:
            meaning = explain(s.errcode)
            reason = f"WeChat API {describe_error(s.errcode, s.errmsg)}" + (
                f": {meaning}" if meaning else "")
            brief = s.not_before - now <= 60  # the per-minute limit: routine under load
            log.log(logging.WARNING if brief else logging.ERROR,
                    "SENDING PAUSED until %s, %d+ actions kept queued. %s",
                    when_long(s.not_before, self._timezone), len(rows), reason)
            await self._write(ids, lambda: self._queue.release(
                ids, now, not_before=0, errcode=s.errcode, errmsg=s.errmsg,
                count_attempt=False))
            await self._write(ids, lambda: self._queue.set_pause(s.not_before, reason, now))
            self._note_pause(s.not_before, reason)
        else:
            log.error("%s failed for good for %s: WeChat API %s. %s", kind,
                      ", ".join(r.openid for r in rows), describe_error(s.errcode, s.errmsg),
                      explain(s.errcode))
            await self._write(ids, lambda: self._queue.finish(
                ids, now, "failed", errcode=s.errcode, errmsg=s.errmsg))
            self._metrics.actions.labels(str(kind), "failed").inc(len(rows))

    def _note_pause(self, until: float, reason: str) -> None:
        self._paused_until, self._paused_reason = until, reason

    async def _write(self, ids: list[int], write: Callable[[], Awaitable[None]]) -> None:
        """Record an outcome for rows ``ids``, again and again until the database takes it.

        The outcome is what WeChat answered: sending the rows again instead (a release
        after an acked blacklist) would count a false attempt, and leaving them claimed
        would strand them, since this live owner's claims are never stale.
        """
        failures = 0
        while True:
            try:
                await write()
            except Exception as exc:  # locked or full database: kept and retried, not lost
                failures += 1
                self._unsettled.update(ids)
                self._storage_error = f"{exc.__class__.__name__}: {exc}"
                wait = self._write_backoff.delay(failures, self._rng)
                log.log(logging.ERROR if failures == 1 else logging.WARNING,
                        "could not record the outcome of %d actions (%s); retrying in %.1f s",
                        len(ids), self._storage_error, wait)
                await asyncio.sleep(wait)  # a backoff, not a poll: the database is refusing
                continue
            if failures:
                log.warning("outcome of %d actions recorded after %d failed writes",
                            len(ids), failures)
            self._unsettled.difference_update(ids)
            if not self._unsettled:
                self._storage_error = ""
            return
