"""Composition root: build every component from the config and run their lifecycles."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from bot.config import Config
from bot.core.errors import RuleError
from bot.core.models import Decision, Event
from bot.jobs.batcher import Batcher
from bot.jobs.reload import RuleWatcher
from bot.jobs.scheduler import ExportScheduler
from bot.metrics import Metrics
from bot.rules import RuleEngine, RuleSet, load_ruleset
from bot.storage.sqlite.store import Recorded, Store, pending_count, purge_content
from bot.web.retries import InMemoryRecentPushes
from bot.web.webhook import Webhook, healthz, metrics_response
from bot.wechat.api import SqliteTokenCache, WeChatClient
from bot.wechat.push import PushCodec

log = logging.getLogger(__name__)

PURGE_INTERVAL_SECONDS = 3600.0
PURGE_CHUNK = 5000
API_TIMEOUT_SECONDS = 10.0


@dataclass
class Service:
    """Everything the running service holds; one per aiohttp Application."""

    config: Config
    metrics: Metrics = field(default_factory=Metrics)
    store: Store | None = None
    engine: RuleEngine | None = None
    watcher: RuleWatcher | None = None
    client: WeChatClient | None = None
    batcher: Batcher | None = None
    scheduler: ExportScheduler | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """Start a background task and keep a strong reference to it until it ends."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s died", task.get_name(), exc_info=task.exception())

    def evaluate(self, event: Event) -> Decision:
        """Decide about one event with the rules in force (the webhook's Engine)."""
        assert self.engine is not None, "rules are loaded before the server accepts pushes"
        return self.engine.evaluate(event)

    async def record(self, event: Event, decision: Decision) -> Recorded:
        """Commit one push (the webhook's Recorder); in dry-run its actions are would-be."""
        assert self.store is not None, "the store opens before the server accepts pushes"
        return await self.store.record(event, decision, dry_run=self.config.dry_run)

    def wake(self) -> None:
        """New actions were committed: let the batcher send a full batch now."""
        if self.batcher is not None:
            self.batcher.wake()

    async def health(self) -> dict[str, Any]:
        """The /healthz body: overall status, rules in force, pending actions."""
        state: dict[str, Any] = {"status": "ok", "dry_run": self.config.dry_run}
        ruleset = self.engine.ruleset if self.engine else None
        state["rules"] = len(ruleset) if ruleset is not None else 0
        if self.watcher is not None and self.watcher.loaded_at:
            state["rules_loaded_at"] = int(self.watcher.loaded_at)
        rules_error = self.watcher.last_error if self.watcher else None
        if rules_error:
            _worsen(state, "degraded")
            state["rules_error"] = rules_error
        try:
            assert self.store is not None
            state["pending_actions"] = await self.store.call(pending_count)
        except Exception as exc:  # reported, not raised: health must answer
            _worsen(state, "down")
            state["error"] = f"database: {exc.__class__.__name__}"
        if self.scheduler is not None and self.scheduler.last_error:
            state["export_error"] = self.scheduler.last_error
        if self.batcher is not None:
            actions = self.batcher.status.as_dict()
            if actions["paused_reason"]:
                _worsen(state, "degraded")
                state["actions_paused"] = actions["paused_reason"]
                state["actions_paused_until"] = actions["paused_until"]
        return state


_SEVERITY = {"ok": 0, "degraded": 1, "down": 2}


def _worsen(state: dict[str, Any], status: str) -> None:
    """Raise the health status to ``status``, never lower it (down stays down: 503)."""
    if _SEVERITY[status] > _SEVERITY[state["status"]]:
        state["status"] = status


SERVICE = web.AppKey("service", Service)


def load_initial_rules(config: Config, metrics: Metrics) -> tuple[RuleSet, str | None]:
    """Rules at start-up; a broken directory starts with no rules and says so loudly."""
    try:
        ruleset = load_ruleset(config.rules.dir)
    except RuleError as exc:
        for line in exc.errors:
            log.error("rules rejected: %s", line)
        log.error("starting with NO rules in force until %s is fixed", config.rules.dir)
        metrics.rule_reload_errors.inc()
        return RuleSet.empty(), str(exc)
    return ruleset, None


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    service = app[SERVICE]
    service.store = Store(service.config.storage.path,
                          synchronous=service.config.storage.synchronous)
    await service.store.start()
    log.info("database: %s (WAL, synchronous=%s)", service.config.storage.path,
             service.config.storage.synchronous)
    yield
    await service.store.close()
    log.info("database closed")


