"""The WeChat push endpoint: verify, parse, decide, commit, then answer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aiohttp import web

from bot.core.errors import PushError
from bot.core.models import MESSAGE_TYPES, ActionKind, Decision, Event
from bot.metrics import Metrics
from bot.storage.ports import Recorder, SharedWindows
from bot.web.refusals import RefusalLog
from bot.wechat.push import PushCodec, parse_event

log = logging.getLogger(__name__)

SUCCESS = "success"
TEXT = "text/plain"
XML = "application/xml"
_KNOWN_TYPES = frozenset((*MESSAGE_TYPES, "event"))
_OUTCOMES = {400: "malformed", 403: "forbidden", 413: "too_large", 500: "not_stored",
             503: "retry_later"}
# Decisions whose commit failed, kept for WeChat's retry (it comes within seconds).
UNCOMMITTED_KEEP = 10_000
# The mod log line quotes this much of the OpenID and of the follower's words.
LOG_OPENID, LOG_EXCERPT = 8, 24
# Labelled metric children kept at hand (push outcomes, decisions per rule and action).
LABELLED_KEEP = 1024
_DONE = {ActionKind.BLACKLIST: "blacklisted", ActionKind.UNBLACKLIST: "unblacklisted",
         ActionKind.WARN: "warned"}


class Engine(Protocol):
    """Decides what to do about one event (the rule engine)."""

    def evaluate(self, event: Event) -> Decision: ...


class RecentPushes(Protocol):
    """Remembers answers to recent pushes so WeChat's retries are handled once."""

    def claim(self, key: str) -> asyncio.Future[tuple[str, str]] | None: ...
    def finish(self, key: str, body: str, content_type: str) -> None: ...
    def forget(self, key: str) -> None: ...


