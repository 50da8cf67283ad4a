"""The nightly export on PostgreSQL: paging into a staged snapshot, the diff against
the previous day, same-day replacement and reconciliation with our records give what
they give on SQLite (tests/test_export.py), through the same Exporter."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from bot.config import ExportConfig, WeChatConfig
from bot.jobs.export import Exporter, RetryPolicy
from bot.metrics import Metrics
from bot.storage.postgres.storage import PostgresStorage
from bot.wechat.api import WeChatClient
from tests.fake_wechat import FakeWeChat, make_openids

TZ = "Asia/Shanghai"
DAY1 = datetime(2024, 5, 1, 3, 0, tzinfo=ZoneInfo(TZ)).timestamp()


class Clock:
    def __init__(self) -> None:
        self.now = DAY1

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def storage(pg_dsn: str) -> AsyncIterator[PostgresStorage]:
    running = PostgresStorage(pg_dsn)
    await running.start()
    yield running
    await running.close()


@pytest.fixture
async def make_exporter(storage: PostgresStorage, fake_wechat: FakeWeChat, tmp_path: Path
                        ) -> AsyncIterator[Callable[[Clock], Exporter]]:
    config = WeChatConfig(appid=fake_wechat.appid, secret=fake_wechat.secret,
                          api_base=fake_wechat.base_url)
    async with aiohttp.ClientSession() as session:
        client = WeChatClient(config, session, storage.tokens, Metrics(), timeout=5)

        def build(clock: Clock) -> Exporter:
            return Exporter(storage, client, ExportConfig(timezone=TZ, dir=str(tmp_path)),
                            clock=clock, policy=RetryPolicy(attempts=2, base=0.01, cap=0.01))

        yield build


async def test_diff_and_same_day_replacement(
        storage: PostgresStorage, fake_wechat: FakeWeChat,
        make_exporter: Callable[[Clock], Exporter]) -> None:
    clock = Clock()
    ids = make_openids(3000)
    fake_wechat.page_size = 1000
    fake_wechat.blacklist.update(ids[:2000])
    first = await make_exporter(clock).run()
    assert first.total == 2000
    assert first.paths["csv"].read_text().splitlines()[1:] == ids[:2000]
    clock.now += 86400
    fake_wechat.blacklist.difference_update(ids[:100])
    fake_wechat.blacklist.update(ids[2000:2060])
    second = await make_exporter(clock).run()
    assert second.report.added == (60, ids[2000:2050])
    assert second.report.removed == (100, ids[:50])
    clock.now += 3600
    fake_wechat.blacklist.update(ids[2060:2070])
    third = await make_exporter(clock).run()
    # The same day again compares with the run it replaces, kept as the day's earlier run
    assert third.report.previous_day == "2024-05-02" and third.report.same_day
    assert third.report.previous_taken_at == second.report.taken_at
    assert third.report.added == (10, ids[2060:2070]) and third.report.removed == (0, [])
    rows = await storage.pool().fetch("SELECT day, total FROM snapshots ORDER BY day")
    assert [tuple(r) for r in rows] == [("2024-05-01", 2000), ("2024-05-02", 1970),
                                        ("earlier:2024-05-02", 1960)]
    assert await storage.pool().fetchval("SELECT COUNT(*) FROM snapshot_entries") == 5930
    summary = json.loads(third.paths["json"].read_text())
    assert summary["total"] == 1970 and summary["change"] == 10
    assert summary["previous"]["same_day"] is True
    # A fourth run compares with the third; the second is no longer kept.
    clock.now += 60
    fake_wechat.blacklist.difference_update(ids[2060:2065])
    fourth = await make_exporter(clock).run()
    assert fourth.report.previous_taken_at == third.report.taken_at
    assert fourth.report.removed == (5, ids[2060:2065]) and fourth.report.change == -5
    rows = await storage.pool().fetch("SELECT day, total FROM snapshots ORDER BY day")
    assert [tuple(r) for r in rows] == [("2024-05-01", 2000), ("2024-05-02", 1965),
                                        ("earlier:2024-05-02", 1970)]
    assert await storage.pool().fetchval("SELECT COUNT(*) FROM snapshot_entries") == 5935
    # The next day compares with the day's final snapshot, not its earlier run.
    clock.now += 86400
    fifth = await make_exporter(clock).run()
    assert fifth.report.previous_day == "2024-05-02" and not fifth.report.same_day
    assert fifth.report.previous_total == 1965
    assert await storage.snapshots.read_last_run() == clock.now


async def test_reconciliation_with_our_records(
        storage: PostgresStorage, fake_wechat: FakeWeChat,
        make_exporter: Callable[[Clock], Exporter]) -> None:
    o = make_openids(9, prefix="r")
    before, after = int(DAY1) - 600, int(DAY1) + 5
    pool = storage.pool()
    await pool.executemany(
        "INSERT INTO blacklist (openid, status, since, updated_at) VALUES ($1, $2, $3, $3)",
        [(o[0], "blacklisted", before), (o[1], "blacklisted", before),
         (o[3], "removed", before), (o[6], "blacklisted", after), (o[8], "removed", after)])
    await pool.executemany(
        "INSERT INTO actions (openid, kind, status, created_at, updated_at, errcode, errmsg)"
        " VALUES ($1, $2, $3, $4::bigint, $4::bigint + 1, $5, $6)",
        [(o[4], "blacklist", "pending", before, None, None),
         (o[5], "unblacklist", "failed", before, 48001, "api unauthorized <b>"),
         (o[7], "blacklist", "failed", before, 40003, "invalid openid")])
    fake_wechat.blacklist.update([o[0], o[2], o[3], o[5], o[8]])
    result = await make_exporter(Clock()).run()
    findings = {f.name: (f.count, f.sample) for f in result.report.findings}
    assert findings["hand_added"] == (3, [o[2], o[3], o[5]])
    assert findings["hand_removed"] == (1, [o[1]])
    count, sample = findings["unreflected"]
    assert count == 3
    assert sample[0] == f"blacklist {o[4]} (pending)"
    assert sample[1] == f"unblacklist {o[5]} (failed, errcode 48001: api unauthorized <b>)"


async def test_a_scheduled_run_another_replica_served_is_skipped(
        storage: PostgresStorage, fake_wechat: FakeWeChat,
        make_exporter: Callable[[Clock], Exporter]) -> None:
    from dataclasses import replace

    from bot.jobs.export import ExportSkipped

    fake_wechat.blacklist.update(make_openids(5))
    clock = Clock()
    clock.now += 2  # the replicas fire a moment after the 03:00 fire time
    first = replace(make_exporter(clock), due=DAY1)
    assert (await first.run()).total == 5
    clock.now += 1  # a second replica, its clock a second behind, fires too
    with pytest.raises(ExportSkipped, match="already ran"):
        await replace(make_exporter(clock), due=DAY1).run()
    pages = [c for c in fake_wechat.calls_to("getblacklist") if not c.payload.get("begin_openid")]
    assert len(pages) == 1
    clock.now += 86400  # the next night's fire time is due again
    assert (await replace(make_exporter(clock), due=DAY1 + 86400).run()).total == 5
