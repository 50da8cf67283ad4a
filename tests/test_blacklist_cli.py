"""``python -m bot blacklist ...`` as real subprocesses against the fake WeChat API."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli import main
from bot.commands.blacklist import collect_openids, duration_seconds
from bot.core.errors import BotError
from bot.core.models import Action, ActionKind
from bot.rules.schema import parse_duration
from bot.storage.sqlite.store import enqueue_action, run_sync
from tests.fake_wechat import FakeWeChat, delay, errcode, flatten, make_openids

ROOT = Path(__file__).resolve().parent.parent


def write_config(tmp_path: Path, fake: FakeWeChat, *, secrets: bool = True,
                 **actions: object) -> Path:
    """A real config file: credentials (unless not ``secrets``: dry-run) and api_base of the
    fake, the DB in tmp_path."""
    path = tmp_path / "config.yaml"
    creds = {"appid": fake.appid, "secret": fake.secret} if secrets else {}
    path.write_text(yaml.safe_dump({
        "wechat": {**creds, "api_base": fake.base_url},
        "storage": {"path": str(tmp_path / "bot.db")},
        "actions": {"max_delay_seconds": 0.5, **actions},
    }))
    return path


async def start_cli(config: Path, *args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WECHAT_", "BOT_"))}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "blacklist", *args, "--config", str(config),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def cli(config: Path, *args: str) -> tuple[int, str]:
    """Run one command to completion; return its exit code and stdout + stderr."""
    proc = await start_cli(config, *args)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


def rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "bot.db") as conn:
        return conn.execute(sql).fetchall()


def test_for_accepts_exactly_what_a_rule_duration_accepts() -> None:
    assert [duration_seconds(t) for t in ("90s", "30m", "12h", "7d")] == [90, 1800, 43200,
                                                                          604800]
    assert duration_seconds("7 d") == parse_duration("7 d") == 604800
    for bad in ("7", "0d", "1w", "-1d", "d", "7dd"):
        assert parse_duration(bad) is None
        with pytest.raises(BotError, match="--for"):
            duration_seconds(bad)


def test_collect_openids_validates_all(tmp_path: Path) -> None:
    f = tmp_path / "ids.txt"
    ids = make_openids(3)
    f.write_text(f"# spammers\n{ids[1]}\n\n{ids[2]}  # from report\n{ids[1]}\n")
    assert collect_openids([ids[0]], str(f)) == ids
    with pytest.raises(BotError, match="invalid OpenID"):
        collect_openids([ids[0], "not an openid"], None)


async def test_add_remove_status(tmp_path: Path, fake_wechat: FakeWeChat) -> None:
    config = write_config(tmp_path, fake_wechat)
    ids = make_openids(3)
    code, out = await cli(config, "add", *ids, "--reason", "spam report", "--for", "7d")
    assert code == 0, out
    assert fake_wechat.blacklist == set(ids)
    assert "blacklist: 3 queued" in out and out.count(": done") == 3
    expiries = rows(tmp_path, "SELECT expires_at - since, reason FROM blacklist")
    # since is the completion time, a second or so after the command's now
    assert {(round(e / 3600), r) for e, r in expiries} == {(7 * 24, "spam report")}
    code, out = await cli(config, "remove", ids[0])
    assert code == 0, out
    assert fake_wechat.blacklist == set(ids[1:])
    code, out = await cli(config, "status")
    assert code == 0
    assert "done 4" in out and "recent (4 shown)" in out
    assert len(fake_wechat.token_calls()) == 1  # the token cached in the DB across runs


async def test_invalid_openid_queues_nothing(tmp_path: Path, fake_wechat: FakeWeChat) -> None:
    config = write_config(tmp_path, fake_wechat)
    code, out = await cli(config, "add", make_openids(1)[0], "bad id!")
    assert code == 1
    assert "invalid OpenID" in out
    assert fake_wechat.calls == []


async def test_failed_then_status_then_retry(tmp_path: Path, fake_wechat: FakeWeChat) -> None:
    config = write_config(tmp_path, fake_wechat)
    fake_wechat.script("batchblacklist", errcode(48001))
    ids = make_openids(2)
    code, out = await cli(config, "add", *ids)
    assert code == 1
    assert "errcode 48001" in out and "verified" in out
    code, out = await cli(config, "status")
    assert "failed 2" in out and "only verified" in out
    code, out = await cli(config, "retry")
    assert code == 0, out
    assert "2 failed actions queued again" in out
    assert fake_wechat.blacklist == set(ids)


async def test_send_reports_each_action_and_exits_1_when_any_failed(
        tmp_path: Path, fake_wechat: FakeWeChat) -> None:
    config = write_config(tmp_path, fake_wechat)
    bad, good = make_openids(1, prefix="b")[0], make_openids(1)[0]
    fake_wechat.invalid.add(bad)  # its batch fails with 40003
    for openid in (bad, good):
        code, out = await cli(config, "add", openid, "--queue-only")
        assert code == 0, out
    code, out = await cli(config, "send")
    assert code == 1, out
    assert "2 queued actions to send" in out
    assert f"blacklist {bad}: failed errcode 40003" in out
    assert f"blacklist {good}: done" in out
    code, out = await cli(config, "send")
    assert code == 0 and "0 queued actions to send" in out, out


async def test_dry_run_says_so_and_calls_nothing(tmp_path: Path,
                                                 fake_wechat: FakeWeChat) -> None:
    config = write_config(tmp_path, fake_wechat, dry_run=True)
    code, out = await cli(config, "add", *make_openids(2))
    assert code == 0, out
    assert "DRY-RUN" in out and "nothing is sent" in out and out.count(": dry_run") == 2
    assert rows(tmp_path, "SELECT status, source FROM actions") == [("dry_run", "cli")] * 2
    assert fake_wechat.calls == []


async def test_dry_run_cli_leaves_the_service_queue_alone(tmp_path: Path,
                                                          fake_wechat: FakeWeChat) -> None:
    """A CLI run without secrets next to a live service: the service's pending row must
    stay pending (not be settled as dry_run), and send/retry refuse and change nothing."""
    config = write_config(tmp_path, fake_wechat, secrets=False)
    queued, new = make_openids(2)
    failed = make_openids(1, prefix="f")[0]

    def service_rows(db: Any) -> None:
        enqueue_action(db, Action(ActionKind.BLACKLIST, queued, "r1"), 100)
        enqueue_action(db, Action(ActionKind.BLACKLIST, failed, "r1"), 100)
        db.execute("UPDATE actions SET status = 'failed', errcode = -1 WHERE openid = ?",
                   [failed])

    run_sync(tmp_path / "bot.db", service_rows)
    code, out = await cli(config, "remove", new)
    assert code == 0, out
    assert "DRY-RUN" in out and "not configured" in out
    for action in ("send", "retry"):
        code, out = await cli(config, action)
        assert code == 1, out
        assert "DRY-RUN" in out and "nothing can be sent" in out
    assert rows(tmp_path, "SELECT openid, kind, status, attempts FROM actions ORDER BY id") == [
        (queued, "blacklist", "pending", 0), (failed, "blacklist", "failed", 0),
        (new, "unblacklist", "dry_run", 0)]
    assert fake_wechat.calls == []


@pytest.mark.parametrize("action", ["add", "remove", "status", "retry", "send"])
def test_help_for_every_action(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["blacklist", action, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and len(out.splitlines()) > 3


async def test_sigkill_mid_send_loses_nothing(tmp_path: Path, fake_wechat: FakeWeChat) -> None:
    config = write_config(tmp_path, fake_wechat)
    fake_wechat.script("batchblacklist", delay(30))  # the first send hangs
    ids = make_openids(25)
    proc = await start_cli(config, "add", *ids)
    deadline = time.monotonic() + 20
    while not fake_wechat.calls_to("batchblacklist"):
        assert time.monotonic() < deadline and proc.returncode is None
        await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    states = dict(rows(tmp_path, "SELECT status, COUNT(*) FROM actions GROUP BY status"))
    assert states.get("sending", 0) >= 1
    code, out = await cli(config, "send")
    assert code == 0, out
    assert dict(rows(tmp_path, "SELECT status, COUNT(*) FROM actions GROUP BY status")) == {
        "done": 25}
    ok = [c for c in fake_wechat.calls_to("batchblacklist") if isinstance(c.answer, dict)]
    assert sorted(flatten(ok)) == ids
    assert fake_wechat.blacklist == set(ids)


async def test_send_exits_1_when_sending_is_paused(tmp_path: Path, fake_wechat: FakeWeChat
                                                   ) -> None:
    from bot.storage.sqlite.actions import set_pause

    config = write_config(tmp_path, fake_wechat)
    openid = make_openids(1)[0]
    code, out = await cli(config, "add", openid, "--queue-only")
    assert code == 0, out
    now = time.time()
    run_sync(tmp_path / "bot.db",
             lambda db: set_pause(db, now + 3 * 3600, "45009 daily quota", now))
    code, out = await cli(config, "send")
    assert rows(tmp_path, "SELECT status FROM actions") == [("pending",)]
    assert code == 1, out  # queued, not sent: a script must not read success
