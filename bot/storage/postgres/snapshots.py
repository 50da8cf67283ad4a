"""Blacklist snapshots, the export's leader lock and the report's reads on PostgreSQL.

Same shapes as :mod:`bot.storage.sqlite.snapshots`; see there for what each one means.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import asyncpg

from bot.storage.ports import SnapshotRow
from bot.storage.postgres.actions import get_kv, put_kv
from bot.storage.postgres.records import _count
from bot.storage.postgres.schema import EXPORT_LOCK, dropped_on_failure
from bot.storage.sqlite import kv

STAGING_PREFIX = "staging:"
REPLACED_PREFIX = "replaced:"
EARLIER_PREFIX = "earlier:"  # the run a same-day export replaced (see the SQLite twin)
LAST_RUN_KEY, LOCK_KEY = kv.LAST_RUN_KEY, kv.LOCK_KEY
_COLUMNS = "id, day, taken_at, total, complete, csv_path, report_path"
_DAY = "day ~ '^[0-9]'"

SCANS: dict[str, str] = {
    "missing_from": (
        "SELECT n.openid, NOT EXISTS (SELECT 1 FROM snapshot_entries p WHERE"
        " p.snapshot_id = $1 AND p.openid = n.openid) FROM snapshot_entries n"
        " WHERE n.snapshot_id = $2 AND n.openid > $3 ORDER BY n.openid LIMIT $4"
    ),
    "hand_added": (
        "SELECT n.openid, NOT EXISTS (SELECT 1 FROM blacklist b WHERE b.openid = n.openid"
        " AND (b.status = 'blacklisted' OR b.updated_at >= $1)) FROM snapshot_entries n"
        " WHERE n.snapshot_id = $2 AND n.openid > $3 ORDER BY n.openid LIMIT $4"
    ),
    "hand_removed": (
        "SELECT b.openid, NOT EXISTS (SELECT 1 FROM snapshot_entries n WHERE"
        " n.snapshot_id = $1 AND n.openid = b.openid) FROM blacklist b"
        " WHERE b.status = 'blacklisted' AND b.updated_at < $2 AND b.openid > $3"
        " ORDER BY b.openid LIMIT $4"
    ),
}


def _row(row: Any) -> SnapshotRow | None:
    if row is None:
        return None
    day = row[1].removeprefix(EARLIER_PREFIX)  # an earlier run of the day reads as that day
    return SnapshotRow(row[0], day, row[2], row[3], bool(row[4]), row[5], row[6])


class PostgresSnapshots:
    """The Snapshots port; each call one short statement or transaction."""

    def __init__(self, pool: Callable[[], asyncpg.Pool]):
        self._pool = pool

    async def create_staging(self, day: str, taken_at: int, token: str) -> int:
        return int(await self._pool().fetchval(
            "INSERT INTO snapshots (day, taken_at, total, complete) VALUES ($1, $2, 0, FALSE)"
            " RETURNING id", f"{STAGING_PREFIX}{day}:{token}", taken_at))

    async def add_entries(self, snapshot_id: int, openids: list[str]) -> int:
        return _count(await self._pool().execute(
            "INSERT INTO snapshot_entries (snapshot_id, openid) SELECT $1, o FROM"
            " unnest($2::text[]) o ON CONFLICT DO NOTHING", snapshot_id, openids))

    async def entries_chunk(self, snapshot_id: int, after: str, limit: int) -> list[str]:
        return [r[0] for r in await self._pool().fetch(
            "SELECT openid FROM snapshot_entries WHERE snapshot_id = $1 AND openid > $2"
            " ORDER BY openid LIMIT $3", snapshot_id, after, limit)]

    async def promote(self, snapshot_id: int, day: str, total: int, replaced_token: str
                      ) -> int | None:
        """The staged snapshot becomes the day's; one the day had is kept as its earlier
        run, and the earlier run that one supersedes is returned for deletion."""
        older = None
        async with self._pool().acquire() as conn, conn.transaction():
            old = await conn.fetchval("SELECT id FROM snapshots WHERE day = $1 FOR UPDATE",
                                      day)
            if old is not None:
                older = await conn.fetchval(
                    "SELECT id FROM snapshots WHERE day = $1 FOR UPDATE",
                    f"{EARLIER_PREFIX}{day}")
                if older is not None:  # named for leftovers, should the caller crash
                    await conn.execute("UPDATE snapshots SET day = $1 WHERE id = $2",
                                       f"{REPLACED_PREFIX}{day}:{replaced_token}", older)
                await conn.execute("UPDATE snapshots SET day = $1 WHERE id = $2",
                                   f"{EARLIER_PREFIX}{day}", old)
            await conn.execute("UPDATE snapshots SET day = $1, total = $2, complete = TRUE"
                               " WHERE id = $3", day, total, snapshot_id)
        return int(older) if older is not None else None

    async def set_paths(self, snapshot_id: int, csv_path: str, report_path: str) -> None:
        await self._pool().execute("UPDATE snapshots SET csv_path = $1, report_path = $2"
                                 " WHERE id = $3", csv_path, report_path, snapshot_id)

    async def delete_entries_chunk(self, snapshot_id: int, limit: int) -> int:
        return _count(await self._pool().execute(
            "DELETE FROM snapshot_entries WHERE snapshot_id = $1 AND openid IN (SELECT openid"
            " FROM snapshot_entries WHERE snapshot_id = $1 ORDER BY openid LIMIT $2)",
            snapshot_id, limit))

    async def delete_snapshot_row(self, snapshot_id: int) -> None:
        await self._pool().execute("DELETE FROM snapshots WHERE id = $1", snapshot_id)

    async def leftovers(self) -> list[int]:
        return [r[0] for r in await self._pool().fetch(
            "SELECT id FROM snapshots WHERE day LIKE $1 OR day LIKE $2 ORDER BY id",
            STAGING_PREFIX + "%", REPLACED_PREFIX + "%")]

    async def get(self, day: str) -> SnapshotRow | None:
        return _row(await self._pool().fetchrow(
            f"SELECT {_COLUMNS} FROM snapshots WHERE day = $1 AND complete", day))

    async def previous(self, day: str) -> SnapshotRow | None:
        """The run ``day``'s snapshot replaced that day, else the latest earlier day's."""
        return _row(await self._pool().fetchrow(
            f"SELECT {_COLUMNS} FROM snapshots WHERE complete AND (day = $2 OR (day < $1"
            f" AND {_DAY})) ORDER BY day = $2 DESC, day DESC LIMIT 1", day,
            f"{EARLIER_PREFIX}{day}"))

    async def latest_day(self) -> str | None:
        day: str | None = await self._pool().fetchval(
            f"SELECT MAX(day) FROM snapshots WHERE complete AND {_DAY}")
        return day

    async def prunable(self, before_day: str, keep: int = 2) -> list[int]:
        return [r[0] for r in await self._pool().fetch(
            f"SELECT id FROM snapshots s WHERE complete AND day < $1 AND {_DAY}"
            f" AND id NOT IN (SELECT id FROM snapshots WHERE complete AND {_DAY}"
            " ORDER BY day DESC LIMIT $2) AND EXISTS (SELECT 1 FROM snapshot_entries e"
            " WHERE e.snapshot_id = s.id)"
            # a day's earlier run goes with the day's files
            " UNION SELECT id FROM snapshots s WHERE starts_with(day, $3)"
            " AND substr(day, $4) < $1 AND EXISTS (SELECT 1 FROM snapshot_entries e"
            " WHERE e.snapshot_id = s.id)", before_day, keep, EARLIER_PREFIX,
            len(EARLIER_PREFIX) + 1)]

    async def has_entries(self, snapshot_id: int) -> bool:
        return await self._pool().fetchval(
            "SELECT 1 FROM snapshot_entries WHERE snapshot_id = $1 LIMIT 1",
            snapshot_id) is not None

    async def scan_chunk(self, scan: str, params: list[Any], after: str, limit: int
                         ) -> tuple[str | None, list[str]]:
        rows = await self._pool().fetch(SCANS[scan], *params, after, limit)
        if not rows:
            return None, []
        return rows[-1][0], [r[0] for r in rows if r[1]]

    async def unreflected_actions(self, snapshot_id: int, sample: int
                                  ) -> tuple[int, list[dict[str, Any]]]:
        where = (
            " FROM actions a WHERE a.status IN ('pending', 'sending', 'failed')"
            " AND a.kind IN ('blacklist', 'unblacklist')"
            " AND a.id = (SELECT MAX(id) FROM actions x WHERE x.openid = a.openid"
            "   AND x.kind IN ('blacklist', 'unblacklist'))"
            " AND (a.kind = 'blacklist') = NOT EXISTS (SELECT 1 FROM snapshot_entries n"
            "   WHERE n.snapshot_id = $1 AND n.openid = a.openid)"
        )
        async with self._pool().acquire() as conn:
            count = await conn.fetchval("SELECT COUNT(*)" + where, snapshot_id)
            rows = await conn.fetch("SELECT a.openid, a.kind, a.status, a.errcode, a.errmsg"
                                    + where + " ORDER BY a.id LIMIT $2", snapshot_id, sample)
        return int(count), [dict(r) for r in rows]

    async def action_counts(self, since: int, until: int) -> list[tuple[str, str, int]]:
        return [(r[0], r[1], int(r[2])) for r in await self._pool().fetch(
            "SELECT kind, status, COUNT(*) FROM actions WHERE updated_at >= $1"
            " AND updated_at < $2 AND status IN ('done', 'failed', 'dry_run', 'skipped')"
            " GROUP BY kind, status ORDER BY kind, status", since, until)]

    async def action_failures(self, since: int, until: int, limit: int = 20
                              ) -> list[tuple[str, int | None, str, int]]:
        return [(r[0], r[1], r[2], int(r[3])) for r in await self._pool().fetch(
            "SELECT kind, errcode, COALESCE(MAX(errmsg), ''), COUNT(*) FROM actions"
            " WHERE status = 'failed' AND updated_at >= $1 AND updated_at < $2"
            " GROUP BY kind, errcode ORDER BY COUNT(*) DESC LIMIT $3", since, until, limit)]

    async def failed_actions(self, since: int, until: int, limit: int = 50
                             ) -> list[tuple[str, str, int | None, str]]:
        """Actions that failed for good in the window: (kind, openid, errcode, errmsg)."""
        return [(r[0], r[1], r[2], r[3]) for r in await self._pool().fetch(
            "SELECT kind, openid, errcode, COALESCE(errmsg, '') FROM actions WHERE status ="
            " 'failed' AND updated_at >= $1 AND updated_at < $2 ORDER BY id LIMIT $3",
            since, until, limit)]

    async def rule_hits(self, since: int, until: int) -> list[tuple[str, str, int]]:
        return [(r[0], r[1], int(r[2])) for r in await self._pool().fetch(
            "SELECT rule_id, action, COUNT(*) FROM decisions WHERE created_at >= $1"
            " AND created_at < $2 GROUP BY rule_id, action ORDER BY COUNT(*) DESC, rule_id",
            since, until)]

    async def decisions_per_hour(self, until: int, hours: int = 24) -> list[int]:
        since = until - hours * 3600
        counts = [0] * hours
        for bucket, n in await self._pool().fetch(
                "SELECT (created_at - $1) / 3600, COUNT(*) FROM decisions WHERE"
                " created_at >= $1 AND created_at < $2 GROUP BY 1", since, until):
            if 0 <= bucket < hours:
                counts[int(bucket)] = int(n)
        return counts

    async def read_last_run(self) -> float | None:
        value = await get_kv(self._pool(), LAST_RUN_KEY)
        try:
            return float(json.loads(value)["at"]) if value is not None else None
        except (ValueError, KeyError, TypeError):
            return None

    async def write_last_run(self, at: float, day: str) -> None:
        await put_kv(self._pool(), LAST_RUN_KEY, json.dumps({"at": at, "day": day}), int(at))


class PostgresLeases:
    """The export lock: a session advisory lock on a connection held while it is held.

    A replica that dies loses its connection and with it the lock at once (no TTL to
    wait out); the holder's name is kept in ``kv`` so the others can say who has it.
    """

    def __init__(self, pool: Callable[[], asyncpg.Pool]):
        self._pool = pool
        self._held: dict[str, asyncpg.Connection] = {}

    async def acquire(self, owner: str, now: float, ttl: float) -> str | None:
        if owner in self._held:
            return None  # refreshed: we still hold it while the connection lives
        conn = await self._pool().acquire()
        try:
            with dropped_on_failure(conn):
                got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", EXPORT_LOCK)
                if not got:
                    value = await get_kv(conn, LOCK_KEY)
                    holder = json.loads(value).get("owner") if value else None
                    await self._pool().release(conn)
                    return str(holder or "another replica")
                await put_kv(conn, LOCK_KEY,
                             json.dumps({"owner": owner, "until": now + ttl}), int(now))
        except BaseException:
            await self._pool().release(conn)
            raise
        self._held[owner] = conn
        return None

    async def release_all(self) -> None:
        """Drop every lease held (before the pool closes: it waits for its connections)."""
        for owner in list(self._held):
            await self.release(owner)

    async def release(self, owner: str) -> None:
        conn = self._held.pop(owner, None)
        if conn is None:
            return
        try:
            with dropped_on_failure(conn):
                await conn.execute("DELETE FROM kv WHERE key = $1", LOCK_KEY)
                await conn.execute("SELECT pg_advisory_unlock($1)", EXPORT_LOCK)
        finally:
            await self._pool().release(conn)
