"""Faults under the service: the disk full under the database, a CLI writing during load,
SIGTERM during load. The invariant each time: a push answered 200 is stored, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from bot.app import build_app
from bot.config import build_config
from tests.fake_wechat import FakeWeChat
from tests.hostile import ROOT, ServerProcess, free_port, write_config
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
        fake_wechat.down = True  # queued before the disk fills, retried while it is full
        early = {f"oEarly{i:022d}" for i in range(3)}
        for i, openid in enumerate(sorted(early)):
            response = await client.post("/wechat", params=signed_query(),
                                         data=text_xml(openid, "加微信", 900 + i))
            assert response.status == 200
        await _until(lambda: bool(fake_wechat.calls), 5)
        filler = fill(disk)
        answers: dict[int, int] = {}
        first_refusal: tuple[int, dict[str, Any]] | None = None
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
            if response.status != 200 and first_refusal is None:  # asked at once: a
                # later push may fit in WAL space already there and clear the error
                response = await client.get("/healthz")
                first_refusal = response.status, await response.json()
        refused = sorted(m for m, status in answers.items() if status != 200)
        assert refused, "the full disk refused nothing: the test did not fill it"
        assert first_refusal is not None
        status, health = first_refusal
        assert status == 503 and health["status"] == "down", health
        assert "full" in health["push_storage_error"]
        await asyncio.sleep(1.5)  # the batcher retries its queue on the full disk
        filler.unlink()  # space frees
        fake_wechat.down = False
        for msg_id in refused:  # WeChat's retries
            response = await client.post("/wechat", params=signed_query(),
                                         data=pushes[msg_id][1])
            assert response.status == 200 and await response.text() == "success"
        conn = sqlite3.connect(config.storage.path)
        try:
            stored = {row[0] for row in conn.execute("SELECT msg_id FROM events")}
            assert stored == {str(m) for m in pushes} | {"900", "901", "902"}
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (len(stored),)
            spam = {openid for m, (openid, _) in pushes.items() if m % 3 == 0} | early
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
    refusals = sum("the action queue refused" in r.getMessage() for r in caplog.records)
    print(f"\ndisk full: {len(refused)} of {len(pushes)} pushes refused "
          f"({sorted(set(answers.values()))}), all stored after; batcher refusals "
          f"logged as one line: {refusals}")


async def test_a_file_size_limit_refuses_pushes_for_retry_then_all_are_stored(
        tmp_path: Path, fake_wechat: FakeWeChat) -> None:
    """The same fault where no tmpfs can be mounted: RLIMIT_FSIZE set on the running
    server (prlimit), so its writes past the limit fail (EFBIG; CPython ignores SIGXFSZ),
    then lifted, as if space were freed."""
    import resource

    port = free_port()
    config = _serve_config(tmp_path, port, fake_wechat)
    server = await asyncio.to_thread(ServerProcess(config, port, tmp_path / "serve.log").start)
    pushes = {m: text_xml(f"oSizeLimit{m:018d}", ("加微信 " if m % 3 == 0 else "") +
                          "长文本" * 700, m).encode() for m in range(1, 61)}

    async def post(body: bytes) -> tuple[int, bytes]:
        return await asyncio.to_thread(
            server.request, "POST", f"/wechat?{urlencode(signed_query())}", body)

    try:
        pid = server.proc.pid  # type: ignore[union-attr]
        await asyncio.sleep(1.0)  # start-up writes (the catch-up export) done
        biggest = max(p.stat().st_size for p in tmp_path.glob("bot.db*"))
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (biggest + 16384, resource.RLIM_INFINITY))
        answers: dict[int, tuple[int, bytes]] = {}
        health: tuple[int, bytes] | None = None
        for m, body in pushes.items():
            answers[m] = await post(body)
            if answers[m][0] != 200 and health is None:  # asked at once: a later push may fit
                # in WAL space already there (the WAL starts over) and clear the storage error
                health = await asyncio.to_thread(server.request, "GET", "/healthz")
        for status, body in answers.values():
            assert status in (200, 500), (status, body[:200])
            assert (status == 200) == (body == b"success")
        refused = [m for m, (status, _) in answers.items() if status != 200]
        assert refused, "the limit refused nothing"
        assert health is not None
        assert health[0] == 503 and b"push_storage_error" in health[1], health
        resource.prlimit(pid, resource.RLIMIT_FSIZE,
                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        for m in refused:  # WeChat's retries
            assert await post(pushes[m]) == (200, b"success")
        spam = {f"oSizeLimit{m:018d}" for m in pushes if m % 3 == 0}
        await _until(lambda: spam <= fake_wechat.blacklist, 15)
    finally:
        code = await asyncio.to_thread(server.stop)
    assert code == 0
    conn = sqlite3.connect(tmp_path / "bot.db")
    try:
        assert sorted(int(r[0]) for r in conn.execute("SELECT msg_id FROM events")) == \
            sorted(pushes)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    assert "Traceback" not in server.log()
    print(f"\nfile size limit: {len(refused)} of {len(pushes)} refused, all stored after")


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


# ---------------------------------------------------------------- under load


async def _load(port: int, prefix: str, count: int, concurrency: int = 16,
                stop_on_refusal: bool = False) -> dict[str, int]:
    """Post ``count`` pushes from ``concurrency`` workers; each push's HTTP status
    (0: no answer: connection refused or reset)."""
    statuses: dict[str, int] = {}
    ids = iter(range(count))

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in ids:
            openid = f"{prefix}{i:020d}"
            body = text_xml(openid, "加微信" if i % 5 == 0 else "你好", i + 1)
            url = f"http://127.0.0.1:{port}/wechat?{urlencode(signed_query())}"
            try:
                async with session.post(url, data=body.encode()) as response:
                    text = await response.text()
                    statuses[openid] = response.status
                    assert response.status != 200 or text == "success"
            except (TimeoutError, aiohttp.ClientError, OSError):
                statuses[openid] = 0
                if stop_on_refusal:
                    return  # the server is going away: this worker is done

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return statuses


def _stored_openids(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT openid FROM events")]
    finally:
        conn.close()


def _live(fake: FakeWeChat) -> dict[str, str]:
    return {"appid": fake.appid, "secret": fake.secret, "api_base": fake.base_url}


def _serve_config(tmp_path: Path, port: int, fake: FakeWeChat) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "r.yaml").write_text(RULES, encoding="utf-8")
    return write_config(tmp_path / "config.yaml", port, tmp_path, rules_dir=rules,
                        live=_live(fake))


async def test_blacklist_add_from_the_cli_while_the_server_is_under_load(
        tmp_path: Path, fake_wechat: FakeWeChat) -> None:
    port = free_port()
    config = _serve_config(tmp_path, port, fake_wechat)
    server = await asyncio.to_thread(
        ServerProcess(config, port, tmp_path / "serve.log").start)
    targets = [f"oByHand{i:021d}" for i in range(30)]
    try:
        load = asyncio.create_task(_load(port, "oLoadCli", 300))
        await asyncio.sleep(0.3)  # the load is running
        env = {k: v for k, v in os.environ.items() if not k.startswith("WECHAT_")}
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "blacklist", "add", *targets, "--reason", "by hand",
            "--config", str(config), cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(cli.communicate(), 60)
        assert cli.returncode == 0, err.decode()
        statuses = await load
        assert not load.cancelled()
        await _until(lambda: set(targets) <= fake_wechat.blacklist, 20)
    finally:
        server.stop()
    answered = {o for o, s in statuses.items() if s == 200}
    assert len(answered) == len(statuses), f"refused under load: {_tally(statuses)}"
    stored = _stored_openids(tmp_path / "bot.db")
    assert sorted(stored) == sorted(answered), "each answered push stored exactly once"
    spam = {o for o in answered if int(o[-20:]) % 5 == 0}
    await _until(lambda: spam <= fake_wechat.blacklist, 5)
    assert "Traceback" not in server.log()
    print(f"\nCLI under load: {len(answered)} pushes answered and stored, "
          f"{len(targets)} added by hand, {out.decode().strip()[:80]!r}")


def _tally(statuses: dict[str, int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    return counts


async def test_sigterm_under_load_loses_no_acknowledged_push(
        tmp_path: Path, fake_wechat: FakeWeChat) -> None:
    port = free_port()
    config = _serve_config(tmp_path, port, fake_wechat)
    server = await asyncio.to_thread(
        ServerProcess(config, port, tmp_path / "serve.log").start)
    try:
        load = asyncio.create_task(_load(port, "oSigterm", 100_000, concurrency=24,
                                          stop_on_refusal=True))
        await asyncio.sleep(1.0)  # well under way
        server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        statuses = await asyncio.wait_for(load, 60)
        code = await asyncio.to_thread(server.proc.wait, 30)  # type: ignore[union-attr]
    finally:
        server.stop()
    assert code == 0, server.log()[-3000:]
    answered = {o for o, s in statuses.items() if s == 200}
    assert answered, "no push was answered before the signal"
    assert len(statuses) < 100_000, "the load outran the shutdown"
    assert set(statuses.values()) <= {200, 0, 503}, _tally(statuses)
    # After a restart: every push answered 200 is there, once.
    server = await asyncio.to_thread(
        ServerProcess(config, port, tmp_path / "serve2.log").start)
    try:
        stored = _stored_openids(tmp_path / "bot.db")
        assert len(stored) == len(set(stored))
        missing = answered - set(stored)
        assert not missing, f"{len(missing)} acknowledged pushes lost, e.g. {sorted(missing)[:3]}"
        spam = {o for o in answered if int(o[-20:]) % 5 == 0}
        await _until(lambda: spam <= fake_wechat.blacklist, 20)
    finally:
        server.stop()
    assert "Traceback" not in server.log() + (tmp_path / "serve.log").read_text()
    print(f"\nSIGTERM under load: {_tally(statuses)} (0 = no answer), "
          f"{len(stored)} stored, 0 acknowledged and lost")


async def test_sigterm_during_an_export_stops_cleanly_without_a_traceback(
        tmp_path: Path, fake_wechat: FakeWeChat) -> None:
    from tests.fake_wechat import delay

    fake_wechat.script("getblacklist", delay(20.0))  # the start-up catch-up export hangs
    port = free_port()
    config = _serve_config(tmp_path, port, fake_wechat)
    server = await asyncio.to_thread(ServerProcess(config, port, tmp_path / "serve.log").start)
    try:
        await _until(lambda: bool(fake_wechat.calls_to("getblacklist")), 15)
    finally:
        code = await asyncio.to_thread(server.stop)
    log = server.log()
    assert code == 0, log[-2000:]
    assert "Traceback" not in log, log[-3000:]
    assert "export interrupted by shutdown" in log
