"""What the CLI reads and changes by hand: a follower's history, the queue's status,
requeueing failed actions, replaying stored events. Plain functions on one file.

``QueueStatus`` and ``FollowerHistory`` are declared in :mod:`bot.storage.ports` (the
console reads them through a port) and re-exported here for the CLI."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from bot.core.errors import BotError
from bot.core.models import Action, ActionKind, Event, Sample
from bot.core.windows import standing_warnings
from bot.storage.ports import FollowerHistory, ModLogEntry, QueueStatus
from bot.storage.sqlite import kv
from bot.storage.sqlite.actions import read_pause
from bot.storage.sqlite.modlog import mod_log
from bot.storage.sqlite.records import enqueue_action, iter_events
from bot.storage.sqlite.samples import (
    Learnt,
    add_samples,
    learn_into,
    newest_model_blob,
    store_model,
    verdict_source,
    verdict_texts,
)
from bot.storage.sqlite.schema import open_db
from bot.storage.sqlite.store import run_sync


def existing_db(path: str | Path, what: str) -> Path:
    """``storage.path`` when the file is there; BotError otherwise (a mistyped path must
    not leave an empty database behind and report that nothing is known)."""
    db_path = Path(path)
    if not db_path.is_file():
        raise BotError(f"no database at {db_path} (storage.path): {what}")
    return db_path


@contextmanager
def reading(path: str | Path, what: str) -> Iterator[Database]:
    """The existing database at ``path``, opened for the block (BotError when absent)."""
    db = open_db(existing_db(path, what))
    try:
        yield db
    finally:
        db.close()


# ---------------------------------------------------------------- admins' actions


def queue_admin_actions(path: str | Path, actions: Sequence[Action], now: int, *,
                        dry_run: bool) -> tuple[list[int | None], int]:
    """Queue admins' actions (source ``cli``) in one transaction: the new row ids, and
    how many samples the admin's verdicts taught the classifier (learnt before the
    actions land: a removal learns from what the rules decided)."""

    verdicts: list[Verdict] = []
    if Path(path).is_file():  # read first: the write transaction stays short
        with reading(path, "") as db:
            verdicts = admin_verdicts(db, actions, now)
    return run_sync(path, lambda db: queue_admin_job(db, verdicts, actions, now,
                                                     dry_run=dry_run))


Verdict = tuple[str, bool, list[str]]  # openid, spam?, the texts it teaches


def admin_verdicts(db: Database, actions: Sequence[Action], now: int) -> list[Verdict]:
    """What admins' actions teach the classifier (a read: run it before the write)."""
    verdicts: list[Verdict] = []
    for a in actions:
        spam = a.kind is ActionKind.BLACKLIST
        verdicts.append((a.openid, spam, verdict_texts(db, a.openid, spam=spam, now=now)))
    return verdicts


def queue_admin_job(db: Database, verdicts: Sequence[Verdict], actions: Sequence[Action],
                    now: int, *, dry_run: bool) -> tuple[list[int | None], int]:
    """The write of :func:`queue_admin_actions` (inside a transaction): samples, rows."""
    learnt = sum(add_samples(db, ((t, spam) for t in texts), source=verdict_source(spam),
                             now=now, openid=openid).stored
                 for openid, spam, texts in verdicts if texts)
    ids = [enqueue_action(db, a, now, source="cli", dry_run=dry_run) for a in actions]
    return ids, learnt


def requeue_failed(db: Database, openids: Sequence[str], now: int) -> list[int]:
    """Failed -> pending, except actions a later one for the same follower supersedes,
    and expiries of a blacklist extended since (its end now later, or permanent)."""
    rows = db.execute(
        "SELECT a.id, a.openid FROM actions a WHERE a.status = 'failed' AND NOT EXISTS ("
        " SELECT 1 FROM actions b WHERE b.openid = a.openid AND b.id > a.id"
        " AND b.status NOT IN ('failed', 'cancelled', 'dismissed'))"
        " AND NOT (a.source = 'expiry' AND EXISTS (SELECT 1 FROM blacklist l"
        " WHERE l.openid = a.openid AND l.status = 'blacklisted'"
        " AND (l.expires_at IS NULL OR l.expires_at > a.created_at)))"
        " ORDER BY a.id").fetchall()
    wanted = set(openids)
    ids = [i for i, o in rows if not wanted or o in wanted]
    for i in ids:
        db.execute("UPDATE actions SET status = 'pending', attempts = 0, not_before = 0,"
                   " errcode = NULL, errmsg = NULL, updated_at = ? WHERE id = ?", [now, i])
    return ids


