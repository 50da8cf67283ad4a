"""The storage ports: what the webhook, the jobs and the CLI need from a backend.

Each is a Protocol; ``bot.storage.sqlite`` implements them all over one SQLite file.
A new backend (PostgreSQL for several replicas) implements the same Protocols and is
chosen in :func:`bot.services.build_services`; nothing that uses a port changes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.core.models import Action, Decision, Event, Recorded, Sample
from bot.core.outbox import Claimed, QueueState


class Recorder(Protocol):
    """Commits an event with its decision and actions before the push is answered."""

    async def record(self, event: Event, decision: Decision) -> Recorded:
        """Commit one push; a WeChat retry of a stored one comes back ``duplicate``."""
        ...


class ActionQueue(Protocol):
    """The durable outbox as the batcher needs it: claims, settlement, pause, expiry."""

    async def heartbeat(self, owner: str, now: float) -> None: ...
    async def release_owner(self, owner: str, now: float) -> int: ...
    async def reclaim_stale(self, now: float, stale_after: float) -> int: ...
    async def reclaim_own(self, owner: str, busy: Sequence[int], now: float,
                          stale_after: float) -> int: ...
    async def state(self, kind: str, now: float, limit: int) -> QueueState: ...
    async def claim(self, kind: str, owner: str, now: float, limit: int) -> list[Claimed]: ...
    async def release(self, ids: Sequence[int], now: float, *, not_before: float,
                      errcode: int | None = None, errmsg: str = "",
                      count_attempt: bool = True) -> None: ...
    async def complete(self, rows: Sequence[Claimed], now: float) -> None: ...
    async def finish(self, ids: Sequence[int], now: float, status: str, *,
                     errcode: int | None = None, errmsg: str = "") -> None: ...
    async def set_pause(self, until: float, reason: str, now: float) -> None: ...
    async def queue_expired(self, now: float, *, dry_run: bool = False) -> int: ...
    async def count_active(self) -> int: ...


@dataclass(frozen=True, slots=True)
class CachedToken:
    """An access token and when it expires (unix seconds)."""

    token: str
    expires_at: float

    def __repr__(self) -> str:  # tokens never reach a log line through repr()
        return f"CachedToken(token=***, expires_at={self.expires_at})"

    def dumps(self) -> str:
        """The token as every backend stores it: JSON in a kv value."""
        return json.dumps({"token": self.token, "expires_at": self.expires_at})

    @classmethod
    def loads(cls, value: str | None) -> CachedToken | None:
        """A stored token, or None when absent or unreadable."""
        if value is None:
            return None
        try:
            data = json.loads(value)
            return cls(str(data["token"]), float(data["expires_at"]))
        except (ValueError, KeyError, TypeError):
            return None


class TokenCache(Protocol):
    """Where the access token survives restarts and is shared by every process."""

    async def load(self, appid: str) -> CachedToken | None:
        """The cached token for ``appid``, if any (valid or not)."""
        ...

    async def save(self, appid: str, token: CachedToken) -> None:
        """Remember ``token`` for ``appid``."""
        ...

    def exclusive(self, appid: str) -> AbstractAsyncContextManager[None]:
        """Held while fetching a new token: one process fetches at a time, the others
        then find it in the cache (SQLite: one process, nothing to hold)."""
        ...


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    """One stored blacklist snapshot."""

    id: int
    day: str
    taken_at: int
    total: int
    complete: bool
    csv_path: str | None
    report_path: str | None


class Snapshots(Protocol):
    """Blacklist snapshots: staging, swap, keyset scans, and the report's activity.

    Every call touches at most one chunk of rows, so the writer is never held long.
    """

    async def create_staging(self, day: str, taken_at: int, token: str) -> int: ...
    async def add_entries(self, snapshot_id: int, openids: list[str]) -> int: ...
    async def entries_chunk(self, snapshot_id: int, after: str, limit: int) -> list[str]: ...
    async def promote(self, snapshot_id: int, day: str, total: int, replaced_token: str
                      ) -> int | None: ...
    async def set_paths(self, snapshot_id: int, csv_path: str, report_path: str) -> None: ...
    async def delete_entries_chunk(self, snapshot_id: int, limit: int) -> int: ...
    async def delete_snapshot_row(self, snapshot_id: int) -> None: ...
    async def leftovers(self) -> list[int]: ...
    async def get(self, day: str) -> SnapshotRow | None: ...
    async def previous(self, day: str) -> SnapshotRow | None: ...
    async def latest_day(self) -> str | None: ...
    async def prunable(self, before_day: str) -> list[int]: ...
    async def has_entries(self, snapshot_id: int) -> bool: ...
    async def scan_chunk(self, scan: str, params: list[Any], after: str, limit: int
                         ) -> tuple[str | None, list[str]]: ...
    async def unreflected_actions(self, snapshot_id: int, sample: int
                                  ) -> tuple[int, list[dict[str, Any]]]: ...
    async def action_counts(self, since: int, until: int) -> list[tuple[str, str, int]]: ...
    async def action_failures(self, since: int, until: int
                              ) -> list[tuple[str, int | None, str, int]]: ...
    async def failed_actions(self, since: int, until: int
                             ) -> list[tuple[str, str, int | None, str]]: ...
    async def rule_hits(self, since: int, until: int) -> list[tuple[str, str, int]]: ...
    async def decisions_per_hour(self, until: int) -> list[int]: ...
    async def read_last_run(self) -> float | None: ...
    async def write_last_run(self, at: float, day: str) -> None: ...


class Leases(Protocol):
    """Named leases: exactly one holder at a time across every process (the export)."""

    async def acquire(self, owner: str, now: float, ttl: float) -> str | None:
        """Take or refresh the lease; the other holder's name when it is held."""
        ...

    async def release(self, owner: str) -> None:
        """Drop the lease if ``owner`` holds it."""
        ...


