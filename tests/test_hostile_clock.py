"""The wall clock jumping backwards (NTP stepping a fast clock back, a VM restored).

The batcher stores its waits as wall-clock times (a retry's not_before, the shared
pause's end, claim times). After a jump back of an hour, a 1-second retry wait must not
become an hour and one second, a pause must not grow by the jump, a partial batch must
not wait the hour out, and a claim this process lost must still come back.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.core.models import ActionKind
from bot.core.settle import Backoff
from tests.fake_wechat import FakeWeChat, errcode, make_openids
from tests.test_outbox import Env, until

HOUR = 3600.0


class JumpClock:
    """The real wall clock plus an offset a test can step back."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
async def env(tmp_path: Path, fake_wechat: FakeWeChat) -> AsyncIterator[Env]:
    """test_outbox's Env on a clock that runs, and can be stepped back."""
    async with aiohttp.ClientSession() as session:
        e = Env(tmp_path, fake_wechat, session)
        e.clock = JumpClock()  # type: ignore[assignment]  # rows are stamped with it too
        await e.store.start()
        yield e
        for b in e.batchers:
            await b.stop(timeout=1)
        await e.store.close()


@pytest.fixture
def clock(env: Env) -> JumpClock:
    return env.clock  # type: ignore[return-value]


async def _statuses_done(env: Env, count: int) -> bool:
    rows = await env.rows()
    return len(rows) == count and all(r["status"] == "done" for r in rows)


async def test_a_retry_wait_does_not_grow_by_the_jump(env: Env, clock: JumpClock,
                                                      fake_wechat: FakeWeChat) -> None:
    fake_wechat.script("batchblacklist", errcode(-1))  # busy: retry in ~1 s
    ids = make_openids(3)
    await env.enqueue(ids)
    await env.batcher(max_delay=0.01, backoff=Backoff(base=1.0, cap=1.0), idle_seconds=0.05)
    await until_rows(env, lambda rows: rows[0]["errcode"] == -1)
    clock.offset -= HOUR  # the clock steps back while the retry waits
    started = time.monotonic()
    await until_async(lambda: _statuses_done(env, 3), timeout=10)
    assert time.monotonic() - started < 5, "the wait grew by the jump"
    assert fake_wechat.blacklist == set(ids)


async def test_a_pause_does_not_grow_by_the_jump(env: Env, clock: JumpClock,
                                                 fake_wechat: FakeWeChat) -> None:
    fake_wechat.script("batchblacklist", errcode(45009))  # daily quota: paused <= 1 h
    ids = make_openids(2)
    await env.enqueue(ids)
    batcher = await env.batcher(max_delay=0.01, idle_seconds=0.05)
    await until(lambda: bool(batcher.status.paused_reason))
    clock.offset -= HOUR
    await until_async(lambda: _statuses_done(env, 2), timeout=10)
    assert fake_wechat.blacklist == set(ids)
    assert not batcher.status.paused_reason


async def test_a_partial_batch_is_sent_after_max_delay_not_after_the_jump(
        env: Env, clock: JumpClock, fake_wechat: FakeWeChat) -> None:
    ids = make_openids(2)
    await env.enqueue(ids)  # created at the clock's now
    clock.offset -= HOUR  # before the batcher ever looks
    await env.batcher(max_delay=0.5, idle_seconds=0.05)
    await until_async(lambda: _statuses_done(env, 2), timeout=10)
    assert fake_wechat.blacklist == set(ids)


async def test_a_lost_claim_comes_back_after_the_jump(env: Env, clock: JumpClock) -> None:
    ids = make_openids(1)
    await env.enqueue(ids)
    batcher = await env.batcher(max_delay=60, idle_seconds=0.05, stale_after=5,
                                start=False)
    queue = batcher._queue
    # This process claims the row, then loses track of it (a cancelled send).
    claimed = await queue.claim(ActionKind.BLACKLIST, batcher.owner, env.clock(), 20)
    assert [c.openid for c in claimed] == ids
    clock.offset -= HOUR
    await batcher.housekeep(env.clock())
    assert [r["status"] for r in await env.rows()] == ["pending"]


async def until_rows(env: Env, predicate: object, timeout: float = 5.0) -> None:
    async def check() -> bool:
        rows = await env.rows()
        return bool(rows) and bool(predicate(rows))  # type: ignore[operator]
    await until_async(check, timeout)


async def until_async(predicate: object, timeout: float = 5.0) -> None:
    import asyncio

    deadline = time.monotonic() + timeout
    while not await predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)  # polling an outside effect
