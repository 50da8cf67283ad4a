"""Console sessions, CSRF tokens and the login rate limit (all in this process's memory)."""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from bot.config import AdminConfig

COOKIE = "bot_admin"
LOGIN_COOKIE = "bot_admin_login"  # the login form's CSRF token (double submit)
LANG_COOKIE = "bot_admin_lang"
LIMIT_WINDOW = 900.0  # seconds over which failed logins are counted
MAX_SESSIONS = 1000
GLOBAL_FACTOR = 20  # all addresses together: this many times one address's allowance


@dataclass
class Session:
    """A signed-in operator: the cookie's token, the forms' CSRF token, when it ends."""

    token: str
    csrf: str
    expires: float


class Sessions:
    """Sessions by token; expired ones are dropped as they are met."""

    def __init__(self, hours: float, clock: Callable[[], float] = time.time):
        self._ttl = hours * 3600
        self._clock = clock
        self._by_token: dict[str, Session] = {}

    @property
    def ttl(self) -> float:
        return self._ttl

    def create(self) -> Session:
        """A new session (the oldest goes when too many are open)."""
        if len(self._by_token) >= MAX_SESSIONS:
            del self._by_token[next(iter(self._by_token))]
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32),
                          self._clock() + self._ttl)
        self._by_token[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        """The live session of ``token``, if any."""
        if not token:
            return None
        session = self._by_token.get(token)
        if session is None:
            return None
        if session.expires <= self._clock():
            del self._by_token[token]
            return None
        return session

    def end(self, token: str | None) -> None:
        """Log out."""
        if token:
            self._by_token.pop(token, None)


class LoginLimiter:
    """Failed logins per client address within ``LIMIT_WINDOW``, and for all addresses
    together (each check costs a scrypt: guessing is slow, and so is a flood)."""

    def __init__(self, attempts: int, clock: Callable[[], float] = time.monotonic):
        self._attempts = attempts
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    def _trim(self, times: deque[float]) -> deque[float]:
        horizon = self._clock() - LIMIT_WINDOW
        while times and times[0] <= horizon:
            times.popleft()
        return times

    def wait(self, address: str) -> float:
        """Seconds before ``address`` may try again (0: now)."""
        mine = self._trim(self._failures.get(address, deque()))
        everyone = self._trim(self._all)
        blocked = [times[0] + LIMIT_WINDOW - self._clock()
                   for times, limit in ((mine, self._attempts),
                                        (everyone, self._attempts * GLOBAL_FACTOR))
                   if len(times) >= limit]
        return max(blocked, default=0.0)

    def failed(self, address: str) -> None:
        """Count a failed attempt."""
        if len(self._failures) > 10_000:  # addresses are unbounded: forget the quiet ones
            self._failures = {a: t for a, t in self._failures.items() if self._trim(t)}
        self._failures.setdefault(address, deque()).append(self._clock())
        self._all.append(self._clock())

    def succeeded(self, address: str) -> None:
        """Forget an address's failures once it signs in."""
        self._failures.pop(address, None)


def same_token(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted token."""
    return bool(given) and hmac.compare_digest(str(given), expected)


def secure_cookie(admin: AdminConfig, request: web.Request) -> bool:
    """Whether cookies get the Secure flag: configured, or inferred from https (directly
    or as a proxy's X-Forwarded-Proto says)."""
    if admin.cookie_secure != "auto":
        return admin.cookie_secure == "always"
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def set_cookie(response: web.StreamResponse, request: web.Request, admin: AdminConfig,
               name: str, value: str, *, max_age: float) -> None:
    """A console cookie: HttpOnly, SameSite=Strict, path /admin, Secure as configured."""
    response.set_cookie(name, value, max_age=int(max_age), path="/admin", httponly=True,
                        samesite="Strict", secure=secure_cookie(admin, request))


def same_origin(request: web.Request) -> bool:
    """A POST's Origin (when the browser sends one) names this host."""
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return origin is None
    host = origin.split("://", 1)[-1]
    return host == request.host
