"""The operator CLI on PostgreSQL: blacklist add/remove/status/retry/dismiss/resume, why,
decisions, rules test --openid and a rules replay, as real subprocesses against the fake
WeChat API (tests/test_blacklist_cli.py and tests/test_cli.py cover them on SQLite)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import yaml

from bot.config import build_config
from tests.backends import fetch
from tests.fake_wechat import FakeWeChat, make_openids

ROOT = Path(__file__).resolve().parent.parent


async def cli(config: Path, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WECHAT_", "BOT_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, "--config", str(config), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def test_the_cli_reads_and_changes_postgres(
        tmp_path: Path, fake_wechat: FakeWeChat, pg_dsn: str) -> None:
    backend = {"backend": "postgres", "dsn": pg_dsn}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "wechat": {"appid": fake_wechat.appid, "secret": fake_wechat.secret,
                   "api_base": fake_wechat.base_url},
        "storage": backend, "actions": {"max_delay_seconds": 0.5},
        "rules": {"dir": str(ROOT / "rules")},
    }), encoding="utf-8")
    config = build_config({"storage": backend})
    first, second, bad = make_openids(3, prefix="oCli")
    code, out = await cli(path, "blacklist", "add", first, second, "--reason", "spam ring")
    assert code == 0, out
    assert {first, second} <= fake_wechat.blacklist
    code, out = await cli(path, "blacklist", "status")
    assert code == 0 and "done 2" in out, out
    code, out = await cli(path, "why", first)
    assert code == 0 and "blacklist" in out and "spam ring" in out, out
    code, out = await cli(path, "blacklist", "remove", first)
    assert code == 0 and first not in fake_wechat.blacklist, out
    fake_wechat.invalid.add(bad)
    code, out = await cli(path, "blacklist", "add", bad)
    assert code == 1 and "failed" in out, out
    fake_wechat.invalid.clear()
    code, out = await cli(path, "blacklist", "retry")
    assert code == 0 and "1 failed action queued again" in out, out
    assert bad in fake_wechat.blacklist
    code, out = await cli(path, "rules", "test", "--replay", "--since", "1d")
    assert code == 0, out
    assert await fetch(config, "SELECT openid, status FROM blacklist ORDER BY openid") == [
        (first, "removed"), (second, "blacklisted"), (bad, "blacklisted")]
    third = make_openids(4, prefix="oCli")[3]
    fake_wechat.invalid.add(third)
    code, out = await cli(path, "blacklist", "add", third)
    assert code == 1 and "failed" in out, out
    code, out = await cli(path, "blacklist", "dismiss", third, "#99999")
    assert code == 1 and "1 failed actions dismissed" in out, out
    assert "#99999: no failed action (no such action)" in out, out
    code, out = await cli(path, "blacklist", "retry")
    assert code == 0 and "0 failed actions queued again" in out, out
    code, out = await cli(path, "blacklist", "resume")
    assert code == 0 and "sending was not paused" in out, out
    code, out = await cli(path, "why", third)
    assert code == 0 and "dismissed" in out, out
    code, out = await cli(path, "decisions", "--since", "1d")
    assert code == 1 and "0 shown" in out, out
    code, out = await cli(path, "rules", "test", "--openid", second, "--text", "hello")
    assert code == 0 and f"history of {second}: 0 pushes" in out, out
