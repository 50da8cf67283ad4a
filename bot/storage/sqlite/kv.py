"""The ``kv`` table: every key the service keeps there, and reading and writing one."""

from __future__ import annotations

from sqlite_utils import Database

# One place for every key, so two features never share one by accident.
HEARTBEAT_PREFIX = "outbox.owner."  # + claim owner: that sender is alive
PAUSE_KEY = "outbox.paused"  # {"until", "reason"}: all sending paused
LAST_RUN_KEY = "export.last_run"  # {"at", "day"}: the last export that succeeded
LOCK_KEY = "export.lock"  # {"owner", "until"}: the export lease
TOKEN_PREFIX = "wechat.access_token."  # + appid: {"token", "expires_at"}
PURGE_PREFIX = "purge."  # + table: the last row id whose content was purged


def get(db: Database, key: str) -> str | None:
    """The value under ``key``, None when absent."""
    row = db.execute("SELECT value FROM kv WHERE key = ?", [key]).fetchone()
    return None if row is None else str(row[0])


def put(db: Database, key: str, value: str, now: int) -> None:
    """Set ``key`` to ``value`` (stamped ``now``)."""
    db.execute(
        "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key)"
        " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        [key, value, now],
    )


def delete(db: Database, key: str) -> None:
    """Remove ``key`` if present."""
    db.execute("DELETE FROM kv WHERE key = ?", [key])
