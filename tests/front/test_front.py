"""The push front over real sockets: pushes framed off the socket, the rest to aiohttp."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from bot.app import push_site
from bot.config import Config, build_config
from bot.web.front import parse_query
from tests.hostile import free_port
from tests.pushes import RULES, TOKEN, signed_query, text_xml


@dataclass
class Served:
    """The service listening through the push front, on a real port."""

    config: Config
    runner: web.AppRunner
    port: int

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    def count(self, table: str = "events") -> int:
        conn = sqlite3.connect(self.config.storage.path)
        try:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        finally:
            conn.close()


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """Start the real app behind the push front, as ``bot serve`` does; cleaned up after."""
    from bot.app import build_app

    runners: list[web.AppRunner] = []

    async def start(**server: Any) -> Served:
        (tmp_path / "rules").mkdir(exist_ok=True)
        (tmp_path / "rules" / "r.yaml").write_text(RULES, encoding="utf-8")
        port = free_port()
        config = build_config({
            "wechat": {"token": TOKEN},
            "server": {"host": "127.0.0.1", "port": port, **server},
            "storage": {"path": str(tmp_path / "bot.db"), "synchronous": "normal"},
            "rules": {"dir": str(tmp_path / "rules")},
            "actions": {"dry_run": True},
            "export": {"dir": str(tmp_path / "exports")},
        })
        runner = web.AppRunner(build_app(config), access_log=None, shutdown_timeout=5)
        await runner.setup()
        runners.append(runner)
        await push_site(runner, config, drain_timeout=5).start()
        return Served(config, runner, port)

    yield start
    for runner in runners:
        await runner.cleanup()


def push(openid: str, text: str, msg_id: int, *, query: dict[str, str] | None = None,
         extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    """A whole push request, as WeChat sends it (Content-Length, a few headers)."""
    body = text_xml(openid, text, msg_id).encode()
    target = f"/wechat?{urlencode(query or signed_query())}".encode()
    return (b"POST " + target + b" HTTP/" + version + b"\r\nHost: bot.example\r\n"
            b"User-Agent: Mozilla/4.0\r\nContent-Type: text/xml\r\n" + extra +
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_answer(reader: asyncio.StreamReader, timeout: float = 5.0) -> Answer:
    """One HTTP answer (framed by Content-Length, as every answer here is)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(
        reader.readexactly(int(headers.get("content-length", "0"))), timeout)
    return Answer(int(lines[0].split()[1]), headers, body)


