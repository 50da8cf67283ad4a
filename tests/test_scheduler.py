"""The export scheduler: cron firing, catch-up of a missed run, one run at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from apscheduler.triggers.cron import CronTrigger

from bot.config import Config, ExportConfig, StorageConfig, WeChatConfig
from bot.jobs.export import ExportSkipped
from bot.jobs.scheduler import ExportScheduler, missed_run, previous_fire
from bot.metrics import Metrics
from bot.storage.sqlite import kv
from bot.storage.sqlite import snapshots as snap
from bot.storage.sqlite.adapters import SqliteStorage
from bot.storage.sqlite.store import Store
from bot.storage.sqlite.tokens import SqliteTokenCache
from bot.wechat.api import WeChatClient
from tests.fake_wechat import FakeWeChat, make_openids

TZ = ZoneInfo("Asia/Shanghai")
NIGHTLY = CronTrigger.from_crontab("0 3 * * *", timezone=TZ)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 5, day, hour, minute, tzinfo=TZ)


MONTHLY = CronTrigger.from_crontab("0 3 1 * *", timezone=TZ)


@pytest.mark.parametrize(("trigger", "now", "after", "expected"), [
    (NIGHTLY, at(2, 3, 30), None, at(2, 3)),
    (NIGHTLY, at(2, 3, 0), None, at(2, 3)),  # a fire time at now counts
    (NIGHTLY, at(2, 2, 59), None, at(1, 3)),  # the day before's
    (NIGHTLY, at(2, 5, 0), None, at(2, 3)),  # however long ago: no lookback limit
    (NIGHTLY, at(2, 5, 0), at(1, 3, 1), at(2, 3)),
    (NIGHTLY, at(2, 5, 0), at(2, 3, 1), None),  # nothing after ``after``
    (NIGHTLY, at(2, 5, 0), at(2, 3, 0), None),  # ``after`` itself excluded
    (NIGHTLY, at(4, 5, 0), at(1, 3, 1), at(4, 3)),  # several since: the latest
    (MONTHLY, at(20, 12), None, at(1, 3)),  # 19 days back
], ids=["after-fire", "at-fire", "day-before", "two-hours", "since-last", "ran",
        "ran-at-fire", "latest-of-several", "monthly"])
def test_previous_fire(trigger: CronTrigger, now: datetime, after: datetime | None,
                       expected: datetime | None) -> None:
    assert previous_fire(trigger, now, after) == expected


def test_missed_run_decision() -> None:
    now = at(2, 3, 20).timestamp()
    fire = at(2, 3)
    assert missed_run(NIGHTLY, None, now, TZ) == fire
    assert missed_run(NIGHTLY, at(1, 3, 1).timestamp(), now, TZ) == fire
    assert missed_run(NIGHTLY, at(2, 3, 1).timestamp(), now, TZ) is None  # it ran
    # Catch-up is not limited to an hour (it was, on purpose, until downtime across the
    # fire time plus an hour skipped the day's export): any fire since the last run counts.
    assert missed_run(NIGHTLY, None, at(2, 6).timestamp(), TZ) == fire
    # Down 02:30-04:05 with the day before's export done: that day's export is due.
    assert missed_run(NIGHTLY, at(1, 3, 1).timestamp(), at(2, 4, 5).timestamp(), TZ) == fire
    # Down all of the 2nd and restarted before the 3rd's fire: the 2nd's run is due.
    assert missed_run(NIGHTLY, at(1, 3, 1).timestamp(), at(3, 2, 59).timestamp(), TZ) == fire
    assert missed_run(NIGHTLY, at(2, 4, 5).timestamp(), at(3, 2, 59).timestamp(), TZ) is None



@pytest.fixture
def config(tmp_path: Path, fake_wechat: FakeWeChat) -> Config:
    return Config(
        wechat=WeChatConfig(appid=fake_wechat.appid, secret=fake_wechat.secret,
                            api_base=fake_wechat.base_url),
        storage=StorageConfig(path=str(tmp_path / "bot.db")),
        export=ExportConfig(cron="* * * * *", timezone="Asia/Shanghai",
                            dir=str(tmp_path / "exports")),
    )


@pytest.fixture
async def client(fake_wechat: FakeWeChat, store: Store, config: Config
                 ) -> AsyncIterator[WeChatClient]:
    async with aiohttp.ClientSession() as session:
        yield WeChatClient(config.wechat, session, SqliteTokenCache(store), Metrics())


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition the scheduler makes true (an event, not a timing assumption)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def exports(metrics: Metrics, outcome: str) -> float:
    return metrics.registry.get_sample_value("bot_exports_total", {"outcome": outcome}) or 0


async def test_missed_run_runs_once_on_start(config: Config, store: Store,
                                             client: WeChatClient,
                                             fake_wechat: FakeWeChat) -> None:
    fake_wechat.blacklist.update(make_openids(3))
    metrics = Metrics()
    # Nightly at 03:00; the service starts at 03:20 and never exported: catch up now.
    nightly = ExportConfig(cron="0 3 * * *", timezone="Asia/Shanghai", dir=config.export.dir)
    cfg = Config(wechat=config.wechat, storage=config.storage, export=nightly)
    sched = ExportScheduler(cfg, SqliteStorage(store), lambda: client, metrics,
                            clock=lambda: at(2, 3, 20).timestamp())
    await sched.start()
    try:
        await until(lambda: exports(metrics, "ok") == 1)
        assert sched.last_result is not None and sched.last_result.total == 3
        assert await store.call(snap.read_last_run) == at(2, 3, 20).timestamp()
        # One export: paging starts from the top once (a page, then count 0).
        starts = [c for c in fake_wechat.calls_to("getblacklist")
                  if not c.payload.get("begin_openid")]
        assert len(starts) == 1
    finally:
        await sched.stop()


async def test_catch_up_after_downtime_longer_than_an_hour_runs_once(
        config: Config, store: Store, client: WeChatClient, fake_wechat: FakeWeChat) -> None:
    fake_wechat.blacklist.update(make_openids(3))
    metrics = Metrics()
    nightly = ExportConfig(cron="0 3 * * *", timezone="Asia/Shanghai", dir=config.export.dir)
    cfg = Config(wechat=config.wechat, storage=config.storage, export=nightly)
    await store.call(lambda db: snap.write_last_run(db, at(1, 3, 1).timestamp(), "2024-05-01"))
    # Down 02:30-04:05 on the 2nd: its 03:00 export runs on start, an hour past its time.
    sched = ExportScheduler(cfg, SqliteStorage(store), lambda: client, metrics,
                            clock=lambda: at(2, 4, 5).timestamp())
    await sched.start()
    try:
        await until(lambda: exports(metrics, "ok") == 1)
        assert sched.last_result is not None and sched.last_result.day == "2024-05-02"
        assert await store.call(snap.read_last_run) == at(2, 4, 5).timestamp()
    finally:
        await sched.stop()
    # Restarted a minute later: caught up already, nothing runs again.
    await assert_no_catch_up(ExportScheduler(cfg, SqliteStorage(store), lambda: client, metrics,
                                             clock=lambda: at(2, 4, 6).timestamp()))
    assert exports(metrics, "ok") == 1


async def assert_no_catch_up(sched: ExportScheduler) -> None:
    """Started, the scheduler runs nothing now and waits for the next fire time."""
    await sched.start()
    try:
        assert sched._scheduler is not None
        job = sched._scheduler.get_job("export")
        assert job is not None and job.next_run_time > datetime.now(TZ) + timedelta(minutes=1)
        assert sched.runs == 0
    finally:
        await sched.stop()


async def test_no_catch_up_after_a_successful_run(config: Config, store: Store,
                                                  client: WeChatClient) -> None:
    nightly = ExportConfig(cron="0 3 * * *", timezone="Asia/Shanghai", dir=config.export.dir)
    cfg = Config(wechat=config.wechat, storage=config.storage, export=nightly)
    await store.call(lambda db: snap.write_last_run(db, at(2, 3, 2).timestamp(), "2024-05-02"))
    await assert_no_catch_up(ExportScheduler(cfg, SqliteStorage(store), lambda: client,
                                             clock=lambda: at(2, 3, 20).timestamp()))


async def test_cron_fires_the_export(config: Config, store: Store, client: WeChatClient,
                                     fake_wechat: FakeWeChat, tmp_path: Path) -> None:
    fake_wechat.blacklist.update(make_openids(5))
    metrics = Metrics()
    await store.call(lambda db: snap.write_last_run(db, time.time(), "x"))  # nothing missed
    every_second = CronTrigger(second="*", timezone=TZ)
    sched = ExportScheduler(config, SqliteStorage(store), lambda: client, metrics,
                            trigger=every_second)
    await sched.start()
    try:
        await until(lambda: exports(metrics, "ok") >= 1)
    finally:
        await sched.stop()
    assert sched.last_result is not None
    assert sched.last_result.paths["csv"].read_text().splitlines()[1:] == make_openids(5)


class GatedSource:
    """A blacklist source that holds its first page until released."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def get_blacklist_page(self, begin_openid: str) -> object:
        from bot.wechat.api import BlacklistPage

        self.entered.set()
        await self.release.wait()
        return BlacklistPage(total=1, count=1, openids=make_openids(1), next_openid="")


