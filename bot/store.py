"""SQLite storage: schema migrations, events, decisions and the action outbox.

One thread owns the connection (sqlite3 connections belong to one thread): every
database call from the event loop goes through :class:`Store`, which runs it on
that thread and group-commits pushes so that many events share one fsync while
each push is still committed before it is answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from bot.models import MESSAGE_TYPES, Action, ActionKind, Decision, Event, is_valid_openid

log = logging.getLogger(__name__)
T = TypeVar("T")

core = Migrations("bot-core")


@core(name="0001_initial")
def _initial(db: Database) -> None:
    db.execute(
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            dedup_key TEXT NOT NULL UNIQUE,
            openid TEXT NOT NULL,
            account TEXT NOT NULL DEFAULT '',
            msg_type TEXT NOT NULL,
            event TEXT,
            msg_id TEXT,
            create_time INTEGER NOT NULL,
            received_at INTEGER NOT NULL,
            texts TEXT,
            fields TEXT,
            purged INTEGER NOT NULL DEFAULT 0
        )"""
    )
    # No index on openid: every insert pays for each index, and per-follower questions
    # ("why") are answered from decisions and actions, which are indexed by openid.
    db.execute("CREATE INDEX events_received ON events (received_at)")
    db.execute(
        """CREATE TABLE decisions (
            id INTEGER PRIMARY KEY,
            event_id INTEGER REFERENCES events(id),
            openid TEXT NOT NULL,
            rule_id TEXT NOT NULL,
            action TEXT NOT NULL,
            evidence TEXT NOT NULL DEFAULT '',
            field TEXT,
            span_start INTEGER,
            span_end INTEGER,
            created_at INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX decisions_openid ON decisions (openid, created_at)")
    db.execute("CREATE INDEX decisions_created ON decisions (created_at)")
    # The outbox: one row per decided API action. status: pending -> sending -> done |
    # failed; cancelled (superseded), skipped (already in that state), dry_run.
    db.execute(
        """CREATE TABLE actions (
            id INTEGER PRIMARY KEY,
            openid TEXT NOT NULL,
            kind TEXT NOT NULL,
            rule_id TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL DEFAULT 'rule',
            event_id INTEGER REFERENCES events(id),
            status TEXT NOT NULL DEFAULT 'pending',
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            not_before INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            claimed_by TEXT,
            claimed_at INTEGER,
            errcode INTEGER,
            errmsg TEXT,
            expires_at INTEGER
        )"""
    )
    db.execute("CREATE INDEX actions_status ON actions (status, kind, id)")
    db.execute("CREATE INDEX actions_openid ON actions (openid, status)")
    # Our view of who is blacklisted through us (and when a timed blacklist ends).
    db.execute(
        """CREATE TABLE blacklist (
            openid TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            rule_id TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL DEFAULT '',
            since INTEGER NOT NULL,
            expires_at INTEGER,
            updated_at INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX blacklist_expiry ON blacklist (status, expires_at)")
    db.execute(
        """CREATE TABLE kv (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            updated_at INTEGER NOT NULL
        )"""
    )


@core(name="0002_snapshots")
def _snapshots(db: Database) -> None:
    # One snapshot per export day (a second export that day replaces it).
    db.execute(
        """CREATE TABLE snapshots (
            id INTEGER PRIMARY KEY,
            day TEXT NOT NULL UNIQUE,
            taken_at INTEGER NOT NULL,
            total INTEGER NOT NULL DEFAULT 0,
            complete INTEGER NOT NULL DEFAULT 0,
            csv_path TEXT,
            report_path TEXT
        )"""
    )
    db.execute(
        """CREATE TABLE snapshot_entries (
            snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
            openid TEXT NOT NULL,
            PRIMARY KEY (snapshot_id, openid)
        ) WITHOUT ROWID"""
    )


# Schema changes go here as new named migrations (never edit an applied one).
MIGRATION_SETS: list[Migrations] = [core]


def open_db(path: str | Path, *, migrate: bool = True, synchronous: str = "full") -> Database:
    """Open (creating if needed) the SQLite file in WAL mode and apply migrations.

    The connection belongs to the calling thread; the CLI uses this directly and
    :class:`Store` calls it on its own thread.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=10.0, isolation_level=None)
    db = Database(conn)
    # WAL: readers (the CLI) never block the writer. FULL (default): each COMMIT fsyncs
    # the WAL, so an answered push survives a power cut too; group commit (Store) spreads
    # that one fsync over every push that arrived meanwhile. NORMAL skips it: still safe
    # against a process crash (kill -9), not against the machine losing power.
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'NORMAL' if synchronous == 'normal' else 'FULL'}")
    db.execute("PRAGMA busy_timeout=10000")
    db.execute("PRAGMA foreign_keys=ON")
    if migrate:
        for migrations in MIGRATION_SETS:
            migrations.apply(db)
    return db


# ---------------------------------------------------------------- events & outbox


@dataclass(frozen=True, slots=True)
class Recorded:
    """Result of recording a push: its row id, or ``duplicate`` for a WeChat retry."""

    event_id: int | None
    duplicate: bool


def insert_event(db: Database, event: Event, decision: Decision, now: int,
                 *, dry_run: bool = False) -> Recorded:
    """Insert one event with its decision rows and outbox actions (caller holds the txn)."""
    return record_pushes(db, [Push(event_row(event, now), event.openid, decision, dry_run)],
                         now)[0]


_EVENT_COLUMNS = ("dedup_key, openid, account, msg_type, event, msg_id, create_time,"
                  " received_at, texts, fields")
_DECISION_COLUMNS = ("event_id, openid, rule_id, action, evidence, field, span_start,"
                     " span_end, created_at")
# Rows per multi-row INSERT: 1000 x 10 columns stays far below SQLite's 32766 variables.
_ROWS_PER_INSERT = 1000


def event_row(event: Event, now: int) -> tuple[Any, ...]:
    """The ``events`` row of an event, in ``_EVENT_COLUMNS`` order."""
    return (
        event.dedup_key, event.openid, event.account, event.msg_type, event.event,
        event.msg_id, event.create_time, now,
        json.dumps(dict(event.texts), ensure_ascii=False),
        _extra_fields(event),
    )


@dataclass(frozen=True, slots=True)
class Push:
    """A push to record: its ``events`` row, the decision about it, and the mode."""

    row: tuple[Any, ...]
    openid: str
    decision: Decision
    dry_run: bool = False


def record_pushes(db: Database, pushes: list[Push], now: int) -> list[Recorded]:
    """Record many pushes, their decisions and actions, in a few statements.

    One SELECT finds retries already stored, one multi-row INSERT stores the events
    and one the decisions; only actions (rare) cost statements of their own. The
    writer thread needs the GIL back after every statement, so under load this is
    what keeps it from queueing behind the event loop once per push.
    """
    seen = _stored_keys(db, [push.row[0] for push in pushes])
    results: list[Recorded] = []
    fresh: list[Push] = []
    for push in pushes:
        duplicate = push.row[0] in seen
        seen.add(push.row[0])
        results.append(Recorded(None, duplicate))
        if not duplicate:
            fresh.append(push)
    ids = _insert_many(db, "events", _EVENT_COLUMNS, [push.row for push in fresh])
    decided = [(event_id, push) for event_id, push in zip(ids, fresh, strict=True)
               if push.decision.hits]
    _insert_many(db, "decisions", _DECISION_COLUMNS, [
        (event_id, push.openid, h.rule_id, str(h.action), h.evidence, h.field,
         h.span[0] if h.span else None, h.span[1] if h.span else None, now)
        for event_id, push in decided for h in push.decision.hits
    ])
    for event_id, push in decided:
        for action in push.decision.actions:
            enqueue_action(db, action, now, event_id=event_id, dry_run=push.dry_run)
    by_id = iter(ids)
    return [result if result.duplicate else Recorded(next(by_id), False) for result in results]


def insert_decision(db: Database, openid: str, decision: Decision, now: int,
                    *, source: str = "rule", dry_run: bool = False) -> None:
    """Store a decision that no push carried (an admin's) and queue its actions."""
    _insert_many(db, "decisions", _DECISION_COLUMNS, [
        (None, openid, h.rule_id, str(h.action), h.evidence, h.field,
         h.span[0] if h.span else None, h.span[1] if h.span else None, now)
        for h in decision.hits
    ])
    for action in decision.actions:
        enqueue_action(db, action, now, source=source, dry_run=dry_run)


def _stored_keys(db: Database, keys: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(keys), _ROWS_PER_INSERT):
        chunk = keys[start:start + _ROWS_PER_INSERT]
        joined = db.conn.execute(
            "SELECT group_concat(dedup_key, char(31)) FROM events WHERE dedup_key IN"
            f" ({','.join('?' * len(chunk))})", chunk,
        ).fetchone()[0]
        if joined:
            found.update(joined.split("\x1f"))
    return found


def _insert_many(db: Database, table: str, columns: str, rows: list[tuple[Any, ...]]
                 ) -> list[int]:
    """Multi-row INSERT; the new rowids, in order (one statement holds the write lock,
    and SQLite gives each row the table's largest rowid plus one: they are consecutive)."""
    ids: list[int] = []
    width = columns.count(",") + 1
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start:start + _ROWS_PER_INSERT]
        placeholders = ",".join([f"({','.join('?' * width)})"] * len(chunk))
        cur = db.conn.execute(f"INSERT INTO {table} ({columns}) VALUES {placeholders}",
                              [value for row in chunk for value in row])
        last = int(cur.lastrowid or 0)
        ids.extend(range(last - len(chunk) + 1, last + 1))
    return ids


def _extra_fields(event: Event) -> str | None:
    """The raw fields worth keeping: an event's or unknown type's details (EventKey ...).

    A known message type is fully described by its columns and ``texts``.
    """
    if event.msg_type in MESSAGE_TYPES:
        return None
    return json.dumps(dict(event.fields), ensure_ascii=False)


# A permanent blacklist (NULL expiry) outranks every timed one; two timed ones keep
# the later end.
_LATER_EXPIRY = "CASE WHEN expires_at IS NULL THEN NULL ELSE MAX(expires_at, ?) END"


def enqueue_action(db: Database, action: Action, now: int, *, event_id: int | None = None,
                   source: str = "rule", dry_run: bool = False) -> int | None:
    """Queue one API action, collapsing it against what is already queued or applied.

    A queued action of the same kind for the same follower absorbs it; an opposite
    queued action is cancelled by it (an unblacklist cancels a queued blacklist, and
    the reverse); a follower already in the asked state through us is not sent again,
    unless an admin asked for it from the CLI (``source="cli"``). In dry-run the row is
    written as ``dry_run``: recorded as a would-be action, never claimed, never sent.
    Returns the new outbox row id, or None when nothing needed queueing.
    """
    kind = ActionKind(action.kind)
    if not is_valid_openid(action.openid):
        log.warning("not queueing %s for malformed OpenID %r", kind, action.openid[:64])
        return None
    status = "dry_run" if dry_run else "pending"
    queued = db.execute("SELECT id, kind FROM actions WHERE openid = ? AND status = ?",
                        [action.openid, status]).fetchall()
    if any(k == kind for _, k in queued):
        if action.expires_at is not None and kind is ActionKind.BLACKLIST:
            db.execute(f"UPDATE actions SET expires_at = {_LATER_EXPIRY}, updated_at = ?"
                       " WHERE openid = ? AND status = ? AND kind = ?",
                       [action.expires_at, now, action.openid, status, str(kind)])
        return None
    cancelled = [row_id for row_id, k in queued if k != kind]
    if cancelled:
        db.execute(f"UPDATE actions SET status = 'cancelled', updated_at = ?, errmsg = ?"
                   f" WHERE id IN ({','.join('?' * len(cancelled))})",
                   [now, f"superseded by {kind}", *cancelled])
    if not dry_run and source != "cli" and _needless(db, action, kind, now, bool(cancelled)):
        return None
    cur = db.execute(
        "INSERT INTO actions (openid, kind, rule_id, reason, source, event_id, status,"
        " created_at, updated_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        [action.openid, str(kind), action.rule_id, action.reason, source, event_id, status,
         now, now, action.expires_at],
    )
    return cur.lastrowid


def _needless(db: Database, action: Action, kind: ActionKind, now: int,
              cancelled_one: bool) -> bool:
    """True when the follower is already in the asked state through us (or never left it)."""
    if db.execute("SELECT 1 FROM actions WHERE openid = ? AND status = 'sending'",
                  [action.openid]).fetchone():
        return False  # the call in flight may fail: queue this one behind it
    state = db.execute("SELECT status FROM blacklist WHERE openid = ?",
                       [action.openid]).fetchone()
    if state is None:
        return cancelled_one  # its opposite was cancelled before it was ever sent
    wanted = "blacklisted" if kind is ActionKind.BLACKLIST else "removed"
    if state[0] != wanted:
        return False
    if kind is ActionKind.BLACKLIST and action.expires_at is not None:
        db.execute(f"UPDATE blacklist SET expires_at = {_LATER_EXPIRY}, updated_at = ?"
                   " WHERE openid = ?", [action.expires_at, now, action.openid])
    return True


def row_to_event(row: sqlite3.Row | tuple[Any, ...], columns: Sequence[str]) -> Event:
    """Rebuild an :class:`Event` from an ``events`` row (for replay and ``why``)."""
    data = dict(zip(columns, row, strict=True))
    return Event(
        openid=data["openid"], account=data["account"], create_time=data["create_time"],
        msg_type=data["msg_type"], event=data["event"], msg_id=data["msg_id"],
        texts=MappingProxyType(json.loads(data["texts"] or "{}")),
        fields=MappingProxyType(json.loads(data["fields"] or "{}")),
    )


def iter_events(db: Database, since: int = 0) -> Iterator[tuple[int, Event]]:
    """Yield ``(event_id, Event)`` for stored events received at or after ``since``."""
    cur = db.execute("SELECT * FROM events WHERE received_at >= ? ORDER BY id", [since])
    columns = [d[0] for d in cur.description]
    for row in cur:
        yield row[0], row_to_event(row, columns)


def purge_content(db: Database, before: int, limit: int = 5000) -> int:
    """Drop followers' message content received before ``before``, at most ``limit`` rows.

    Bounded so that one call never holds the writer (and so every push) for long;
    call it again while it returns ``limit``.
    """
    cur = db.execute(
        "UPDATE events SET texts = NULL, fields = NULL, purged = 1 WHERE id IN ("
        " SELECT id FROM events WHERE received_at < ? AND purged = 0 LIMIT ?)",
        [before, limit],
    )
    return cur.rowcount


def pending_count(db: Database) -> int:
    """How many outbox actions wait to be sent (pending or being sent)."""
    row = db.execute(
        "SELECT COUNT(*) FROM actions WHERE status IN ('pending', 'sending')"
    ).fetchone()
    return int(row[0])


# ---------------------------------------------------------------- the owning thread


@dataclass(slots=True)
class _Job:
    fn: Callable[[Database], Any]
    future: asyncio.Future[Any]
    # A push to record: stored in bulk with the other pushes of the batch.
    push: Push | None = None


class Store:
    """The database's single owner: runs calls on one thread, group-committing them.

    Calls queued while a transaction is open join the next one (up to
    ``max_batch``): under load one COMMIT serves many pushes; when idle a lone
    push commits at once. A call's future resolves only after its COMMIT.
    """

    def __init__(self, path: str | Path, *, max_batch: int = 256, synchronous: str = "full"):
        self.path = Path(path)
        self.max_batch = max_batch
        self.synchronous = synchronous
        self._queue: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        # Calls made during one event-loop turn travel to the thread together: one
        # wake-up of the thread per turn rather than per push.
        self._outgoing: list[_Job] = []
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self.commits = 0
        self.committed_calls = 0

    async def start(self) -> None:
        """Open the database on the owning thread and apply migrations."""
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()
        await asyncio.get_running_loop().run_in_executor(None, self._ready.wait)
        if self._open_error is not None:
            raise self._open_error

    async def call(self, fn: Callable[[Database], T]) -> T:
        """Run ``fn(db)`` on the owning thread inside a transaction; return after COMMIT."""
        return await self._submit(fn)

    async def _submit(self, fn: Callable[[Database], T], push: Push | None = None) -> T:
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("store is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._outgoing:
            loop.call_soon(self._send_outgoing)
        self._outgoing.append(_Job(fn, future, push))
        return await future

    def _send_outgoing(self) -> None:
        jobs, self._outgoing = self._outgoing, []
        self._queue.put(jobs)

    async def record(self, event: Event, decision: Decision, *, dry_run: bool = False
                     ) -> Recorded:
        """Commit a push with its decision and actions; a WeChat retry comes back duplicate."""
        now = int(time.time())
        push = Push(event_row(event, now), event.openid, decision, dry_run)
        return await self._submit(lambda db: record_pushes(db, [push], now)[0], push)

    async def close(self) -> None:
        """Finish queued calls, then close the connection and stop the thread."""
        if self._thread is None:
            return
        if self._outgoing:
            self._send_outgoing()
        self._queue.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._thread = None

    def _run(self) -> None:
        try:
            db = open_db(self.path, synchronous=self.synchronous)
        except BaseException as exc:  # reported to start() on the event loop
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._serve(db)
        finally:
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
            if stop:
                return

    def _run_batch(self, db: Database, jobs: list[_Job]) -> None:
        outcomes: list[tuple[_Job, bool, Any]] = []
        try:
            db.conn.execute("BEGIN IMMEDIATE")
            pushes = [job for job in jobs if job.push is not None]
            if pushes:
                recorded = record_pushes(db, [job.push for job in pushes if job.push],
                                         int(time.time()))
                outcomes.extend(zip(pushes, [True] * len(pushes), recorded, strict=True))
            outcomes.extend(self._run_job(db, job) for job in jobs if job.push is None)
            db.conn.execute("COMMIT")
            self.commits += 1
            self.committed_calls += len(jobs)
        except sqlite3.Error as exc:
            log.error("database transaction failed: %s", exc)
            if db.conn.in_transaction:
                db.execute("ROLLBACK")
            outcomes = [(job, False, exc) for job in jobs]
        # One wake-up of each event loop per batch, not one per call.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, bool, Any]]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].future.get_loop(), []).append(outcome)
        for loop, settled in by_loop.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle_all, settled)

    @staticmethod
    def _run_job(db: Database, job: _Job) -> tuple[_Job, bool, Any]:
        savepoint = "job"
        db.execute(f"SAVEPOINT {savepoint}")
        try:
            result = job.fn(db)
        except Exception as exc:  # the caller gets it; the batch goes on
            db.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
            db.execute(f"RELEASE SAVEPOINT {savepoint}")
            return job, False, exc
        db.execute(f"RELEASE SAVEPOINT {savepoint}")
        return job, True, result


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