def dismiss_failed(db: Database, targets: Sequence[int | str], now: int) -> list[int]:
    """Failed actions -> ``dismissed`` (``retry`` no longer resends them): by action id
    (int) or every failed action of a follower (OpenID str). Attempts and the errcode
    stay as they were, so the row still says why it failed."""
    ids: list[int] = []
    for target in targets:
        column = "id" if isinstance(target, int) else "openid"
        rows = db.execute(f"SELECT id FROM actions WHERE status = 'failed' AND {column} = ?"
                          " ORDER BY id", [target]).fetchall()
        ids += [row[0] for row in rows if row[0] not in ids]
    for i in ids:
        db.execute("UPDATE actions SET status = 'dismissed', updated_at = ? WHERE id = ?",
                   [now, i])
    return ids


def failed_targets(db: Database, targets: Sequence[int | str]) -> dict[int | str, str]:
    """Of ``targets`` (ids or OpenIDs), those with no failed action: what they are."""
    unknown: dict[int | str, str] = {}
    for target in targets:
        column = "id" if isinstance(target, int) else "openid"
        statuses = [r[0] for r in db.execute(
            f"SELECT status FROM actions WHERE {column} = ?", [target]).fetchall()]
        if "failed" not in statuses:
            unknown[target] = (", ".join(sorted(set(statuses))) if statuses
                               else "no such action")
    return unknown


def resume_sending(db: Database) -> tuple[float, str]:
    """Lift the shared sending pause (every process sees it at its next look); the pause
    lifted, ``(0, "")`` when none was set."""
    pause = read_pause(db)
    kv.delete(db, kv.PAUSE_KEY)
    return pause


def dismiss(path: str | Path, targets: Sequence[int | str], now: int
            ) -> tuple[list[int], dict[int | str, str]]:
    """:func:`dismiss_failed` in one transaction: the dismissed ids, and the targets
    that had no failed action (with what they are instead)."""
    def work(db: Database) -> tuple[list[int], dict[int | str, str]]:
        unknown = failed_targets(db, targets)
        return dismiss_failed(db, targets, now), unknown

    return run_sync(existing_db(path, "no action was ever queued"), work)


def resume(path: str | Path) -> tuple[float, str]:
    """:func:`resume_sending` on the existing database at ``path``."""
    return run_sync(existing_db(path, "no action was ever queued"), resume_sending)


def queued_ids(db: Database) -> list[int]:
    """Actions waiting to be sent (or claimed by a sender, perhaps a dead one)."""
    rows = db.execute("SELECT id FROM actions WHERE status IN ('pending', 'sending')"
                      " ORDER BY id").fetchall()
    return [row[0] for row in rows]


def requeue(path: str | Path, openids: Sequence[str], now: int) -> list[int]:
    """:func:`requeue_failed` in one transaction on the existing database at ``path``."""
    return run_sync(existing_db(path, "no action was ever queued"),
                    lambda db: requeue_failed(db, openids, now))


def queued(path: str | Path) -> list[int]:
    """:func:`queued_ids` of the existing database at ``path``."""
    return run_sync(existing_db(path, "no action was ever queued"), queued_ids)


def action_rows(path: str | Path, ids: Sequence[int]) -> list[tuple[Any, ...]]:
    """``(openid, kind, status, errcode, errmsg)`` of the actions ``ids``, in id order."""
    rows: list[tuple[Any, ...]] = []
    if not ids:
        return rows
    db = open_db(path)
    try:
        for start in range(0, len(ids), 500):  # under SQLite's limit on bound parameters
            chunk = list(ids[start:start + 500])
            rows += db.execute(f"SELECT openid, kind, status, errcode, errmsg FROM actions"
                               f" WHERE id IN ({','.join('?' * len(chunk))}) ORDER BY id",
                               chunk).fetchall()
    finally:
        db.close()
    return rows


