"""Faults under the service: the disk full under the database, a CLI writing during load,
SIGTERM during load. The invariant each time: a push answered 200 is stored, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_app
from bot.config import build_config
from tests.fake_wechat import FakeWeChat
from tests.pushes import TOKEN, signed_query, text_xml

RULES = "rules:\n  - id: spam\n    keywords: [加微信]\n    action: blacklist\n"


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "8m") -> Iterator[Path]:
    """A real, small filesystem: a tmpfs of ``size`` mounted at ``where``."""
    where.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); the disk-full "
                    "test needs root or CAP_SYS_ADMIN")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem refuses another byte."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as handle:  # unbuffered: nothing left for close()
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * size)
    try:
        with (directory / "probe").open("wb") as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    else:
        raise AssertionError("the filesystem still takes writes")
    return filler


def _config(tmp: Path, db_dir: Path, fake: FakeWeChat) -> Any:
    (tmp / "rules").mkdir(exist_ok=True)
    (tmp / "rules" / "r.yaml").write_text(RULES, encoding="utf-8")
    return build_config({
        "wechat": {"token": TOKEN, "appid": fake.appid, "secret": fake.secret,
                   "api_base": fake.base_url},
        "storage": {"path": str(db_dir / "bot.db")}, "rules": {"dir": str(tmp / "rules")},
        "actions": {"max_delay_seconds": 0.1}, "export": {"dir": str(tmp / "exports")}})


async def test_disk_full_pushes_are_refused_for_retry_then_stored_when_space_frees(
        aiohttp_client: Any, tmp_path: Path, fake_wechat: FakeWeChat,
        caplog: pytest.LogCaptureFixture) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        config = _config(tmp_path, disk, fake_wechat)
        client = await aiohttp_client(build_app(config))
        await asyncio.sleep(1.0)  # start-up writes (the catch-up export) are done
        filler = fill(disk)
        answers: dict[int, int] = {}
        pushes = {}
        words = "长文本" * 700  # ~6 KB a push: the WAL must grow
        for msg_id in range(1, 121):
            openid = f"oDiskFull{msg_id:019d}"
            text = ("加微信 " if msg_id % 3 == 0 else "") + words
            pushes[msg_id] = (openid, text_xml(openid, text, msg_id))
            response = await client.post("/wechat", params=signed_query(),
                                         data=pushes[msg_id][1])
            answers[msg_id] = response.status
            body = await response.text()
            assert response.status in (200, 500, 503), (response.status, body)
            assert (response.status == 200) == (body == "success")
        refused = sorted(m for m, status in answers.items() if status != 200)
        assert refused, "the full disk refused nothing: the test did not fill it"
        response = await client.get("/healthz")
        health = await response.json()
        assert response.status == 503 and health["status"] == "down", health
        assert "full" in health["push_storage_error"]
        filler.unlink()  # space frees
        for msg_id in refused:  # WeChat's retries
            response = await client.post("/wechat", params=signed_query(),
                                         data=pushes[msg_id][1])
            assert response.status == 200 and await response.text() == "success"
        conn = sqlite3.connect(config.storage.path)
        try:
            stored = {row[0] for row in conn.execute("SELECT msg_id FROM events")}
            assert stored == {str(m) for m in pushes}, "every push stored once in the end"
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (len(pushes),)
            spam = {openid for m, (openid, _) in pushes.items() if m % 3 == 0}
            queued = {r[0] for r in conn.execute("SELECT openid FROM actions")}
            assert queued == spam
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            conn.close()
        await _until(lambda: spam <= fake_wechat.blacklist, 15)
        health = await (await client.get("/healthz")).json()
        assert health["status"] == "ok" and "push_storage_error" not in health, health
        await client.close()
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    print(f"\ndisk full: {len(refused)} of {len(pushes)} pushes refused "
          f"({sorted(set(answers.values()))}), all stored after")


async def _started(client: Any) -> bool:
    """Start-up writes are done: the seed model trained and stored, the export run."""
    state = await (await client.get("/healthz")).json()
    return bool(state.get("model")) and state.get("status") == "ok"


async def _until_async(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)  # polling an outside effect


async def _until(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)  # polling an outside effect
