"""The outbox's rules on both backends: queueing, collapsing, settling and expiry give
the same results on SQLite and PostgreSQL (each backend reads the follower's rows and
asks ``bot.core.outbox``; these tests pin that both ask and write alike)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.config import build_config
from bot.core.models import Action, ActionKind
from bot.core.outbox import Claimed
from bot.services import build_services
from bot.storage.sqlite.adapters import SqliteStorage
from tests.backends import fetch

OPENID = "oOutboxFollower000000000001"


def blacklist(openid: str = OPENID, expires_at: int | None = None) -> Action:
    return Action(ActionKind.BLACKLIST, openid, "r1", "spam", expires_at)


def unblacklist(openid: str = OPENID) -> Action:
    return Action(ActionKind.UNBLACKLIST, openid, "cli", "admin")


class Outbox:
    """One backend's queue through its ports, plus enqueue and plain SQL."""

    def __init__(self, storage: Any, config: Any):
        self.storage, self.config = storage, config
        self.queue = storage.actions

    async def enqueue(self, action: Action, now: int, *, source: str = "rule",
                      dry_run: bool = False) -> int | None:
        if isinstance(self.storage, SqliteStorage):
            from bot.storage.sqlite.records import enqueue_action

            return await self.storage.store.call(
                lambda db: enqueue_action(db, action, now, source=source, dry_run=dry_run))
        from bot.storage.postgres import records

        async with self.storage.pool().acquire() as conn, conn.transaction():
            return await records.enqueue_action(conn, action, now, source=source,
                                                dry_run=dry_run)

    async def execute(self, sql: str, *args: Any) -> None:
        if isinstance(self.storage, SqliteStorage):
            await self.storage.store.call(lambda db: db.execute(sql, list(args)))
            return
        for i in range(len(args)):
            sql = sql.replace("?", f"${i + 1}", 1)
        await self.storage.pool().execute(sql, *args)

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return await fetch(self.config, sql)

    async def actions(self) -> list[tuple[str, str]]:
        return [(k, s) for k, s in await self.rows("SELECT kind, status FROM actions"
                                                    " ORDER BY id")]

    async def state(self) -> tuple[Any, ...]:
        rows = await self.rows("SELECT status, expires_at FROM blacklist")
        return rows[0]

    async def claim(self, kind: str, now: int, owner: str = "test-owner") -> list[Claimed]:
        return await self.queue.claim(kind, owner, now, 20)

    async def drain(self, now: int) -> list[str]:
        """Send everything queued, in the order the batcher may, all successfully."""
        sent: list[str] = []
        while True:
            got = [row for kind in ("blacklist", "unblacklist")
                   for row in await self.claim(kind, now)]
            if not got:
                return sent
            await self.queue.complete(got, now)
            sent += [row.kind for row in got]


@pytest.fixture
async def outbox(backend: dict[str, str]) -> AsyncIterator[Outbox]:
    config = build_config({"storage": backend})
    storage = build_services(config).storage
    await storage.start()
    try:
        yield Outbox(storage, config)
    finally:
        await storage.close()


async def test_duplicate_pending_actions_collapse(outbox: Outbox) -> None:
    assert await outbox.enqueue(blacklist(), 1) is not None
    assert await outbox.enqueue(blacklist(), 2) is None
    assert await outbox.actions() == [("blacklist", "pending")]


async def test_unblacklist_cancels_pending_blacklist(outbox: Outbox) -> None:
    await outbox.enqueue(blacklist(), 1)
    assert await outbox.enqueue(unblacklist(), 2) is None
    assert await outbox.actions() == [("blacklist", "cancelled")]


async def test_already_blacklisted_is_not_sent_again(outbox: Outbox) -> None:
    await outbox.execute("INSERT INTO blacklist (openid, status, since, updated_at)"
                         " VALUES (?, 'blacklisted', 1, 1)", OPENID)
    assert await outbox.enqueue(blacklist(expires_at=99), 2) is None
    assert await outbox.actions() == []
    assert await outbox.state() == ("blacklisted", None), "permanent stays permanent"
    assert await outbox.enqueue(unblacklist(), 3) is not None
    assert await outbox.actions() == [("unblacklist", "pending")]


async def test_timed_blacklists_keep_the_later_end(outbox: Outbox) -> None:
    await outbox.enqueue(blacklist(expires_at=500), 1)
    await outbox.enqueue(blacklist(expires_at=300), 2)
    assert await outbox.rows("SELECT expires_at FROM actions") == [(500,)]
    await outbox.enqueue(blacklist(expires_at=900), 3)
    assert await outbox.rows("SELECT expires_at FROM actions") == [(900,)]
    await outbox.enqueue(blacklist(), 4)
    assert await outbox.rows("SELECT expires_at FROM actions") == [(None,)]


async def test_dry_run_actions_are_recorded_never_pending(outbox: Outbox) -> None:
    assert await outbox.enqueue(blacklist(), 1, dry_run=True) is not None
    assert await outbox.enqueue(blacklist(), 2, dry_run=True) is None
    await outbox.enqueue(blacklist("oOtherFollower0000000000001"), 3)
    assert await outbox.actions() == [("blacklist", "dry_run"), ("blacklist", "pending")]
    assert await outbox.claim("blacklist", 4) != []
    assert await outbox.actions() == [("blacklist", "dry_run"), ("blacklist", "sending")]


