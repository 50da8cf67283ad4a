"""What admins read and change on both backends: the console's port (ConsoleStore), the
CLI's admin store, the 'dismissed' status, the clock-jump rules of the queue and a day's
earlier export run give the same results on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pytest

from bot.config import Config, build_config
from bot.core.models import Action, ActionKind, Decision, Event, RuleHit
from bot.services import admin_store, build_services
from bot.storage.ports import DecisionQuery
from bot.storage.sqlite.adapters import SqliteStorage
from tests.backends import fetch

NOW = 1_700_000_000
SPAMMER = "oAdminSpammer00000000000001"
QUIET = "oAdminQuiet00000000000000001"
BAD = "oAdminInvalid0000000000000001"


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


@dataclass
class Running:
    storage: Any
    config: Config
    clock: Clock

    async def execute(self, sql: str, *args: Any) -> None:
        """Plain SQL (``?`` placeholders) on the running storage's database."""
        if isinstance(self.storage, SqliteStorage):
            await self.storage.store.call(lambda db: db.execute(sql, list(args)))
            return
        for i in range(len(args)):
            sql = sql.replace("?", f"${i + 1}", 1)
        await self.storage.pool().execute(sql, *args)

    async def push(self, openid: str, at: int, text: str, *hits: RuleHit,
                   actions: tuple[Action, ...] = ()) -> None:
        self.clock.now = at
        event = Event(openid=openid, account="gh_test", create_time=at, msg_type="text",
                      msg_id=f"{openid}-{at}", texts=MappingProxyType({"content": text}))
        await self.storage.recorder.record(event, Decision(hits=hits, actions=actions))


@pytest.fixture
async def running(backend: dict[str, str]) -> AsyncIterator[Running]:
    config = build_config({"storage": backend,
                           "wechat": {"appid": "wxadmintest", "secret": "not-a-secret"}})
    clock = Clock()
    storage = build_services(config, clock=clock).storage
    await storage.start()
    try:
        yield Running(storage, config, clock)
    finally:
        await storage.close()


async def seed_spammer(run: Running) -> None:
    """A quiet follower's push, then a spammer warned by one rule and blacklisted by
    another (its blacklist queued)."""
    await run.push(QUIET, NOW, "hello")
    await run.push(SPAMMER, NOW + 1, "加微信 领红包",
                   RuleHit("r-warn", ActionKind.WARN, "keyword '加微信'", "content", (0, 3)))
    await run.push(SPAMMER, NOW + 2, "加微信 兼职刷单",
                   RuleHit("r-ad", ActionKind.BLACKLIST, "keyword '刷单'", "content", (6, 8)),
                   actions=(Action(ActionKind.BLACKLIST, SPAMMER, "r-ad", "ads"),))


async def test_console_reads(running: Running) -> None:
    await seed_spammer(running)
    console = running.storage.console
    activity = await console.activity(NOW - 1)
    assert activity.pushes == 3 and dict(activity.decisions) == {"warn": 1, "blacklist": 1}
    rows = await console.decisions(DecisionQuery())
    assert [(r.openid, r.rule_id, r.action) for r in rows] == [
        (SPAMMER, "r-ad", "blacklist"), (SPAMMER, "r-warn", "warn")]
    assert dict(rows[0].texts) == {"content": "加微信 兼职刷单"} and not rows[0].purged
    assert rows[0].msg_type == "text" and rows[0].evidence == "keyword '刷单'"
    page = await console.decisions(DecisionQuery(limit=1))
    assert [r.id for r in page] == [rows[0].id]
    after = await console.decisions(DecisionQuery(limit=1, before_id=page[0].id))
    assert [r.id for r in after] == [rows[1].id]
    assert [r.rule_id for r in await console.decisions(DecisionQuery(action="warn"))] == [
        "r-warn"]
    assert await console.decisions(DecisionQuery(openid=QUIET)) == []
    assert await console.decisions(DecisionQuery(since=NOW + 2, until=NOW + 3)) == rows[:1]

    history = await console.follower(SPAMMER, 50)
    assert history.seen and history.known and history.state is None
    assert history.pushes == (2, NOW + 1, NOW + 2)
    assert [(q[1], q[2], q[4]) for q in history.queued] == [("blacklist", "pending", "r-ad")]
    assert [d[1] for d in history.decisions] == ["r-ad", "r-warn"]
    assert not (await console.follower("oAdminNobody0000000000000001", 50)).seen
    warnings, pushes = await console.follower_story(SPAMMER, NOW - 10)
    assert warnings == {"r-warn": [NOW + 1]}
    assert pushes == [(NOW + 1, "text"), (NOW + 2, "text")]
    status = await console.queue(10)
    assert status.counts == [("pending", 1)]
    assert [r[1] for r in dict(status.sections)["pending"]] == [SPAMMER]

    # the CLI's store reads the same
    store = admin_store(running.config)
    assert await asyncio.to_thread(store.follower_warnings, SPAMMER, NOW - 10) == warnings
    assert await asyncio.to_thread(store.follower_pushes, SPAMMER, NOW - 10) == pushes
    logged = await asyncio.to_thread(lambda: store.mod_log(since=NOW - 10, action="warn"))
    assert [(e.openid, e.rule_id) for e in logged] == [(SPAMMER, "r-warn")]

    claimed = await running.storage.actions.claim("blacklist", "owner-1", NOW + 3, 20)
    await running.storage.actions.complete(claimed, NOW + 4)
    listed = await console.blacklisted(10)
    assert [(b.openid, b.rule_id, b.since) for b in listed] == [(SPAMMER, "r-ad", NOW + 4)]
    assert await console.blacklisted(10, "oAdminS") == listed
    assert await console.blacklisted(10, "oAdminQ") == []