# ---------------------------------------------------------------- queue status


_SECTIONS = [("pending", "status IN ('pending', 'sending') ORDER BY id"),
             ("failed", "status = 'failed' ORDER BY id DESC"),
             ("recent", "status IN ('done', 'dry_run', 'skipped', 'dismissed')"
                        " ORDER BY updated_at DESC, id DESC")]


def queue_status(db: Database, limit: int) -> QueueStatus:
    """Counts, the pause and up to ``limit`` rows of each section: ``(id, openid, kind,
    status, source, updated_at, attempts, errcode, errmsg)``."""
    counts = db.execute("SELECT status, COUNT(*) FROM actions GROUP BY status").fetchall()
    until, reason = read_pause(db)
    status = QueueStatus(sorted(tuple(c) for c in counts), until, reason)
    for title, where in _SECTIONS:
        rows = db.execute("SELECT id, openid, kind, status, source, updated_at, attempts,"
                          f" errcode, errmsg FROM actions WHERE {where} LIMIT ?",
                          [limit]).fetchall()
        status.sections.append((title, [tuple(r) for r in rows]))
    return status


# ---------------------------------------------------------------- a follower's history


def follower_history(db: Database, openid: str, limit: int = 50) -> FollowerHistory:
    """Everything :class:`FollowerHistory` holds for ``openid`` (up to ``limit`` decisions
    and actions). Counting the pushes scans the events table (no index on openid, which
    would cost every push an index update): a CLI or console read, not a hot path."""
    state = db.execute("SELECT status, rule_id, reason, since, expires_at FROM blacklist"
                       " WHERE openid = ?", [openid]).fetchone()
    decisions = db.execute(
        "SELECT d.created_at, d.rule_id, d.action, d.evidence, e.msg_type, e.event"
        " FROM decisions d LEFT JOIN events e ON e.id = d.event_id"
        " WHERE d.openid = ? ORDER BY d.id DESC LIMIT ?", [openid, limit]).fetchall()
    actions = db.execute(
        "SELECT created_at, kind, status, source, rule_id, errcode, errmsg FROM actions"
        " WHERE openid = ? ORDER BY id DESC LIMIT ?", [openid, limit]).fetchall()
    known = db.execute(
        "SELECT 1 FROM decisions WHERE openid = ? UNION ALL"
        " SELECT 1 FROM actions WHERE openid = ? LIMIT 1", [openid, openid],
    ).fetchone()
    queued = db.execute(
        "SELECT id, kind, status, source, rule_id, created_at, attempts, errcode, errmsg"
        " FROM actions WHERE openid = ? AND status IN ('pending', 'sending') ORDER BY id",
        [openid]).fetchall()
    count, first, last = db.execute(
        "SELECT COUNT(*), MIN(received_at), MAX(received_at) FROM events WHERE openid = ?",
        [openid]).fetchone()
    until, reason = read_pause(db)
    return FollowerHistory(tuple(state) if state else None, [tuple(r) for r in decisions],
                           [tuple(r) for r in actions], known is not None,
                           [tuple(r) for r in queued], (int(count), first, last),
                           until, reason)


def follower_warnings(db: Database, openid: str, since: int) -> dict[str, list[int]]:
    """Per rule id, when ``openid`` was warned by it since ``since`` (the push's
    CreateTime, as the engine counts), forgetting those before that rule's last
    escalation to a blacklist: the engine starts the ladder again after one."""
    rows = db.execute(
        "SELECT d.rule_id, d.action, COALESCE(e.create_time, d.created_at) FROM decisions d"
        " LEFT JOIN events e ON e.id = d.event_id WHERE d.openid = ? AND d.created_at >= ?"
        " AND d.action IN ('warn', 'blacklist') ORDER BY d.id", [openid, since]).fetchall()
    return standing_warnings(rows)


def follower_pushes(db: Database, openid: str, since: int) -> list[tuple[int, str]]:
    """``(create_time, msg_type)`` of the pushes of ``openid`` received since ``since``."""
    rows = db.execute("SELECT create_time, msg_type FROM events WHERE received_at >= ?"
                      " AND openid = ? ORDER BY id", [since, openid]).fetchall()
    return [(int(t), str(k)) for t, k in rows]


