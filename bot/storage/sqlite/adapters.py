"""The storage ports on SQLite: each call runs on the store's owning thread."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

from sqlite_utils import Database

from bot.core.models import Sample
from bot.storage.ports import SnapshotRow
from bot.storage.sqlite import samples as _samples
from bot.storage.sqlite import snapshots as snap
from bot.storage.sqlite.actions import SqliteActionQueue
from bot.storage.sqlite.console import SqliteConsole
from bot.storage.sqlite.records import pending_count, purge_content
from bot.storage.sqlite.store import Store
from bot.storage.sqlite.tokens import SqliteTokenCache


class SqliteRecorder:
    """The Recorder port: ``record(event, decision)`` with the mode bound once.

    ``record`` is the store's own method with ``dry_run`` bound (a C-level partial):
    the hot path pays no extra coroutine per push.
    """

    def __init__(self, store: Store, *, dry_run: bool):
        self.record = functools.partial(store.record, dry_run=dry_run)


class SqliteSnapshots:
    """The Snapshots port: :mod:`bot.storage.sqlite.snapshots` through ``Store.call``."""

    def __init__(self, store: Store):
        self._call = store.call

    async def create_staging(self, day: str, taken_at: int, token: str) -> int:
        return await self._call(lambda db: snap.create_staging(db, day, taken_at, token))

    async def add_entries(self, snapshot_id: int, openids: list[str]) -> int:
        return await self._call(lambda db: snap.add_entries(db, snapshot_id, openids))

    async def entries_chunk(self, snapshot_id: int, after: str, limit: int) -> list[str]:
        return await self._call(lambda db: snap.entries_chunk(db, snapshot_id, after, limit))

    async def promote(self, snapshot_id: int, day: str, total: int, replaced_token: str
                      ) -> int | None:
        return await self._call(
            lambda db: snap.promote(db, snapshot_id, day, total, replaced_token))

    async def set_paths(self, snapshot_id: int, csv_path: str, report_path: str) -> None:
        await self._call(lambda db: snap.set_paths(db, snapshot_id, csv_path, report_path))

    async def delete_entries_chunk(self, snapshot_id: int, limit: int) -> int:
        return await self._call(lambda db: snap.delete_entries_chunk(db, snapshot_id, limit))

    async def delete_snapshot_row(self, snapshot_id: int) -> None:
        await self._call(lambda db: snap.delete_snapshot_row(db, snapshot_id))

    async def leftovers(self) -> list[int]:
        return await self._call(snap.leftovers)

    async def get(self, day: str) -> SnapshotRow | None:
        return await self._call(lambda db: snap.get_snapshot(db, day))

    async def previous(self, day: str) -> SnapshotRow | None:
        return await self._call(lambda db: snap.previous_snapshot(db, day))

    async def latest_day(self) -> str | None:
        return await self._call(snap.latest_day)

    async def prunable(self, before_day: str) -> list[int]:
        return await self._call(lambda db: snap.prunable(db, before_day))

    async def has_entries(self, snapshot_id: int) -> bool:
        return await self._call(lambda db: snap.has_entries(db, snapshot_id))

    async def scan_chunk(self, scan: str, params: list[Any], after: str, limit: int
                         ) -> tuple[str | None, list[str]]:
        return await self._call(lambda db: snap.scan_chunk(db, scan, params, after, limit))

    async def unreflected_actions(self, snapshot_id: int, sample: int
                                  ) -> tuple[int, list[dict[str, Any]]]:
        return await self._call(lambda db: snap.unreflected_actions(db, snapshot_id, sample))

    async def action_counts(self, since: int, until: int) -> list[tuple[str, str, int]]:
        return await self._call(lambda db: snap.action_counts(db, since, until))

    async def action_failures(self, since: int, until: int
                              ) -> list[tuple[str, int | None, str, int]]:
        return await self._call(lambda db: snap.action_failures(db, since, until))

    async def failed_actions(self, since: int, until: int
                             ) -> list[tuple[str, str, int | None, str]]:
        return await self._call(lambda db: snap.failed_actions(db, since, until))

    async def rule_hits(self, since: int, until: int) -> list[tuple[str, str, int]]:
        return await self._call(lambda db: snap.rule_hits(db, since, until))

    async def decisions_per_hour(self, until: int) -> list[int]:
        return await self._call(lambda db: snap.decisions_per_hour(db, until))

    async def read_last_run(self) -> float | None:
        return await self._call(snap.read_last_run)

    async def write_last_run(self, at: float, day: str) -> None:
        await self._call(lambda db: snap.write_last_run(db, at, day))


class SqliteLeases:
    """The Leases port: the export lock in ``kv``."""

    def __init__(self, store: Store):
        self._call = store.call

    async def acquire(self, owner: str, now: float, ttl: float) -> str | None:
        return await self._call(lambda db: snap.acquire_lock(db, owner, now, ttl))

    async def release(self, owner: str) -> None:
        await self._call(lambda db: snap.release_lock(db, owner))


class SqliteReadModel:
    """The ReadModel port."""

    def __init__(self, store: Store):
        self._call = store.call

    async def pending_count(self) -> int:
        return await self._call(pending_count)


class SqliteRetention:
    """The Retention port: :func:`bot.storage.sqlite.records.purge_content`."""

    def __init__(self, store: Store):
        self._call = store.call

    async def purge_content(self, before: int, limit: int, now: float) -> int:
        return await self._call(lambda db: purge_content(db, before, limit, now=now))


class SqliteClassifierStore:
    """The ClassifierStore port: :mod:`bot.storage.sqlite.samples`."""

    def __init__(self, store: Store):
        self._call = store.call
        self._path = store.path

    async def latest_model_id(self) -> int:
        return await self._call(_samples.latest_model_id)

    async def model_blob(self, model_id: int) -> bytes | None:
        return await self._call(lambda db: _samples.load_model_blob(db, model_id))

    async def model_ids(self) -> list[int]:
        return await self._call(_samples.model_ids)

    async def save_model(self, blob: bytes, *, trained_at: int, samples: int, source: str,
                         unless_newer_than: int | None = None) -> int:
        def save(db: Database) -> int:
            if unless_newer_than is not None and \
                    _samples.latest_model_id(db) != unless_newer_than:
                return 0
            return _samples.save_model(db, blob, trained_at=trained_at, samples=samples,
                                       source=source)

        return await self._call(save)

    async def samples(self) -> list[Sample]:
        # a read on a connection of its own: the writer thread keeps committing pushes
        return await asyncio.to_thread(_samples.read_samples, self._path)

    async def newest_sample_at(self) -> int:
        return await self._call(_samples.newest_sample_at)


class SqliteStorage:
    """Every storage port over one SQLite file and its single owning thread."""

    def __init__(self, store: Store, *, dry_run: bool = False,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.recorder = SqliteRecorder(store, dry_run=dry_run)
        self.actions = SqliteActionQueue(store)
        self.tokens = SqliteTokenCache(store, clock)
        self.snapshots = SqliteSnapshots(store)
        self.leases = SqliteLeases(store)
        self.reads = SqliteReadModel(store)
        self.retention = SqliteRetention(store)
        self.classifier = SqliteClassifierStore(store)
        self.console = SqliteConsole(store)

    async def start(self) -> None:
        """Open the database (migrations applied) on its owning thread."""
        await self.store.start()

    async def close(self) -> None:
        """Finish queued calls and close the database."""
        await self.store.close()
