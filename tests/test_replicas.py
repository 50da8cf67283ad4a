"""Several replicas on one PostgreSQL: what they must share, tested with two or more
real apps (or storages) on one real database and the fake WeChat API over HTTP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from bot.app import build_app
from bot.config import build_config
from bot.core.models import Action, ActionKind
from bot.metrics import Metrics
from bot.services import build_services
from bot.storage.postgres.records import enqueue_action
from bot.storage.postgres.storage import PostgresStorage
from bot.wechat.api import WeChatClient
from tests.backends import fetch, fetchval
from tests.fake_wechat import FakeWeChat
from tests.pushes import TOKEN, signed_query, text_xml

RULES = """
rules:
  - id: contact-spam
    keywords: [加微信]
    action: blacklist
  - id: flood
    msg_types: [text]
    flood: {messages: 4, seconds: 60}
    action: blacklist
  - id: rude
    keywords: [笨蛋]
    action: warn
    warn_limit: 2
    warn_window: 1h
"""


def replica_config(tmp_path: Path, fake: FakeWeChat, dsn: str, **actions: Any) -> Any:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "r.yaml").write_text(RULES, encoding="utf-8")
    return build_config({
        "wechat": {"token": TOKEN, "appid": fake.appid, "secret": fake.secret,
                   "api_base": fake.base_url},
        "storage": {"backend": "postgres", "dsn": dsn},
        "rules": {"dir": str(rules)},
        "actions": {"max_delay_seconds": 0.2, **actions},
        "export": {"dir": str(tmp_path / "exports")},
    })


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)  # polling an outside effect, not timing logic


async def push(client: Any, openid: str, text: str, msg_id: int, at: int) -> str:
    response = await client.post("/wechat", params=signed_query(),
                                 data=text_xml(openid, text, msg_id, at))
    assert response.status == 200
    return str(await response.text())


async def test_a_flood_split_across_replicas_counts(
        aiohttp_client: Any, tmp_path: Path, fake_wechat: FakeWeChat, pg_dsn: str) -> None:
    config = replica_config(tmp_path, fake_wechat, pg_dsn)
    a = await aiohttp_client(build_app(config))
    b = await aiohttp_client(build_app(config))
    flooder, calm = "oFlooder00000000000000000001", "oCalm000000000000000000000001"
    now = int(time.time())
    for i in range(3):  # 3 on each replica for the calm one: 3 in 60 s is not a flood
        await push(a if i % 2 else b, calm, f"hello {i}", 500 + i, now + i * 30)
    for i in range(4):  # 4 within 60 s, alternating replicas: neither alone sees 4
        await push(a if i % 2 else b, flooder, f"hi {i}", 100 + i, now + i)
    await wait_for(lambda: flooder in fake_wechat.blacklist)
    assert calm not in fake_wechat.blacklist
    rows = await fetch(config, "SELECT openid, rule_id FROM decisions ORDER BY id")
    assert rows == [(flooder, "flood")], "the 4th message, on either replica, fired the rule"


async def test_a_retry_on_another_replica_is_recorded_and_counted_once(
        aiohttp_client: Any, tmp_path: Path, fake_wechat: FakeWeChat, pg_dsn: str) -> None:
    config = replica_config(tmp_path, fake_wechat, pg_dsn)
    a = await aiohttp_client(build_app(config))
    b = await aiohttp_client(build_app(config))
    follower, now = "oRetrier00000000000000000001", int(time.time())
    for i in range(3):  # each push is retried on the other replica (WeChat got no answer)
        body = text_xml(follower, f"msg {i}", 900 + i, now + i)
        answers = await asyncio.gather(*(c.post("/wechat", params=signed_query(), data=body)
                                         for c in (a, b)))
        assert [r.status for r in answers] == [200, 200]
    assert await fetchval(config, "SELECT count(*) FROM events") == 3
    assert await fetchval(config, "SELECT count(*) FROM decisions") == 0, \
        "6 deliveries of 3 pushes are 3 messages: no flood of 4"


async def test_the_warn_ladder_climbs_across_replicas(
        aiohttp_client: Any, tmp_path: Path, fake_wechat: FakeWeChat, pg_dsn: str) -> None:
    config = replica_config(tmp_path, fake_wechat, pg_dsn)
    replicas = [await aiohttp_client(build_app(config)) for _ in range(3)]
    rude, now = "oRude0000000000000000000001", int(time.time())
    for i, client in enumerate(replicas):  # 3 offences, one on each replica: 2 warnings,
        await push(client, rude, "你这个笨蛋", 700 + i, now + i * 100)  # then the blacklist
    actions = await fetch(config, "SELECT action FROM decisions WHERE openid = ? ORDER BY id",
                          rude)
    assert actions == [("warn",), ("warn",), ("blacklist",)]
    await wait_for(lambda: rude in fake_wechat.blacklist)


async def test_two_batchers_send_each_action_once_in_batches_of_20(
        tmp_path: Path, fake_wechat: FakeWeChat, pg_dsn: str) -> None:
    config = replica_config(tmp_path, fake_wechat, pg_dsn)
    spammers = [f"oBatch{i:022d}" for i in range(95)]
    async with build_services(config) as one, build_services(config) as two:
        assert isinstance(one.storage, PostgresStorage)
        async with one.storage.pool().acquire() as conn, conn.transaction():
            for openid in spammers:
                await enqueue_action(conn, Action(ActionKind.BLACKLIST, openid, "r"),
                                     int(time.time()))
        batchers = [one.batcher(owner="one"), two.batcher(owner="two")]
        for batcher in batchers:
            await batcher.start()
        try:
            await wait_for(lambda: set(spammers) <= fake_wechat.blacklist)
        finally:
            for batcher in batchers:
                await batcher.stop()
    sent = [o for c in fake_wechat.calls_to("batchblacklist") for o in c.openids]
    assert sorted(sent) == sorted(spammers), "each action sent once"
    assert all(len(c.openids) <= 20 for c in fake_wechat.calls_to("batchblacklist"))


async def test_a_dead_replicas_claims_are_taken_over_after_the_lease(
        tmp_path: Path, fake_wechat: FakeWeChat, pg_dsn: str) -> None:
    config = replica_config(tmp_path, fake_wechat, pg_dsn)
    async with build_services(config) as services:
        storage = services.storage
        assert isinstance(storage, PostgresStorage)
        queue, now = storage.actions, time.time()
        async with storage.pool().acquire() as conn, conn.transaction():
            for i in range(3):
                await enqueue_action(conn, Action(ActionKind.BLACKLIST, f"oDead{i:023d}", "r"),
                                     int(now))
        # A replica on another host claimed them, heartbeat once, then died.
        await queue.heartbeat("otherhost:4242:x", now)
        assert len(await queue.claim("blacklist", "otherhost:4242:x", now, 20)) == 3
        assert await queue.claim("blacklist", "alive", now, 20) == []
        assert await queue.reclaim_stale(now + 30, stale_after=60) == 0, "lease still held"
        assert await queue.reclaim_stale(now + 61, stale_after=60) == 3, "lease lapsed"
        taken = await queue.claim("blacklist", "alive", now + 61, 20)
        assert [c.attempts for c in taken] == [2, 2, 2]


async def test_concurrent_claims_skip_each_others_rows(
        tmp_path: Path, fake_wechat: FakeWeChat, pg_dsn: str) -> None:
    config = replica_config(tmp_path, fake_wechat, pg_dsn)
    async with build_services(config) as services:
        storage = services.storage
        assert isinstance(storage, PostgresStorage)
        now = time.time()
        async with storage.pool().acquire() as conn, conn.transaction():
            for i in range(200):
                await enqueue_action(conn, Action(ActionKind.BLACKLIST, f"oClaim{i:022d}", "r"),
                                     int(now))
        claims = await asyncio.gather(*(storage.actions.claim("blacklist", f"w{i}", now, 20)
                                        for i in range(12)))
    ids = [c.id for claim in claims for c in claim]
    assert len(ids) == len(set(ids)) == 200 and max(map(len, claims)) <= 20


async def test_one_token_fetch_for_all_replicas(
        tmp_path: Path, fake_wechat: FakeWeChat, pg_dsn: str) -> None:
    config = replica_config(tmp_path, fake_wechat, pg_dsn)
    storages = [PostgresStorage(pg_dsn) for _ in range(4)]
    async with aiohttp.ClientSession() as session:
        for storage in storages:
            await storage.start()
        try:
            clients = [WeChatClient(config.wechat, session, s.tokens, Metrics())
                       for s in storages]
            tokens = await asyncio.gather(*(c.access_token() for c in clients))
        finally:
            for storage in storages:
                await storage.close()
    assert len(set(tokens)) == 1
    assert len(fake_wechat.token_calls()) == 1, "one replica fetched; the others read it"


async def test_the_export_lease_has_one_holder_and_dies_with_it(pg_dsn: str) -> None:
    first, second = PostgresStorage(pg_dsn), PostgresStorage(pg_dsn)
    await first.start()
    await second.start()
    try:
        now = time.time()
        assert await first.leases.acquire("replica-1", now, 600) is None
        assert await first.leases.acquire("replica-1", now, 600) is None, "refresh"
        assert await second.leases.acquire("replica-2", now, 600) == "replica-1"
        first.pool().terminate()  # the holder's connections drop, as when it is killed
        deadline = time.monotonic() + 10
        while await second.leases.acquire("replica-2", now, 600) is not None:
            assert time.monotonic() < deadline, "the dead holder's lock was never freed"
            await asyncio.sleep(0.05)  # the server notices the closed socket
        await second.leases.release("replica-2")
    finally:
        await second.close()


@pytest.mark.parametrize("dsn", ["postgresql://bot:hunter2@127.0.0.1:1/none"])
async def test_an_unreachable_database_names_the_key_not_the_password(dsn: str) -> None:
    from bot.core.errors import BotError

    storage = PostgresStorage(dsn)
    with pytest.raises(BotError, match="storage.dsn") as info:
        await storage.start()
    assert "hunter2" not in str(info.value)


async def test_retention_forgets_the_windows_of_followers_long_silent(pg_dsn: str) -> None:
    storage = PostgresStorage(pg_dsn)
    await storage.start()
    try:
        now = int(time.time())
        await storage.pool().executemany(
            "INSERT INTO window_events (openid, key, at, dedup_key) VALUES ($1, $2, $3, $4)",
            [("oOld", "f:g|oOld", now - 40 * 86400, "a"), ("oNew", "f:g|oNew", now, "b")])
        await storage.retention.purge_content(now - 30 * 86400, 100, now)
        rows = await storage.pool().fetch("SELECT openid FROM window_events")
    finally:
        await storage.close()
    assert [r[0] for r in rows] == ["oNew"]


async def test_close_does_not_wait_for_ever_on_a_connection_still_held(
        pg_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    """A task cut off while holding a connection would keep asyncpg's close waiting for
    good; shutdown drops it after close_timeout and says so."""
    storage = PostgresStorage(pg_dsn, close_timeout=0.5)
    await storage.start()
    held = await storage.pool().acquire()  # never released, as by an orphaned task
    started = time.monotonic()
    await asyncio.wait_for(storage.close(), 10)
    assert time.monotonic() - started < 5
    with pytest.raises(asyncpg.InterfaceError):  # dropped, not left open
        await held.fetchval("SELECT 1")
    assert "connections still in use" in caplog.text
    with pytest.raises(RuntimeError, match="not running"):
        storage.pool()


async def test_a_token_fetch_cut_off_twice_does_not_keep_the_lock(pg_dsn: str) -> None:
    """The holder is cancelled, then cancelled again while it gives the lock back (as a
    shutdown's second cancel does): the next fetch, on another replica, still gets it."""
    first, second = PostgresStorage(pg_dsn, min_size=1, max_size=1), PostgresStorage(pg_dsn)
    await first.start()
    await second.start()
    try:
        entered = asyncio.Event()

        async def holder() -> None:
            async with first.tokens.exclusive("wx1"):
                entered.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(holder())
        await entered.wait()
        task.cancel()
        await asyncio.sleep(0)  # into the context's exit
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        async with asyncio.timeout(5), second.tokens.exclusive("wx1"):
            pass
    finally:
        await first.close()
        await second.close()


async def test_an_export_lease_given_back_part_way_is_not_left_held(pg_dsn: str) -> None:
    """The release is cancelled before its unlock runs (a shutdown cutting it off): the
    connection is dropped with the lock, so another replica can take the export."""
    first, second = PostgresStorage(pg_dsn, min_size=1, max_size=1), PostgresStorage(pg_dsn)
    await first.start()
    await second.start()
    try:
        now = time.time()
        assert await first.leases.acquire("replica-1", now, 60) is None
        task = asyncio.create_task(first.leases.release("replica-1"))
        await asyncio.sleep(0)  # its first statement is on the wire
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # The lock goes when the server sees the dropped connection end, a moment after
        # the client drops it (CI once asked within that moment): ask until it is free.
        async with asyncio.timeout(5):  # still held after 5 s: the lock was left behind
            while await second.leases.acquire("replica-2", now, 60) is not None:
                await asyncio.sleep(0.02)
        await second.leases.release("replica-2")
    finally:
        await first.close()
        await second.close()
