"""The web console's reads and changes on PostgreSQL (the ConsoleStore port).

The twin of :mod:`bot.storage.sqlite.console`: reads on a pooled connection, changes in
one transaction each, through the CLI's own functions (:mod:`bot.storage.postgres.admin`),
so a change made in one replica's console is the same rows the CLI would write.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias, TypeVar

import asyncpg

from bot.core.models import Action
from bot.storage.ports import (
    Activity,
    BlacklistedRow,
    DecisionQuery,
    DecisionRow,
    FollowerHistory,
    QueueStatus,
)
from bot.storage.postgres import admin

T = TypeVar("T")
Conn: TypeAlias = asyncpg.Connection


async def activity(conn: Conn, since: int) -> Activity:
    """Pushes and decisions (by action) recorded at or after ``since``."""
    pushes = await conn.fetchval("SELECT COUNT(*) FROM events WHERE received_at >= $1", since)
    rows = await conn.fetch("SELECT action, COUNT(*) FROM decisions WHERE created_at >= $1"
                            " GROUP BY action", since)
    return Activity(int(pushes), {str(a): int(n) for a, n in rows})


async def decisions(conn: Conn, query: DecisionQuery) -> list[DecisionRow]:
    """The mod log, newest first, filtered as ``query`` says."""
    where: list[str] = ["TRUE"]
    params: list[object] = []
    for clause, value in (("d.rule_id =", query.rule_id), ("d.action =", query.action),
                          ("d.openid =", query.openid), ("d.created_at >=", query.since),
                          ("d.created_at <", query.until), ("d.id <", query.before_id)):
        if value:
            params.append(value)
            where.append(f"{clause} ${len(params)}")
    params.append(query.limit)
    rows = await conn.fetch(
        "SELECT d.id, d.created_at, d.openid, d.rule_id, d.action, d.evidence, e.msg_type,"
        " e.event, e.texts, COALESCE(e.purged, FALSE) FROM decisions d LEFT JOIN events e"
        f" ON e.id = d.event_id WHERE {' AND '.join(where)} ORDER BY d.id DESC"
        f" LIMIT ${len(params)}", *params)
    return [DecisionRow(int(i), int(at), o, r, a, ev or "", mt, et,
                        json.loads(texts) if texts else {}, bool(purged))
            for i, at, o, r, a, ev, mt, et, texts, purged in rows]


async def blacklisted(conn: Conn, limit: int, search: str = "") -> list[BlacklistedRow]:
    """Followers blacklisted through the service, most recent first (``search``: an
    OpenID prefix)."""
    rows = await conn.fetch(
        "SELECT openid, rule_id, reason, since, expires_at FROM blacklist WHERE status ="
        " 'blacklisted' AND starts_with(openid, $1) ORDER BY since DESC, openid LIMIT $2",
        search, limit)
    return [BlacklistedRow(o, r, reason, int(s), e) for o, r, reason, s, e in rows]


class PostgresConsole:
    """The ConsoleStore port on the database every replica shares."""

    def __init__(self, pool: Callable[[], asyncpg.Pool]):
        self._pool = pool

    async def _run(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        async with self._pool().acquire() as conn, conn.transaction():
            return await work(conn)

    async def activity(self, since: int) -> Activity:
        return await self._run(lambda conn: activity(conn, since))

    async def decisions(self, query: DecisionQuery) -> list[DecisionRow]:
        return await self._run(lambda conn: decisions(conn, query))

    async def follower(self, openid: str, limit: int) -> FollowerHistory:
        return await self._run(lambda conn: admin.follower_history(conn, openid, limit))

    async def follower_story(self, openid: str, since: int
                             ) -> tuple[dict[str, list[int]], list[tuple[int, str]]]:
        async def work(conn: Conn) -> tuple[dict[str, list[int]], list[tuple[int, str]]]:
            return (await admin.follower_warnings(conn, openid, since),
                    await admin.follower_pushes(conn, openid, since))

        return await self._run(work)

    async def blacklisted(self, limit: int, search: str = "") -> list[BlacklistedRow]:
        return await self._run(lambda conn: blacklisted(conn, limit, search))

    async def queue(self, limit: int) -> QueueStatus:
        return await self._run(lambda conn: admin.queue_status(conn, limit))

    async def admin_actions(self, actions: Sequence[Action], now: int, *, dry_run: bool
                            ) -> tuple[list[int | None], int]:
        return await self._run(
            lambda conn: admin.queue_admin_job(conn, actions, now, dry_run=dry_run))

    async def requeue(self, openids: Sequence[str], now: int) -> list[int]:
        return await self._run(lambda conn: admin.requeue_failed(conn, openids, now))

    async def dismiss(self, targets: Sequence[int | str], now: int
                      ) -> tuple[list[int], dict[int | str, str]]:
        return await self._run(lambda conn: admin.dismiss_failed(conn, targets, now))

    async def resume(self) -> tuple[float, str]:
        return await self._run(admin.resume_sending)
