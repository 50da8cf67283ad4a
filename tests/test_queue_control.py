"""``blacklist resume`` and ``blacklist dismiss``: leaving a quota pause, dropping a failure."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bot.cli import main
from bot.commands.blacklist import parse_targets
from bot.config import load_config
from bot.core.errors import BotError
from bot.core.settle import daily_pause_until
from bot.services import build_services
from tests.fake_wechat import FakeWeChat, errcode, make_openids
from tests.test_blacklist_cli import cli, rows, write_config


async def run(capsys: pytest.CaptureFixture[str], config: Path, *args: str
              ) -> tuple[int, str]:
    """``blacklist ARGS`` in this process, on a thread of its own (the command runs its
    own event loop; the fake WeChat API is served by this one)."""
    code = await asyncio.to_thread(main, ["blacklist", *args, "--config", str(config)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_dismiss_targets_are_ids_or_openids() -> None:
    openid = make_openids(1)[0]
    assert parse_targets(["#12", "7", openid]) == [12, 7, openid]
    with pytest.raises(BotError, match="neither an action id"):
        parse_targets(["not-an-openid!"])


async def test_a_running_batcher_notices_a_resume_made_by_the_cli(
        tmp_path: Path, fake_wechat: FakeWeChat, capsys: pytest.CaptureFixture[str]) -> None:
    """The pause lives in the shared database: a resume from another process ends it for
    the serving batcher at its next look, without a restart."""
    config_path = write_config(tmp_path, fake_wechat)
    config = load_config(str(config_path), env={})
    openid = make_openids(1)[0]
    fake_wechat.script("batchblacklist", errcode(45009))  # the first call only
    code, out = await run(capsys, config_path, "add", openid, "--queue-only")
    assert code == 0, out
    async with build_services(config) as services:
        batcher = services.batcher()
        await batcher.start()
        try:
            before = time.time()
            batcher.wake()
            for _ in range(200):
                if batcher.status.paused_reason:
                    break
                await asyncio.sleep(0.02)  # polling the running batcher, not timing logic
            assert "45009" in batcher.status.paused_reason
            # paused till the quota resets (an hour at most; minutes before Beijing midnight)
            assert batcher.status.paused_until >= daily_pause_until(before)
            code, out = await run(capsys, config_path, "status")
            assert "SENDING PAUSED" in out
            # another process: only the database is shared with the serving batcher
            code, out = await cli(config_path, "resume")
            assert code == 0, out
            assert "sending resumed" in out and "45009" in out and "1 actions pending" in out
            for _ in range(300):  # the batcher looks again within its idle second
                if openid in fake_wechat.blacklist:
                    break
                await asyncio.sleep(0.02)
            assert openid in fake_wechat.blacklist
            assert not batcher.status.paused_reason
        finally:
            await batcher.stop()
    # the refused call (quota) is not an attempt on this action; the one that went is
    assert rows(tmp_path, "SELECT status, attempts FROM actions") == [("done", 1)]
    assert len(fake_wechat.calls_to("batchblacklist")) == 2
    code, out = await run(capsys, config_path, "resume")
    assert code == 0 and "not paused" in out


async def test_dismissed_failure_is_not_resent_by_retry(
        tmp_path: Path, fake_wechat: FakeWeChat, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, fake_wechat)
    bad, good = make_openids(2)
    fake_wechat.invalid.add(bad)  # 40003: not a follower of this account
    code, out = await run(capsys, config, "add", bad)
    assert code == 1 and "40003" in out
    code, out = await run(capsys, config, "add", good)
    assert code == 0, out
    (action_id,) = rows(tmp_path, "SELECT id FROM actions WHERE status = 'failed'")[0]
    sent = len(fake_wechat.calls_to("batchblacklist"))
    code, out = await run(capsys, config, "dismiss", f"#{action_id + 1}")  # the good one: done
    assert code == 1 and "no failed action (done)" in out
    code, out = await run(capsys, config, "dismiss", bad)
    assert code == 0, out
    assert f"1 failed actions dismissed (#{action_id})" in out
    code, out = await run(capsys, config, "retry")
    assert code == 0 and "0 failed actions queued again" in out
    assert len(fake_wechat.calls_to("batchblacklist")) == sent  # not resent
    assert rows(tmp_path, f"SELECT status, attempts, errcode FROM actions WHERE id ="
                          f" {action_id}") == [("dismissed", 1, 40003)]
    code, out = await run(capsys, config, "status")
    assert "dismissed 1" in out and f"#{action_id}" in out
    code, out = await run(capsys, config, "dismiss", str(action_id))  # twice: nothing left to drop
    assert code == 1 and "no failed action (dismissed)" in out
