"""Faults around the service: another process locking the database, WeChat not answering."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from bot.app import SERVICE, build_app
from bot.config import ActionsConfig
from bot.jobs.batcher import Batcher
from bot.storage.sqlite.actions import SqliteActionQueue
from tests.fake_wechat import FakeWeChat, delay, drop, make_openids
from tests.pushes import signed_query, text_xml
from tests.test_end_to_end import live_config
from tests.test_outbox import FAST, Env

LOCK_WAIT = 0.2  # the service's busy_timeout here: a locked database fails fast


@asynccontextmanager
async def exclusive_lock(path: str) -> AsyncIterator[None]:
    """Another process's ``BEGIN EXCLUSIVE`` on the database while the block runs."""
    conn = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
    await asyncio.to_thread(conn.execute, "BEGIN EXCLUSIVE")  # may wait for a commit
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


async def until_async(predicate: Callable[[], Any], timeout: float = 8.0) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)  # polling an outside effect, not timing logic


def fast_lock_app(config: Any) -> Any:
    app = build_app(config)
    app[SERVICE].services.storage.store.busy_timeout = LOCK_WAIT
    return app


async def test_acked_batch_settles_after_the_database_was_locked_across_its_completion(
        aiohttp_client: Any, tmp_path: Path, fake_wechat: FakeWeChat) -> None:
    config = live_config(tmp_path, fake_wechat)
    client = await aiohttp_client(fast_lock_app(config))
    spammer = "oLockedAcross0000000000000"
    response = await client.post("/wechat", params=signed_query(),
                                 data=text_xml(spammer, "加微信领红包", 30_001))
    assert response.status == 200 and await response.text() == "success"
    fake_wechat.script("batchblacklist", delay(1.0))  # in flight while the lock is taken
    await until_async(lambda: fake_wechat.calls_to("batchblacklist"))

    async def health() -> dict[str, Any]:
        return dict(await (await client.get("/healthz")).json())

    async def unsettled() -> dict[str, Any] | None:
        state = await health()
        return state if state.get("unsettled_actions") else None

    async with exclusive_lock(config.storage.path):
        # WeChat acks the batch; the completion cannot be written meanwhile.
        during = await until_async(unsettled)
        assert during["status"] != "ok" and during["unsettled_actions"] == 1
        assert "locked" in during["storage_error"]
    conn = sqlite3.connect(config.storage.path)

    def settled() -> bool:
        row = conn.execute("SELECT status, claimed_by FROM actions WHERE openid = ?",
                           [spammer]).fetchone()
        return tuple(row) == ("done", None)

    await until_async(settled)
    assert conn.execute("SELECT status FROM blacklist WHERE openid = ?",
                        [spammer]).fetchone() == ("blacklisted",)
    conn.close()
    calls = fake_wechat.calls_to("batchblacklist")
    assert [c.openids for c in calls] == [[spammer]], "an acked batch is not sent again"
    after = await health()
    assert after["status"] == "ok" and "unsettled_actions" not in after



async def test_a_hanging_api_times_out_and_is_retried(tmp_path: Path,
                                                      fake_wechat: FakeWeChat) -> None:
    fake_wechat.script("batchblacklist", delay(1.0), drop())  # no answer, then a lost one
    async with aiohttp.ClientSession() as session:
        env = Env(tmp_path, fake_wechat, session)
        await env.store.start()
        batcher = Batcher(SqliteActionQueue(env.store), env.client(timeout=0.2),
                          ActionsConfig(max_delay_seconds=0.05), env.metrics, dry_run=False,
                          backoff=FAST, idle_seconds=0.05)
        try:
            ids = make_openids(3)
            await env.enqueue(ids)
            await batcher.start()
            assert await batcher.drain(timeout=5), "the batcher stalled on a silent API"
            rows = await env.rows()
        finally:
            await batcher.stop(timeout=1)
            await env.store.close()
    assert [c.openids for c in env.batch_calls()] == [ids, ids, ids]
    assert [(r["status"], r["attempts"]) for r in rows] == [("done", 3)] * 3
    assert fake_wechat.blacklist == set(ids)


async def test_pushes_while_the_database_is_locked_are_refused_then_recorded(
        aiohttp_client: Any, tmp_path: Path, fake_wechat: FakeWeChat) -> None:
    config = live_config(tmp_path, fake_wechat)
    client = await aiohttp_client(fast_lock_app(config))
    spammer = "oPushedWhileLocked00000000"
    push = text_xml(spammer, "加微信领红包", 40_001)
    async with exclusive_lock(config.storage.path):
        response = await client.post("/wechat", params=signed_query(), data=push)
        assert response.status in (500, 503), "an unstored push must not be answered"
        assert await response.text() != "success"
    retry = await client.post("/wechat", params=signed_query(), data=push)  # WeChat's retry
    assert retry.status == 200 and await retry.text() == "success"
    await until_async(lambda: spammer in fake_wechat.blacklist)
    conn = sqlite3.connect(config.storage.path)
    try:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)
        assert conn.execute("SELECT rule_id FROM decisions").fetchall() == [("contact-spam",)]
    finally:
        conn.close()
    assert [c.openids for c in fake_wechat.calls_to("batchblacklist")] == [[spammer]]


async def test_healthz_answers_promptly_while_the_database_is_locked(
        aiohttp_client: Any, tmp_path: Path, fake_wechat: FakeWeChat) -> None:
    config = live_config(tmp_path, fake_wechat)
    app = build_app(config)  # the real busy_timeout: a locked read waits 10 s
    app[SERVICE].health_db_timeout = 0.3
    client = await aiohttp_client(app)
    async with exclusive_lock(config.storage.path):
        started = time.monotonic()
        response = await client.get("/healthz")
        state = await response.json()
        assert time.monotonic() - started < 3, "/healthz waited out the lock"
    assert response.status == 503 and state["status"] == "down"
    assert "no answer within 0.3 s" in state["error"]
    recovered = await until_async(lambda: _ok(client))
    assert recovered["pending_actions"] == 0


async def _ok(client: Any) -> dict[str, Any] | None:
    state = dict(await (await client.get("/healthz")).json())
    return state if state["status"] == "ok" else None
