"""The web console under /admin: sign-in, the wrapper every page goes through, rendering.

Every route except the sign-in page needs a session: a GET without one is sent to the
sign-in page, a POST answered 403; a POST also needs the session's CSRF token and, when
the browser names it, this host as its Origin. The pages themselves live in
:mod:`bot.web.admin.pages`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from bot.config import Config
from bot.core.passwords import verify_password
from bot.rules import RuleEngine
from bot.storage.ports import ConsoleStore, Snapshots
from bot.web.admin.auth import (
    COOKIE,
    LANG_COOKIE,
    LOGIN_COOKIE,
    LoginLimiter,
    Session,
    Sessions,
    same_origin,
    same_token,
    set_cookie,
)
from bot.web.admin.i18n import LANGS, translator

log = logging.getLogger(__name__)
PREFIX = "/admin"
NAV = (("overview", "/admin"), ("decisions", "/admin/decisions"),
       ("follower", "/admin/follower"), ("queue", "/admin/queue"), ("rules", "/admin/rules"),
       ("reports", "/admin/reports"))
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; frame-ancestors 'self'; form-action "
                               "'self'; base-uri 'none'",
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
FORM = web.RequestKey("console_form", dict)  # the POST form the guard read and checked
Handler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


@dataclass
class ConsoleDeps:
    """What the console reads and acts on; built by the composition root (bot.app)."""

    config: Config
    store: ConsoleStore
    snapshots: Snapshots
    engine: RuleEngine
    health: Callable[[], Awaitable[dict[str, Any]]]
    rules_state: Callable[[], tuple[str | None, float | None]]  # last error, loaded at
    wake: Callable[[], None]
    clock: Callable[[], float] = time.time


class Console:
    """Sessions, the login limit and rendering; pages register through :meth:`route`."""

    def __init__(self, deps: ConsoleDeps, *, monotonic: Callable[[], float] = time.monotonic):
        self.deps = deps
        admin = deps.config.admin
        self.sessions = Sessions(admin.session_hours, deps.clock)
        self.limiter = LoginLimiter(admin.login_attempts, monotonic)
        self.env = jinja2.Environment(loader=jinja2.PackageLoader("bot.web.admin", "templates"),
                                      autoescape=True, undefined=jinja2.StrictUndefined)

    # ------------------------------------------------------------ routing

    def route(self, app: web.Application, method: str, path: str, handler: Handler) -> None:
        """Add a page that needs a session (POST: and its CSRF token)."""
        app.router.add_route(method, path, self._guarded(handler))

    def add_login(self, app: web.Application) -> None:
        """The sign-in and sign-out routes."""
        app.router.add_get(f"{PREFIX}/login", self._login_page)
        app.router.add_post(f"{PREFIX}/login", self._login)
        self.route(app, "POST", f"{PREFIX}/logout", self._logout)

    def _guarded(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def guarded(request: web.Request) -> web.StreamResponse:
            session = self.sessions.get(request.cookies.get(COOKIE))
            if session is None:
                if request.method == "GET":
                    target = f"{PREFIX}/login?next={quote(request.path_qs, safe='')}"
                    return self.finish(request, redirect(target))
                return self.finish(request, web.Response(status=403, text="sign in first"))
            if request.method == "POST":
                form = await request.post()
                if not same_origin(request) or not same_token(_str(form.get("csrf")),
                                                               session.csrf):
                    return self.finish(request, web.Response(
                        status=403, text="the form has expired: reload the page"))
                request[FORM] = dict(form)
            try:
                response = await handler(request, session)
            except web.HTTPException as exc:  # a redirect after a change, a 400 or 404
                response = web.Response(status=exc.status, body=exc.body,
                                        headers=exc.headers)
            return self.finish(request, response)

        return guarded

    # ------------------------------------------------------------ rendering

    def lang(self, request: web.Request) -> str:
        """``?lang=`` when given (remembered in a cookie), else the cookie, else Chinese."""
        asked = request.query.get("lang", "")
        if asked in LANGS:
            return asked
        remembered = request.cookies.get(LANG_COOKIE, "")
        return remembered if remembered in LANGS else "zh"

    def render(self, request: web.Request, session: Session | None, template: str,
               title_key: str, *, status: int = 200, **context: Any) -> web.Response:
        """A page in the operator's language."""
        lang = self.lang(request)
        t = translator(lang)
        note_key = request.query.get("note", "")
        note = context.pop("note", None) or (t.note(note_key, request.query) if note_key
                                              else None)
        html = self.env.get_template(template).render(
            t=t, lang=lang, path=request.path, title_key=title_key, nav=NAV,
            signed_in=session is not None, csrf=session.csrf if session else "",
            note=note, error=context.pop("error", None), tz=self.deps.config.export.timezone,
            **context)
        return web.Response(text=html, content_type="text/html", status=status)

    def finish(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """Security headers on every console answer; remember a language asked for."""
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        asked = request.query.get("lang", "")
        if asked in LANGS:
            set_cookie(response, request, self.deps.config.admin, LANG_COOKIE, asked,
                       max_age=365 * 86400)
        return response

    # ------------------------------------------------------------ sign-in

    async def _login_page(self, request: web.Request) -> web.StreamResponse:
        if self.sessions.get(request.cookies.get(COOKIE)) is not None:
            return self.finish(request, redirect(PREFIX))
        return self.finish(request, self._login_form(request))

    def _login_form(self, request: web.Request, *, status: int = 200, error: str | None = None,
                    next_path: str = "") -> web.Response:
        token = secrets.token_urlsafe(24)
        response = self.render(request, None, "login.html", "login", status=status,
                               error=error, login_csrf=token,
                               next_path=next_path or request.query.get("next", ""))
        set_cookie(response, request, self.deps.config.admin, LOGIN_COOKIE, token,
                   max_age=3600)
        return response

    async def _login(self, request: web.Request) -> web.StreamResponse:
        t = translator(self.lang(request))
        address = request.remote or "unknown"
        form = await request.post()
        next_path = _safe_next(_str(form.get("next")))
        wait = self.limiter.wait(address)
        if wait > 0:
            return self.finish(request, self._login_form(
                request, status=429, error=t("too_many").format(minutes=int(wait // 60) + 1),
                next_path=next_path))
        if not same_origin(request) or not same_token(_str(form.get("csrf")),
                                                       request.cookies.get(LOGIN_COOKIE, "")):
            return self.finish(request, self._login_form(
                request, status=403, error=t("form_expired"), next_path=next_path))
        password = _str(form.get("password"))
        # scrypt takes tens of milliseconds of CPU: off the event loop
        ok = await asyncio.to_thread(verify_password, self.deps.config.admin.password, password)
        if not ok:
            self.limiter.failed(address)
            log.warning("console: failed sign-in from %s", address)
            return self.finish(request, self._login_form(
                request, status=401, error=t("wrong_password"), next_path=next_path))
        self.limiter.succeeded(address)
        session = self.sessions.create()
        log.info("console: signed in from %s", address)
        response = redirect(next_path or PREFIX)
        set_cookie(response, request, self.deps.config.admin, COOKIE, session.token,
                   max_age=self.sessions.ttl)
        response.del_cookie(LOGIN_COOKIE, path=PREFIX)
        return self.finish(request, response)

    async def _logout(self, request: web.Request, session: Session) -> web.StreamResponse:
        self.sessions.end(session.token)
        response = redirect(f"{PREFIX}/login")
        response.del_cookie(COOKIE, path=PREFIX)
        return response


def redirect(location: str) -> web.Response:
    """A 303 to ``location`` (a console path)."""
    return web.Response(status=303, headers={"Location": location})


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _safe_next(path: str) -> str:
    """Only a console path may be returned to after sign-in (no open redirect)."""
    inside = path.startswith(f"{PREFIX}/") or path == PREFIX
    if inside and "\\" not in path and "://" not in path:
        return path
    return ""


def form_of(request: web.Request) -> dict[str, Any]:
    """The POST form the guard already read and checked."""
    return request[FORM]
