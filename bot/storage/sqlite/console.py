"""The web console's reads and changes on SQLite (the ConsoleStore port).

Reads run on a connection of their own in a worker thread (WAL: they never hold up the
writer thread's group commits); changes go through the store's writer thread, as every
write of the service does, and are the CLI's own functions.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlite_utils import Database

from bot.core.models import Action
from bot.storage.ports import (
    Activity,
    BlacklistedRow,
    DecisionQuery,
    DecisionRow,
    FollowerHistory,
    QueueStatus,
)
from bot.storage.sqlite import admin
from bot.storage.sqlite.schema import open_db
from bot.storage.sqlite.store import Store

T = TypeVar("T")


def activity(db: Database, since: int) -> Activity:
    """Pushes and decisions (by action) recorded at or after ``since``."""
    pushes = db.execute("SELECT COUNT(*) FROM events WHERE received_at >= ?",
                        [since]).fetchone()[0]
    rows = db.execute("SELECT action, COUNT(*) FROM decisions WHERE created_at >= ?"
                      " GROUP BY action", [since]).fetchall()
    return Activity(int(pushes), {str(a): int(n) for a, n in rows})


def decisions(db: Database, query: DecisionQuery) -> list[DecisionRow]:
    """The mod log, newest first, filtered as ``query`` says."""
    where: list[str] = ["1 = 1"]
    params: list[object] = []
    for column, value in (("d.rule_id", query.rule_id), ("d.action", query.action),
                          ("d.openid", query.openid)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    for clause, bound in (("d.created_at >= ?", query.since), ("d.created_at < ?", query.until),
                          ("d.id < ?", query.before_id)):
        if bound:
            where.append(clause)
            params.append(bound)
    rows = db.execute(
        "SELECT d.id, d.created_at, d.openid, d.rule_id, d.action, d.evidence, e.msg_type,"
        " e.event, e.texts, COALESCE(e.purged, 0) FROM decisions d LEFT JOIN events e"
        f" ON e.id = d.event_id WHERE {' AND '.join(where)} ORDER BY d.id DESC LIMIT ?",
        [*params, query.limit]).fetchall()
    return [DecisionRow(int(i), int(at), o, r, a, ev or "", mt, et,
                        json.loads(texts) if texts else {}, bool(purged))
            for i, at, o, r, a, ev, mt, et, texts, purged in rows]


def blacklisted(db: Database, limit: int, search: str = "") -> list[BlacklistedRow]:
    """Followers blacklisted through the service, most recent first (``search``: an
    OpenID prefix)."""
    rows = db.execute(
        "SELECT openid, rule_id, reason, since, expires_at FROM blacklist WHERE status ="
        " 'blacklisted' AND openid >= ? AND openid < ? ORDER BY since DESC, openid LIMIT ?",
        [search, search + "\U0010ffff", limit]).fetchall()
    return [BlacklistedRow(o, r, reason, int(s), e) for o, r, reason, s, e in rows]


class SqliteConsole:
    """The ConsoleStore port on SQLite."""

    def __init__(self, store: Store):
        self._store = store

    async def _read(self, fn: Callable[[Database], T]) -> T:
        def run() -> T:
            db = open_db(self._store.path, migrate=False)
            try:
                return fn(db)
            finally:
                db.close()

        return await asyncio.to_thread(run)

    async def activity(self, since: int) -> Activity:
        return await self._read(lambda db: activity(db, since))

    async def decisions(self, query: DecisionQuery) -> list[DecisionRow]:
        return await self._read(lambda db: decisions(db, query))

    async def follower(self, openid: str, limit: int) -> FollowerHistory:
        return await self._read(lambda db: admin.follower_history(db, openid, limit))

    async def follower_story(self, openid: str, since: int
                             ) -> tuple[dict[str, list[int]], list[tuple[int, str]]]:
        return await self._read(lambda db: (admin.follower_warnings(db, openid, since),
                                            admin.follower_pushes(db, openid, since)))

    async def blacklisted(self, limit: int, search: str = "") -> list[BlacklistedRow]:
        return await self._read(lambda db: blacklisted(db, limit, search))

    async def queue(self, limit: int) -> QueueStatus:
        return await self._read(lambda db: admin.queue_status(db, limit))

    async def admin_actions(self, actions: Sequence[Action], now: int, *, dry_run: bool
                            ) -> tuple[list[int | None], int]:
        verdicts = await self._read(lambda db: admin.admin_verdicts(db, actions, now))
        return await self._store.call(
            lambda db: admin.queue_admin_job(db, verdicts, actions, now, dry_run=dry_run))

    async def requeue(self, openids: Sequence[str], now: int) -> list[int]:
        return await self._store.call(lambda db: admin.requeue_failed(db, openids, now))

    async def dismiss(self, targets: Sequence[int | str], now: int
                      ) -> tuple[list[int], dict[int | str, str]]:
        def work(db: Database) -> tuple[list[int], dict[int | str, str]]:
            unknown = admin.failed_targets(db, targets)
            return admin.dismiss_failed(db, targets, now), unknown

        return await self._store.call(work)

    async def resume(self) -> tuple[float, str]:
        return await self._store.call(admin.resume_sending)

