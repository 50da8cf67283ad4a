"""The push front: pushes framed off the socket, every other request handed to aiohttp."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol
from urllib.parse import unquote_plus

import httptools  # type: ignore[import-not-found]
from aiohttp import web

log = logging.getLogger(__name__)

# A push's head (request line, ~200-character signed query, a few headers) is well under
# this; a larger one goes to aiohttp, which applies its own per-line and per-field limits.
MAX_HEAD_BYTES = 8190
# Requests a client may send ahead of their answers (pipelining) before reading pauses.
MAX_PIPELINED = 16
# A request with one of these headers is aiohttp's: it knows their rules.
_AIOHTTP_HEADERS = frozenset((b"transfer-encoding", b"expect", b"upgrade"))
_PHRASES = {status.value: status.phrase for status in HTTPStatus}


class PushAnswerer(Protocol):
    """Answers one push (the webhook): status, text and content type."""

    async def answer(self, query: dict[str, str], body: bytes, remote: str | None,
                     started: float) -> tuple[int, str, str]: ...


class PushFront:
    """The listening socket's protocol factory: a connection per accepted socket.

    Why: aiohttp's general request path (its protocol, request and response objects,
    router and writer) is most of the CPU its bare handler spends on a request, ~31 of
    ~38 us against a protocol framing the same request with httptools. A push needs
    little of it: one method, one path, a body of a few hundred bytes with a
    Content-Length. So a connection whose request is ``POST {server.path}`` is served
    here: httptools (llhttp) checks the request; this class only frames it by its
    Content-Length and writes the answer.

    Everything else goes to aiohttp untouched: at a request boundary the connection is
    handed over with the bytes not yet parsed, and stays aiohttp's. That is every other
    method and path (URL verification, /healthz, the console), a chunked body or one
    with ``Expect``, a body over ``max_body`` (aiohttp answers 413), a head over
    ``MAX_HEAD_BYTES`` or ``max_headers`` headers, and whatever httptools refuses
    (aiohttp answers 400, from the same bytes).

    ``fallback`` makes aiohttp's protocol for a connection handed over (the runner's
    ``web.Server``). Connections idle longer than ``idle_timeout`` (no request in
    flight, none completed since) are closed, as aiohttp closes its own: a client that
    never finishes a request (slowloris) holds a socket no longer than that.
    """

    def __init__(self, webhook: PushAnswerer, fallback: Callable[[], asyncio.Protocol], *,
                 path: str, max_body: int, max_headers: int, idle_timeout: float):
        self.webhook = webhook
        self.fallback = fallback
        self.prefix = f"POST {path}".encode()
        self.max_body = max_body
        self.max_headers = max_headers
        self.idle_timeout = idle_timeout
        self.connections: set[_Connection] = set()
        self.closing = False
        self._date = (0, "")
        self._sweeper: asyncio.Task[None] | None = None

    def __call__(self) -> _Connection:
        return _Connection(self)

    def start(self) -> None:
        """Begin closing idle connections (on the running loop)."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def respond(self, push: _Push, remote: str | None) -> bytes:
        """The whole HTTP answer to one push."""
        try:
            status, text, content_type = await self.webhook.answer(
                push.query(), push.body, remote, push.started)
        except Exception:
            log.exception("Error handling push")  # counted by the webhook; WeChat retries
            status, text, content_type = 500, "500 Internal Server Error", "text/plain"
        return self._message(status, text, content_type, push)

    def _message(self, status: int, text: str, content_type: str, push: _Push) -> bytes:
        body = text.encode()
        connection = b"" if push.keep_alive and not push.old else \
            b"Connection: keep-alive\r\n" if push.keep_alive else b"Connection: close\r\n"
        head = (f"HTTP/1.1 {status} {_PHRASES.get(status, '')}\r\n"
                f"Content-Type: {content_type}; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nDate: {self._now()}\r\n")
        return head.encode() + connection + b"\r\n" + body

    def _now(self) -> str:
        """The Date header's value, formatted once a second."""
        second = int(time.time())
        if self._date[0] != second:
            self._date = (second, formatdate(second, usegmt=True))
        return self._date[1]

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self.idle_timeout / 2))
            cutoff = loop.time() - self.idle_timeout
            for connection in list(self.connections):
                if connection.idle_since(cutoff):
                    connection.close()

    async def shutdown(self, timeout: float) -> None:
        """Answer the requests already read, close every connection; abort what is
        still unanswered after ``timeout`` seconds."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in list(self.connections):
            connection.wind_down()
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            log.warning("closing a connection with a push unanswered after %g s", timeout)
            connection.abort()


class _Push:
    """One framed push request."""

    __slots__ = ("body", "keep_alive", "old", "started", "target")

    def __init__(self, target: bytes, body: bytes, keep_alive: bool, old: bool,
                 started: float):
        self.target = target
        self.body = body
        self.keep_alive = keep_alive
        self.old = old  # HTTP/1.0: keep-alive only when asked, and said so in the answer
        self.started = started

    def query(self) -> dict[str, str]:
        """The query string's parameters; the first of a repeated name counts (as in
        aiohttp's ``request.query.get``)."""
        mark = self.target.find(b"?")
        return {} if mark < 0 else parse_query(self.target[mark + 1:].decode("utf-8", "replace"))