class Retention(Protocol):
    """Purging followers' words once ``storage.retention_days`` have passed."""

    async def purge_content(self, before: int, limit: int, now: float) -> int:
        """Purge up to ``limit`` rows of each table older than ``before``; rows changed."""
        ...


class ExportStorage(Protocol):
    """What the export needs: the snapshots, the lease that keeps it to one process, and
    the action queue (whether sending is paused, for the report)."""

    @property
    def snapshots(self) -> Snapshots: ...
    @property
    def leases(self) -> Leases: ...
    @property
    def actions(self) -> ActionQueue: ...


class ReadModel(Protocol):
    """What /healthz reads while serving."""

    async def pending_count(self) -> int:
        """Actions waiting to be sent (pending or being sent)."""
        ...


class ClassifierStore(Protocol):
    """The classifier's samples and models as the running service needs them."""

    async def latest_model_id(self) -> int:
        """The id of the model in force (0 when none was trained)."""
        ...

    async def model_ids(self) -> list[int]:
        """The stored models, newest first."""
        ...

    async def model_blob(self, model_id: int) -> bytes | None: ...

    async def save_model(self, blob: bytes, *, trained_at: int, samples: int, source: str,
                         unless_newer_than: int | None = None) -> int:
        """Store a model (in force from then on); with ``unless_newer_than``, only while
        that is still the newest id (0: none): 0 when another was stored meanwhile."""
        ...
    async def samples(self) -> list[Sample]: ...

    async def newest_sample_at(self) -> int:
        """When the newest sample was stored (0 when none is)."""
        ...


# ---------------------------------------------------------------- the admins' views


@dataclass
class QueueStatus:
    """``blacklist status`` and the console's Queue: counts by status, the pause, and
    the listed sections ``(title, rows)``; a row is ``(id, openid, kind, status, source,
    updated_at, attempts, errcode, errmsg)``."""

    counts: list[tuple[str, int]]
    paused_until: float
    paused_reason: str
    sections: list[tuple[str, list[tuple[Any, ...]]]] = field(default_factory=list)


