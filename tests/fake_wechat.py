"""A fake WeChat API server (real HTTP on 127.0.0.1) with state and fault injection."""

from __future__ import annotations

import asyncio
import bisect
import secrets
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

APPID = "wxfakeappid0000001"
SECRET = "fake-app-secret-never-logged"

# Short endpoint names used by script() and calls_to(), mapped from the request path.
ENDPOINTS = {
    "/cgi-bin/token": "token",
    "/cgi-bin/stable_token": "stable_token",
    "/cgi-bin/tags/members/batchblacklist": "batchblacklist",
    "/cgi-bin/tags/members/batchunblacklist": "batchunblacklist",
    "/cgi-bin/tags/members/getblacklist": "getblacklist",
}


@dataclass(frozen=True)
class Fault:
    """A scripted non-JSON behaviour: ``http`` status, ``delay`` then serve, ``drop``."""

    kind: str
    status: int = 500
    seconds: float = 0.0


def errcode(code: int, errmsg: str = "") -> dict[str, Any]:
    """A scripted JSON error answer, e.g. ``errcode(-1)`` or ``errcode(45009)``."""
    return {"errcode": code, "errmsg": errmsg or DEFAULT_ERRMSG.get(code, "error")}


def http_error(status: int = 500) -> Fault:
    """A scripted HTTP error status with a non-JSON body."""
    return Fault("http", status=status)


def delay(seconds: float) -> Fault:
    """Wait ``seconds`` before serving normally (longer than the client timeout: a timeout)."""
    return Fault("delay", seconds=seconds)


def drop() -> Fault:
    """Close the connection without answering."""
    return Fault("drop")


DEFAULT_ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40003: "invalid openid",
    40013: "invalid appid",
    40032: "invalid openid list size",
    40125: "invalid appsecret",
    41001: "access_token missing",
    42001: "access_token expired",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit, mustslower retry next minute",
    48001: "api unauthorized",
    49003: "not belong to the application",
}


@dataclass
class Call:
    """One request the fake received: endpoint, JSON payload or query, token and answer;
    ``peer_port`` is the client's TCP port (which process sent it)."""

    endpoint: str
    payload: dict[str, Any]
    token: str | None
    answer: Any
    at: float = field(default_factory=time.monotonic)
    peer_port: int | None = None

    @property
    def openids(self) -> list[str]:
        """The ``openid_list`` of a batch call (empty for other endpoints)."""
        return list(self.payload.get("openid_list") or [])


class _VersionedSet(set[str]):
    """A set that counts its mutations, so paging can cache its sorted order."""

    version = 0

    def _bump(self) -> None:
        self.version += 1


def _mutator(name: str) -> Any:
    base = getattr(set, name)

    def method(self: _VersionedSet, *args: Any) -> Any:
        self._bump()
        return base(self, *args)

    method.__name__ = name
    return method


for _name in ("add", "discard", "remove", "update", "difference_update", "clear", "pop",
              "intersection_update", "symmetric_difference_update", "__ior__", "__isub__",
              "__iand__", "__ixor__"):
    setattr(_VersionedSet, _name, _mutator(_name))


