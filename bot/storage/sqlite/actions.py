"""The SQLite action queue behind the batcher: atomic claims, settlement, expiry, status."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlite_utils import Database

from bot.core.models import Action, ActionKind
from bot.core.outbox import CLOCK_SLACK, Claimed, QueueState, settled_state
from bot.storage.owners import owner_alive
from bot.storage.sqlite import kv
from bot.storage.sqlite.records import enqueue_action, pending_count
from bot.storage.sqlite.store import Store

T = TypeVar("T")
_ACTIVE = "('pending', 'sending')"
# An action is ready when no earlier action for the same follower is still queued or in
# flight: that keeps a follower's blacklist -> unblacklist order across the two kinds.
# ``not_before`` is due, or the row was stamped after now: the clock went back since its
# wait was set (core.outbox.CLOCK_SLACK). Parameters: kind, now, now + CLOCK_SLACK.
_READY = (
    "a.status = 'pending' AND a.kind = ? AND (a.not_before <= ? OR a.updated_at > ?)"
    " AND NOT EXISTS ("
    f"SELECT 1 FROM actions b WHERE b.openid = a.openid AND b.id < a.id AND b.status IN {_ACTIVE})"
)


# ---------------------------------------------------------------- functions on a db


def heartbeat(db: Database, owner: str, now: float) -> None:
    """Record that ``owner`` is alive (claims of an owner without a fresh one are stale)."""
    db.execute("INSERT INTO kv (key, value, updated_at) VALUES (?, '{}', ?) ON CONFLICT(key)"
               " DO UPDATE SET updated_at = excluded.updated_at",
               [kv.HEARTBEAT_PREFIX + owner, int(now)])


def release_owner(db: Database, owner: str, now: float) -> int:
    """Give back every claim of ``owner`` (graceful stop) and drop its heartbeat."""
    cur = db.execute("UPDATE actions SET status = 'pending', claimed_by = NULL, claimed_at = NULL,"
                     " updated_at = ? WHERE status = 'sending' AND claimed_by = ?",
                     [int(now), owner])
    kv.delete(db, kv.HEARTBEAT_PREFIX + owner)
    return cur.rowcount


def reclaim_stale(db: Database, now: float, *, stale_after: float,
                  alive: Callable[[str], bool] = owner_alive) -> int:
    """Return to pending the claims of owners that are dead or silent for ``stale_after``."""
    owners = [r[0] for r in db.execute(
        "SELECT DISTINCT claimed_by FROM actions WHERE status = 'sending'").fetchall()]
    stale = []
    for owner in owners:
        beat = db.execute("SELECT updated_at FROM kv WHERE key = ?",
                          [kv.HEARTBEAT_PREFIX + str(owner)]).fetchone()
        if owner is None or beat is None or beat[0] < now - stale_after or not alive(owner):
            stale.append(owner)
    count = 0
    for owner in stale:
        cur = db.execute(
            "UPDATE actions SET status = 'pending', claimed_by = NULL, claimed_at = NULL,"
            " updated_at = ? WHERE status = 'sending' AND claimed_by IS ?", [int(now), owner])
        count += cur.rowcount
        kv.delete(db, kv.HEARTBEAT_PREFIX + str(owner))
    return count


def reclaim_own(db: Database, owner: str, busy: Sequence[int], now: float, *,
                stale_after: float) -> int:
    """Return to pending the claims of live ``owner`` older than ``stale_after`` that it
    is not working on (``busy``): claims it lost track of, which no one else reclaims."""
    cur = db.execute(
        "UPDATE actions SET status = 'pending', claimed_by = NULL, claimed_at = NULL,"
        " updated_at = ? WHERE status = 'sending' AND claimed_by = ?"
        " AND (claimed_at <= ? OR claimed_at > ?)"  # old, or claimed before the clock went back
        f" AND id NOT IN ({_marks(busy)})",
        [int(now), owner, now - stale_after, now + CLOCK_SLACK, *busy])
    return cur.rowcount


def queue_state(db: Database, kind: str, now: float, limit: int) -> QueueState:
    """Ready rows (up to ``limit``), the oldest one's creation time, the next retry time."""
    ready, oldest = db.execute(
        f"SELECT COUNT(*), MIN(created_at) FROM (SELECT a.created_at FROM actions a"
        f" WHERE {_READY} ORDER BY a.id LIMIT ?)", [kind, now, now + CLOCK_SLACK, limit]
    ).fetchone()
    later = db.execute("SELECT MIN(not_before) FROM actions WHERE status = 'pending'"
                       " AND kind = ? AND not_before > ?", [kind, now]).fetchone()[0]
    until, reason = read_pause(db, now)
    return QueueState(int(ready), oldest, later, until, reason)