async def test_never_two_runs_at_once(config: Config, store: Store) -> None:
    source = GatedSource()
    sched = ExportScheduler(config, SqliteStorage(store), lambda: source)  # type: ignore[arg-type,return-value]
    first = asyncio.create_task(sched.run_now())
    await source.entered.wait()
    with pytest.raises(ExportSkipped, match="already running"):
        await sched.run_now()
    source.release.set()
    assert (await first).total == 1
    assert (await sched.run_now()).total == 1  # the lock is free again


async def test_dry_run_skips_and_counts(config: Config, store: Store) -> None:
    metrics = Metrics()
    sched = ExportScheduler(config, SqliteStorage(store), lambda: None, metrics)
    with pytest.raises(ExportSkipped, match="dry-run"):
        await sched.run_now()
    await sched._scheduled()  # what APScheduler calls: counted, never raised
    assert exports(metrics, "skipped") == 1
    assert sched.last_error is not None and "dry-run" in sched.last_error


async def test_interval_jobs_run(config: Config, store: Store) -> None:
    ticks: list[float] = []

    async def expiry_check() -> None:
        ticks.append(time.monotonic())

    jobs: list[tuple[Callable[[], Awaitable[None]], float]] = [(expiry_check, 0.05)]
    await store.call(lambda db: snap.write_last_run(db, time.time(), "x"))
    sched = ExportScheduler(config, SqliteStorage(store), lambda: None, interval_jobs=jobs,
                            trigger=CronTrigger.from_crontab("0 3 1 1 *", timezone=TZ))
    await sched.start()
    try:
        await until(lambda: len(ticks) >= 2)
    finally:
        await sched.stop()