async def _rules_ctx(app: web.Application) -> AsyncIterator[None]:
    service = app[SERVICE]
    config = service.config
    ruleset, error = await asyncio.to_thread(load_initial_rules, config, service.metrics)
    service.engine = RuleEngine(ruleset)
    service.watcher = RuleWatcher(
        config.rules.dir, service.engine, config.rules.reload_seconds,
        on_change=lambda rs: service.metrics.rules_loaded.set(len(rs)),
        on_error=lambda _exc: service.metrics.rule_reload_errors.inc(),
    )
    service.watcher.last_error = error
    service.metrics.rules_loaded.set(len(ruleset))
    log.info("rules: %s", ruleset.summary())
    task = service.spawn(service.watcher.run(), "rule-watcher")
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


async def _actions_ctx(app: web.Application) -> AsyncIterator[None]:
    """The API client and the batcher; in dry-run no client exists at all."""
    service = app[SERVICE]
    config = service.config
    assert service.store is not None
    session = aiohttp.ClientSession() if not config.dry_run else None
    client = None
    if session is not None:
        client = WeChatClient(config.wechat, session, SqliteTokenCache(service.store),
                              service.metrics, timeout=API_TIMEOUT_SECONDS)
    service.client = client
    service.batcher = Batcher(service.store, client, config.actions, service.metrics,
                              dry_run=config.dry_run)
    await service.batcher.start()
    yield
    await service.batcher.stop()
    if session is not None:
        await session.close()


async def _scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """The nightly export (expiry of timed blacklists runs in the batcher)."""
    service = app[SERVICE]
    assert service.store is not None
    service.scheduler = ExportScheduler(service.config, service.store, lambda: service.client,
                                        service.metrics)
    await service.scheduler.start()
    yield
    await service.scheduler.stop()


async def _purge_ctx(app: web.Application) -> AsyncIterator[None]:
    service = app[SERVICE]
    task = service.spawn(_purge_loop(service), "retention-purge")
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


async def _purge_loop(service: Service) -> None:
    """Purge old message content in small transactions, hourly; never die of an error."""
    days = service.config.storage.retention_days
    while True:
        try:
            purged = await purge_old_content(service, int(time.time()) - days * 86400)
        except sqlite3.Error as exc:
            log.error("purging message content failed, retrying next hour: %s", exc)
        else:
            if purged:
                log.info("purged followers' words from %d rows older than %d days", purged,
                         days)
        await asyncio.sleep(PURGE_INTERVAL_SECONDS)


async def purge_old_content(service: Service, before: int) -> int:
    """Purge in chunks so pushes keep committing in between; return rows purged."""
    assert service.store is not None
    total = 0
    while True:
        purged = await service.store.call(
            functools.partial(purge_content, before=before, limit=PURGE_CHUNK))
        total += purged
        if purged < PURGE_CHUNK:
            return total


def _webhook(service: Service) -> Webhook:
    config = service.config
    codec = PushCodec(
        config.wechat.token, config.wechat.appid,
        [config.wechat.encoding_aes_key, config.wechat.previous_encoding_aes_key],
        tolerance=config.server.timestamp_tolerance_seconds,
    )

    return Webhook(codec, service, service, InMemoryRecentPushes(), service.metrics,
                   max_body=config.server.max_body_bytes, on_actions=service.wake)


def build_app(config: Config, *, extra_contexts: tuple[Callable[..., Any], ...] = ()
              ) -> web.Application:
    """The aiohttp application for ``config``: routes plus every component's lifecycle."""
    service = Service(config)
    app = web.Application(client_max_size=config.server.max_body_bytes)
    app[SERVICE] = service
    webhook = _webhook(service)
    path = config.server.path
    app.router.add_get(path, webhook.verify_url)
    app.router.add_post(path, webhook.push)

    async def health_handler(_request: web.Request) -> web.Response:
        return await healthz(service.health)

    async def metrics_handler(_request: web.Request) -> web.Response:
        return metrics_response(service.metrics)  # the batcher keeps pending_actions current

    app.router.add_get("/healthz", health_handler)
    app.router.add_get("/metrics", metrics_handler)
    app.cleanup_ctx.extend([_store_ctx, _rules_ctx, _actions_ctx, _scheduler_ctx, _purge_ctx,
                            *extra_contexts])
    return app