def claim(db: Database, kind: str, owner: str, now: float, limit: int) -> list[Claimed]:
    """Atomically move up to ``limit`` ready rows of ``kind`` to 'sending' for ``owner``."""
    rows = db.execute(
        "UPDATE actions SET status = 'sending', claimed_by = ?, claimed_at = ?,"
        " attempts = attempts + 1, updated_at = ? WHERE id IN (SELECT a.id FROM actions a"
        f" WHERE {_READY} ORDER BY a.id LIMIT ?)"
        " RETURNING id, openid, kind, rule_id, reason, expires_at, attempts",
        [owner, int(now), int(now), kind, now, now + CLOCK_SLACK, limit],
    ).fetchall()
    return sorted((Claimed(*row) for row in rows), key=lambda c: c.id)


def release(db: Database, ids: Sequence[int], now: float, *, not_before: float,
            errcode: int | None = None, errmsg: str = "", count_attempt: bool = True) -> None:
    """Back to pending, not before ``not_before`` (a float: sub-second backoff is kept)."""
    db.execute(
        f"UPDATE actions SET status = 'pending', claimed_by = NULL, claimed_at = NULL,"
        f" not_before = ?, errcode = ?, errmsg = ?, updated_at = ?,"
        f" attempts = attempts - ? WHERE status = 'sending' AND id IN ({_marks(ids)})",
        [not_before, errcode, errmsg or None, int(now), 0 if count_attempt else 1, *ids],
    )


def complete(db: Database, rows: Sequence[Claimed], now: float) -> None:
    """Mark rows done and record the follower's new state in ``blacklist``
    (:func:`bot.core.outbox.settled_state` says what it becomes).

    Only rows still queued or in flight: a completion written late (the database was
    locked) for a row another process reclaimed and settled since must not overwrite
    the follower's state with an older one, say after their unblacklist went out.
    """
    ts = int(now)
    rows = _unsettled(db, rows)
    if not rows:
        return
    db.execute(f"UPDATE actions SET status = 'done', claimed_by = NULL, errcode = NULL,"
               f" errmsg = NULL, updated_at = ? WHERE id IN ({_marks([r.id for r in rows])})",
               [ts, *[r.id for r in rows]])
    for r in rows:
        old = db.execute("SELECT status, since, expires_at FROM blacklist WHERE openid = ?",
                         [r.openid]).fetchone()
        status, since, end = settled_state(tuple(old) if old else None, r.kind, r.expires_at,
                                           ts)
        db.execute(
            "INSERT INTO blacklist (openid, status, rule_id, reason, since, expires_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(openid) DO UPDATE SET"
            " status = excluded.status, rule_id = excluded.rule_id, reason = excluded.reason,"
            " since = excluded.since, expires_at = excluded.expires_at,"
            " updated_at = excluded.updated_at",
            [r.openid, status, r.rule_id, r.reason, since, end, ts],
        )


def finish(db: Database, ids: Sequence[int], now: float, status: str, *,
           errcode: int | None = None, errmsg: str = "") -> None:
    """Settle rows still queued or in flight for good: ``failed`` (with the errcode) or
    ``dry_run`` (a row another process settled since keeps its outcome)."""
    db.execute(f"UPDATE actions SET status = ?, claimed_by = NULL, errcode = ?, errmsg = ?,"
               f" updated_at = ? WHERE status IN {_ACTIVE} AND id IN ({_marks(ids)})",
               [status, errcode, errmsg or None, int(now), *ids])


def _unsettled(db: Database, rows: Sequence[Claimed]) -> list[Claimed]:
    """Those of ``rows`` still pending or sending."""
    active = {row[0] for row in db.execute(
        f"SELECT id FROM actions WHERE status IN {_ACTIVE} AND id IN ({_marks(rows)})",
        [r.id for r in rows])}
    return [r for r in rows if r.id in active]


def set_pause(db: Database, until: float, reason: str, now: float) -> None:
    """Pause all sending (every process sharing the database) until ``until``."""
    kv.put(db, kv.PAUSE_KEY, json.dumps({"until": until, "reason": reason}), int(now))


def read_pause(db: Database, now: float | None = None) -> tuple[float, str]:
    """The shared pause: ``(until, reason)``, ``(0, "")`` when none, or (given ``now``)
    when it was set after ``now``: the clock went back, and it counts as over."""
    row = db.execute("SELECT value, updated_at FROM kv WHERE key = ?",
                     [kv.PAUSE_KEY]).fetchone()
    if row is None or (now is not None and row[1] > now + CLOCK_SLACK):
        return 0.0, ""
    data = json.loads(row[0])
    return float(data.get("until", 0)), str(data.get("reason", ""))