async def closed(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Whether the server closes the connection within ``timeout`` (reads EOF)."""
    try:
        while await asyncio.wait_for(reader.read(4096), timeout):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def test_pushes_on_one_connection_are_answered_and_stored(serve: Serve) -> None:
    served = await serve()
    reader, writer = await served.connect()
    for number in range(3):
        writer.write(push("oFront0000000000000000000001", f"hello {number}", 100 + number))
        answer = await read_answer(reader)
        assert (answer.status, answer.body) == (200, b"success")
        assert answer.headers["content-type"] == "text/plain; charset=utf-8"
        assert answer.headers["date"].endswith(" GMT")
        assert "connection" not in answer.headers  # HTTP/1.1: kept alive, said nothing
    writer.close()
    assert served.count() == 3
    # /metrics on the same kind of connection: handed to aiohttp, counted by the webhook
    reader, writer = await served.connect()
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    metrics = await read_answer(reader)
    writer.close()
    assert metrics.status == 200
    assert 'bot_pushes_total{msg_type="text",outcome="ok"} 3.0' in metrics.body.decode()


async def test_a_reply_is_the_answer_and_a_refusal_leaves_the_connection_open(
        serve: Serve) -> None:
    served = await serve()
    reader, writer = await served.connect()
    writer.write(push("oFront0000000000000000000002", "你好机器人", 200))
    reply = await read_answer(reader)
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/xml; charset=utf-8"
    assert "您好，已收到" in reply.body.decode()
    forged = signed_query(token="not-the-token")
    writer.write(push("oFront0000000000000000000002", "hi", 201, query=forged))
    assert (await read_answer(reader)).status == 403
    writer.write(b"POST /wechat?" + urlencode(signed_query()).encode() +
                 b" HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n<xml><xml")
    assert (await read_answer(reader)).status == 400
    writer.write(b"POST /wechat?" + urlencode(signed_query()).encode() +
                 b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    empty = await read_answer(reader)
    assert (empty.status, empty.body) == (400, b"empty body")
    writer.write(push("oFront0000000000000000000002", "still here", 202))
    assert (await read_answer(reader)).body == b"success"
    writer.close()
    assert served.count() == 2


async def test_pipelined_requests_are_answered_in_order_across_the_hand_over(
        serve: Serve) -> None:
    served = await serve()
    reader, writer = await served.connect()
    pushes = [push("oFront0000000000000000000003", "你好机器人" if n % 3 == 0 else f"hi {n}",
                   300 + n) for n in range(40)]  # more than the front reads ahead
    health = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    writer.write(b"".join(pushes) + health + push("oFront0000000000000000000003", "last", 399))
    answers = [await read_answer(reader) for _ in range(42)]
    writer.close()
    assert [a.status for a in answers] == [200] * 42
    kinds = [a.headers["content-type"].split(";")[0] for a in answers]
    assert kinds == ["application/xml" if n % 3 == 0 else "text/plain" for n in range(40)] \
        + ["application/json", "text/plain"]
    assert answers[-1].body == b"success"
    assert served.count() == 41


async def test_a_push_that_comes_in_pieces_is_answered_once_whole(serve: Serve) -> None:
    served = await serve()
    reader, writer = await served.connect()
    request = push("oFront0000000000000000000004", "一点一点地", 400)
    cut = request.index(b"\r\n\r\n") + 10
    for piece in (request[:7], request[7:60], request[60:cut], request[cut:-3], request[-3:]):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.02)
    assert (await read_answer(reader)).body == b"success"
    writer.close()
    assert served.count() == 1


@pytest.mark.parametrize(("extra", "body", "status", "stored"), [
    (b"Transfer-Encoding: chunked\r\n", b"chunked", 200, 1),
    (b"Expect: 100-continue\r\n", b"expect", 200, 1),
    (b"", b"too large", 413, 0),
], ids=["chunked", "expect-continue", "over-max-body"])
async def test_bodies_aiohttp_frames_are_handed_to_it(
        serve: Serve, extra: bytes, body: bytes, status: int, stored: int) -> None:
    served = await serve(max_body_bytes=1024)
    xml = text_xml("oFront0000000000000000000005", "x" * (2000 if body == b"too large" else 5),
                   500).encode()
    head = b"POST /wechat?" + urlencode(signed_query()).encode() + b" HTTP/1.1\r\nHost: x\r\n"
    if body == b"chunked":
        request = head + extra + b"\r\n" + b"%x\r\n" % len(xml) + xml + b"\r\n0\r\n\r\n"
    else:
        request = head + extra + b"Content-Length: %d\r\n\r\n" % len(xml) + xml
    reader, writer = await served.connect()
    if body == b"expect":
        writer.write(request[:request.index(b"\r\n\r\n") + 4])
        continued = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert continued.startswith(b"HTTP/1.1 100")
        writer.write(xml)
    else:
        writer.write(request)
    assert (await read_answer(reader)).status == status
    writer.close()
    assert served.count() == stored


@pytest.mark.parametrize("request_bytes", [
    b"POST /wechat HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST /wechat HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-H%d: v\r\n" % i for i in range(80)) + b"Content-Length: 1\r\n\r\nx",
    b"POST /wechat HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
    b"POST /wechat HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    b"POST /wechat HTTP/1.1\r\nBad Header: v\r\nContent-Length: 1\r\n\r\nx",
    b"POST /wechat HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["two-lengths", "many-headers", "huge-header", "huge-length", "bad-name",
        "no-length"])
async def test_heads_the_front_will_not_frame_get_aiohttps_answer(
        serve: Serve, request_bytes: bytes) -> None:
    served = await serve()
    reader, writer = await served.connect()
    writer.write(request_bytes)
    answer = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert answer.split()[1] in (b"400", b"411", b"413", b"431"), answer
    assert served.count() == 0


async def test_other_paths_and_methods_are_aiohttps(serve: Serve) -> None:
    served = await serve()
    for request, status in (
            (b"GET /wechat?" + urlencode(signed_query(echostr="e42")).encode(), 200),
            (b"POST /wechat/other", 404),
            (b"POST /wechatx", 404),
            (b"PUT /wechat", 405)):
        reader, writer = await served.connect()
        writer.write(request + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        answer = await read_answer(reader)
        writer.close()
        assert answer.status == status, request
        if status == 200:
            assert answer.body == b"e42"


async def test_http_1_0_and_connection_close_are_honoured(serve: Serve) -> None:
    served = await serve()
    openid = "oFront0000000000000000000006"
    reader, writer = await served.connect()
    writer.write(push(openid, "one", 600, version=b"1.0"))
    answer = await read_answer(reader)
    assert (answer.status, answer.headers.get("connection")) == (200, "close")
    assert await closed(reader, 5)
    writer.close()
    reader, writer = await served.connect()
    for msg_id in (601, 602):  # HTTP/1.0 that asks for keep-alive keeps it
        writer.write(push(openid, "two", msg_id, version=b"1.0",
                          extra=b"Connection: keep-alive\r\n"))
        answer = await read_answer(reader)
        assert (answer.status, answer.headers.get("connection")) == (200, "keep-alive")
    writer.write(push(openid, "three", 603, extra=b"Connection: close\r\n") +
                 push(openid, "never read", 604))
    assert (await read_answer(reader)).headers.get("connection") == "close"
    assert await closed(reader, 5)
    writer.close()
    assert served.count() == 4


async def test_idle_and_stalled_connections_are_closed_and_a_busy_one_is_not(
        serve: Serve) -> None:
    served = await serve(idle_timeout_seconds=0.6)
    request = push("oFront0000000000000000000007", "slow", 700)
    head_end = request.index(b"\r\n\r\n") + 4
    stalled = []
    for partial in (b"", b"POST /wec", request[:head_end - 20], request[:head_end + 10]):
        reader, writer = await served.connect()
        writer.write(partial)
        stalled.append((reader, writer))
    busy_reader, busy_writer = await served.connect()
    started = time.monotonic()
    msg_id = 710
    while time.monotonic() - started < 1.5:  # a push every 0.2 s: never idle for 0.6 s
        busy_writer.write(push("oFront0000000000000000000008", "busy", msg_id))
        assert (await read_answer(busy_reader)).status == 200
        msg_id += 1
        await asyncio.sleep(0.2)
    assert all(await asyncio.gather(*(closed(reader, 5) for reader, _ in stalled)))
    busy_writer.write(push("oFront0000000000000000000008", "busy", msg_id))
    assert (await read_answer(busy_reader)).status == 200
    for _, writer in [*stalled, (busy_reader, busy_writer)]:
        writer.close()
    assert served.count() == msg_id - 710 + 1


async def test_shutdown_answers_every_push_already_read_then_closes(serve: Serve) -> None:
    served = await serve()
    reader, writer = await served.connect()
    idle_reader, idle_writer = await served.connect()
    writer.write(b"".join(push("oFront0000000000000000000009", f"n{n}", 900 + n)
                          for n in range(12)))
    await writer.drain()
    answers = [await read_answer(reader)]  # all read by now; the rest are in flight
    cleanup = asyncio.ensure_future(served.runner.cleanup())
    answers += [await read_answer(reader) for _ in range(11)]
    assert [a.status for a in answers] == [200] * 12
    assert await closed(reader, 5) and await closed(idle_reader, 5)
    await cleanup
    writer.close()
    idle_writer.close()
    assert served.count() == 12


async def test_a_client_gone_before_its_answer_loses_no_push(serve: Serve) -> None:
    served = await serve()
    _, writer = await served.connect()
    writer.write(push("oFront0000000000000000000010", "加微信 abc", 1000))
    await writer.drain()
    writer.transport.abort()
    deadline = time.monotonic() + 5
    while served.count("actions") == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert served.count() == 1 and served.count("actions") == 1


@pytest.mark.parametrize("front", [True, False], ids=["front", "aiohttp-only"])
async def test_push_front_false_serves_every_request_through_aiohttp(
        serve: Serve, front: bool) -> None:
    served = await serve(push_front=front)
    reader, writer = await served.connect()
    writer.write(push("oFront0000000000000000000011", "hello", 1100))
    answer = await read_answer(reader)
    writer.close()
    assert (answer.status, answer.body) == (200, b"success")
    # aiohttp names itself in every answer; the front does not
    assert ("aiohttp" in answer.headers.get("server", "")) is not front
    assert served.count() == 1


@given(st.lists(st.tuples(st.text(st.sampled_from("ab=&%+2Fé 0"), max_size=6),
                          st.text(st.sampled_from("ab=&%+2Fé 0"), max_size=6)), max_size=5),
       st.booleans())
def test_the_query_reads_as_parse_qsl_reads_it(pairs: list[tuple[str, str]], raw: bool
                                                ) -> None:
    text = "&".join(f"{n}={v}" for n, v in pairs) if raw else urlencode(pairs)
    expected: dict[str, str] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        expected.setdefault(name, value)
    assert parse_query(text) == expected