def parse_query(text: str) -> dict[str, str]:
    """``urllib.parse.parse_qsl(text, keep_blank_values=True)``, first of each name
    kept, in half its time: a push's signed query has nothing to unquote."""
    query: dict[str, str] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if "%" in pair or "+" in pair:
            name, value = unquote_plus(name), unquote_plus(value)
        if name not in query:
            query[name] = value
    return query


class _Connection(asyncio.Protocol):
    """One client connection while it is the front's (until handed to aiohttp)."""

    def __init__(self, front: PushFront):
        self.front = front
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.buffer = b""
        self.pushes: deque[_Push] = deque()  # read, not yet answered (in order)
        self.worker: asyncio.Task[None] | None = None
        self.since = self.loop.time()  # made, or last answered: the idle clock
        self.paused = False
        self.handing_over = False  # to aiohttp, once the pushes read are answered
        self.last = False  # a push without keep-alive was read: nothing more is
        self.done = False  # closed, or aiohttp's
        self.remote: str | None = None
        # The push being read: its head's end, the whole request's, and when it came.
        self.reading: tuple[int, int, float] | None = None
        # Filled by httptools' callbacks while it parses a head.
        self.target = b""
        self.length = -1
        self.headers = 0
        self.for_aiohttp = False
        self.keep_alive = True
        self.old = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple) else None
        self.front.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer = self.buffer + data if self.buffer else data
        self._frame()

    def connection_lost(self, exc: Exception | None) -> None:
        # A push being answered still completes (its decision is committed); its
        # answer has nowhere to go.
        self.done = True
        self.front.connections.discard(self)

    # httptools' callbacks

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers += 1
        name = name.lower()
        if name == b"content-length":
            self.length = int(value)  # llhttp has checked it is digits, and not repeated
        elif name in _AIOHTTP_HEADERS:
            self.for_aiohttp = True

    def on_headers_complete(self) -> None:
        # Read here: once the message is complete, llhttp no longer tells them right.
        parser = self.parser
        self.keep_alive = parser.should_keep_alive()
        self.old = parser.get_http_version() == "1.0"

    # framing

    def _frame(self) -> None:
        """Take every whole push request in the buffer, in order."""
        while self.buffer and not (self.handing_over or self.last or self.done):
            if self.reading is None:
                self.reading = self._head()
                if self.reading is None:
                    return
            head, end, started = self.reading
            if len(self.buffer) < end:
                return
            self.reading = None
            self._take(head, end, started)

    def _head(self) -> tuple[int, int, float] | None:
        """Parse the head of the push at the buffer's start: where it and the whole
        request end. None while it is incomplete, or when it is aiohttp's to answer."""
        buffer, front = self.buffer, self.front
        prefix = front.prefix
        if len(buffer) <= len(prefix):
            if not prefix.startswith(buffer):
                self._hand_over()
            return None
        if not buffer.startswith(prefix) or buffer[len(prefix)] not in b"? ":
            self._hand_over()
            return None
        end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES)
        if end < 0:
            if len(buffer) >= MAX_HEAD_BYTES:
                self._hand_over()
            return None
        started = time.perf_counter()
        head = end + 4
        self.target, self.length, self.headers, self.for_aiohttp = b"", -1, 0, False
        try:
            self.parser.feed_data(buffer[:head])
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._hand_over()  # aiohttp answers it (400, or 101), from the same bytes
            return None
        if self.for_aiohttp or not 0 <= self.length <= front.max_body \
                or self.headers > front.max_headers:
            self._hand_over()
            return None
        return head, head + self.length, started

    def _take(self, head: int, end: int, started: float) -> None:
        """Queue the push whose whole request is the buffer's first ``end`` bytes."""
        buffer = self.buffer
        body = buffer[head:end]
        self.buffer = buffer[end:]
        if body:
            try:
                self.parser.feed_data(body)  # framed by its Content-Length: opaque bytes
            except httptools.HttpParserError:
                log.warning("push body refused by the HTTP parser; connection closed")
                self.close()
                return
        self.last = not self.keep_alive
        self.pushes.append(_Push(self.target, body, self.keep_alive, self.old, started))
        if self.worker is None:
            self.worker = self.loop.create_task(self._answer_all())
        if len(self.pushes) >= MAX_PIPELINED:
            self._pause()

    async def _answer_all(self) -> None:
        """Answer the pushes read, one after another (HTTP answers go in order)."""
        try:
            while self.pushes:
                push = self.pushes[0]
                answer = await self.front.respond(push, self.remote)
                self.pushes.popleft()
                if self.done or self.transport is None:
                    continue
                self.transport.write(answer)
                self.since = self.loop.time()
                if not push.keep_alive:
                    self.close()
                elif self.paused and not self.handing_over and len(self.pushes) < MAX_PIPELINED:
                    self.paused = False
                    self.transport.resume_reading()
        finally:
            self.worker = None
        if self.done:
            return
        if self.front.closing:
            self.close()
        elif self.handing_over:
            self._give_to_aiohttp()

    def _pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def _hand_over(self) -> None:
        """From this request on, the connection is aiohttp's (once the pushes read
        before it are answered)."""
        self.handing_over = True
        if self.worker is None:
            self._give_to_aiohttp()
        else:
            self._pause()

    def _give_to_aiohttp(self) -> None:
        transport = self.transport
        assert transport is not None
        self.done = True
        self.front.connections.discard(self)
        if self.front.closing:
            transport.close()
            return
        protocol = self.front.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.paused:
            self.paused = False
            transport.resume_reading()
        if self.buffer:
            buffer, self.buffer = self.buffer, b""
            protocol.data_received(buffer)

    # the front's housekeeping

    def idle_since(self, cutoff: float) -> bool:
        """Whether nothing is in flight and nothing was answered since ``cutoff``."""
        return self.worker is None and not self.done and self.since < cutoff

    def close(self) -> None:
        self.done = True
        self.front.connections.discard(self)
        if self.transport is not None:
            self.transport.close()

    def wind_down(self) -> None:
        """Shutting down: read nothing more; close once the pushes read are answered."""
        if self.worker is None:
            self.close()
        else:
            self.last = True
            self._pause()

    def abort(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
        self.done = True
        self.front.connections.discard(self)
        if self.transport is not None:
            self.transport.abort()


class PushSite(web.BaseSite):
    """A TCP site whose connections meet the push front first; stopping it answers
    the pushes already read (for up to ``drain_timeout`` seconds) before aiohttp's
    connections are shut down and the application cleaned up."""

    __slots__ = ("_drain_timeout", "_front", "_host", "_listening", "_port")

    def __init__(self, runner: web.BaseRunner, front: PushFront, host: str, port: int, *,
                 drain_timeout: float = 10.0):
        super().__init__(runner)
        self._front = front
        self._host = host
        self._port = port
        self._drain_timeout = drain_timeout
        self._listening: asyncio.Server | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose, when asked for 0)."""
        if self._listening is not None and self._listening.sockets:
            return int(self._listening.sockets[0].getsockname()[1])
        return self._port

    async def start(self) -> None:
        await super().start()
        self._front.start()
        self._server = self._listening = await asyncio.get_running_loop().create_server(
            self._front, self._host, self._port, backlog=self._backlog)

    async def stop(self) -> None:
        await super().stop()
        await self._front.shutdown(self._drain_timeout)
