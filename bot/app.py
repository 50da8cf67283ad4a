"""Composition root: the aiohttp application and the lifecycle of every component."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web

from bot.classifier.model import DEFAULT_THRESHOLD
from bot.config import Config
from bot.core.errors import RuleError
from bot.core.models import ActionKind
from bot.core.timefmt import when, when_long
from bot.jobs.batcher import Batcher
from bot.jobs.models import ModelWatcher
from bot.jobs.reload import RuleWatcher
from bot.jobs.retention import purge_loop
from bot.jobs.scheduler import ExportScheduler
from bot.metrics import Metrics
from bot.rules import RuleEngine, RuleSet, load_ruleset
from bot.rules.loader import empty_rules_warning
from bot.services import Services, build_services
from bot.storage.ports import SharedWindows
from bot.web.front import PushFront, PushSite
from bot.web.health import healthz, metrics_response, worsen
from bot.web.retries import KEEP_SECONDS, InMemoryRecentPushes
from bot.web.webhook import Webhook
from bot.wechat.push import PushCodec

log = logging.getLogger(__name__)


@dataclass
class Service:
    """Everything the running service holds; one per aiohttp Application.

    The shared parts (``services``) and the engine exist from the start;
    the jobs are created as their lifecycles begin (the batcher needs the started
    client, the watcher the loaded rules), before the server accepts pushes.
    """

    config: Config
    services: Services
    engine: RuleEngine
    watcher: RuleWatcher | None = None
    models: ModelWatcher | None = None
    batcher: Batcher | None = None
    scheduler: ExportScheduler | None = None
    webhook: Webhook | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    health_db_timeout: float = 2.0  # /healthz answers while another process holds a lock

    @property
    def metrics(self) -> Metrics:
        """The service's metrics registry."""
        return self.services.metrics

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

    def wake(self) -> None:
        """New actions were committed: let the batcher send a full batch now."""
        if self.batcher is not None:
            self.batcher.wake()

    async def health(self) -> dict[str, Any]:
        """The /healthz body: overall status, rules in force, pending actions."""
        state: dict[str, Any] = {"status": "ok", "dry_run": self.config.dry_run}
        self._wechat_health(state)
        state["rules"] = len(self.engine.ruleset)
        if self.watcher is not None and self.watcher.loaded_at:
            state["rules_loaded_at"] = int(self.watcher.loaded_at)
        rules_error = self.watcher.last_error if self.watcher else None
        if rules_error:
            worsen(state, "degraded")
            state["rules_error"] = rules_error
        try:
            state["pending_actions"] = await asyncio.wait_for(
                self.services.storage.reads.pending_count(), self.health_db_timeout)
        except TimeoutError:  # a locked database holds a read for its busy_timeout
            worsen(state, "down")
            state["error"] = f"database: no answer within {self.health_db_timeout:g} s"
        except Exception as exc:  # reported, not raised: health must answer
            worsen(state, "down")
            state["error"] = f"database: {exc.__class__.__name__}"
        if self.webhook is not None and self.webhook.storage_error:  # disk full, locked
            worsen(state, "down")
            state["push_storage_error"] = self.webhook.storage_error
            state["push_storage_error_since"] = int(self.webhook.storage_error_since)
        if self.models is not None:
            model = self.models.model
            state["model"] = model.summary() if model is not None else None
            state["uses_classifier"] = self.engine.ruleset.uses_classifier
            if self.models.last_error:
                worsen(state, "degraded")
                state["model_error"] = self.models.last_error
        if self.scheduler is not None and self.scheduler.last_error:
            state["export_error"] = self.scheduler.last_error
        if self.batcher is not None:
            actions = self.batcher.status.as_dict()
            if actions["paused_reason"]:
                worsen(state, "degraded")
                state["actions_paused"] = actions["paused_reason"]
                state["actions_paused_until"] = actions["paused_until"]
                state["actions_resume_at"] = when_long(actions["paused_until"],
                                                       self.config.export.timezone)
            if actions["unsettled"]:  # WeChat answered; the database refuses the outcome
                worsen(state, "degraded")
                state["unsettled_actions"] = actions["unsettled"]
                state["storage_error"] = actions["storage_error"]
        return state


    def _wechat_health(self, state: dict[str, Any]) -> None:
        """Degraded while every push is refused (no wechat.token) or every API call fails."""
        if not self.config.wechat.token:
            worsen(state, "degraded")
            state["push_error"] = ("wechat.token is not set: every push is refused (403); "
                                   "set it, or WECHAT_TOKEN, to the platform's Token")
        client = self.services.client
        if client is not None and client.health.failing:
            api = client.health
            worsen(state, "degraded")
            state["api_error"] = f"the last {api.failures} WeChat API calls failed; " \
                                 f"last: {api.last_error}"
            state["api_failing_since"] = when(api.failing_since, self.config.export.timezone)
            state["api_last_ok"] = when(api.last_ok, self.config.export.timezone)


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


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    service = app[SERVICE]
    storage = service.config.storage
    await service.services.start()
    if storage.backend == "postgres":
        log.info("database: PostgreSQL (shared with every replica on it)")
    else:
        log.info("database: %s (WAL, synchronous=%s)", storage.path, storage.synchronous)
    yield
    await service.services.close()
    log.info("database closed")