async def test_a_permanent_blacklist_outranks_a_timed_one_queued_or_applied(
        outbox: Outbox) -> None:
    await outbox.enqueue(blacklist(expires_at=5000), 100)
    await outbox.enqueue(blacklist(expires_at=None), 101)
    await outbox.drain(110)
    assert await outbox.state() == ("blacklisted", None)
    await outbox.enqueue(unblacklist(), 120, source="cli")
    await outbox.drain(125)
    await outbox.enqueue(blacklist(expires_at=5000), 130)
    await outbox.drain(140)
    assert await outbox.state() == ("blacklisted", 5000)
    assert await outbox.enqueue(blacklist(expires_at=None), 150) is None
    assert await outbox.state() == ("blacklisted", None)
    assert await outbox.queue.queue_expired(6000) == 0


async def test_the_last_decision_wins_after_a_failed_send(outbox: Outbox) -> None:
    await outbox.enqueue(blacklist(), 100)
    sending = await outbox.claim("blacklist", 100)
    await outbox.enqueue(unblacklist(), 101)  # queued behind the call in flight
    await outbox.queue.release([r.id for r in sending], 102, not_before=0)
    await outbox.enqueue(blacklist(), 103)  # the last word
    assert (await outbox.drain(110))[-1] == "blacklist"
    assert (await outbox.state())[0] == "blacklisted"


async def test_an_action_that_may_have_reached_wechat_is_never_cancelled(
        outbox: Outbox) -> None:
    await outbox.enqueue(blacklist(), 100)
    sending = await outbox.claim("blacklist", 100)
    await outbox.queue.release([r.id for r in sending], 101, not_before=0)
    await outbox.enqueue(unblacklist(), 102)
    assert await outbox.actions() == [("blacklist", "pending"), ("unblacklist", "pending")]
    assert await outbox.drain(110) == ["blacklist", "unblacklist"]
    assert (await outbox.state())[0] == "removed"


async def test_a_blacklist_queued_behind_one_in_flight_keeps_the_stronger_end(
        outbox: Outbox) -> None:
    for first, second, kept in ((None, 5000, None), (9000, 5000, 9000), (5000, 9000, 9000)):
        await outbox.execute("DELETE FROM actions")
        await outbox.execute("DELETE FROM blacklist")
        await outbox.enqueue(blacklist(expires_at=first), 100)
        in_flight = await outbox.claim("blacklist", 100)
        await outbox.enqueue(blacklist(expires_at=second), 101)
        await outbox.queue.complete(in_flight, 102)
        await outbox.drain(103)
        assert await outbox.state() == ("blacklisted", kept), (first, second)


async def test_a_late_completion_leaves_a_row_settled_since_alone(outbox: Outbox) -> None:
    await outbox.enqueue(blacklist(), 100)
    stuck = await outbox.claim("blacklist", 100, owner="elsewhere:1:stuck")
    assert await outbox.queue.reclaim_stale(200, 60) == 1
    await outbox.drain(200)
    await outbox.enqueue(unblacklist(), 201, source="cli")
    await outbox.drain(202)
    await outbox.queue.complete(stuck, 300)  # the first process's write goes through late
    await outbox.queue.finish([r.id for r in stuck], 300, "failed", errcode=48001)
    assert (await outbox.state())[0] == "removed"
    assert await outbox.actions() == [("blacklist", "done"), ("unblacklist", "done")]


async def test_reoffending_after_an_expiry_gets_the_new_end(outbox: Outbox) -> None:
    await outbox.enqueue(blacklist(expires_at=3600), 100)
    await outbox.drain(100)
    assert await outbox.queue.queue_expired(3600) == 1
    assert await outbox.queue.queue_expired(3660) == 0, "once per expiry"
    await outbox.enqueue(blacklist(expires_at=9000), 3700)
    assert (await outbox.actions())[-1] == ("unblacklist", "cancelled")
    assert await outbox.state() == ("blacklisted", 9000)
    assert await outbox.queue.queue_expired(9000) == 1


async def test_remove_then_add_for_shortens_a_permanent_blacklist(outbox: Outbox) -> None:
    await outbox.enqueue(blacklist(), 100)
    await outbox.drain(100)
    await outbox.enqueue(unblacklist(), 200, source="cli")
    await outbox.enqueue(blacklist(expires_at=5000), 300, source="cli")
    await outbox.drain(300)
    assert await outbox.state() == ("blacklisted", 5000)


async def test_the_pause_and_queue_state_are_shared(outbox: Outbox) -> None:
    await outbox.enqueue(blacklist(), 100)
    await outbox.enqueue(blacklist("oOtherFollower0000000000001"), 100)
    await outbox.queue.set_pause(500.0, "quota", 100)
    state = await outbox.queue.state("blacklist", 100, 20)
    assert (state.ready, state.oldest_created, state.paused_until, state.paused_reason) == (
        2, 100, 500.0, "quota")
    sending = await outbox.claim("blacklist", 101)
    await outbox.queue.release([r.id for r in sending], 102, not_before=150.5,
                               errcode=-1, errmsg="busy")
    later = await outbox.queue.state("blacklist", 102, 20)
    assert (later.ready, later.next_not_before) == (0, 150.5), "sub-second backoff kept"
    assert await outbox.queue.count_active() == 2
