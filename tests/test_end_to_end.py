"""Push to blacklist, end to end: real app, real database (SQLite file or PostgreSQL),
fake WeChat API over HTTP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bot.app import build_app
from bot.config import build_config
from tests.backends import fetchval
from tests.fake_wechat import FakeWeChat
from tests.pushes import TOKEN, signed_query, text_xml

RULES = """
rules:
  - id: contact-spam
    keywords: [加微信]
    action: blacklist
  - id: shadow-check
    keywords: [优惠]
    action: log
"""


def live_config(tmp_path: Path, fake: FakeWeChat, storage: dict[str, str] | None = None,
                **actions: Any) -> Any:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "r.yaml").write_text(RULES, encoding="utf-8")
    return build_config({
        "wechat": {"token": TOKEN, "appid": fake.appid, "secret": fake.secret,
                   "api_base": fake.base_url},
        "storage": storage or {"path": str(tmp_path / "bot.db")},
        "rules": {"dir": str(rules)},
        "actions": {"max_delay_seconds": 0.2, **actions},
        "export": {"dir": str(tmp_path / "exports")},
    })


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)  # polling an outside effect, not timing logic


async def test_spam_pushes_become_batched_blacklist_calls(
        aiohttp_client: Any, tmp_path: Path, fake_wechat: FakeWeChat,
        backend: dict[str, str]) -> None:
    config = live_config(tmp_path, fake_wechat, backend)
    client = await aiohttp_client(build_app(config))
    spammers = [f"oSpammer{i:020d}" for i in range(25)]
    ordinary = [f"oOrdinary{i:019d}" for i in range(5)]
    pushes = [text_xml(o, "加 微 信 领红包", 10_000 + i) for i, o in enumerate(spammers)]
    pushes += [text_xml(o, "请问优惠活动什么时候开始", 20_000 + i) for i, o in enumerate(ordinary)]
    responses = await asyncio.gather(*(client.post("/wechat", params=signed_query(), data=p)
                                       for p in pushes))
    assert all(r.status == 200 for r in responses)
    await wait_for(lambda: set(spammers) <= fake_wechat.blacklist)
    assert not set(ordinary) & fake_wechat.blacklist
    batches = [c.openids for c in fake_wechat.calls_to("batchblacklist")]
    assert all(len(b) <= 20 for b in batches) and sum(map(len, batches)) == 25
    for _ in range(100):  # WeChat has the batch; its completion is being recorded
        health = await (await client.get("/healthz")).json()
        if health["pending_actions"] == 0:
            break
        await asyncio.sleep(0.05)
    assert health["pending_actions"] == 0 and health["dry_run"] is False
    assert await fetchval(config, "SELECT count(*) FROM blacklist WHERE status='blacklisted'"
                          ) == 25
    assert await fetchval(config, "SELECT count(*) FROM decisions WHERE rule_id='shadow-check'"
                          ) == 5
    metrics = await (await client.get("/metrics")).text()
    assert 'bot_api_calls_total{endpoint="batchblacklist",outcome="ok"}' in metrics


async def test_api_down_then_restart_loses_nothing(
        aiohttp_client: Any, tmp_path: Path, fake_wechat: FakeWeChat,
        backend: dict[str, str]) -> None:
    config = live_config(tmp_path, fake_wechat, backend)
    fake_wechat.down = True
    first = await aiohttp_client(build_app(config))
    spammers = [f"oDownSpam{i:019d}" for i in range(7)]
    for i, openid in enumerate(spammers):
        response = await first.post("/wechat", params=signed_query(),
                                    data=text_xml(openid, "加微信", 30_000 + i))
        assert response.status == 200
    await first.close()
    assert not fake_wechat.blacklist
    fake_wechat.down = False
    second = await aiohttp_client(build_app(config))
    await wait_for(lambda: set(spammers) <= fake_wechat.blacklist)
    sent = [o for c in fake_wechat.calls_to("batchblacklist")
            if isinstance(c.answer, dict) and c.answer.get("errcode") == 0 for o in c.openids]
    assert sorted(sent) == sorted(spammers), "each decided action is applied exactly once"
    await second.close()
