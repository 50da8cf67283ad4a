"""Hostile HTTP: huge or many headers, slowloris connections, replayed pushes."""

from __future__ import annotations

import asyncio
import resource
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient

from bot.app import MAX_HEADERS, build_app
from bot.config import build_config
from tests.hostile import ServerProcess, free_port, write_config
from tests.pushes import TOKEN, signed_query, text_xml

Client = TestClient[Any, Any]
FLOOD_RULES = ("rules:\n  - id: flood\n    flood: {messages: 3, seconds: 600}\n"
               "    action: blacklist\n")


async def raw_exchange(client: Client, request: bytes) -> bytes:
    """Send raw bytes to the test server; the first line of its answer."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()


def _config(tmp_path: Path, rules: str = FLOOD_RULES, **server: Any) -> Any:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "r.yaml").write_text(rules, encoding="utf-8")
    return build_config({"wechat": {"token": TOKEN}, "server": server,
                         "storage": {"path": str(tmp_path / "bot.db")},
                         "rules": {"dir": str(tmp_path / "rules")},
                         "export": {"dir": str(tmp_path / "exports")}})


@pytest.mark.parametrize("request_bytes", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS + 10)) + b"\r\n",
    b"GET /healthz?" + b"q" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-" + b"n" * 20_000 + b": v\r\n\r\n",
], ids=["huge-value", "many-headers", "huge-request-line", "huge-name"])
async def test_huge_or_many_headers_are_refused(aiohttp_client: Any, tmp_path: Path,
                                                request_bytes: bytes) -> None:
    client = await aiohttp_client(build_app(_config(tmp_path)))
    answer = await raw_exchange(client, request_bytes)
    assert answer.split()[1] in (b"400", b"413", b"431"), answer
    ok = await raw_exchange(client, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ok.split()[1] == b"200", "an ordinary request still passes"


async def test_a_replay_inside_the_timestamp_window_is_answered_but_counted_once(
        aiohttp_client: Any, tmp_path: Path) -> None:
    app = build_app(_config(tmp_path))
    client = await aiohttp_client(app)
    webhook = next(r.handler.__self__ for r in app.router.routes()  # type: ignore[attr-defined]
                   if r.method == "POST")
    later = [time.monotonic()]
    webhook.recent._clock = lambda: later[0]  # the retry memory's clock, moved on below
    openid = "oReplayed00000000000000000001"
    now = int(time.time())
    query, first = signed_query(), text_xml(openid, "hello", 1, now)
    assert (await client.post("/wechat", params=query, data=first)).status == 200
    # Captured and replayed verbatim 40 s later: past WeChat's retries (30 s of memory
    # before), still inside the 300 s the signature's timestamp is accepted for.
    later[0] += 40
    replay = await client.post("/wechat", params=query, data=first)
    assert replay.status == 200 and await replay.text() == "success"
    second = text_xml(openid, "hello again", 2, now + 1)
    assert (await client.post("/wechat", params=signed_query(), data=second)).status == 200
    conn = sqlite3.connect(tmp_path / "bot.db")
    try:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (2,)
        # Two real messages of a 3-message flood limit: the replay must not be the third.
        assert conn.execute("SELECT count(*) FROM decisions").fetchone() == (0,)
    finally:
        conn.close()


async def test_a_replay_after_a_restart_is_caught_by_the_stored_dedup_key(
        aiohttp_client: Any, tmp_path: Path) -> None:
    config = _config(tmp_path, rules="rules:\n  - id: spam\n    keywords: [加微信]\n"
                                     "    action: blacklist\n")
    query, body = signed_query(), text_xml("oReplayedAfterRestart0000001", "加微信", 7)
    first = await aiohttp_client(build_app(config))
    assert (await first.post("/wechat", params=query, data=body)).status == 200
    await first.close()
    second = await aiohttp_client(build_app(config))  # no memory of the first delivery
    replay = await second.post("/wechat", params=query, data=body)
    assert replay.status == 200 and await replay.text() == "success"
    conn = sqlite3.connect(tmp_path / "bot.db")
    try:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM decisions").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM actions").fetchone() == (1,)
    finally:
        conn.close()


async def test_a_thousand_slowloris_connections_do_not_stop_a_real_push(
        tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2200:  # the test's own 1,000 sockets and the server's
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    port = free_port()
    config = write_config(tmp_path / "config.yaml", port, tmp_path, synchronous="normal")
    text = config.read_text(encoding="utf-8").replace(
        "  port:", "  idle_timeout_seconds: 2\n  port:")
    config.write_text(text, encoding="utf-8")
    server = await asyncio.to_thread(ServerProcess(config, port, tmp_path / "serve.log").start)
    readers: list[asyncio.StreamReader] = []
    writers: list[asyncio.StreamWriter] = []
    try:
        for _ in range(10):  # 100 at a time: the listen backlog holds them
            opened = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port)
                                            for _ in range(100)))
            readers.extend(reader for reader, _ in opened)
            writers.extend(writer for _, writer in opened)
        for writer in writers[1::2]:  # half never say a word, half start a request and stall
            writer.write(b"POST /wechat HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for writer in writers[1::2]:
            writer.write(b"a")  # a byte now and then keeps nothing alive
        started = time.monotonic()
        query = urlencode(signed_query())
        body = text_xml("oRealFollower0000000000000001", "hello", 5).encode()
        status, answer = await asyncio.to_thread(
            server.request, "POST", f"/wechat?{query}", body, None, 4.0)
        assert (status, answer) == (200, b"success")
        # Inside WeChat's 5 s with room to spare; tighter would time this shared machine.
        assert time.monotonic() - started < 4.0
        # The idle timeout closes them all: each reads EOF (or a 408/400 first).
        closed = await asyncio.wait_for(asyncio.gather(
            *(_closed(r) for r in readers[:50])), timeout=15)
        assert all(closed)
    finally:
        for writer in writers:
            writer.close()
        server.stop()
    assert "Traceback" not in server.log()


async def _closed(reader: asyncio.StreamReader) -> bool:
    # The reader open_connection gave: once the server has closed the socket the
    # transport no longer knows its protocol, so it cannot be found from the writer.
    # A socket the server closed before our stalling byte reached it answers that byte
    # with a reset: the write fails with EPIPE and the reader holds that error instead
    # of EOF. Either way the server closed it (on a slow machine, opening the thousand
    # can outlast the 2 s idle timeout for the first hundred).
    try:
        while await reader.read(4096):
            pass
    except ConnectionError:
        pass
    return True