@dataclass
class FollowerHistory:
    """``why`` (and the console's Follower page): what we hold about one follower.

    ``state``: the blacklist row ``(status, rule_id, reason, since, expires_at)`` or None;
    ``decisions``: ``(created_at, rule_id, action, evidence, msg_type, event)`` and
    ``actions``: ``(created_at, kind, status, source, rule_id, errcode, errmsg)``, newest
    first; ``queued``: actions not yet sent ``(id, kind, status, source, rule_id,
    created_at, attempts, errcode, errmsg)``, oldest first; ``pushes``: ``(count, first,
    last)`` received; ``paused_until``/``paused_reason``: the queue's shared pause.
    """

    state: tuple[Any, ...] | None
    decisions: list[tuple[Any, ...]]
    actions: list[tuple[Any, ...]]
    known: bool
    queued: list[tuple[Any, ...]] = field(default_factory=list)
    pushes: tuple[int, int | None, int | None] = (0, None, None)
    paused_until: float = 0.0
    paused_reason: str = ""

    @property
    def seen(self) -> bool:
        """Any push, decision or action at all: False for an OpenID never seen here."""
        return self.known or self.state is not None or self.pushes[0] > 0


@dataclass(frozen=True, slots=True)
class DecisionQuery:
    """A page of the mod log: filters (empty/0: any) and keyset paging by id."""

    rule_id: str = ""
    action: str = ""
    openid: str = ""
    since: int = 0
    until: int = 0
    before_id: int = 0
    limit: int = 50


@dataclass(frozen=True, slots=True)
class ModLogEntry:
    """One rule hit (or an admin's decision) as the mod log shows it."""

    created_at: int
    openid: str
    rule_id: str
    action: str
    evidence: str
    texts: str | None  # the event's texts as stored (JSON), None for an admin's decision


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One mod-log entry with the push that caused it (texts empty once purged)."""

    id: int
    created_at: int
    openid: str
    rule_id: str
    action: str
    evidence: str
    msg_type: str | None
    event: str | None
    texts: Mapping[str, str]
    purged: bool


@dataclass(frozen=True, slots=True)
class Activity:
    """Pushes received and decisions taken (by action) since a time."""

    pushes: int
    decisions: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class BlacklistedRow:
    """A follower blacklisted through the service (our view, table ``blacklist``)."""

    openid: str
    rule_id: str
    reason: str
    since: int
    expires_at: int | None


class ConsoleStore(Protocol):
    """What the web console reads and changes; changes take the CLI's paths (the same
    outbox rows, source ``cli``, and the same classifier samples)."""

    async def activity(self, since: int) -> Activity: ...
    async def decisions(self, query: DecisionQuery) -> list[DecisionRow]: ...
    async def follower(self, openid: str, limit: int) -> FollowerHistory: ...

    async def follower_story(self, openid: str, since: int
                             ) -> tuple[dict[str, list[int]], list[tuple[int, str]]]:
        """Warnings per rule (since its last escalation) and ``(create_time, kind)`` of
        the pushes since ``since``: what ``rules test --openid`` seeds the engine with."""
        ...

    async def blacklisted(self, limit: int, search: str = "") -> list[BlacklistedRow]: ...
    async def queue(self, limit: int) -> QueueStatus: ...

    async def admin_actions(self, actions: Sequence[Action], now: int, *, dry_run: bool
                            ) -> tuple[list[int | None], int]:
        """Queue admins' actions as ``blacklist add/remove`` does: row ids, samples learnt."""
        ...

    async def requeue(self, openids: Sequence[str], now: int) -> list[int]:
        """``blacklist retry`` (all failed when ``openids`` is empty): ids queued again."""
        ...

    async def dismiss(self, targets: Sequence[int | str], now: int
                      ) -> tuple[list[int], dict[int | str, str]]:
        """``blacklist dismiss``: ids dismissed, targets with no failed action."""
        ...

    async def resume(self) -> tuple[float, str]:
        """``blacklist resume``: the pause lifted (``(0, "")`` when none)."""
        ...


class SharedWindows(Protocol):
    """Flood windows and warn ladders shared by several replicas (PostgreSQL).

    The engine counts through ``flood`` / ``warns`` (its ``WindowState``); the webhook
    evaluates each push inside ``around(event)``, which loads that follower's shared
    counts for the evaluation and stores what it counted. SQLite has none: one process
    keeps its windows in memory.
    """

    def around(self, event: Event) -> AbstractAsyncContextManager[None]: ...