class FakeWeChat:
    """State and behaviour of the fake API; ``app`` is the aiohttp application serving it.

    ``blacklist`` is the account's blacklist (mutate it freely); ``invalid`` holds OpenIDs
    that make any batch containing them fail with 40003; ``page_size`` is getblacklist's
    page size; ``page_end`` how the end of the list shows: ``count0`` (the last page still
    carries a next_openid, the following call answers count 0 and next_openid ""),
    ``empty_next`` (the last page has next_openid "") or ``repeat`` (past the end, count 0
    with next_openid echoing begin_openid). ``down`` answers every request with HTTP 503.
    """

    def __init__(self, *, appid: str = APPID, secret: str = SECRET, page_size: int = 10000,
                 token_ttl: int = 7200) -> None:
        self.appid, self.secret = appid, secret
        self.page_size = page_size
        self.page_end = "count0"
        self.token_ttl = token_ttl
        self.blacklist: set[str] = _VersionedSet()
        self.invalid: set[str] = set()
        self.tokens: dict[str, float] = {}  # token -> expiry (time.time())
        self.calls: list[Call] = []
        self.down = False
        self._scripts: dict[str, deque[Any]] = {}
        self._stable: str | None = None
        self._sorted: list[str] = []
        self._sorted_version = -1
        self.base_url = ""
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    # ------------------------------------------------------------ test controls

    def script(self, endpoint: str, *responses: dict[str, Any] | Fault) -> None:
        """Queue answers for ``endpoint`` (short name or path), used before normal serving."""
        name = ENDPOINTS.get(endpoint, endpoint)
        if name not in ENDPOINTS.values():
            raise ValueError(f"unknown endpoint {endpoint!r}")
        self._scripts.setdefault(name, deque()).extend(responses)

    def revoke_tokens(self) -> None:
        """Invalidate every issued token (as another party fetching one would)."""
        self.tokens.clear()
        self._stable = None

    def calls_to(self, endpoint: str) -> list[Call]:
        """Calls received by one endpoint (short name), in order."""
        return [c for c in self.calls if c.endpoint == endpoint]

    def token_calls(self) -> list[Call]:
        """Calls that fetched a token (either endpoint)."""
        return [c for c in self.calls if c.endpoint in ("token", "stable_token")]

    def issue_token(self) -> str:
        """Issue a valid token directly (for tests that pre-seed a cache)."""
        token = "TOKEN-" + secrets.token_urlsafe(24)
        self.tokens[token] = time.time() + self.token_ttl
        return token

    # ------------------------------------------------------------ serving

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = ENDPOINTS.get(request.path)
        if name is None:
            return web.json_response({"errcode": 404, "errmsg": "not found"}, status=404)
        payload: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            try:
                payload = await request.json()
            except ValueError:
                payload = {"_raw": await request.text()}
        token = request.query.get("access_token")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        call = Call(name, payload, token, None, peer_port=peer[1] if peer else None)
        self.calls.append(call)
        if self.down:
            call.answer = 503
            return web.Response(status=503, text="service unavailable")
        scripted = self._next_script(name)
        if isinstance(scripted, Fault):
            if scripted.kind == "http":
                call.answer = scripted.status
                redirect = {"Location": "/elsewhere"} if 300 <= scripted.status < 400 else None
                return web.Response(status=scripted.status, text="<html>error</html>",
                                    headers=redirect)
            if scripted.kind == "drop":
                call.answer = "drop"
                assert request.transport is not None
                request.transport.abort()
                raise asyncio.CancelledError  # aiohttp treats it as a lost client
            await asyncio.sleep(scripted.seconds)
        elif scripted is not None:
            call.answer = scripted
            return web.json_response(scripted)
        body = self._serve(name, payload, token)
        call.answer = body
        return web.json_response(body)

    def _next_script(self, name: str) -> Any:
        queue = self._scripts.get(name)
        return queue.popleft() if queue else None

    def _serve(self, name: str, payload: dict[str, Any], token: str | None) -> dict[str, Any]:
        if name == "token":
            return self._token(payload)
        if name == "stable_token":
            return self._stable_token(payload)
        problem = self._check_token(token)
        if problem:
            return problem
        if name == "getblacklist":
            return self._page(str(payload.get("begin_openid") or ""))
        return self._batch(name, payload.get("openid_list"))

    def _credentials_error(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        if payload.get("appid") != self.appid:
            return errcode(40013)
        if payload.get("secret") != self.secret:
            return errcode(40125)
        return None

    def _token(self, payload: dict[str, Any]) -> dict[str, Any]:
        problem = self._credentials_error(payload)
        if problem:
            return problem
        token = self.issue_token()
        return {"access_token": token, "expires_in": self.token_ttl}

    def _stable_token(self, payload: dict[str, Any]) -> dict[str, Any]:
        problem = self._credentials_error(payload)
        if problem:
            return problem
        now = time.time()
        current = self._stable
        if payload.get("force_refresh") or current is None or self.tokens.get(current, 0) <= now:
            current = self._stable = self.issue_token()
        return {"access_token": current, "expires_in": int(self.tokens[current] - now)}

    def _check_token(self, token: str | None) -> dict[str, Any] | None:
        if not token:
            return errcode(41001)
        expiry = self.tokens.get(token)
        if expiry is None:
            return errcode(40001)
        if expiry <= time.time():
            return errcode(42001)
        return None

    def _batch(self, name: str, openids: Any) -> dict[str, Any]:
        if not isinstance(openids, list) or not openids or len(openids) > 20:
            return errcode(40032)
        if any(o in self.invalid for o in openids):
            return errcode(40003)
        if name == "batchblacklist":
            self.blacklist.update(openids)
        else:
            self.blacklist.difference_update(openids)
        return {"errcode": 0, "errmsg": "ok"}

    def _ordered(self) -> list[str]:
        version = self.blacklist.version if isinstance(self.blacklist, _VersionedSet) else -2
        if version != self._sorted_version or version == -2:
            self._sorted = sorted(self.blacklist)
            self._sorted_version = version
        return self._sorted

    def _page(self, begin: str) -> dict[str, Any]:
        ordered = self._ordered()
        start = bisect.bisect_right(ordered, begin) if begin else 0
        page = ordered[start:start + self.page_size]
        total = len(ordered)
        if not page:
            next_openid = begin if self.page_end == "repeat" else ""
        elif self.page_end == "empty_next" and start + len(page) >= total:
            next_openid = ""
        else:
            next_openid = page[-1]
        return {"total": total, "count": len(page), "data": {"openid": page},
                "next_openid": next_openid}


async def start_fake(fake: FakeWeChat) -> web.AppRunner:
    """Serve ``fake`` on an ephemeral 127.0.0.1 port; sets ``fake.base_url``."""
    runner = web.AppRunner(fake.app, shutdown_timeout=0.5, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr, attr-defined]
    fake.base_url = f"http://127.0.0.1:{port}"
    return runner


def make_openids(count: int, prefix: str = "o") -> list[str]:
    """``count`` distinct, valid-looking 28-character OpenIDs (sorted order = index order)."""
    return [prefix + str(i).zfill(28 - len(prefix)) for i in range(count)]


def flatten(calls: Iterable[Call]) -> list[str]:
    """Every OpenID sent in ``calls``, in order."""
    return [o for c in calls for o in c.openids]
