"""The console in a real browser (Playwright driving Debian's chromium): sign in, find a
blacklisted follower, unblacklist them, see WeChat receive it; a screenshot of each page.

Never skipped: without chromium the test fails saying what to install (.ci/run does).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from bot.app import build_app
from tests.fake_wechat import FakeWeChat, make_openids
from tests.pushes import signed_query, text_xml
from tests.test_console import PASSWORD, console_config
from tests.test_report import NO_CHROMIUM

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """One chromium for the module's single story test."""
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(executable).exists(), NO_CHROMIUM
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable,
                                                    args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)  # polling an outside effect, not timing logic


async def shot(page: Page, out: Path, name: str) -> Path:
    path = out / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def test_operator_unblacklists_a_follower_in_the_browser(
        tmp_path: Path, fake_wechat: FakeWeChat, browser: Browser) -> None:
    config = console_config(tmp_path, fake_wechat)
    runner, base = await serve(build_app(config))
    spammer, other = make_openids(2)
    try:
        async with aiohttp.ClientSession() as http:
            for i, (openid, text) in enumerate([(spammer, "加微信 领红包 vx123456"),
                                                (other, "刷单兼职，日结")]):
                async with http.post(f"{base}/wechat", params=signed_query(),
                                     data=text_xml(openid, text, 700 + i)) as response:
                    assert response.status == 200
        await until(lambda: spammer in fake_wechat.blacklist)
        # the export that missed its time runs at start: its report is the Reports page's
        await until(lambda: any((tmp_path / "exports").glob("report-*.html")))
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(f"{base}/admin")
        assert "/admin/login" in page.url
        shots = [await shot(page, tmp_path, "0-login")]
        await page.fill("input[name=password]", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{base}/admin")
        assert await page.inner_text("#pushes") == "2"
        shots.append(await shot(page, tmp_path, "1-overview"))

        await page.click("header >> text=粉丝")
        await page.click(f"#blacklisted >> text={spammer}")
        assert "已拉黑" in await page.inner_text("#state")
        shots.append(await shot(page, tmp_path, "2-follower"))
        await page.click("#do-unblacklist")
        assert "已加入发送队列" in await page.inner_text("#note")
        await until(lambda: any(spammer in c.payload.get("openid_list", [])
                                for c in fake_wechat.calls_to("batchunblacklist")))
        assert spammer not in fake_wechat.blacklist

        await page.click("header >> text=审核记录")
        assert spammer in await page.inner_text("#decisions")
        shots.append(await shot(page, tmp_path, "3-decisions"))
        # a follower WeChat refuses (40003): the failure, explained, then dismissed
        fake_wechat.invalid.add(other)
        await page.goto(f"{base}/admin/follower?openid={other}")
        await page.click("#do-blacklist")
        await until(lambda: bool(fake_wechat.calls_to("batchblacklist")[1:]))
        await page.click("header >> text=发送队列")
        for _ in range(100):
            if other in await page.inner_text("#sec-failed"):
                break
            await asyncio.sleep(0.05)  # the batcher settles the refusal
            await page.reload()
        assert "40003" in await page.inner_text("#sec-failed")
        shots.append(await shot(page, tmp_path, "4-queue"))
        await page.click('#sec-failed button:text-is("忽略")')
        assert "已忽略：1" in await page.inner_text("#note")
        assert other not in await page.inner_text("#sec-failed")
        await page.click("header >> text=规则")
        await page.fill("#test-text", "刷单兼职，日结")
        await page.click("#test-run")
        assert "没有规则命中" in await page.inner_text("#test-result")
        assert "keywords" in await page.inner_text("#near-misses")
        shots.append(await shot(page, tmp_path, "5-rules"))
        await page.click("header >> text=每日报告")
        frame = page.frame_locator("#report")
        assert await frame.locator("body").count() == 1
        shots.append(await shot(page, tmp_path, "6-reports"))
        await page.goto(f"{base}/admin?lang=en")
        assert "Decisions per hour" in await page.content()
        await page.click("header >> text=Queue")  # the choice is remembered
        assert "Attempts" in await page.content()
        shots.append(await shot(page, tmp_path, "7-queue-en"))
        for path in shots:
            assert path.stat().st_size > 10_000, path
    finally:
        await runner.cleanup()
