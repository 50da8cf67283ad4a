"""One time zone everywhere (export.timezone), always labelled: CLI, log lines, pauses."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.cli import LOG_FORMAT, configure_logging
from bot.core.errors import explain
from bot.core.timefmt import ZoneFormatter, span, when, when_long
from tests.fake_wechat import FakeWeChat, errcode, make_openids
from tests.test_outbox import Env

# 2026-12-02 03:00:00 UTC: 11:00 in Shanghai, 22:00 the day before in New York
T = 1_796_180_400


@pytest.mark.parametrize(("zone", "expected"), [
    ("Asia/Shanghai", "2026-12-02 11:00:00 +08:00"),
    ("America/New_York", "2026-12-01 22:00:00 -05:00"),
    ("UTC", "2026-12-02 03:00:00 +00:00"),
], ids=["shanghai", "new-york", "utc"])
def test_every_time_carries_its_offset(zone: str, expected: str) -> None:
    assert when(T, zone) == expected
    assert when_long(T, zone) == f"{expected[:16]} {expected[-6:]} ({zone})"


@pytest.mark.parametrize(("seconds", "expected"), [
    (86400, "1d"), (7 * 86400, "7d"), (3600, "1h"), (5400, "90m"), (45, "45s"), (90061, "90061s"),
], ids=["day", "week", "hour", "minutes", "seconds", "odd"])
def test_durations_read_as_a_rule_file_writes_them(seconds: int, expected: str) -> None:
    assert span(seconds) == expected


def test_log_lines_are_stamped_in_the_export_zone_with_the_offset() -> None:
    record = logging.LogRecord("bot.test", logging.INFO, __file__, 1, "hello", None, None)
    record.created, record.msecs = T + 0.25, 250
    line = ZoneFormatter(LOG_FORMAT, "Asia/Shanghai").format(record)
    assert line == "2026-12-02 11:00:00.250 +08:00 INFO bot.test: hello"


def test_configure_logging_restamps_our_handler_and_quiets_apscheduler(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    try:
        configure_logging("INFO", "America/New_York")
        logging.getLogger("bot.test").warning("stamped")
        logging.getLogger("apscheduler.executors.default").info("Running job ...")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        logging.getLogger("apscheduler").setLevel(logging.NOTSET)
    out = stream.getvalue()
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} -0[45]:00 WARNING bot.test: "
                    r"stamped\n$", out), out
    assert "Running job" not in out


@pytest.fixture
async def env(tmp_path: Path, fake_wechat: FakeWeChat) -> AsyncIterator[Env]:
    """test_outbox's batcher environment: a store and the fake API."""
    async with aiohttp.ClientSession() as session:
        e = Env(tmp_path, fake_wechat, session)
        await e.store.start()
        yield e
        for b in e.batchers:
            await b.stop(timeout=1)
        await e.store.close()


def test_the_45009_explanation_does_not_promise_midnight() -> None:
    text = explain(45009)
    assert "at the time shown" in text and "within the hour" in text


async def test_a_quota_pause_logs_the_real_resume_time_in_the_export_zone(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.fake.script("batchblacklist", errcode(45009))
    await env.enqueue(make_openids(3))
    env.clock.now = float(T)  # 11:00 in Shanghai: the hourly retry comes before midnight
    b = await env.batcher(idle_seconds=0.02, timezone="Asia/Shanghai")
    assert not await b.drain(2)
    paused = [r.getMessage() for r in caplog.records if "SENDING PAUSED" in r.getMessage()]
    assert paused and paused[0].startswith(
        "SENDING PAUSED until 2026-12-02 12:00 +08:00 (Asia/Shanghai)"), paused