async def test_stop_cancels_a_running_export_and_frees_the_lock(
        config: Config, store: Store, tmp_path: Path) -> None:
    source = GatedSource()
    metrics = Metrics()
    # Never exported and "* * * * *": the minute's fire was missed, so it runs on start.
    sched = ExportScheduler(config, SqliteStorage(store), lambda: source, metrics)  # type: ignore[arg-type,return-value]
    await sched.start()
    await asyncio.wait_for(source.entered.wait(), 5)
    await asyncio.wait_for(sched.stop(), 5)
    assert await store.call(lambda db: db.execute(
        "SELECT COUNT(*) FROM kv WHERE key = ?", [kv.LOCK_KEY]).fetchone()[0]) == 0
    # The staged snapshot is left for the next run to purge; no day was completed.
    assert await store.call(snap.latest_day) is None
    source.release.set()
    result = await ExportScheduler(config, SqliteStorage(store), lambda: source).run_now()  # type: ignore[arg-type,return-value]
    assert result.total == 1
    assert await store.call(snap.leftovers) == []


async def test_dry_run_does_not_catch_up_at_start(config: Config, store: Store) -> None:
    # A fresh install in dry-run (no credentials): nothing to export, so no catch-up
    # that would only put "export skipped" into /healthz at every start.
    nightly = ExportConfig(cron="0 3 * * *", timezone="Asia/Shanghai", dir=config.export.dir)
    cfg = Config(wechat=config.wechat, storage=config.storage, export=nightly)
    sched = ExportScheduler(cfg, SqliteStorage(store), lambda: None,
                            clock=lambda: at(2, 4, 5).timestamp())
    await assert_no_catch_up(sched)
    assert sched.last_error is None