class Webhook:
    """The push endpoint: verify, parse, decide, commit, then answer."""

    def __init__(self, codec: PushCodec, engine: Engine, recorder: Recorder,
                 recent: RecentPushes, metrics: Metrics, *, max_body: int,
                 on_actions: Callable[[], None] = lambda: None, dry_run: bool = False,
                 shared: SharedWindows | None = None):
        self.codec = codec
        self.shared = shared  # several replicas: flood and warn counts in the database
        self.engine = engine
        self.recorder = recorder
        self.recent = recent
        self.metrics = metrics
        self.max_body = max_body
        self.on_actions = on_actions
        self.dry_run = dry_run
        self._children: dict[tuple[Any, ...], Any] = {}  # see _labelled
        self.refusals = RefusalLog(log)  # rate-limited: forged pushes must not flood the log
        # A push decided but not committed (the database failed): its retry records
        # this decision rather than running the rules again, which would count it a
        # second time towards a flood or a warning ladder.
        self._uncommitted: OrderedDict[str, Decision] = OrderedDict()
        # Why pushes cannot be stored right now (disk full, database locked), and since
        # when: for /healthz; cleared by the next push stored.
        self.storage_error = ""
        self.storage_error_since = 0.0

    async def verify_url(self, request: web.Request) -> web.Response:
        """GET: the platform's URL check; echo ``echostr`` when the signature holds."""
        try:
            self.codec.check_signature(request.query)
        except PushError as exc:
            self.refusals.refused(exc.status, exc.reason, request.remote, "URL verification")
            return web.Response(status=exc.status, text=exc.reason)
        return web.Response(text=request.query.get("echostr", ""), content_type=TEXT)

    async def push(self, request: web.Request) -> web.Response:
        """POST through aiohttp: one pushed message or event (most come by bot.web.front)."""
        started = time.perf_counter()
        try:
            body = await self._read_body(request)
        except PushError as exc:
            status, text, content_type = self._refuse(exc, "unparsed", request.remote)
        except Exception:  # the client went away mid-body: answered 500 by aiohttp
            self._pushes("unparsed", "error").inc()
            raise
        else:
            status, text, content_type = await self.answer(request.query, body,
                                                           request.remote, started)
        return web.Response(status=status, text=text, content_type=content_type)

    async def answer(self, query: Mapping[str, str], body: bytes, remote: str | None,
                     started: float) -> tuple[int, str, str]:
        """One push, its body read whole: the answer's status, text and content type.

        ``started`` is ``time.perf_counter()`` when the request came in. A refusal is
        answered (4xx, or 500 for a push not stored); an unexpected error is counted
        and raised, for the HTTP layer to answer 500 (WeChat retries it).
        """
        msg_type = "unparsed"
        try:
            if not body:
                raise PushError(400, "empty body")
            plain, key_index = self.codec.open(query, body)
            event = parse_event(plain)
            msg_type = event.msg_type if event.msg_type in _KNOWN_TYPES else "other"
            text, content_type, outcome = await self._handle(event, key_index, query)
        except PushError as exc:
            return self._refuse(exc, msg_type, remote)
        except Exception:
            self._pushes(msg_type, "error").inc()
            raise
        self._pushes(msg_type, outcome).inc()
        self.metrics.push_latency.observe(time.perf_counter() - started)
        return 200, text, content_type

    def _refuse(self, exc: PushError, msg_type: str, remote: str | None
                ) -> tuple[int, str, str]:
        self.refusals.refused(exc.status, exc.reason, remote)
        self._pushes(msg_type, _OUTCOMES.get(exc.status, "error")).inc()
        return exc.status, exc.reason, TEXT

    async def _read_body(self, request: web.Request) -> bytes:
        """The whole body, however many packets it came in; 413 past the cap."""
        if request.content_length is not None and request.content_length > self.max_body:
            raise self._too_large()
        content = request.content
        if content.is_eof():  # all of it is in (a push fits a packet): take it as it lies
            body = content.read_nowait()
        else:
            try:
                body = await request.read()  # reads to the end, bounded by client_max_size
            except web.HTTPRequestEntityTooLarge:
                raise self._too_large() from None
        if len(body) > self.max_body:  # chunked, so no Content-Length told it up front
            raise self._too_large()
        return body

    def _too_large(self) -> PushError:
        return PushError(413, f"body larger than {self.max_body} bytes")

    async def _handle(self, event: Event, key_index: int | None, query: Mapping[str, str]
                      ) -> tuple[str, str, str]:
        key = event.dedup_key
        earlier = self.recent.claim(key)
        if earlier is not None:
            try:
                text, content_type = await asyncio.shield(earlier)
            except asyncio.CancelledError:
                raise PushError(503, "the first delivery of this push failed; retry") from None
            return text, content_type, "retry"
        decision = self._uncommitted.pop(key, None)
        try:
            if decision is None:
                if self.shared is None:
                    decision = self.engine.evaluate(event)
                else:
                    async with self.shared.around(event):
                        decision = self.engine.evaluate(event)
            recorded = await self.recorder.record(event, decision)
        except BaseException as exc:
            self.recent.forget(key)
            if decision is not None:
                self._keep_uncommitted(key, decision)
            if isinstance(exc, Exception) and decision is not None:  # the store refused it
                self._storage_failed(exc)
                raise PushError(500, f"push not stored ({exc.__class__.__name__}: {exc}); "
                                "WeChat will retry it") from exc
            raise
        self.storage_error = ""
        if recorded.duplicate:
            self.recent.finish(key, SUCCESS, TEXT)
            return SUCCESS, TEXT, "retry"
        self._count(decision)
        if decision.hits and log.isEnabledFor(logging.INFO):
            self._log_decision(event, decision)
        if decision.actions:
            self.on_actions()
        text, content_type = SUCCESS, TEXT
        if decision.reply:
            nonce = query.get("nonce", "")
            text, content_type = self.codec.reply(event, decision.reply, key_index, nonce), XML
        self.recent.finish(key, text, content_type)
        return text, content_type, "ok"

    def _storage_failed(self, exc: Exception) -> None:
        if not self.storage_error:
            self.storage_error_since = time.time()
        self.storage_error = f"{exc.__class__.__name__}: {exc}"

    def _keep_uncommitted(self, key: str, decision: Decision) -> None:
        self._uncommitted[key] = decision
        while len(self._uncommitted) > UNCOMMITTED_KEEP:
            self._uncommitted.popitem(last=False)

    def _log_decision(self, event: Event, decision: Decision) -> None:
        """One INFO line for a committed decision that acts (blacklist, unblacklist, warn)."""
        line = describe_decision(event, decision)
        if line is not None:
            log.info("%s%s", line, " (dry-run: not sent)" if decision.actions and self.dry_run
                     else "")

    def _pushes(self, msg_type: str, outcome: str) -> Any:
        """The push counter for these labels."""
        return self._labelled(self.metrics.pushes, msg_type, outcome)

    def _count(self, decision: Decision) -> None:
        for hit in decision.hits:
            self._labelled(self.metrics.decisions, hit.rule_id, str(hit.action)).inc()

    def _labelled(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept at hand: labels() costs a lock and a lookup."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            if len(self._children) >= LABELLED_KEEP:
                self._children.clear()  # rule ids come and go with reloads: stay bounded
            child = self._children[key] = metric.labels(*labels)
        return child


def describe_decision(event: Event, decision: Decision) -> str | None:
    """``blacklisted oAbc1234… by job-scam (30d): 兼职刷单…``; None when nothing acts.

    The strongest action speaks: the queued API action if any, else a warning.
    """
    action = decision.actions[0] if decision.actions else None
    if action is not None:
        kind, rule_id = action.kind, action.rule_id
    else:
        warned = next((h for h in decision.hits if h.action is ActionKind.WARN), None)
        if warned is None:
            return None
        kind, rule_id = ActionKind.WARN, warned.rule_id
    hit = next((h for h in decision.hits if h.rule_id == rule_id), decision.hits[0])
    length = ""
    if kind is ActionKind.BLACKLIST:
        expires = action.expires_at if action is not None else None
        length = (f" ({short_duration(expires - event.create_time)})" if expires is not None
                  else " (permanent)")
    openid = event.openid[:LOG_OPENID] + ("…" if len(event.openid) > LOG_OPENID else "")
    return f"{_DONE[kind]} {openid} by {rule_id}{length}: {_excerpt(event, hit.field)}"


def _excerpt(event: Event, field: str | None) -> str:
    text = event.texts.get(field or "", "") or next(iter(event.texts.values()), "")
    text = " ".join(text.split())
    if not text:
        return f"[{event.event or event.msg_type}]"
    return text[:LOG_EXCERPT] + "…" if len(text) > LOG_EXCERPT else text


def short_duration(seconds: int) -> str:
    """``30d``, ``12h``, ``15m`` or ``45s``: the largest unit that divides it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
