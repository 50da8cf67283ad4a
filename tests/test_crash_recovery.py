"""kill -9 while WeChat's API is down: after a restart every decided blacklist is applied once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import aiohttp

from tests.fake_wechat import FakeWeChat
from tests.pushes import TOKEN, signed_query, text_xml
from tests.test_serve import free_port

ROOT = Path(__file__).resolve().parents[1]
RULES = "rules:\n  - id: contact-spam\n    keywords: [加微信]\n    action: blacklist\n"


async def start_service(config: Path, port: int) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WECHAT_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", "--config", str(config), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return proc
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)  # waiting for another process to listen
    proc.kill()
    raise AssertionError("service did not start")


async def test_sigkill_with_api_down_loses_nothing(tmp_path: Path,
                                                   fake_wechat: FakeWeChat) -> None:
    port = free_port()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(RULES, encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"wechat:\n  token: {TOKEN}\n  appid: {fake_wechat.appid}\n"
        f"  secret: {fake_wechat.secret}\n  api_base: {fake_wechat.base_url}\n"
        f"server:\n  host: 127.0.0.1\n  port: {port}\n"
        f"storage:\n  path: {tmp_path / 'bot.db'}\nrules:\n  dir: {tmp_path / 'rules'}\n"
        f"actions:\n  max_delay_seconds: 0.1\nexport:\n  dir: {tmp_path / 'exports'}\n",
        encoding="utf-8")
    fake_wechat.down = True
    spammers = [f"oKilled{i:021d}" for i in range(25)]
    proc = await start_service(config, port)
    try:
        async with aiohttp.ClientSession() as session:
            for index, openid in enumerate(spammers):
                url = f"http://127.0.0.1:{port}/wechat?{urlencode(signed_query())}"
                body = text_xml(openid, "加微信看主页", 50_000 + index)
                async with session.post(url, data=body) as response:
                    assert response.status == 200 and await response.text() == "success"
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert not fake_wechat.blacklist
    fake_wechat.down = False
    proc = await start_service(config, port)
    try:
        deadline = time.monotonic() + 20
        while not set(spammers) <= fake_wechat.blacklist:
            assert time.monotonic() < deadline, "queued blacklists were not applied"
            await asyncio.sleep(0.1)  # polling the fake for an outside effect
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    applied = [o for c in fake_wechat.calls_to("batchblacklist")
               if isinstance(c.answer, dict) and c.answer.get("errcode") == 0 for o in c.openids]
    assert sorted(applied) == sorted(spammers), "each decided blacklist applied exactly once"