# ---------------------------------------------------------------- replay


def stored_events(db: Database, since: int) -> Iterator[Event]:
    """Stored events received at or after ``since``, in stored order."""
    for _event_id, event in iter_events(db, since):
        yield event


def rule_blacklisted(db: Database, since: int) -> set[str]:
    """Followers the rules decided to blacklist since ``since``: decisions a push carried
    (an admin's decision has no event)."""
    rows = db.execute(
        "SELECT DISTINCT openid FROM decisions WHERE action = 'blacklist' AND created_at >= ?"
        " AND event_id IS NOT NULL", [since]).fetchall()
    return {row[0] for row in rows}


def hand_blacklisted(db: Database, since: int) -> set[str]:
    """Followers blacklisted by hand since ``since`` (CLI, console: any source but the
    rules and expiry), however their action ended except superseded."""
    rows = db.execute(
        "SELECT openid FROM actions WHERE kind = 'blacklist' AND created_at >= ?"
        " AND source NOT IN ('rule', 'expiry') AND status NOT IN ('cancelled', 'dismissed')"
        " UNION SELECT openid FROM decisions WHERE action = 'blacklist' AND created_at >= ?"
        " AND event_id IS NULL", [since, since]).fetchall()
    return {row[0] for row in rows}


# ---------------------------------------------------------------- the CLI's port


class SqliteAdmin:
    """The CLI's reads and changes (the AdminStore port) on the SQLite file at ``path``."""

    def __init__(self, path: str | Path):
        self.path = path

    def queue_admin_actions(self, actions: Sequence[Action], now: int, *, dry_run: bool
                            ) -> tuple[list[int | None], int]:
        return queue_admin_actions(self.path, actions, now, dry_run=dry_run)

    def requeue(self, openids: Sequence[str], now: int) -> list[int]:
        return requeue(self.path, openids, now)

    def queued(self) -> list[int]:
        return queued(self.path)

    def action_rows(self, ids: Sequence[int]) -> list[tuple[Any, ...]]:
        return action_rows(self.path, ids)

    def queue_status(self, limit: int) -> QueueStatus:
        with reading(self.path, "no action was ever queued") as db:
            return queue_status(db, limit)

    def follower_history(self, openid: str, limit: int = 50) -> FollowerHistory:
        with reading(self.path, "nothing is recorded about anyone") as db:
            return follower_history(db, openid, limit)

    def dismiss(self, targets: Sequence[int | str], now: int
                ) -> tuple[list[int], dict[int | str, str]]:
        return dismiss(self.path, targets, now)

    def resume(self) -> tuple[float, str]:
        return resume(self.path)

    def mod_log(self, *, since: int, rule_id: str | None = None, action: str | None = None,
                limit: int = 50) -> list[ModLogEntry]:
        with reading(self.path, "no decision has been recorded") as db:
            return mod_log(db, since=since, rule_id=rule_id, action=action, limit=limit)

    def follower_warnings(self, openid: str, since: int) -> dict[str, list[int]]:
        with reading(self.path, "") as db:
            return follower_warnings(db, openid, since)

    def follower_pushes(self, openid: str, since: int) -> list[tuple[int, str]]:
        with reading(self.path, "") as db:
            return follower_pushes(db, openid, since)

    @contextmanager
    def replay_source(self, since: int
                      ) -> Iterator[tuple[Iterator[Event], set[str], set[str]]]:
        """Stored events received since ``since`` (streamed), who the rules blacklisted
        since and who admins blacklisted by hand."""
        with reading(self.path, "nothing to replay") as db:
            yield stored_events(db, since), rule_blacklisted(db, since), \
                hand_blacklisted(db, since)

    def learn_into(self, samples: Sequence[Sample], *, now: int, stood: int | None = None,
                   forget: str | None = None) -> Learnt:
        return learn_into(self.path, samples, now=now, stood=stood, forget=forget)

    def store_model(self, blob: bytes, *, trained_at: int, samples: int, source: str) -> int:
        return store_model(self.path, blob, trained_at=trained_at, samples=samples,
                           source=source)

    def newest_model_blob(self) -> bytes | None:
        return newest_model_blob(self.path)
