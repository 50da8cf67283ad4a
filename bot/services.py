"""``build_services(config)``: storage, the API client and metrics, wired in one place.

The server, every CLI command, the benches and the tests build their parts here, so
choosing another storage backend is a change to this module only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp

from bot.config import Config
from bot.jobs.batcher import Batcher
from bot.jobs.export import Exporter, Progress
from bot.metrics import Metrics
from bot.storage.sqlite.adapters import SqliteStorage
from bot.storage.sqlite.admin import SqliteAdmin
from bot.storage.sqlite.store import Store
from bot.wechat.api import WeChatClient

if TYPE_CHECKING:
    from bot.storage.postgres.admin import PostgresAdmin
    from bot.storage.postgres.storage import PostgresStorage

API_TIMEOUT_SECONDS = 10.0


@dataclass
class Services:
    """The service's shared parts. ``client`` exists between :meth:`start` and
    :meth:`close`, and only when live: in dry-run no WeChat API call can be made."""

    config: Config
    metrics: Metrics
    storage: SqliteStorage | PostgresStorage
    api_timeout: float = API_TIMEOUT_SECONDS
    client: WeChatClient | None = None
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    async def start(self) -> None:
        """Open the database; when live, open the HTTP session and the API client."""
        await self.storage.start()
        if not self.config.dry_run:
            self._session = aiohttp.ClientSession()
            self.client = WeChatClient(self.config.wechat, self._session, self.storage.tokens,
                                       self.metrics, timeout=self.api_timeout)

    async def close(self) -> None:
        """Close the HTTP session, then the database (after its queued calls)."""
        if self._session is not None:
            await self._session.close()
            self._session, self.client = None, None
        await self.storage.close()

    async def __aenter__(self) -> Services:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def batcher(self, *, owner: str = "") -> Batcher:
        """A Batcher on the action queue (dry-run when no client exists)."""
        return Batcher(self.storage.actions, self.client, self.config.actions, self.metrics,
                       dry_run=self.client is None, owner=owner,
                       timezone=self.config.export.timezone)

    def exporter(self, *, on_page: Callable[[Progress], None] = lambda _p: None,
                 **kwargs: Any) -> Exporter:
        """An Exporter paging through the live client (the caller checks dry-run first)."""
        assert self.client is not None, "an export calls the WeChat API"
        return Exporter(self.storage, self.client, self.config.export, on_page=on_page,
                        **kwargs)


def build_services(config: Config, *, metrics: Metrics | None = None,
                   clock: Callable[[], float] = time.time,
                   api_timeout: float = API_TIMEOUT_SECONDS) -> Services:
    """Every shared part for ``config``, not yet started (``async with`` starts them)."""
    if config.storage.backend == "postgres":  # several replicas share one database
        from bot.storage.postgres.storage import PostgresStorage

        return Services(config, metrics or Metrics(),
                        PostgresStorage(config.storage.dsn, dry_run=config.dry_run,
                                        clock=clock), api_timeout)
    store = Store(config.storage.path, synchronous=config.storage.synchronous, clock=clock)
    storage = SqliteStorage(store, dry_run=config.dry_run, clock=clock)
    metrics = metrics or Metrics()
    metrics.watch_store(lambda: (store.commits, store.committed_calls))
    return Services(config, metrics, storage, api_timeout)


def admin_store(config: Config) -> SqliteAdmin | PostgresAdmin:
    """What the CLI reads and changes by hand, on ``config``'s backend (synchronous)."""
    if config.storage.backend == "postgres":
        from bot.storage.postgres.admin import PostgresAdmin

        return PostgresAdmin(config.storage.dsn)
    return SqliteAdmin(config.storage.path)
