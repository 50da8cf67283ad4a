"""The outbox on PostgreSQL: every replica's batcher claims from one queue.

A claim is ``FOR UPDATE SKIP LOCKED``: two replicas claiming at once take disjoint
rows, so each action is sent once. A claim is a lease held by its owner's heartbeat
(``outbox_owners`` rows in ``kv``): a replica that dies mid-batch stops beating, and
once its beat is ``stale_after`` old any other replica's housekeeping returns its
claims to the queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import asyncpg

from bot.core.models import Action, ActionKind
from bot.core.outbox import CLOCK_SLACK, Claimed, QueueState, settled_state
from bot.storage.owners import owner_alive
from bot.storage.postgres.records import _count, enqueue_action, follower_lock_sql, pending_count
from bot.storage.sqlite import kv

# The kv keys are one list for both backends (bot.storage.sqlite.kv).
HEARTBEAT_PREFIX, PAUSE_KEY = kv.HEARTBEAT_PREFIX, kv.PAUSE_KEY
# ``not_before`` is due, or the row was stamped after now: the clock went back since its
# wait was set (core.outbox.CLOCK_SLACK). Parameters: $1 kind, $2 now (now + CLOCK_SLACK
# is computed in SQL so the callers' parameter lists stay as they were).
_READY = (
    "a.status = 'pending' AND a.kind = $1 AND (a.not_before <= $2"
    f" OR a.updated_at > $2::float8 + {CLOCK_SLACK}) AND NOT EXISTS ("
    "SELECT 1 FROM actions b WHERE b.openid = a.openid AND b.id < a.id"
    " AND b.status IN ('pending', 'sending'))")
_BACK = "status = 'pending', claimed_by = NULL, claimed_at = NULL"


async def put_kv(conn: asyncpg.Connection | asyncpg.Pool, key: str, value: str, now: int
                 ) -> None:
    await conn.execute("INSERT INTO kv (key, value, updated_at) VALUES ($1, $2, $3)"
                       " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
                       " updated_at = excluded.updated_at", key, value, now)


async def get_kv(conn: asyncpg.Connection | asyncpg.Pool, key: str) -> str | None:
    value: str | None = await conn.fetchval("SELECT value FROM kv WHERE key = $1", key)
    return value


async def read_pause(conn: asyncpg.Connection | asyncpg.Pool, now: float | None = None
                     ) -> tuple[float, str]:
    """The shared pause: ``(until, reason)``, ``(0, "")`` when none, or (given ``now``)
    when it was set after ``now``: the clock went back, and it counts as over."""
    row = await conn.fetchrow("SELECT value, updated_at FROM kv WHERE key = $1", PAUSE_KEY)
    if row is None or (now is not None and row[1] > now + CLOCK_SLACK):
        return 0.0, ""
    data = json.loads(row[0])
    return float(data.get("until", 0)), str(data.get("reason", ""))


class PostgresActionQueue:
    """The batcher's ActionQueue, shared by every replica on the database."""

    def __init__(self, pool: Callable[[], asyncpg.Pool]):
        self._pool = pool

    async def heartbeat(self, owner: str, now: float) -> None:
        await put_kv(self._pool(), HEARTBEAT_PREFIX + owner, "{}", int(now))

    async def release_owner(self, owner: str, now: float) -> int:
        async with self._pool().acquire() as conn, conn.transaction():
            status = await conn.execute(
                f"UPDATE actions SET {_BACK}, updated_at = $1 WHERE status = 'sending'"
                " AND claimed_by = $2", int(now), owner)
            await conn.execute("DELETE FROM kv WHERE key = $1", HEARTBEAT_PREFIX + owner)
        return _count(status)

    async def reclaim_stale(self, now: float, stale_after: float) -> int:
        """Claims whose owner's lease (heartbeat) lapsed ``stale_after`` ago, or whose
        owner ran on this host and is gone, go back to pending for any replica."""
        async with self._pool().acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT DISTINCT a.claimed_by, k.updated_at FROM actions a LEFT JOIN kv k"
                " ON k.key = $1 || a.claimed_by WHERE a.status = 'sending'", HEARTBEAT_PREFIX)
            stale = [owner for owner, beat in rows
                     if owner is None or beat is None or beat < now - stale_after
                     or not owner_alive(owner)]
            count = 0
            for owner in stale:
                count += _count(await conn.execute(
                    f"UPDATE actions SET {_BACK}, updated_at = $1 WHERE status = 'sending'"
                    " AND claimed_by IS NOT DISTINCT FROM $2", int(now), owner))
                if owner is not None:
                    await conn.execute("DELETE FROM kv WHERE key = $1",
                                       HEARTBEAT_PREFIX + owner)
        return count

    async def reclaim_own(self, owner: str, busy: Sequence[int], now: float,
                          stale_after: float) -> int:
        return _count(await self._pool().execute(
            f"UPDATE actions SET {_BACK}, updated_at = $1 WHERE status = 'sending'"
            " AND claimed_by = $2 AND NOT (id = ANY($4::bigint[]))"
            # old, or claimed before the clock went back
            " AND (claimed_at <= $3::float8 OR claimed_at > $5::float8)",
            int(now), owner, now - stale_after, list(busy), now + CLOCK_SLACK))

    async def state(self, kind: str, now: float, limit: int) -> QueueState:
        async with self._pool().acquire() as conn:
            ready, oldest = await conn.fetchrow(
                f"SELECT COUNT(*), MIN(created_at) FROM (SELECT a.created_at FROM actions a"
                f" WHERE {_READY} ORDER BY a.id LIMIT $3) r", kind, now, limit)
            later = await conn.fetchval(
                "SELECT MIN(not_before) FROM actions WHERE status = 'pending' AND kind = $1"
                " AND not_before > $2", kind, now)
            until, reason = await read_pause(conn, now)
        return QueueState(int(ready), oldest, later, until, reason)

    async def claim(self, kind: str, owner: str, now: float, limit: int) -> list[Claimed]:
        """Up to ``limit`` ready rows to 'sending' for ``owner``; rows another replica is
        claiming right now are skipped, not waited for."""
        # MATERIALIZED: the picked rows are chosen once (a subquery under IN may be
        # re-run by the plan, and its LIMIT then no longer bounds the batch).
        rows = await self._pool().fetch(
            f"WITH picked AS MATERIALIZED (SELECT a.id FROM actions a WHERE {_READY}"
            " ORDER BY a.id LIMIT $3 FOR UPDATE SKIP LOCKED)"
            " UPDATE actions u SET status = 'sending', claimed_by = $4, claimed_at = $5,"
            " attempts = u.attempts + 1, updated_at = $5 FROM picked WHERE u.id = picked.id"
            " AND u.status = 'pending'"
            " RETURNING u.id, u.openid, u.kind, u.rule_id, u.reason, u.expires_at, u.attempts",
            kind, now, limit, owner, int(now))
        return sorted((Claimed(*row) for row in rows), key=lambda c: c.id)

    async def release(self, ids: Sequence[int], now: float, *, not_before: float,
                      errcode: int | None = None, errmsg: str = "",
                      count_attempt: bool = True) -> None:
        await self._pool().execute(
            f"UPDATE actions SET {_BACK}, not_before = $1, errcode = $2, errmsg = $3,"
            " updated_at = $4, attempts = attempts - $5 WHERE status = 'sending'"
            " AND id = ANY($6::bigint[])", not_before, errcode, errmsg or None, int(now),
            0 if count_attempt else 1, list(ids))

    async def complete(self, rows: Sequence[Claimed], now: float) -> None:
        """Done, and the follower's new state (:func:`bot.core.outbox.settled_state`),
        only for rows still queued or in flight (see the SQLite twin)."""
        ts = int(now)
        async with self._pool().acquire() as conn, conn.transaction():
            for openid in sorted({r.openid for r in rows}):  # one lock order: no deadlock
                await conn.execute(follower_lock_sql(), openid)
            active = {r[0] for r in await conn.fetch(
                "UPDATE actions SET status = 'done', claimed_by = NULL, errcode = NULL,"
                " errmsg = NULL, updated_at = $1 WHERE status IN ('pending', 'sending')"
                " AND id = ANY($2::bigint[]) RETURNING id", ts, [r.id for r in rows])}
            for r in rows:
                if r.id not in active:
                    continue
                old = await conn.fetchrow(
                    "SELECT status, since, expires_at FROM blacklist WHERE openid = $1",
                    r.openid)
                status, since, end = settled_state(tuple(old) if old else None, r.kind,
                                                   r.expires_at, ts)
                await conn.execute(
                    "INSERT INTO blacklist (openid, status, rule_id, reason, since,"
                    " expires_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    " ON CONFLICT (openid) DO UPDATE SET status = excluded.status,"
                    " rule_id = excluded.rule_id, reason = excluded.reason,"
                    " since = excluded.since, expires_at = excluded.expires_at,"
                    " updated_at = excluded.updated_at",
                    r.openid, status, r.rule_id, r.reason, since, end, ts)

    async def finish(self, ids: Sequence[int], now: float, status: str, *,
                     errcode: int | None = None, errmsg: str = "") -> None:
        await self._pool().execute(
            "UPDATE actions SET status = $1, claimed_by = NULL, errcode = $2, errmsg = $3,"
            " updated_at = $4 WHERE status IN ('pending', 'sending')"
            " AND id = ANY($5::bigint[])", status, errcode, errmsg or None, int(now), list(ids))

    async def set_pause(self, until: float, reason: str, now: float) -> None:
        await put_kv(self._pool(), PAUSE_KEY, json.dumps({"until": until, "reason": reason}),
                     int(now))

    async def queue_expired(self, now: float, *, dry_run: bool = False) -> int:
        """An unblacklist for every timed blacklist that ran out, once per expiry (see
        :func:`bot.storage.sqlite.actions.queue_expired`)."""
        statuses = (["dry_run", "cancelled"] if dry_run
                    else ["pending", "sending", "done", "failed", "dismissed"])
        queued = 0
        async with self._pool().acquire() as conn, conn.transaction():
            due = await conn.fetch(
                "SELECT openid, rule_id FROM blacklist b WHERE status = 'blacklisted'"
                " AND expires_at IS NOT NULL AND expires_at <= $1 AND NOT EXISTS (SELECT 1"
                " FROM actions a WHERE a.openid = b.openid AND a.kind = 'blacklist' AND"
                " a.status IN ('pending', 'sending')) AND NOT EXISTS (SELECT 1 FROM actions e"
                " WHERE e.openid = b.openid AND e.kind = 'unblacklist' AND e.source = 'expiry'"
                " AND e.status = ANY($2::text[]) AND e.created_at >= b.expires_at)",
                now, statuses)
            for openid, rule_id in due:
                action = Action(ActionKind.UNBLACKLIST, openid, rule_id,
                                reason="timed blacklist expired")
                if await enqueue_action(conn, action, int(now), source="expiry",
                                        dry_run=dry_run) is not None:
                    queued += 1
        return queued

    async def count_active(self) -> int:
        return await pending_count(self._pool())