async def _rules_ctx(app: web.Application) -> AsyncIterator[None]:
    service = app[SERVICE]
    config = service.config
    ruleset, error = await asyncio.to_thread(load_initial_rules, config, service.metrics)
    service.engine.replace(ruleset)
    service.watcher = RuleWatcher(
        config.rules.dir, service.engine, config.rules.reload_seconds,
        on_change=lambda rs: service.metrics.rules_loaded.set(len(rs)),
        on_error=lambda _exc: service.metrics.rule_reload_errors.inc(),
    )
    service.watcher.last_error = error
    service.metrics.rules_loaded.set(len(ruleset))
    log.info("rules: %s", ruleset.describe())
    if not ruleset.files and error is None:
        log.warning("%s", empty_rules_warning(config.rules.dir))
    service.models = ModelWatcher(
        service.services.storage.classifier, service.engine, config.rules.reload_seconds,
        clock=time.time, threshold=lambda: _classifier_threshold(service))
    async with _background(service, service.watcher.run(), "rule-watcher"), \
            _background(service, service.models.run(), "model-watcher"):
        yield


def _classifier_threshold(service: Service) -> float:
    """Where training figures are quoted: the lowest classifier min_score in force."""
    threshold = service.engine.ruleset.classifier_threshold
    return DEFAULT_THRESHOLD if threshold is None else threshold


async def _actions_ctx(app: web.Application) -> AsyncIterator[None]:
    """The batcher; in dry-run no API client exists at all."""
    service = app[SERVICE]
    service.batcher = service.services.batcher()
    await service.batcher.start()
    yield
    await service.batcher.stop()


async def _scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """The nightly export (expiry of timed blacklists runs in the batcher)."""
    service = app[SERVICE]
    services = service.services
    models = service.models
    service.scheduler = ExportScheduler(
        service.config, services.storage, lambda: services.client, service.metrics,
        after_run=models.retrain_if_new if models is not None else None)
    await service.scheduler.start()
    yield
    await service.scheduler.stop()


async def _purge_ctx(app: web.Application) -> AsyncIterator[None]:
    service = app[SERVICE]
    loop = purge_loop(service.services.storage.retention,
                      service.config.storage.retention_days)
    async with _background(service, loop, "retention-purge"):
        yield


@asynccontextmanager
async def _background(service: Service, coro: Awaitable[Any], name: str) -> AsyncIterator[None]:
    """Run a background task while the block runs, then cancel it and wait for it."""
    task = service.spawn(coro, name)
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


def _webhook(config: Config, engine: RuleEngine, services: Services,
             on_actions: Callable[[], None], shared: SharedWindows | None) -> Webhook:
    codec = PushCodec(
        config.wechat.token, config.wechat.appid,
        [config.wechat.encoding_aes_key, config.wechat.previous_encoding_aes_key],
        tolerance=config.server.timestamp_tolerance_seconds,
    )
    # A push captured and replayed verbatim passes the signature check for as long as its
    # timestamp is within the tolerance, either side of now: the answers are remembered
    # that long, so a replay is answered without the rules counting it again (the stored
    # dedup key catches one the memory no longer holds, after a restart or an eviction).
    keep = max(KEEP_SECONDS, 2.0 * config.server.timestamp_tolerance_seconds + 10.0)
    return Webhook(codec, engine, services.storage.recorder, InMemoryRecentPushes(keep),
                   services.metrics, max_body=config.server.max_body_bytes,
                   on_actions=on_actions, dry_run=config.dry_run, shared=shared)


