"""/healthz tells the truth: degraded while every push is refused or every API call fails."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_app
from bot.config import build_config
from tests.fake_wechat import FakeWeChat, http_error
from tests.pushes import signed_query, text_xml
from tests.test_end_to_end import live_config
from tests.test_faults import until_async


async def health(client: Any) -> dict[str, Any]:
    response = await client.get("/healthz")
    assert response.status == 200
    return dict(await response.json())


async def test_no_push_token_is_degraded_and_says_why(aiohttp_client: Any,
                                                      tmp_path: Path) -> None:
    config = build_config({"storage": {"path": str(tmp_path / "bot.db")},
                           "rules": {"dir": str(tmp_path)}})
    client = await aiohttp_client(build_app(config))
    state = await health(client)
    assert state["status"] == "degraded"
    assert "wechat.token is not set" in state["push_error"]
    refused = await client.post("/wechat", params=signed_query(), data=text_xml("o" * 28, "hi", 1))
    assert refused.status == 403, "the state it reports is the state pushes meet"


async def test_an_api_failing_every_call_is_degraded_with_the_error_and_since_when(
        aiohttp_client: Any, tmp_path: Path, fake_wechat: FakeWeChat,
        caplog: pytest.LogCaptureFixture) -> None:
    config = live_config(tmp_path, fake_wechat)
    client = await aiohttp_client(build_app(config))
    assert (await health(client))["status"] == "ok"
    fake_wechat.script("batchblacklist", *[http_error(503)] * 3)  # then it recovers
    caplog.set_level(logging.WARNING)
    spammer = "oApiDown000000000000000000001"
    pushed = await client.post("/wechat", params=signed_query(),
                               data=text_xml(spammer, "加微信领红包", 7))
    assert pushed.status == 200

    async def degraded() -> dict[str, Any] | None:
        state = await health(client)
        return state if state["status"] == "degraded" else None

    state = await until_async(degraded, timeout=20)
    assert state["api_error"] == ("the last 3 WeChat API calls failed; last: "
                                  "batchblacklist: HTTP 503"), state
    assert state["api_failing_since"].endswith("+08:00"), "labelled in export.timezone"
    assert fake_wechat.secret not in str(state) and "access_token" not in str(state)
    retries = [r.getMessage() for r in caplog.records if "retry in" in r.getMessage()]
    assert retries and all("WeChat API HTTP 503; retry in" in m for m in retries), retries
    assert "None" not in " ".join(retries)

    async def recovered() -> dict[str, Any] | None:
        state = await health(client)
        return state if state["status"] == "ok" else None

    state = await until_async(recovered, timeout=30)
    assert "api_error" not in state
    assert spammer in fake_wechat.blacklist
