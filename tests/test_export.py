"""The blacklist export against the fake WeChat API: paging, retries, snapshots, files."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import yaml
from aiohttp import web

from bot.config import ExportConfig, WeChatConfig
from bot.core.paging import end_text
from bot.jobs.export import (
    Exporter,
    ExportError,
    ExportResult,
    ExportSkipped,
    RetryPolicy,
    next_begin,
)
from bot.jobs.export_files import notify, write_atomic
from bot.metrics import Metrics
from bot.storage.sqlite import snapshots as snap
from bot.storage.sqlite.adapters import SqliteStorage
from bot.storage.sqlite.store import Store
from bot.storage.sqlite.tokens import SqliteTokenCache
from bot.wechat.api import WeChatClient
from tests.fake_wechat import FakeWeChat, errcode, http_error, make_openids

ROOT = Path(__file__).resolve().parent.parent
TZ = "Asia/Shanghai"
# 2024-05-01 03:00 in Shanghai: the first export day of these tests.
DAY1 = datetime(2024, 5, 1, 3, 0, tzinfo=ZoneInfo(TZ)).timestamp()



@pytest.fixture
async def client(fake_wechat: FakeWeChat, store: Store) -> AsyncIterator[WeChatClient]:
    """The real API client on the fake server."""
    config = WeChatConfig(appid=fake_wechat.appid, secret=fake_wechat.secret,
                          api_base=fake_wechat.base_url)
    async with aiohttp.ClientSession() as session:
        yield WeChatClient(config, session, SqliteTokenCache(store), Metrics(), timeout=5)


@dataclass
class Clock:
    """Settable time for the exporter."""

    now: float = DAY1

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_exporter(store: Store, client: WeChatClient, tmp_path: Path, clock: Clock,
                  sleeps: list[float]) -> Callable[..., Exporter]:
    """Exporters writing to tmp_path/exports, on the settable clock, sleeps recorded."""
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    def build(source: object = None, **config: object) -> Exporter:
        export = ExportConfig(timezone=TZ, dir=str(tmp_path / "exports"), **config)  # type: ignore[arg-type]
        return Exporter(SqliteStorage(store), source or client, export, clock=clock,  # type: ignore[arg-type]
                        sleep=sleep, policy=RetryPolicy(attempts=4, base=1.0, cap=8.0))

    return build


def csv_ids(result: ExportResult) -> list[str]:
    lines = result.paths["csv"].read_text().splitlines()
    assert lines[0] == "openid"
    return lines[1:]


def db_rows(tmp_path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(tmp_path / "bot.db") as conn:
        return conn.execute(sql).fetchall()


# ---------------------------------------------------------------- paging


@pytest.mark.parametrize(("size", "page_size"), [
    (0, 10000), (1, 10000), (10000, 10000), (10001, 10000), (25001, 10000), (25001, 1000),
    (2000, 1000),
], ids=str)
async def test_exports_every_openid_exactly_once(
        size: int, page_size: int, fake_wechat: FakeWeChat,
        make_exporter: Callable[..., Exporter], tmp_path: Path) -> None:
    ids = make_openids(size)
    fake_wechat.blacklist.update(ids)
    fake_wechat.page_size = page_size
    result = await make_exporter().run()
    assert csv_ids(result) == ids
    assert result.total == size
    pages = -(-size // page_size)
    # The fake's last page still carries a next_openid: one more call answers count 0.
    assert len(fake_wechat.calls_to("getblacklist")) == pages + 1
    assert result.progress.end == "count 0"
    assert db_rows(tmp_path, "SELECT day, total, complete FROM snapshots") == [
        ("2024-05-01", size, 1)]
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM snapshot_entries") == [(size,)]
    assert set(result.paths) == {"csv", "html", "json"}
    assert all(p.exists() for p in result.paths.values())


@pytest.mark.parametrize(("page_end", "end", "calls"), [
    ("empty_next", "empty next_openid", 3),
    ("repeat", "count 0", 4),
    ("count0", "count 0", 4),
])
async def test_end_conditions_on_the_fake(page_end: str, end: str, calls: int,
                                          fake_wechat: FakeWeChat,
                                          make_exporter: Callable[..., Exporter]) -> None:
    ids = make_openids(2500)
    fake_wechat.blacklist.update(ids)
    fake_wechat.page_size, fake_wechat.page_end = 1000, page_end
    result = await make_exporter().run()
    assert csv_ids(result) == ids
    assert result.progress.end == end
    assert len(fake_wechat.calls_to("getblacklist")) == calls


@dataclass(frozen=True)
class Page:
    total: int
    count: int
    openids: list[str]
    next_openid: str


class ScriptedSource:
    """A source answering pages from a dict keyed by begin_openid (an unreliable API)."""

    def __init__(self, pages: dict[str, Page]):
        self.pages = pages
        self.begins: list[str] = []

    async def get_blacklist_page(self, begin_openid: str) -> Page:
        self.begins.append(begin_openid)
        return self.pages[begin_openid]


A, B, C, D = make_openids(4)


@pytest.mark.parametrize(("pages", "expected", "end"), [
    # total 0 is not trusted: paging goes on until count 0.
    ({"": Page(0, 2, [A, B], B), B: Page(0, 1, [C], C), C: Page(0, 0, [], "")},
     [A, B, C], "count 0"),
    # next_openid points back to an earlier page: stop, keep what was listed once.
    ({"": Page(9, 2, [A, B], B), B: Page(9, 2, [C, D], B)}, [A, B, C, D],
     "repeated next_openid"),
    # overlapping pages: duplicates are kept once; reaching total does not end paging.
    ({"": Page(3, 2, [A, B], B), B: Page(3, 2, [B, C], C), C: Page(3, 0, [], "")},
     [A, B, C], "count 0"),
    # a page that adds nothing new while claiming more: the API loops, stop.
    ({"": Page(9, 2, [A, B], B), B: Page(9, 2, [A, B], C)}, [A, B],
     "no new OpenIDs on a page (the API is looping)"),
], ids=["count0", "repeated", "overlap", "no-progress"])
async def test_end_conditions_unreliable_api(pages: dict[str, Page], expected: list[str],
                                             end: str,
                                             make_exporter: Callable[..., Exporter]) -> None:
    source = ScriptedSource(pages)
    result = await make_exporter(source).run()
    assert csv_ids(result) == expected
    assert result.progress.end == end
    assert len(source.begins) == len(set(source.begins))


def test_next_begin_table() -> None:
    seen = {"", A}
    assert next_begin(Page(5, 0, [], ""), A, seen, 0) == (None, "count 0")
    assert next_begin(Page(5, 1, [B], ""), A, seen, 1) == (None, "empty next_openid")
    assert next_begin(Page(5, 1, [B], A), A, seen, 1) == (None, "repeated next_openid")
    assert next_begin(Page(5, 1, [A], B), A, seen, 0) == (
        None, "no new OpenIDs on a page (the API is looping)")
    assert next_begin(Page(5, 1, [B], B), A, seen, 1) == (B, "")
    # total is informational: a page at or past it still leads on.
    assert next_begin(Page(1, 1, [B], B), A, seen, 1) == (B, "")


class RemovesBehindTheCursor:
    """The real client; once the first page is read, ``removed`` leave the blacklist.

    That is what the expiry job unblacklisting during a long export looks like.
    """

    def __init__(self, inner: WeChatClient, fake: FakeWeChat, removed: list[str]):
        self.inner, self.fake, self.removed, self.calls = inner, fake, removed, 0

    async def get_blacklist_page(self, begin_openid: str) -> object:
        page = await self.inner.get_blacklist_page(begin_openid)
        self.calls += 1
        if self.calls == 1:
            self.fake.blacklist.difference_update(self.removed)
        return page


async def test_removals_behind_the_cursor_do_not_drop_the_tail(
        fake_wechat: FakeWeChat, client: WeChatClient,
        make_exporter: Callable[..., Exporter]) -> None:
    ids = make_openids(2500)
    fake_wechat.blacklist.update(ids)
    fake_wechat.page_size = 1000
    # After page 1, 600 of its OpenIDs go: WeChat's total drops to 1,900 while 2,000
    # are already kept, yet 500 still-blacklisted OpenIDs lie ahead of the cursor.
    result = await make_exporter(RemovesBehindTheCursor(client, fake_wechat, ids[:600])).run()
    assert csv_ids(result) == ids  # the removed ones were listed when their page was read
    assert result.progress.end == "count 0"
    assert result.progress.total == 1900
    assert result.notes == ["WeChat reported total 1900 but 2500 distinct OpenIDs were "
                            "listed (the list changed during the export?)"]


async def test_failing_pages_are_retried_with_backoff(
        fake_wechat: FakeWeChat, make_exporter: Callable[..., Exporter],
        sleeps: list[float]) -> None:
    ids = make_openids(2500)
    fake_wechat.blacklist.update(ids)
    fake_wechat.page_size = 1000
    fake_wechat.script("getblacklist", errcode(-1), http_error(502), errcode(45011))
    result = await make_exporter().run()
    assert csv_ids(result) == ids
    assert sleeps == [1.0, 2.0, 8.0]  # backoff, then 45011 waits the cap (a minute in prod)
    assert result.progress.retries == 3
    assert len(fake_wechat.calls_to("getblacklist")) == 3 + 4  # 3 failures, 3 pages, count 0


async def test_persistent_failure_keeps_the_previous_export(
        fake_wechat: FakeWeChat, make_exporter: Callable[..., Exporter], tmp_path: Path,
        clock: Clock) -> None:
    fake_wechat.blacklist.update(make_openids(1500))
    fake_wechat.page_size = 1000
    first = await make_exporter().run()
    before = first.paths["csv"].read_bytes()
    fake_wechat.blacklist.update(make_openids(3000))
    # The second page fails four times: the export gives up after the policy's 4 attempts.
    fake_wechat.script("getblacklist", {"total": 3000, "count": 1000,
                                        "data": {"openid": make_openids(1000)},
                                        "next_openid": make_openids(1000)[-1]},
                       *[errcode(-1)] * 4)
    clock.now += 60
    with pytest.raises(ExportError, match="after 4 attempt"):
        await make_exporter().run()
    assert first.paths["csv"].read_bytes() == before
    assert db_rows(tmp_path, "SELECT day, total FROM snapshots") == [("2024-05-01", 1500)]
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM snapshot_entries") == [(1500,)]
    assert sorted(os.listdir(tmp_path / "exports")) == [
        "blacklist-2024-05-01.csv", "report-2024-05-01.html", "report-2024-05-01.json"]


async def test_fatal_error_is_not_retried(fake_wechat: FakeWeChat,
                                          make_exporter: Callable[..., Exporter]) -> None:
    fake_wechat.script("getblacklist", errcode(48001))
    with pytest.raises(ExportError, match="48001"):
        await make_exporter().run()
    assert len(fake_wechat.calls_to("getblacklist")) == 1


# ---------------------------------------------------------------- snapshots, diff, reconcile


async def test_diff_against_previous_day_and_same_day_replacement(
        fake_wechat: FakeWeChat, make_exporter: Callable[..., Exporter], clock: Clock,
        tmp_path: Path) -> None:
    ids = make_openids(3000)
    fake_wechat.page_size = 1000
    fake_wechat.blacklist.update(ids[:2000])
    await make_exporter().run()
    clock.now += 86400
    fake_wechat.blacklist.difference_update(ids[:100])
    fake_wechat.blacklist.update(ids[2000:2060])
    second = await make_exporter().run()
    assert second.day == "2024-05-02"
    assert second.report.added == (60, ids[2000:2050])
    assert second.report.removed == (100, ids[:50])
    assert second.report.change == -40
    # Again the same day: replaces the day's snapshot and compares with the run it
    # replaces (DESIGN: "compares with the snapshot before it"), not with 2024-05-01.
    clock.now += 3600
    fake_wechat.blacklist.update(ids[2060:2070])
    third = await make_exporter().run()
    assert third.report.previous_day == "2024-05-02" and third.report.same_day
    assert third.report.previous_taken_at == second.report.taken_at
    assert third.report.added == (10, ids[2060:2070]) and third.report.removed == (0, [])
    assert third.report.change == 10
    assert third.report.window[0] == second.report.taken_at, "activity since that run"
    assert db_rows(tmp_path, "SELECT day, total FROM snapshots ORDER BY day") == [
        ("2024-05-01", 2000), ("2024-05-02", 1970), ("earlier:2024-05-02", 1960)]
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM snapshot_entries") == [(2000 + 1970 + 1960,)]
    summary = json.loads(third.paths["json"].read_text())
    assert summary["total"] == 1970 and summary["change"] == 10
    assert summary["previous"] == {"day": "2024-05-02", "total": 1960,
                                   "taken_at": second.report.taken_at, "same_day": True}
    assert summary["added"]["count"] == 10 and summary["removed"]["count"] == 0
    html = third.paths["html"].read_text()
    assert "since the earlier export today, 2024-05-02 " in html
    # A fourth run compares with the third; the second is no longer kept.
    clock.now += 60
    fake_wechat.blacklist.difference_update(ids[2060:2065])
    fourth = await make_exporter().run()
    assert fourth.report.previous_taken_at == third.report.taken_at
    assert fourth.report.removed == (5, ids[2060:2065]) and fourth.report.change == -5
    assert db_rows(tmp_path, "SELECT day, total FROM snapshots ORDER BY day") == [
        ("2024-05-01", 2000), ("2024-05-02", 1965), ("earlier:2024-05-02", 1970)]
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM snapshot_entries") == [(2000 + 1965 + 1970,)]
    # The next day compares with the day's final snapshot, not its earlier run.
    clock.now += 86400
    fifth = await make_exporter().run()
    assert fifth.report.previous_day == "2024-05-02" and not fifth.report.same_day
    assert fifth.report.previous_total == 1965


async def seed_our_records(store: Store, taken_at: float) -> None:
    """Our blacklist view and outbox, in the real schema."""
    before, after = int(taken_at) - 600, int(taken_at) + 5
    o = make_openids(9, prefix="r")
    rows = [(o[0], "blacklisted", before), (o[1], "blacklisted", before),
            (o[3], "removed", before), (o[6], "blacklisted", after), (o[8], "removed", after)]
    actions = [(o[4], "blacklist", "pending", None, None),
               (o[5], "unblacklist", "failed", 48001, "api unauthorized <b>"),
               (o[7], "blacklist", "failed", 40003, "invalid openid")]

    def seed(db: object) -> None:
        for openid, status, at in rows:
            db.execute("INSERT INTO blacklist (openid, status, since, updated_at)"  # type: ignore[attr-defined]
                       " VALUES (?, ?, ?, ?)", [openid, status, at, at])
        for openid, kind, status, code, msg in actions:
            db.execute("INSERT INTO actions (openid, kind, status, created_at, updated_at,"  # type: ignore[attr-defined]
                       " errcode, errmsg) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [openid, kind, status, before, before + 1, code, msg])

    await store.call(seed)


async def test_reconciliation_with_our_records(
        fake_wechat: FakeWeChat, make_exporter: Callable[..., Exporter], store: Store) -> None:
    o = make_openids(9, prefix="r")
    await seed_our_records(store, DAY1)
    # Platform: o0 (ours), o2 (by hand), o3 (we removed it, re-added by hand), o5 (our
    # unblacklist failed). Missing: o1 (ours: removed by hand), o4 (our pending blacklist),
    # o6 (we blacklisted it after the export started: not a finding), o7 (failed 40003).
    # o8: we removed it after the export started, the platform still listed it: no finding.
    fake_wechat.blacklist.update([o[0], o[2], o[3], o[5], o[8]])
    result = await make_exporter().run()
    findings = {f.name: (f.count, f.sample) for f in result.report.findings}
    assert findings["hand_added"] == (3, [o[2], o[3], o[5]])
    assert findings["hand_removed"] == (1, [o[1]])
    count, sample = findings["unreflected"]
    assert count == 3
    assert sample[0] == f"blacklist {o[4]} (pending)"
    assert sample[1] == f"unblacklist {o[5]} (failed, errcode 48001: api unauthorized <b>)"
    assert sample[2].startswith(f"blacklist {o[7]} (failed, errcode 40003")


# ---------------------------------------------------------------- files


async def test_csv_write_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "out" / "blacklist-2024-05-01.csv"
    target.parent.mkdir()
    target.write_text("openid\nold\n")

    async def failing() -> AsyncIterator[str]:
        yield "openid\n"
        yield "new1\n"
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        await write_atomic(target, failing())
    assert target.read_text() == "openid\nold\n"
    assert os.listdir(target.parent) == [target.name]  # no temp file left behind

    async def good() -> AsyncIterator[str]:
        yield "openid\n"
        yield "new1\n"

    await write_atomic(target, good())
    assert target.read_text() == "openid\nnew1\n"
    assert os.listdir(target.parent) == [target.name]


async def test_retention_removes_old_files_and_entries(
        fake_wechat: FakeWeChat, make_exporter: Callable[..., Exporter], clock: Clock,
        tmp_path: Path) -> None:
    fake_wechat.blacklist.update(make_openids(5))
    for _ in range(4):
        await make_exporter(retention_days=2).run()
        clock.now += 86400
    exports = tmp_path / "exports"
    (exports / "notes.txt").write_text("kept: not an export file")
    await make_exporter(retention_days=2).run()  # 2024-05-05: cutoff 2024-05-03
    names = sorted(os.listdir(exports))
    assert [n for n in names if n.startswith("blacklist-")] == [
        "blacklist-2024-05-03.csv", "blacklist-2024-05-04.csv", "blacklist-2024-05-05.csv"]
    assert "notes.txt" in names
    # Rows stay; entries of snapshots older than the cutoff go (not the two newest).
    assert db_rows(tmp_path, "SELECT s.day, COUNT(e.openid) FROM snapshots s LEFT JOIN"
                   " snapshot_entries e ON e.snapshot_id = s.id GROUP BY s.id ORDER BY s.day"
                   ) == [("2024-05-01", 0), ("2024-05-02", 0), ("2024-05-03", 5),
                         ("2024-05-04", 5), ("2024-05-05", 5)]


async def test_lock_held_elsewhere_skips(store: Store,
                                         make_exporter: Callable[..., Exporter]) -> None:
    await store.call(lambda db: snap.acquire_lock(db, "other-host:1", DAY1, 600))
    with pytest.raises(ExportSkipped, match="other-host:1"):
        await make_exporter().run()
    # A lock whose holder died (not refreshed within its TTL) is taken over.
    await store.call(lambda db: snap.acquire_lock(db, "other-host:1", DAY1 - 700, 600))
    result = await make_exporter().run()
    assert result.total == 0


async def test_summary_posted_to_robot(fake_wechat: FakeWeChat, tmp_path: Path,
                                       make_exporter: Callable[..., Exporter]) -> None:
    from tests.tls import make_tls

    server_ssl, client_ssl = make_tls(tmp_path)
    received: list[dict[str, object]] = []

    async def robot(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    app = web.Application()
    app.router.add_post("/cgi-bin/webhook/send", robot)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"https://127.0.0.1:{port}/cgi-bin/webhook/send?key=SECRETKEY"
    local = {"allow_private": True, "ssl_context": client_ssl}
    try:
        fake_wechat.blacklist.update(make_openids(7))
        exporter = make_exporter(notify_url=url, notify_allow_private=True)
        exporter.notify_ssl = client_ssl
        await exporter.run()
        assert received[0]["msgtype"] == "text"
        assert "7 OpenIDs" in received[0]["text"]["content"]  # type: ignore[index]
        assert await notify(url.replace("/send", "/missing"), "x", **local) is False
    finally:
        await runner.cleanup()
    assert await notify(url, "x", timeout=1, **local) is False  # robot gone: logged, not raised


# ---------------------------------------------------------------- CLI


def write_config(tmp_path: Path, fake: FakeWeChat | None) -> Path:
    path = tmp_path / "config.yaml"
    wechat = ({"appid": fake.appid, "secret": fake.secret, "api_base": fake.base_url}
              if fake else {})
    path.write_text(yaml.safe_dump({
        "wechat": wechat, "storage": {"path": str(tmp_path / "bot.db")},
        "export": {"dir": str(tmp_path / "exports"), "timezone": TZ},
    }))
    return path


async def run_cli(config: Path, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WECHAT_", "BOT_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, "--config", str(config), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_export_then_report(fake_wechat: FakeWeChat, tmp_path: Path) -> None:
    fake_wechat.blacklist.update(make_openids(2500))
    fake_wechat.page_size = 1000
    config = write_config(tmp_path, fake_wechat)
    code, out, err = await run_cli(config, "export")
    assert code == 0, err
    paths = [Path(p) for p in out.split()]
    today = datetime.fromtimestamp(time.time(), ZoneInfo(TZ)).date().isoformat()
    assert [p.name for p in paths] == [f"blacklist-{today}.csv", f"report-{today}.html",
                                       f"report-{today}.json"]
    assert len(paths[0].read_text().splitlines()) == 2501
    assert "pages 3, OpenIDs 2500 of 2500" in err
    assert fake_wechat.secret not in err + out
    paths[1].unlink()
    calls = len(fake_wechat.calls)
    code, out, err = await run_cli(config, "report", "--date", today)
    assert code == 0, err
    assert out.split() == [str(paths[1]), str(paths[2])]
    assert paths[1].exists()
    assert len(fake_wechat.calls) == calls  # no API call
    code, _out, err = await run_cli(config, "report", "--date", "2001-01-01")
    assert code == 1 and "no complete snapshot for 2001-01-01" in err


async def test_cli_export_in_dry_run_says_so(tmp_path: Path) -> None:
    code, out, err = await run_cli(write_config(tmp_path, None), "export")
    assert code == 1
    assert "dry-run" in err and "wechat.appid" in err
    assert out == ""
    assert not (tmp_path / "exports").exists()


async def test_a_days_earlier_run_goes_with_the_days_files(
        fake_wechat: FakeWeChat, make_exporter: Callable[..., Exporter], clock: Clock,
        tmp_path: Path) -> None:
    fake_wechat.blacklist.update(make_openids(5))
    await make_exporter(retention_days=2).run()
    clock.now += 60
    await make_exporter(retention_days=2).run()  # 2024-05-01 twice: an earlier run kept
    for _ in range(4):
        clock.now += 86400
        await make_exporter(retention_days=2).run()
    assert db_rows(tmp_path, "SELECT s.day, COUNT(e.openid) FROM snapshots s LEFT JOIN"
                   " snapshot_entries e ON e.snapshot_id = s.id WHERE s.day LIKE '%05-01'"
                   " GROUP BY s.id ORDER BY s.day") == [("2024-05-01", 0),
                                                        ("earlier:2024-05-01", 0)]


def test_why_paging_ended_reads_in_words() -> None:
    assert end_text("count 0") == "WeChat listed no more OpenIDs (the end of the list)"
    assert end_text("empty next_openid").endswith("(the end of the list)")
    assert end_text("no new OpenIDs on a page (the API is looping)").startswith("no new")
