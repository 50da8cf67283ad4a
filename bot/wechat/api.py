"""Async WeChat API client for the few endpoints we call: token, blacklist batches, paging."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.config import WeChatConfig
from bot.core.errors import (
    APIError,
    BatchTooLargeError,
    CredentialError,
    FatalAPIError,
    InvalidOpenIDError,
    QuotaError,
    RetryableError,
    TokenError,
    WeChatAPIError,
    describe_error,
)
from bot.metrics import Metrics
from bot.storage.ports import CachedToken, TokenCache

log = logging.getLogger(__name__)

MAX_BATCH = 20
# Renew this long before WeChat's stated expiry, so a token never dies mid-call.
RENEW_MARGIN_SECONDS = 300
TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
CREDENTIAL_ERRCODES = frozenset({40013, 40125, 40164, 41002, 41004, 61024})


def check_response(status: int, data: Any) -> dict[str, Any]:
    """Map an HTTP status and JSON body to the data, or raise the matching error class."""
    # 5xx, 408/429 and a 200 that is not JSON (a proxy's error page) are passing trouble
    if status >= 500 or status in (408, 429) or (status == 200 and not isinstance(data, dict)):
        raise RetryableError(None, f"HTTP {status}", http_status=status)
    if status != 200 or not isinstance(data, dict):
        raise FatalAPIError(None, f"unexpected answer (HTTP {status})", http_status=status)
    code = int(data.get("errcode") or 0)
    if code == 0:
        return data
    msg = str(data.get("errmsg", ""))
    error: APIError
    if code == -1:
        error = RetryableError(code, msg)
    elif code in (45009, 45011):
        error = QuotaError(code, msg, scope="daily" if code == 45009 else "minute")
    elif code in TOKEN_ERRCODES:
        error = TokenError(code, msg)
    elif code in CREDENTIAL_ERRCODES:
        error = CredentialError(code, msg)
    elif code in (40003, 49003):
        error = InvalidOpenIDError(code, msg)
    elif code == 40032:
        error = BatchTooLargeError(code, msg)
    else:
        error = FatalAPIError(code, msg)
    raise error


@dataclass
class APIHealth:
    """Whether the API has been answering: consecutive failed calls, since when, the last
    error (errcode and errmsg, or the HTTP status; never the URL, which holds the token)."""

    failures: int = 0
    failing_since: float | None = None
    last_error: str = ""
    last_ok: float | None = None

    FAILING_AFTER = 3  # one busy -1 or timeout is routine and retried; three in a row is not

    def answered(self, now: float) -> None:
        """A call got an answer about the request itself (success, a bad OpenID)."""
        self.failures, self.failing_since, self.last_ok = 0, None, now

    def failed(self, now: float, error: str) -> None:
        """A call failed for reasons of the API or the account (5xx, timeout, quota...)."""
        self.failures += 1
        self.failing_since = self.failing_since or now
        self.last_error = error

    @property
    def failing(self) -> bool:
        """Every recent call failed (at least FAILING_AFTER in a row, none answered since)."""
        return self.failures >= self.FAILING_AFTER


# Answers about the request, not the API's health: the API works, this batch was wrong.
_REQUEST_ERRORS = (InvalidOpenIDError, BatchTooLargeError)


@dataclass(frozen=True, slots=True)
class BlacklistPage:
    """One getblacklist page."""

    total: int
    count: int
    openids: list[str]
    next_openid: str


class WeChatClient:
    """The async client. One instance per process; the token fetch is single-flight."""

    def __init__(self, config: WeChatConfig, session: aiohttp.ClientSession,
                 token_cache: TokenCache, metrics: Metrics, *, timeout: float = 10,
                 clock: Callable[[], float] = time.time):
        self._config = config
        self._session = session
        self._cache = token_cache
        self._metrics = metrics
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._token: CachedToken | None = None
        self._lock = asyncio.Lock()
        self.health = APIHealth()

    async def batch_blacklist(self, openids: list[str]) -> None:
        """Blacklist up to 20 followers in one call; raises a WeChatAPIError subclass."""
        await self._call("tags/members/batchblacklist", {"openid_list": _checked(openids)})

    async def batch_unblacklist(self, openids: list[str]) -> None:
        """Remove up to 20 followers from the blacklist in one call."""
        await self._call("tags/members/batchunblacklist", {"openid_list": _checked(openids)})

    async def get_blacklist_page(self, begin_openid: str = "") -> BlacklistPage:
        """One page of the account's blacklist, starting after ``begin_openid``."""
        data = await self._call("tags/members/getblacklist", {"begin_openid": begin_openid})
        openids = list((data.get("data") or {}).get("openid") or [])
        return BlacklistPage(
            total=int(data.get("total") or 0), count=int(data.get("count") or len(openids)),
            openids=openids, next_openid=str(data.get("next_openid") or ""),
        )

    async def access_token(self) -> str:
        """A valid token: memory, then the cache, then WeChat (one fetch at a time)."""
        if self._fresh(self._token):
            assert self._token is not None
            return self._token.token
        async with self._lock:
            if not self._fresh(self._token):
                cached = await self._cache.load(self._config.appid)
                self._token = cached if self._fresh(cached) else await self._fetch_shared(None)
            assert self._token is not None
            return self._token.token

    async def _renew(self, rejected: str) -> str:
        """Replace a token WeChat refused, unless another task already did."""
        async with self._lock:
            if self._token is None or self._token.token == rejected:
                cached = await self._cache.load(self._config.appid)
                usable = cached is not None and cached.token != rejected and self._fresh(cached)
                fresh = cached if usable else None
                self._token = fresh or await self._fetch_shared(rejected)
            return self._token.token

    async def _fetch_shared(self, rejected: str | None) -> CachedToken:
        """Fetch under the cache's cross-process lock, unless another process holding it
        stored a usable token meanwhile (replicas on PostgreSQL share one token)."""
        async with self._cache.exclusive(self._config.appid):
            cached = await self._cache.load(self._config.appid)
            if cached is not None and cached.token != rejected and self._fresh(cached):
                return cached
            return await self._fetch(rejected)

    def _fresh(self, token: CachedToken | None) -> bool:
        return token is not None and token.expires_at - RENEW_MARGIN_SECONDS > self._clock()

    async def _fetch(self, rejected: str | None) -> CachedToken:
        """stable_token (no forced refresh unless it hands back the refused token), else token."""
        creds = {"grant_type": "client_credential", "appid": self._config.appid,
                 "secret": self._config.secret}
        try:
            data = await self._request("POST", "stable_token", json={**creds,
                                                                     "force_refresh": False})
            if rejected is not None and data.get("access_token") == rejected:
                data = await self._request("POST", "stable_token",
                                           json={**creds, "force_refresh": True})
        except (CredentialError, RetryableError):
            raise  # /cgi-bin/token would fail alike, and spend its small daily quota
        except WeChatAPIError as exc:
            log.warning("stable_token failed (%s); falling back to /cgi-bin/token", exc)
            data = await self._request("GET", "token", params=creds)
        token = CachedToken(str(data["access_token"]),
                            self._clock() + int(data.get("expires_in") or 7200))
        await self._cache.save(self._config.appid, token)
        return token

    async def _call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with the token; on a refused token renew once and retry once (no recursion)."""
        token = await self.access_token()
        try:
            return await self._request("POST", path, json=payload, token=token)
        except TokenError:
            token = await self._renew(token)
        return await self._request("POST", path, json=payload, token=token)

    async def _request(self, method: str, path: str, *, token: str | None = None,
                       **kwargs: Any) -> dict[str, Any]:
        """One HTTP exchange, logged and counted; never lets the token or secret out."""
        url = f"{self._config.api_base}/cgi-bin/{path}"
        params = dict(kwargs.pop("params", {}))
        if token is not None:
            params["access_token"] = token
        endpoint = path.rsplit("/", 1)[-1]
        started = time.monotonic()
        failure: RetryableError | None = None
        try:
            # No redirects: a 3xx would carry the access_token to wherever it points.
            async with self._session.request(method, url, params=params, timeout=self._timeout,
                                             allow_redirects=False, **kwargs) as resp:
                status = resp.status
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = None
            result = check_response(status, data)
        except WeChatAPIError as exc:
            self._record(endpoint, str(exc.errcode or f"http_{exc.http_status}"), started)
            self._note(endpoint, exc)
            raise
        except (TimeoutError, aiohttp.ClientError) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else "connection"
            self._record(endpoint, kind, started)
            failure = RetryableError(None, f"{kind}: {type(exc).__name__}")
            self._note(endpoint, failure)
        if failure is not None:  # raised out here: aiohttp's error (its text holds the
            raise failure        # URL with the token) must not ride along as __context__
        self._record(endpoint, "ok", started)
        self.health.answered(self._clock())
        return result

    def _note(self, endpoint: str, exc: WeChatAPIError) -> None:
        if isinstance(exc, _REQUEST_ERRORS):
            self.health.answered(self._clock())
        else:
            self.health.failed(self._clock(), f"{endpoint}: "
                               f"{describe_error(exc.errcode, exc.errmsg)}")

    def _record(self, endpoint: str, outcome: str, started: float) -> None:
        self._metrics.api_calls.labels(endpoint, outcome).inc()
        # A successful export page is routine (up to 1,000 a night): DEBUG; everything
        # else, blacklist calls and every failure, at INFO.
        level = logging.DEBUG if endpoint == "getblacklist" and outcome == "ok" else logging.INFO
        log.log(level, "wechat api %s -> %s (%.0f ms)", endpoint, outcome,
                (time.monotonic() - started) * 1000)


def _checked(openids: list[str]) -> list[str]:
    if not 1 <= len(openids) <= MAX_BATCH:
        raise ValueError(f"a batch holds 1..{MAX_BATCH} OpenIDs, got {len(openids)}")
    return list(openids)
