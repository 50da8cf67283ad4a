"""The batcher and its SQLite queue, against the fake WeChat API and real SQLite files."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.config import ActionsConfig, WeChatConfig, build_config
from bot.core.models import Action, ActionKind
from bot.core.settle import (
    Backoff,
    Verdict,
    daily_pause_until,
    next_minute,
    settle,
    wait_before_send,
)
from bot.jobs.batcher import Batcher
from bot.metrics import Metrics
from bot.services import build_services
from bot.storage.sqlite.actions import (
    QueueState,
    claim,
    complete,
    heartbeat,
    queue_expired,
    reclaim_stale,
)
from bot.storage.sqlite.adapters import SqliteStorage
from bot.storage.sqlite.store import Store, enqueue_action, open_db
from bot.wechat.api import (
    BatchTooLargeError,
    CredentialError,
    FatalAPIError,
    InvalidOpenIDError,
    QuotaError,
    RetryableError,
    TokenError,
    WeChatClient,
)
from tests.backends import fetch
from tests.fake_wechat import FakeWeChat, delay, errcode, flatten, make_openids

FAST = Backoff(base=0.01, cap=0.05)


class Clock:
    """A settable clock starting at the real time (rows' created_at use it too)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition the system under test reaches by itself."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def dead_owner() -> str:
    """An owner id on this host whose process has exited (as after a SIGKILL)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}:crashed"


class Env:
    """A storage (each backend in turn), a client on the fake API and a factory for
    batchers; cleans up after."""

    def __init__(self, tmp_path: Path, fake: FakeWeChat, session: aiohttp.ClientSession,
                 backend: dict[str, str] | None = None):
        self.path = tmp_path / "bot.db"
        self.fake = fake
        self.session = session
        self.config = build_config({"storage": backend or {"path": str(self.path)}})
        self.storage = self.new_storage()
        self.clock = Clock()
        self.metrics = Metrics()
        self.batchers: list[Batcher] = []
        self.others: list[Any] = []

    def new_storage(self) -> Any:
        """Another storage on the same database (as a second process has)."""
        return build_services(self.config).storage

    @property
    def store(self) -> Store:
        assert isinstance(self.storage, SqliteStorage), "a SQLite-only step"
        return self.storage.store

    def client(self, storage: Any = None, timeout: float = 5) -> WeChatClient:
        config = WeChatConfig(appid=self.fake.appid, secret=self.fake.secret,
                              api_base=self.fake.base_url)
        return WeChatClient(config, self.session, (storage or self.storage).tokens,
                            self.metrics, timeout=timeout)

    async def batcher(self, *, batch_size: int = 20, max_delay: float = 60.0,
                      dry_run: bool = False, storage: Any = None, start: bool = True,
                      **kwargs: Any) -> Batcher:
        storage = storage or self.storage
        b = Batcher(storage.actions, None if dry_run else self.client(storage),
                    ActionsConfig(batch_size=batch_size, max_delay_seconds=max_delay),
                    self.metrics, dry_run=dry_run, backoff=kwargs.pop("backoff", FAST),
                    clock=kwargs.pop("clock", self.clock), rng=random.Random(1), **kwargs)
        if start:
            await b.start()
            self.batchers.append(b)
        return b

    async def enqueue(self, openids: list[str], kind: ActionKind = ActionKind.BLACKLIST,
                      expires_at: int | None = None) -> None:
        now = int(self.clock())
        actions = [Action(kind, o, "r1", "spam", expires_at) for o in openids]
        if isinstance(self.storage, SqliteStorage):
            await self.store.call(lambda db: [enqueue_action(db, a, now) for a in actions])
            return
        from bot.storage.postgres import records

        async with self.storage.pool().acquire() as conn, conn.transaction():
            for action in actions:
                await records.enqueue_action(conn, action, now)

    async def sql(self, query: str) -> list[tuple[Any, ...]]:
        return await fetch(self.config, query)

    async def rows(self) -> list[dict[str, Any]]:
        cur_columns = ("id", "openid", "kind", "status", "source", "attempts", "errcode",
                       "errmsg", "expires_at", "not_before", "claimed_by")
        rows = await self.sql(f"SELECT {', '.join(cur_columns)} FROM actions ORDER BY id")
        return [dict(zip(cur_columns, row, strict=True)) for row in rows]

    async def statuses(self) -> dict[str, str]:
        return {r["openid"]: r["status"] for r in await self.rows()}

    def batch_calls(self) -> list[Any]:
        return self.fake.calls_to("batchblacklist")


@pytest.fixture
async def env(tmp_path: Path, fake_wechat: FakeWeChat, backend: dict[str, str]
              ) -> AsyncIterator[Env]:
    async with aiohttp.ClientSession() as session:
        e = Env(tmp_path, fake_wechat, session, backend)
        await e.storage.start()
        yield e
        for b in e.batchers:
            await b.stop(timeout=1)
        await e.storage.close()


# ---------------------------------------------------------------- pure decisions


@pytest.mark.parametrize(
    ("error", "size", "verdict"),
    [
        (None, 20, Verdict.DONE),
        (RetryableError(-1, "busy"), 20, Verdict.RETRY),
        (RetryableError(None, "HTTP 502", http_status=502), 20, Verdict.RETRY),
        (TokenError(40001, "bad token"), 20, Verdict.RETRY),
        (QuotaError(45011, "minute", scope="minute"), 20, Verdict.PAUSE),
        (QuotaError(45009, "daily", scope="daily"), 20, Verdict.PAUSE),
        (CredentialError(40125, "bad secret"), 20, Verdict.PAUSE),
        (BatchTooLargeError(40032, "size"), 20, Verdict.SPLIT),
        (BatchTooLargeError(40032, "size"), 1, Verdict.FAIL),
        (InvalidOpenIDError(40003, "invalid"), 20, Verdict.BISECT),
        (InvalidOpenIDError(49003, "not ours"), 1, Verdict.FAIL),
        (FatalAPIError(48001, "unauthorized"), 20, Verdict.FAIL),
    ],
    ids=["ok", "busy", "http502", "token", "minute", "daily", "creds", "split", "split-1",
         "bisect", "bad-1", "48001"],
)
def test_settle_table(error: Any, size: int, verdict: Verdict) -> None:
    s = settle(error, size=size, attempts=1, now=1000.0, backoff=Backoff(), rng=random.Random(0))
    assert s.verdict is verdict
    if error is not None:
        assert s.errcode == error.errcode


def test_backoff_grows_capped_with_jitter() -> None:
    rng, b = random.Random(0), Backoff(base=1, cap=60)
    delays = [b.delay(n, rng) for n in range(1, 12)]
    assert 0.5 <= delays[0] <= 1 and 4 <= delays[3] <= 8
    assert all(30 <= d <= 60 for d in delays[7:])


def test_quota_times() -> None:
    assert next_minute(1_700_000_030.5) == 1_700_000_041.0  # 1_700_000_040 is a minute start
    # 2024-01-01 15:59:00 UTC is 23:59 in Beijing: resume just after Beijing midnight.
    now = 1704124740.0
    assert daily_pause_until(now) == now + 60 + 60
    assert daily_pause_until(now - 7200) == now - 7200 + 3600


@pytest.mark.parametrize(
    ("ready", "oldest", "later", "flush", "expected"),
    [
        (20, 990.0, None, False, 0.0),  # full batch: at once
        (5, 999.0, None, False, 1.0),  # partial: when the oldest is max_delay old
        (5, 990.0, None, False, 0.0),  # partial and overdue
        (5, 999.5, None, True, 0.0),  # drain: partial at once
        (0, None, 1000.3, False, 0.3),  # a retry comes due
        (0, None, None, False, 1.0),  # idle: look again (other processes enqueue too)
    ],
    ids=["full", "partial-waits", "partial-due", "flush", "retry-due", "idle"],
)
def test_wait_before_send(ready: int, oldest: float | None, later: float | None, flush: bool,
                          expected: float) -> None:
    state = QueueState(ready, oldest, later, 0.0, "")
    wait = wait_before_send(state, 1000.0, batch_size=20, max_delay=2.0, flush=flush, idle=1.0)
    assert wait == pytest.approx(expected)


def test_pause_waits() -> None:
    state = QueueState(20, 990.0, None, 1500.0, "45009")
    assert wait_before_send(state, 1000.0, batch_size=20, max_delay=2, flush=True, idle=1) == 500


# ---------------------------------------------------------------- the queue (SQL)


def test_claim_keeps_follower_order_across_kinds(tmp_path: Path) -> None:
    db = open_db(tmp_path / "q.db")
    enqueue_action(db, Action(ActionKind.BLACKLIST, "oX" * 7, "r"), 100)
    first = claim(db, "blacklist", "svc", 100, 20)
    assert [c.openid for c in first] == ["oX" * 7]
    enqueue_action(db, Action(ActionKind.UNBLACKLIST, "oX" * 7, "r"), 101)  # while in flight
    assert claim(db, "unblacklist", "cli", 101, 20) == []
    complete(db, first, 102)
    assert [c.kind for c in claim(db, "unblacklist", "cli", 103, 20)] == ["unblacklist"]


def test_reclaim_only_dead_or_silent_owners(tmp_path: Path) -> None:
    db = open_db(tmp_path / "q.db")
    for i, owner in enumerate(["elsewhere:1:live", "elsewhere:2:silent", dead_owner()]):
        enqueue_action(db, Action(ActionKind.BLACKLIST, f"openid{i:04d}", "r"), 100)
        heartbeat(db, owner, 1000 if "silent" not in owner else 800)
        claim(db, "blacklist", owner, 1000, 1)
    assert reclaim_stale(db, 1000, stale_after=60) == 2
    rows = db.execute("SELECT openid, status, claimed_by FROM actions ORDER BY id").fetchall()
    assert rows == [("openid0000", "sending", "elsewhere:1:live"),
                    ("openid0001", "pending", None), ("openid0002", "pending", None)]


def test_reclaim_own_spares_claims_in_flight_and_fresh_ones(tmp_path: Path) -> None:
    from bot.storage.sqlite.actions import reclaim_own

    db = open_db(tmp_path / "q.db")
    for i, at in enumerate([900, 900, 990]):
        enqueue_action(db, Action(ActionKind.BLACKLIST, f"openid{i:04d}", "r"), 100)
        claim(db, "blacklist", "me:1:x", at, 1)
    assert reclaim_own(db, "someone:2:else", [], 1000, stale_after=60) == 0
    assert reclaim_own(db, "me:1:x", [1], 1000, stale_after=60) == 1
    rows = db.execute("SELECT id, status FROM actions ORDER BY id").fetchall()
    assert rows == [(1, "sending"), (2, "pending"), (3, "sending")]


def test_expiry_queues_unblacklist_once(tmp_path: Path) -> None:
    db = open_db(tmp_path / "q.db")
    enqueue_action(db, Action(ActionKind.BLACKLIST, "oExpiring01", "r", expires_at=5000), 100)
    complete(db, claim(db, "blacklist", "me", 100, 20), 100)
    assert queue_expired(db, 4999) == 0
    assert queue_expired(db, 5000) == 1
    assert queue_expired(db, 5060) == 0
    row = db.execute("SELECT kind, source, status FROM actions ORDER BY id DESC").fetchone()
    assert row == ("unblacklist", "expiry", "pending")


# ---------------------------------------------------------------- batching


async def test_21_actions_go_as_20_then_1_after_max_delay(env: Env) -> None:
    ids = make_openids(21)
    await env.enqueue(ids)
    b = await env.batcher(max_delay=1.0, idle_seconds=0.05)
    b.wake()
    await until(lambda: len(env.batch_calls()) == 1)
    assert env.batch_calls()[0].openids == ids[:20]
    sent_first = time.monotonic()
    env.clock.now += 1.0  # the leftover's max_delay has passed
    await until(lambda: len(env.batch_calls()) == 2)
    assert time.monotonic() - sent_first < 1.0
    assert env.batch_calls()[1].openids == ids[20:]
    assert env.fake.blacklist == set(ids)


async def test_partial_batch_waits_for_max_delay(env: Env) -> None:
    await env.enqueue(make_openids(3))
    b = await env.batcher(max_delay=30.0, idle_seconds=0.02)
    b.wake()
    env.clock.now += 29.0
    await asyncio.sleep(0.1)  # a few idle rounds: nothing may go before the delay
    assert env.batch_calls() == []
    env.clock.now += 1.0
    await until(lambda: len(env.batch_calls()) == 1)


async def test_busy_twice_then_success(env: Env) -> None:
    env.fake.script("batchblacklist", errcode(-1), errcode(-1))
    ids = make_openids(5)
    await env.enqueue(ids)
    b = await env.batcher(clock=time.time)
    assert await b.drain(5)
    assert len(env.batch_calls()) == 3
    rows = await env.rows()
    assert {r["status"] for r in rows} == {"done"}
    assert {r["attempts"] for r in rows} == {3}
    assert env.fake.blacklist == set(ids)


async def test_token_revoked_mid_run(env: Env) -> None:
    b = await env.batcher()
    await env.enqueue(make_openids(20))
    assert await b.drain(5)
    env.fake.revoke_tokens()
    await env.enqueue(make_openids(40)[20:])
    assert await b.drain(5)
    assert len(env.fake.token_calls()) == 2
    assert env.fake.blacklist == set(make_openids(40))


async def test_one_invalid_openid_among_20(env: Env) -> None:
    ids = make_openids(20)
    env.fake.invalid.add(ids[13])
    await env.enqueue(ids)
    b = await env.batcher()
    assert await b.drain(5)
    assert env.fake.blacklist == set(ids) - {ids[13]}
    assert len(env.batch_calls()) <= 10
    rows = {r["openid"]: r for r in await env.rows()}
    assert (rows[ids[13]]["status"], rows[ids[13]]["errcode"]) == ("failed", 40003)
    assert sum(r["status"] == "done" for r in rows.values()) == 19
    assert len(flatten(c for c in env.batch_calls() if c.answer["errcode"] == 0)) == 19


async def test_bisect_right_half_sent_when_left_half_was_only_retried(env: Env) -> None:
    """[A(bad), B] gets 40003; [A] alone gets -1: that says nothing about B, which must be
    sent on its own (not failed with 40003 unsent), and A retried until it fails for good."""
    bad, good = make_openids(2)
    env.fake.invalid.add(bad)
    env.fake.script("batchblacklist", errcode(40003), errcode(-1))
    await env.enqueue([bad, good])
    b = await env.batcher(batch_size=2, clock=time.time)
    assert await b.drain(5)
    rows = {r["openid"]: (r["status"], r["errcode"]) for r in await env.rows()}
    assert rows == {good: ("done", None), bad: ("failed", 40003)}
    assert [c.openids for c in env.batch_calls()] == [[bad, good], [bad], [good], [bad]]
    assert env.fake.blacklist == {good}


async def test_bisect_stops_at_a_pause(env: Env) -> None:
    """45009 on the left half: the right half is neither sent nor failed, just kept."""
    ids = make_openids(4)
    env.fake.invalid.add(ids[0])
    env.fake.script("batchblacklist", errcode(40003), errcode(45009))
    await env.enqueue(ids)
    b = await env.batcher(batch_size=4, idle_seconds=0.02)
    assert not await b.drain(5)
    assert [c.openids for c in env.batch_calls()] == [ids, ids[:2]]
    rows = await env.rows()
    assert {(r["status"], r["attempts"]) for r in rows} == {("pending", 0)}
    assert "quota" in b.status.paused_reason


async def test_40032_splits(env: Env) -> None:
    env.fake.script("batchblacklist", errcode(40032))
    await env.enqueue(make_openids(20))
    assert await (await env.batcher()).drain(5)
    assert [len(c.openids) for c in env.batch_calls()] == [20, 10, 10]
    assert len(env.fake.blacklist) == 20


async def test_daily_quota_pauses_and_keeps_pending(env: Env,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    env.fake.script("batchblacklist", errcode(45009))
    ids = make_openids(25)
    await env.enqueue(ids)
    b = await env.batcher(idle_seconds=0.02)
    assert not await b.drain(5)
    assert {r["status"] for r in await env.rows()} == {"pending"}
    assert {r["attempts"] for r in await env.rows()} == {0}
    assert "quota" in b.status.paused_reason
    assert any(r.levelno == logging.ERROR and "PAUSED" in r.message for r in caplog.records)
    calls = len(env.batch_calls())
    await asyncio.sleep(0.1)  # paused: no call while the clock stands still
    assert len(env.batch_calls()) == calls == 1
    env.clock.now += 3601  # quota reset (or cleared by an admin): sending resumes
    assert await b.drain(5)
    assert env.fake.blacklist == set(ids)


async def test_48001_final_with_explanation(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.fake.script("batchblacklist", errcode(48001))
    await env.enqueue(make_openids(3))
    assert await (await env.batcher()).drain(5)
    rows = await env.rows()
    assert {(r["status"], r["errcode"]) for r in rows} == {("failed", 48001)}
    assert len(env.batch_calls()) == 1
    assert "verified" in caplog.text


async def test_dry_run_batcher_never_touches_the_queue(env: Env) -> None:
    """A dry-run process (e.g. a CLI without secrets) sharing a live service's database must
    leave the service's pending rows alone: no claim, no settlement, no call."""
    ids = make_openids(3)
    await env.enqueue(ids)
    b = await env.batcher(dry_run=True, idle_seconds=0.02)
    b.wake()
    assert not await b.drain(0.2)  # nothing can be sent in dry-run
    await b.housekeep(env.clock() + 1)
    rows = await env.rows()
    assert {(r["status"], r["attempts"], r["claimed_by"]) for r in rows} == {
        ("pending", 0, None)}
    assert env.fake.calls == []
    assert b.status.dry_run and b.status.pending == 3


async def test_dry_run_expiry_is_recorded_not_applied(env: Env) -> None:
    ids = make_openids(1)
    expires = int(env.clock()) + 3600
    await env.enqueue(ids, expires_at=expires)
    assert await (await env.batcher()).drain(5)  # blacklisted for real by a live run
    dry = await env.batcher(dry_run=True)
    await dry.housekeep(expires)
    await dry.housekeep(expires + 60)  # recorded once, not every round
    rows = [(r["kind"], r["source"], r["status"]) for r in await env.rows()]
    assert rows == [("blacklist", "rule", "done"), ("unblacklist", "expiry", "dry_run")]
    # The real state is left for a live run to act on: the expiry still stands.
    state = await env.sql("SELECT status, expires_at FROM blacklist")
    assert state == [("blacklisted", expires)]
    assert env.fake.blacklist == set(ids)


async def test_timed_blacklist_expires_through_housekeeping(env: Env) -> None:
    ids = make_openids(2)
    expires = int(env.clock()) + 7 * 86400
    await env.enqueue(ids, expires_at=expires)
    b = await env.batcher()
    assert await b.drain(5)
    assert env.fake.blacklist == set(ids)
    await b.housekeep(expires - 1)
    assert await b.drain(5)
    assert env.fake.blacklist == set(ids)
    await b.housekeep(expires)
    assert await b.drain(5)
    assert env.fake.blacklist == set()
    state = await env.sql("SELECT status FROM blacklist")
    assert state == [("removed",), ("removed",)]


async def test_graceful_stop_finishes_the_call_in_flight(env: Env) -> None:
    env.fake.script("batchblacklist", delay(0.3))
    await env.enqueue(make_openids(20))
    b = await env.batcher(start=False)
    await b.start()
    b.wake()
    await until(lambda: len(env.batch_calls()) == 1)
    await b.stop(timeout=5)
    assert set((await env.statuses()).values()) == {"done"}


async def test_abrupt_stop_returns_claims(env: Env) -> None:
    env.fake.script("batchblacklist", delay(2))
    await env.enqueue(make_openids(20))
    b = await env.batcher(start=False)
    await b.start()
    b.wake()
    await until(lambda: len(env.batch_calls()) == 1)
    await b.stop(timeout=0.05)
    assert set((await env.statuses()).values()) == {"pending"}


# ---------------------------------------------------------------- crash and sharing


async def test_a_claim_this_live_process_lost_track_of_is_reclaimed(env: Env) -> None:
    from bot.storage.owners import make_owner

    ids = make_openids(2)
    await env.enqueue(ids)
    owner = make_owner("lost")  # this process: alive, and heartbeating below
    now = env.clock.now
    await env.storage.actions.claim("blacklist", owner, now, 20)  # nobody sends
    b = await env.batcher(owner=owner)
    await b.housekeep(env.clock.now)
    assert set((await env.statuses()).values()) == {"sending"}, "fresh: maybe in flight"
    env.clock.now += 61
    await b.housekeep(env.clock.now)
    assert await b.drain(timeout=5)
    assert set((await env.statuses()).values()) == {"done"}
    assert [c.openids for c in env.batch_calls()] == [ids]


async def test_api_down_crash_restart_applies_everything_once(env: Env) -> None:
    env.fake.down = True
    ids = make_openids(30)
    await env.enqueue(ids)
    crashed = await env.batcher(owner=dead_owner(), start=False, clock=time.time)
    await crashed.start()
    crashed.wake()
    await until(lambda: len(env.fake.calls) >= 3)  # retrying with backoff while down
    env.fake.down = False
    env.fake.script("batchblacklist", delay(10))  # the next call hangs: crash mid-send
    seen = len(env.batch_calls())
    await until(lambda: len(env.batch_calls()) > seen)
    for task in list(crashed._tasks):  # simulate the crash: no stop(), claims left behind
        task.cancel()
    await asyncio.sleep(0)
    assert "sending" in (await env.statuses()).values()
    restarted = await env.batcher(clock=time.time)
    assert await restarted.drain(10)
    assert set((await env.statuses()).values()) == {"done"}
    ok_calls = [c for c in env.batch_calls() if isinstance(c.answer, dict)
                and c.answer.get("errcode") == 0]
    assert sorted(flatten(ok_calls)) == ids  # each applied exactly once
    assert env.fake.blacklist == set(ids)


async def test_two_processes_sharing_the_db_never_send_twice(env: Env) -> None:
    ids = make_openids(200)
    await env.enqueue(ids)
    other = env.new_storage()
    await other.start()
    try:
        a = await env.batcher(batch_size=7, clock=time.time)
        b = await env.batcher(batch_size=7, storage=other, clock=time.time)
        done = await asyncio.gather(a.drain(10), b.drain(10))
        assert all(done)
        await b.stop()
    finally:
        env.batchers.remove(b)
        await other.close()
    sent = flatten(env.batch_calls())
    assert sorted(sent) == ids
    assert all(len(c.openids) <= 7 for c in env.batch_calls())


async def test_unblacklist_waits_for_earlier_blacklist(env: Env) -> None:
    env.fake.script("batchblacklist", delay(0.3))
    target = make_openids(1)
    await env.enqueue(target)
    b = await env.batcher(batch_size=1)
    b.wake()
    await until(lambda: len(env.batch_calls()) == 1)
    await env.enqueue(target, ActionKind.UNBLACKLIST)  # queued while the blacklist is in flight
    assert await b.drain(5)
    calls = [c.endpoint for c in env.fake.calls if c.endpoint.startswith("batch")]
    assert calls == ["batchblacklist", "batchunblacklist"]
    assert env.fake.blacklist == set()


async def test_minute_quota_pauses_every_batch_not_just_the_one(env: Env) -> None:
    # 45011 limits the whole API for the minute: the other ready batches must wait too,
    # or each one fires into the limit and they all come due again in the same second.
    await env.enqueue(make_openids(200))
    env.fake.script("batchblacklist", *[errcode(45011)] * 50)
    b = await env.batcher(clock=time.time)
    b.wake()
    await asyncio.sleep(1.0)
    assert len(env.batch_calls()) == 1
    assert "45011" in b.status.paused_reason


async def test_drain_waits_out_a_pause_that_ends_before_its_deadline(env: Env) -> None:
    # The CLI sends with drain(): a 45011 (the next minute) must not make it give up.
    env.clock.now = (int(env.clock.now) // 60) * 60 + 59.0  # the minute ends in 1 s (+1 s)
    env.fake.script("batchblacklist", errcode(45011))
    await env.enqueue(make_openids(3))
    b = await env.batcher()
    drained = asyncio.create_task(b.drain(10))
    await until(lambda: len(env.batch_calls()) == 1)
    await asyncio.sleep(0.1)
    assert not drained.done(), "gave up on a pause that ends in 2 s"
    env.clock.now += 3
    b.wake()
    assert await drained
    assert len(env.fake.blacklist) == 3