async def test_dismiss_resume_and_the_replay_on_both(running: Running) -> None:
    console, queue = running.storage.console, running.storage.actions
    ids, learnt = await console.admin_actions(
        [Action(ActionKind.BLACKLIST, BAD, "cli", "spam")], NOW, dry_run=False)
    assert learnt == 0 and len(ids) == 1 and ids[0] is not None
    (claimed,) = await queue.claim("blacklist", "owner-1", NOW + 1, 20)
    await queue.finish([claimed.id], NOW + 2, "failed", errcode=40003, errmsg="invalid openid")
    assert await running.storage.snapshots.failed_actions(NOW, NOW + 10) == [
        ("blacklist", BAD, 40003, "invalid openid")]
    nobody = "oAdminNobody0000000000000001"
    dismissed, unknown = await console.dismiss([claimed.id, nobody], NOW + 3)
    assert dismissed == [claimed.id] and unknown == {nobody: "no such action"}
    assert await fetch(running.config, "SELECT status, errcode, attempts FROM actions") == [
        ("dismissed", 40003, 1)]
    assert await console.requeue([], NOW + 4) == [], "retry leaves a dismissed action"
    _, unknown = await console.dismiss([BAD], NOW + 5)
    assert unknown == {BAD: "dismissed"}

    await queue.set_pause(NOW + 3600, "45009 quota used up", NOW + 10)
    assert (await queue.state("blacklist", NOW + 10, 20)).paused_until == NOW + 3600
    # a pause stamped after now was set before the clock went back: it counts as over
    assert (await queue.state("blacklist", NOW, 20)).paused_until == 0
    store = admin_store(running.config)
    assert await asyncio.to_thread(store.resume) == (NOW + 3600, "45009 quota used up")
    assert await console.resume() == (0.0, "")

    # the replay: a hand blacklist dismissed is not one the admins made
    await running.push(SPAMMER, NOW + 20, "刷单",
                       RuleHit("r-ad", ActionKind.BLACKLIST, "keyword '刷单'", "content"),
                       actions=(Action(ActionKind.BLACKLIST, SPAMMER, "r-ad", "ads"),))

    def replay() -> tuple[int, set[str], set[str]]:
        with store.replay_source(NOW - 10) as (events, by_rules, by_hand):
            return len(list(events)), by_rules, by_hand

    assert await asyncio.to_thread(replay) == (1, {SPAMMER}, set())


async def test_dismissed_expiry_counts_as_recorded_and_clock_jumps(running: Running) -> None:
    queue = running.storage.actions
    await running.execute("INSERT INTO blacklist (openid, status, rule_id, reason, since,"
                          " expires_at, updated_at) VALUES (?, 'blacklisted', 'r-ad', '', ?,"
                          " ?, ?)", SPAMMER, NOW - 100, NOW - 10, NOW - 100)
    await running.execute("INSERT INTO actions (openid, kind, rule_id, source, status,"
                          " created_at, updated_at) VALUES (?, 'unblacklist', 'r-ad', 'expiry',"
                          " 'dismissed', ?, ?)", SPAMMER, NOW - 5, NOW - 5)
    assert await queue.queue_expired(NOW) == 0, "a dismissed expiry is recorded"
    # a retry stamped after now (the clock went back): its wait is over
    await running.execute("INSERT INTO actions (openid, kind, rule_id, source, status,"
                          " created_at, updated_at, not_before) VALUES (?, 'blacklist', 'r',"
                          " 'rule', 'pending', ?, ?, ?)", BAD, NOW + 500, NOW + 500,
                          NOW + 560)
    assert (await queue.state("blacklist", NOW + 500, 20)).ready == 0
    assert (await queue.state("blacklist", NOW, 20)).ready == 1
    (claimed,) = await queue.claim("blacklist", "owner-1", NOW + 600, 20)
    # a claim of ours stamped after now is taken back at once
    assert await queue.reclaim_own("owner-1", [], NOW, 300) == 1
    assert await queue.reclaim_own("owner-1", [], NOW, 300) == 0
    assert claimed.openid == BAD


async def test_a_days_earlier_export_run(running: Running) -> None:
    snaps = running.storage.snapshots

    async def run(day: str, token: str, openids: list[str]) -> tuple[int, int | None]:
        staged = await snaps.create_staging(day, NOW, token)
        await snaps.add_entries(staged, openids)
        return staged, await snaps.promote(staged, day, len(openids), token)

    first, gone = await run("2024-05-01", "a", [QUIET])
    assert gone is None
    second, gone = await run("2024-05-01", "b", [QUIET, SPAMMER])
    assert gone is None, "the run replaced is kept as the day's earlier run"
    assert (await snaps.get("2024-05-01")).id == second
    earlier = await snaps.previous("2024-05-01")
    assert earlier is not None and (earlier.id, earlier.day) == (first, "2024-05-01")
    third, gone = await run("2024-05-01", "c", [SPAMMER])
    assert gone == first and await snaps.leftovers() == [first]
    await snaps.delete_snapshot_row(first)
    assert (await snaps.previous("2024-05-01")).id == second
    fourth, _ = await run("2024-05-02", "d", [SPAMMER])
    assert (await snaps.previous("2024-05-02")).id == third, "not the day's earlier run"
    assert await snaps.latest_day() == "2024-05-02"
    # the two newest days keep their entries; a day's earlier run goes with the day's
    assert await snaps.prunable("2024-05-03") == [second]
    assert await snaps.prunable("2024-05-01") == []
    fifth, _ = await run("2024-05-03", "e", [SPAMMER])
    assert sorted(await snaps.prunable("2024-05-04")) == [second, third]
    assert fourth not in await snaps.prunable("2024-05-04")