def _engine(services: Services) -> tuple[RuleEngine, SharedWindows | None]:
    """The engine, empty until the rules load. With PostgreSQL it counts floods and
    warnings in the windows every replica shares (a flood split across replicas
    counts); SQLite keeps them in memory."""
    windows = getattr(services.storage, "windows", None)
    if windows is None:
        return RuleEngine(RuleSet.empty()), None
    engine = RuleEngine(RuleSet.empty(), flood=windows.flood, warns=windows.warns)
    windows.wanted = lambda event: _counts_windows(engine, event.kind)
    return engine, cast(SharedWindows, windows)


def _counts_windows(engine: RuleEngine, kind: str) -> bool:
    """Whether a push of ``kind`` reads a flood window or a warn ladder."""
    plan = engine.ruleset.plan_for(kind)
    return bool(plan.flood_rules) or any(
        r.spec.warn_limit for r in plan.rules if r.spec.action is ActionKind.WARN)


# A push is a request line of the path and a ~200-character signed query plus a few short
# headers; the console's browser adds a cookie. Larger or more is refused with 400 before
# any handler runs.
MAX_LINE_BYTES = 8190
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 64


def http_limits(config: Config) -> dict[str, Any]:
    """aiohttp's per-connection limits: header sizes and counts, and the idle timeout that
    also closes a connection that never completes a request (slowloris)."""
    return {"max_line_size": MAX_LINE_BYTES, "max_field_size": MAX_FIELD_BYTES,
            "max_headers": MAX_HEADERS,
            "keepalive_timeout": config.server.idle_timeout_seconds}


def push_site(runner: web.AppRunner, config: Config, *, drain_timeout: float = 10.0
              ) -> web.BaseSite:
    """Where ``runner``'s application listens (server.host and port): pushes are
    answered by the push front, every other request by aiohttp (all by aiohttp when
    ``server.push_front`` is false)."""
    server = config.server
    if not server.push_front:
        return web.TCPSite(runner, server.host, server.port)
    webhook = runner.app[SERVICE].webhook
    assert webhook is not None and runner.server is not None, "runner.setup() comes first"
    front = PushFront(webhook, runner.server, path=server.path,
                      max_body=server.max_body_bytes, max_headers=MAX_HEADERS,
                      idle_timeout=server.idle_timeout_seconds)
    return PushSite(runner, front, server.host, server.port, drain_timeout=drain_timeout)


def _add_console(app: web.Application, service: Service) -> None:
    """The web console under /admin, on the service's own storage, rules and batcher."""
    from bot.web.admin import ConsoleDeps, setup_console

    def rules_state() -> tuple[str | None, float | None]:
        watcher = service.watcher
        return (watcher.last_error, watcher.loaded_at) if watcher else (None, None)

    storage = service.services.storage
    setup_console(app, ConsoleDeps(service.config, storage.console, storage.snapshots,
                                   service.engine, service.health, rules_state, service.wake))


def build_app(config: Config, *, extra_contexts: tuple[Callable[..., Any], ...] = ()
              ) -> web.Application:
    """The aiohttp application for ``config``: routes plus every component's lifecycle."""
    services = build_services(config)
    engine, shared = _engine(services)  # the rules are loaded before pushes are accepted
    service = Service(config, services, engine)
    webhook = service.webhook = _webhook(config, engine, services, service.wake, shared)
    app = web.Application(client_max_size=config.server.max_body_bytes,
                          handler_args=http_limits(config))
    app[SERVICE] = service
    path = config.server.path
    app.router.add_get(path, webhook.verify_url)
    app.router.add_post(path, webhook.push)

    async def health_handler(_request: web.Request) -> web.Response:
        return await healthz(service.health)

    async def metrics_handler(_request: web.Request) -> web.Response:
        return metrics_response(service.metrics)  # the batcher keeps pending_actions current

    app.router.add_get("/healthz", health_handler)
    app.router.add_get("/metrics", metrics_handler)
    if config.admin.password:
        _add_console(app, service)
    app.cleanup_ctx.extend([_services_ctx, _rules_ctx, _actions_ctx, _scheduler_ctx,
                            _purge_ctx, *extra_contexts])
    return app
