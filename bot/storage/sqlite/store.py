"""The database's owner: one thread runs every call, group-committing pushes.

sqlite3 connections belong to one thread: every database call from the event loop
goes through :class:`Store`, which runs it on that thread and group-commits pushes
so that many share one fsync while each is still committed before it is answered.
The schema lives in :mod:`bot.storage.sqlite.schema`, the SQL on the tables in
:mod:`bot.storage.sqlite.records` (re-exported here, the names callers know the store by).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

from bot.core.models import Decision, Event, Recorded
from bot.storage.sqlite.checkpoint import Checkpointer
from bot.storage.sqlite.records import (
    Push,
    enqueue_action,
    event_row,
    insert_decision,
    insert_event,
    iter_events,
    pending_count,
    purge_content,
    record_pushes,
    row_to_event,
)
from bot.storage.sqlite.schema import open_db

__all__ = [
    "Push", "Store", "enqueue_action", "event_row", "insert_decision",
    "insert_event", "iter_events", "open_db", "pending_count", "purge_content",
    "record_pushes", "row_to_event", "run_sync",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class _Job:
    # A call to run, or a push to record in bulk with the batch's other pushes.
    work: Callable[[Database], Any] | Push
    future: asyncio.Future[Any]


class Store:
    """The database's single owner: runs calls on one thread, group-committing them.

    Calls queued while a transaction is open join the next one (up to
    ``max_batch``): under load one COMMIT serves many pushes; when idle a lone
    push commits at once. A call's future resolves only after its COMMIT.
    """

    def __init__(self, path: str | Path, *, max_batch: int = 256, synchronous: str = "full",
                 clock: Callable[[], float] = time.time, busy_timeout: float = 10.0):
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._clock = clock
        self.max_batch = max_batch
        self.synchronous = synchronous
        self._queue: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        # Calls made during one event-loop turn travel to the thread together: one
        # wake-up of the thread per turn rather than per push.
        self._outgoing: list[_Job] = []
        self._thread: threading.Thread | None = None
        # True while the writer thread serves; read on every call (Thread.is_alive()
        # takes a lock and costs a Python call per push).
        self._serving = False
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self.commits = 0
        self.committed_calls = 0
        self.checkpointer = Checkpointer(self.path, busy_timeout=busy_timeout)

    async def start(self) -> None:
        """Open the database on the owning thread and apply migrations."""
        self._ready.clear()
        self._open_error = None
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()
        await asyncio.get_running_loop().run_in_executor(None, self._ready.wait)
        if self._open_error is not None:
            raise self._open_error

    async def call(self, fn: Callable[[Database], T]) -> T:
        """Run ``fn(db)`` on the owning thread inside a transaction; return after COMMIT."""
        result: T = await self._enqueue(fn)
        return result

    def _enqueue(self, work: Callable[[Database], Any] | Push) -> asyncio.Future[Any]:
        """Queue ``work`` for the writer thread; the future resolves after its COMMIT."""
        if not self._serving:
            raise RuntimeError("store is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._outgoing:
            loop.call_soon(self._send_outgoing)
        self._outgoing.append(_Job(work, future))
        return future

    def _send_outgoing(self) -> None:
        jobs, self._outgoing = self._outgoing, []
        self._queue.put(jobs)

    async def record(self, event: Event, decision: Decision, *, dry_run: bool = False
                     ) -> Recorded:
        """Commit a push with its decision and actions; a WeChat retry comes back duplicate."""
        now = int(self._clock())
        push = Push(event_row(event, now), event.openid, decision, dry_run)
        recorded: Recorded = await self._enqueue(push)
        return recorded

    async def close(self) -> None:
        """Finish queued calls, then close the connection and stop the thread."""
        if self._thread is None:
            return
        self._serving = False  # a call from now on raises rather than waits forever
        if self._outgoing:
            self._send_outgoing()
        self._queue.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._thread = None

    def _run(self) -> None:
        try:
            db = open_db(self.path, synchronous=self.synchronous,
                         busy_timeout=self.busy_timeout)
        except BaseException as exc:  # reported to start() on the event loop
            self._open_error = exc
            self._ready.set()
            return
        # Checkpoints run beside this thread (bot.storage.sqlite.checkpoint), not inside
        # the COMMIT that crosses SQLite's automatic threshold.
        self.checkpointer.take_over(db.conn)
        self._serving = True
        self._ready.set()
        try:
            self._serve(db)
        finally:
            self._serving = False
            self.checkpointer.stop()
            db.close()

    def _serve(self, db: Database) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = list(first)
            stop = False
            while len(jobs) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                jobs.extend(more)
            self._run_batch(db, jobs)
            self.checkpointer.after_batch(db.conn)
            if stop:
                return

    def _run_batch(self, db: Database, jobs: list[_Job]) -> None:
        try:
            outcomes = self._commit(db, jobs)
        except Exception as exc:  # every caller hears of it; the writer thread lives on
            _rollback(db)
            if len(jobs) > 1 and not isinstance(exc, sqlite3.OperationalError):
                # One bad call must not fail the pushes that shared its transaction (each
                # would come back as a retry); a locked, full or broken database fails
                # them all at once instead of once per call.
                log.warning("database transaction of %d calls failed (%r): committing each"
                            " on its own", len(jobs), exc)
                outcomes = [self._commit_alone(db, job) for job in jobs]
            else:
                log.error("database transaction failed, %d calls rolled back: %r",
                          len(jobs), exc)
                outcomes = [(job, False, exc) for job in jobs]
        # One wake-up of each event loop per batch, not one per call.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, bool, Any]]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].future.get_loop(), []).append(outcome)
        for loop, settled in by_loop.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle_all, settled)

    def _commit(self, db: Database, jobs: list[_Job]) -> list[tuple[_Job, bool, Any]]:
        """Run ``jobs`` in one transaction; raises (uncommitted) if a push or COMMIT fails."""
        outcomes: list[tuple[_Job, bool, Any]] = []
        db.conn.execute("BEGIN IMMEDIATE")
        pushes = [(job, job.work) for job in jobs if isinstance(job.work, Push)]
        if pushes:
            recorded = record_pushes(db, [push for _, push in pushes], int(self._clock()))
            outcomes.extend((job, True, result)
                            for (job, _), result in zip(pushes, recorded, strict=True))
        outcomes.extend(self._run_job(db, job) for job in jobs if not isinstance(job.work, Push))
        db.conn.execute("COMMIT")
        self.commits += 1
        self.committed_calls += len(jobs)
        return outcomes

    def _commit_alone(self, db: Database, job: _Job) -> tuple[_Job, bool, Any]:
        try:
            return self._commit(db, [job])[0]
        except Exception as exc:
            _rollback(db)
            log.error("database call failed and was rolled back: %r", exc)
            return job, False, exc

    @staticmethod
    def _run_job(db: Database, job: _Job) -> tuple[_Job, bool, Any]:
        savepoint = "job"
        db.execute(f"SAVEPOINT {savepoint}")
        try:
            assert callable(job.work)
            result = job.work(db)
        except Exception as exc:  # the caller gets it; the batch goes on
            db.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
            db.execute(f"RELEASE SAVEPOINT {savepoint}")
            return job, False, exc
        db.execute(f"RELEASE SAVEPOINT {savepoint}")
        return job, True, result


def _rollback(db: Database) -> None:
    if db.conn.in_transaction:
        db.conn.execute("ROLLBACK")


def _settle_all(outcomes: list[tuple[_Job, bool, Any]]) -> None:
    for job, ok, value in outcomes:
        if job.future.done():
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


def run_sync(path: str | Path, fn: Callable[[Database], T]) -> T:
    """Open the database, run ``fn`` in one transaction, close (for the CLI)."""
    db = open_db(path)
    try:
        # IMMEDIATE: take the write lock up front (waiting up to busy_timeout for the
        # service's commit); a deferred BEGIN that reads then writes would fail at once.
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db)
        except BaseException:
            db.conn.execute("ROLLBACK")
            raise
        db.conn.execute("COMMIT")
        return result
    finally:
        db.close()
