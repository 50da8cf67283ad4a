"""Refused pushes: a hint at the cause in the log, rate-limited; API failures name the HTTP
status rather than a missing errcode."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_app
from bot.core.errors import RetryableError
from bot.web.refusals import RefusalLog
from tests.fake_wechat import FakeWeChat
from tests.pushes import signed_query, text_xml
from tests.test_end_to_end import live_config


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]


async def test_a_flood_of_bad_signatures_logs_one_line_with_the_hint(
        aiohttp_client: Any, tmp_path: Path, fake_wechat: FakeWeChat,
        caplog: pytest.LogCaptureFixture) -> None:
    client = await aiohttp_client(build_app(live_config(tmp_path, fake_wechat)))
    caplog.set_level(logging.WARNING)
    for i in range(40):
        response = await client.post("/wechat", params=signed_query(token="not-the-token"),
                                     data=text_xml("o" * 28, "hi", i))
        assert response.status == 403
    lines = refusals(caplog)
    assert len(lines) == 1, lines
    assert "bad signature" in lines[0]
    assert "check wechat.token (WECHAT_TOKEN) against the Token on the platform" in lines[0]
    assert "pushtoken123" not in caplog.text, "never the configured token"
    verify = await client.get("/wechat", params=signed_query(token="nope", echostr="x"))
    assert verify.status == 403
    assert any(line.startswith("URL verification refused (403)") and "Hint: check "
               "wechat.token" in line for line in refusals(caplog))


def test_the_next_line_after_the_interval_counts_the_unlogged(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    log = RefusalLog(logging.getLogger("test.refusals"), every=60, clock=lambda: now[0])
    caplog.set_level(logging.WARNING)
    for _ in range(5):
        log.refused(403, "bad signature", "10.0.0.1")
    log.refused(403, "timestamp too far from now (replayed or clock skew)", "10.0.0.1")
    now[0] += 61
    log.refused(403, "bad signature", "10.0.0.2")
    lines = refusals(caplog)
    assert len(lines) == 3, lines
    assert "check this server's clock" in lines[1]
    assert "(4 more like it since the last such line, not logged)" in lines[2]


def test_an_http_error_reads_as_its_status_not_errcode_none() -> None:
    error = RetryableError(None, "HTTP 503", http_status=503)
    assert str(error) == "WeChat API HTTP 503"


def test_blacklist_status_shows_an_http_failure_without_errcode() -> None:
    from bot.commands.blacklist import status_lines
    from bot.storage.sqlite.admin import QueueStatus

    row = (7, "oRetried000000000000000000001", "blacklist", "pending", "rule", 1_796_180_400,
           3, None, "HTTP 503")
    lines = status_lines(QueueStatus([("pending", 1)], 0.0, "", [("pending", [row])]),
                         dry_run=False, now=1_796_180_400.0)
    assert lines[-1].endswith("attempts 3\n      last try: HTTP 503"), lines
    assert "None" not in "\n".join(lines)