def queue_expired(db: Database, now: float, *, dry_run: bool = False) -> int:
    """Queue an unblacklist (source 'expiry') for every timed blacklist that has run out.

    Once per expiry: the queued (or sent, or failed) unblacklist is the durable record
    of it, so a failed one is not re-queued every minute. The row keeps its end (NULL
    means permanent, never "lifted"); a new blacklist before the unblacklist goes out
    cancels it and brings its own end. In dry-run the unblacklist is recorded as
    ``dry_run``, also once per expiry.
    """
    # Skipped: a follower with a blacklist still queued or in flight (that newer one,
    # an admin's extension say, sets the end when it completes), and an expiry already
    # recorded by its unblacklist (one that failed for good stays due, and is not
    # re-queued every tick).
    statuses = (("dry_run", "cancelled") if dry_run
                else ("pending", "sending", "done", "failed", "dismissed"))
    due = db.execute(
        "SELECT openid, rule_id, expires_at FROM blacklist b WHERE status = 'blacklisted'"
        " AND expires_at IS NOT NULL AND expires_at <= ? AND NOT EXISTS (SELECT 1 FROM"
        " actions a WHERE a.openid = b.openid AND a.kind = 'blacklist' AND a.status IN"
        " ('pending', 'sending')) AND NOT EXISTS (SELECT 1 FROM actions e WHERE"
        " e.openid = b.openid AND e.kind = 'unblacklist' AND e.source = 'expiry' AND"
        f" e.status IN ({_marks(statuses)}) AND e.created_at >= b.expires_at)",
        [now, *statuses]).fetchall()
    queued = 0
    for openid, rule_id, _ in due:
        action = Action(ActionKind.UNBLACKLIST, openid, rule_id, reason="timed blacklist expired")
        if enqueue_action(db, action, int(now), source="expiry", dry_run=dry_run) is not None:
            queued += 1
    return queued


def _marks(ids: Sequence[Any]) -> str:
    return ",".join("?" * len(ids))


# ---------------------------------------------------------------- the async adapter


class SqliteActionQueue:
    """The batcher's ActionQueue on SQLite, every call through ``Store.call``."""

    def __init__(self, store: Store):
        self._store = store

    async def heartbeat(self, owner: str, now: float) -> None:
        """See :func:`heartbeat`."""
        await self._store.call(lambda db: heartbeat(db, owner, now))

    async def release_owner(self, owner: str, now: float) -> int:
        """See :func:`release_owner`."""
        return await self._store.call(lambda db: release_owner(db, owner, now))

    async def reclaim_stale(self, now: float, stale_after: float) -> int:
        """See :func:`reclaim_stale`."""
        return await self._store.call(lambda db: reclaim_stale(db, now, stale_after=stale_after))

    async def reclaim_own(self, owner: str, busy: Sequence[int], now: float,
                          stale_after: float) -> int:
        """See :func:`reclaim_own`."""
        busy = list(busy)
        return await self._store.call(lambda db: reclaim_own(db, owner, busy, now,
                                                             stale_after=stale_after))

    async def state(self, kind: str, now: float, limit: int) -> QueueState:
        """See :func:`queue_state`."""
        return await self._store.call(lambda db: queue_state(db, kind, now, limit))

    async def claim(self, kind: str, owner: str, now: float, limit: int) -> list[Claimed]:
        """See :func:`claim`."""
        return await self._store.call(lambda db: claim(db, kind, owner, now, limit))

    async def release(self, ids: Sequence[int], now: float, *, not_before: float,
                      errcode: int | None = None, errmsg: str = "",
                      count_attempt: bool = True) -> None:
        """See :func:`release`."""
        await self._store.call(lambda db: release(db, ids, now, not_before=not_before,
                                                  errcode=errcode, errmsg=errmsg,
                                                  count_attempt=count_attempt))

    async def complete(self, rows: Sequence[Claimed], now: float) -> None:
        """See :func:`complete`."""
        await self._store.call(lambda db: complete(db, rows, now))

    async def finish(self, ids: Sequence[int], now: float, status: str, *,
                     errcode: int | None = None, errmsg: str = "") -> None:
        """See :func:`finish`."""
        await self._store.call(lambda db: finish(db, ids, now, status,
                                                        errcode=errcode, errmsg=errmsg))

    async def set_pause(self, until: float, reason: str, now: float) -> None:
        """See :func:`set_pause`."""
        await self._store.call(lambda db: set_pause(db, until, reason, now))

    async def queue_expired(self, now: float, *, dry_run: bool = False) -> int:
        """See :func:`queue_expired`."""
        return await self._store.call(lambda db: queue_expired(db, now, dry_run=dry_run))

    async def count_active(self) -> int:
        """Pending plus in-flight actions (:func:`bot.storage.sqlite.store.pending_count`)."""
        return await self._store.call(pending_count)
