"""SQL on the events, decisions and actions tables; the caller holds the transaction."""

from __future__ import annotations

import itertools
import json
import logging
import re
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sqlite_utils import Database

from bot.core.models import (
    MESSAGE_TYPES,
    Action,
    ActionKind,
    Decision,
    Event,
    Recorded,
    is_valid_openid,
)
from bot.core.outbox import (
    EnqueuePlan,
    Queued,
    active_statuses,
    against_state,
    plan_enqueue,
    queued_status,
)
from bot.storage.sqlite import kv

log = logging.getLogger(__name__)


def insert_event(db: Database, event: Event, decision: Decision, now: int,
                 *, dry_run: bool = False) -> Recorded:
    """Insert one event with its decision rows and outbox actions (caller holds the txn)."""
    return record_pushes(db, [Push(event_row(event, now), event.openid, decision, dry_run)],
                         now)[0]


_EVENT_COLUMNS = ("dedup_key, openid, account, msg_type, event, msg_id, create_time,"
                  " received_at, texts, fields")
_DECISION_COLUMNS = ("event_id, openid, rule_id, action, evidence, field, span_start,"
                     " span_end, created_at")
# strings_json's fallback, built once: json.dumps with a keyword builds one per call.
_JSON = json.JSONEncoder(ensure_ascii=False)
_quote = json.encoder.encode_basestring  # a str as a JSON string, as _JSON writes it
# Rows per multi-row INSERT: 1000 x 10 columns stays far below SQLite's 32766 variables.
_ROWS_PER_INSERT = 1000


def event_row(event: Event, now: int) -> tuple[Any, ...]:
    """The ``events`` row of an event, in ``_EVENT_COLUMNS`` order."""
    return (
        event.dedup_key, event.openid, event.account, event.msg_type, event.event,
        event.msg_id, event.create_time, now,
        strings_json(event.texts),
        _extra_fields(event),
    )


@dataclass(frozen=True, slots=True)
class Push:
    """A push to record: its ``events`` row, the decision about it, and the mode."""

    row: tuple[Any, ...]
    openid: str
    decision: Decision
    dry_run: bool = False


def record_pushes(db: Database, pushes: list[Push], now: int) -> list[Recorded]:
    """Record many pushes, their decisions and actions, in a few statements.

    One multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` stores the events
    and tells which were new (a retry already stored returns nothing), one more stores
    the decisions; only actions (rare) cost statements of their own. The writer thread
    needs the GIL back after every statement, so under load this is what keeps it from
    queueing behind the event loop once per push.
    """
    new_ids = _insert_events(db, [push.row for push in pushes])
    results: list[Recorded] = []
    decided: list[tuple[int, Push]] = []
    for push in pushes:
        event_id = new_ids.pop(push.row[0], None)  # a repeat within the batch: duplicate
        results.append(Recorded(event_id, event_id is None))
        if event_id is not None and push.decision.hits:
            decided.append((event_id, push))
    _insert_many(db, "decisions", _DECISION_COLUMNS, [
        (event_id, push.openid, h.rule_id, str(h.action), h.evidence, h.field,
         h.span[0] if h.span else None, h.span[1] if h.span else None, now)
        for event_id, push in decided for h in push.decision.hits
    ])
    enqueue_actions(db, [(action, event_id, push.dry_run) for event_id, push in decided
                         for action in push.decision.actions], now)
    return results


def insert_decision(db: Database, openid: str, decision: Decision, now: int,
                    *, source: str = "rule", dry_run: bool = False) -> None:
    """Store a decision that no push carried (an admin's) and queue its actions."""
    _insert_many(db, "decisions", _DECISION_COLUMNS, [
        (None, openid, h.rule_id, str(h.action), h.evidence, h.field,
         h.span[0] if h.span else None, h.span[1] if h.span else None, now)
        for h in decision.hits
    ])
    for action in decision.actions:
        enqueue_action(db, action, now, source=source, dry_run=dry_run)


def _insert_events(db: Database, rows: list[tuple[Any, ...]]) -> dict[str, int]:
    """Insert the events not stored yet; their new ids by dedup key (the row's first
    value). A key already stored, or repeated within ``rows``, is inserted once.

    No ``RETURNING``: the sqlite3 module lets go of the GIL around every row it steps
    through, and the writer then waits for the event loop to hand it back, once per
    push. The rows one statement inserts take consecutive rowids (_inserted_ids); only
    a chunk that met a stored key (a retry) reads back which of them went in.
    """
    ids: dict[str, int] = {}
    width = _EVENT_COLUMNS.count(",") + 1
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start:start + _ROWS_PER_INSERT]
        placeholders = ",".join([f"({','.join('?' * width)})"] * len(chunk))
        cur = db.conn.execute(
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES {placeholders}"
            " ON CONFLICT (dedup_key) DO NOTHING",
            [value for row in chunk for value in row])
        new = _inserted_ids(cur)
        if len(new) == len(chunk):
            ids.update(zip([row[0] for row in chunk], new, strict=True))
        elif new:
            ids.update(db.conn.execute("SELECT dedup_key, id FROM events WHERE id BETWEEN"
                                       " ? AND ?", [new[0], new[-1]]).fetchall())
    return ids


def _insert_many(db: Database, table: str, columns: str, rows: list[tuple[Any, ...]]
                 ) -> list[int]:
    """Multi-row INSERT; the new rowids, in order."""
    ids: list[int] = []
    width = columns.count(",") + 1
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start:start + _ROWS_PER_INSERT]
        placeholders = ",".join([f"({','.join('?' * width)})"] * len(chunk))
        cur = db.conn.execute(f"INSERT INTO {table} ({columns}) VALUES {placeholders}",
                              [value for row in chunk for value in row])
        ids.extend(_inserted_ids(cur))
    return ids


def _inserted_ids(cur: sqlite3.Cursor) -> range:
    """The rowids the INSERT just run on ``cur`` gave its rows, in order: one statement
    holds the write lock, and SQLite gives each row the table's largest rowid plus one."""
    last = int(cur.lastrowid or 0)
    return range(last - cur.rowcount + 1, last + 1) if cur.rowcount > 0 else range(0)


def _extra_fields(event: Event) -> str | None:
    """The raw fields worth keeping: an event's or unknown type's details (EventKey ...).

    A known message type is fully described by its columns and ``texts``.
    """
    if event.msg_type in MESSAGE_TYPES:
        return None
    return strings_json(event.fields)


def strings_json(values: Mapping[str, str]) -> str:
    """``json.dumps(dict(values), ensure_ascii=False)`` for a mapping of strings (an
    event's texts and fields), in a third of its time: every push stores one."""
    try:
        return "{" + ", ".join([f"{_quote(key)}: {_quote(value)}"
                                for key, value in values.items()]) + "}"
    except TypeError:  # a value that is not a string: not a push's
        return _JSON.encode(dict(values))


_ACTION_COLUMNS = ("openid, kind, rule_id, reason, source, event_id, status, created_at,"
                   " updated_at, expires_at")
# A queued blacklist that absorbs a new one takes the stronger end of the two.
_EXTEND_ABSORBING = "UPDATE actions SET expires_at = ?, updated_at = ? WHERE id = ?"


def enqueue_actions(db: Database, actions: list[tuple[Action, int | None, bool]], now: int
                    ) -> None:
    """Queue a batch's rule actions ``(action, event_id, dry_run)`` as
    :func:`enqueue_action` would one by one, in four statements at most for the usual case.

    The follower's queued rows and recorded state are read for the whole batch at once,
    the new rows go in one INSERT and the ends of absorbing rows in one more (a spammer's
    messages before the first blacklist goes out are absorbed, one each). An action whose
    plan writes before it decides (cancel, reset), or a follower with several actions in
    the batch, takes the one-by-one path, which reads after every write.
    """
    if not actions:
        return
    counts: dict[str, int] = {}
    for action, _, _ in actions:
        counts[action.openid] = counts.get(action.openid, 0) + 1
    modes = {dry_run for _, _, dry_run in actions}
    alone = [item for item in actions if counts[item[0].openid] == 1
             and is_valid_openid(item[0].openid)] if len(modes) == 1 else []
    singles = {item[0].openid for item in alone}
    for action, event_id, dry_run in actions:  # in order: a follower's actions see each other
        if action.openid not in singles:
            enqueue_action(db, action, now, event_id=event_id, dry_run=dry_run)
    if alone:
        _enqueue_alone(db, alone, modes.pop(), now)


def _enqueue_alone(db: Database, alone: list[tuple[Action, int | None, bool]],
                   dry_run: bool, now: int) -> None:
    """The batched path of :func:`enqueue_actions`: one action per follower, one mode."""
    openids = [item[0].openid for item in alone]
    marks = ",".join("?" * len(openids))
    queued: dict[str, list[Queued]] = {}
    for openid, *row in db.conn.execute(
            f"SELECT openid, id, kind, status, attempts, expires_at FROM actions WHERE openid"
            f" IN ({marks}) AND status IN (?, ?) ORDER BY id",
            [*openids, *active_statuses(dry_run)]):
        queued.setdefault(openid, []).append(Queued(*row))
    states = {openid: (status, expires) for openid, status, expires in db.conn.execute(
        f"SELECT openid, status, expires_at FROM blacklist WHERE openid IN ({marks})",
        openids)}
    rows, extended = [], []
    for action, event_id, _ in alone:
        kind = ActionKind(action.kind)
        plan = plan_enqueue(kind, action.expires_at, queued.get(action.openid, []),
                            dry_run=dry_run, source="rule")
        if plan.cancel or plan.reset_end:
            enqueue_action(db, action, now, event_id=event_id, dry_run=dry_run)
            continue
        if plan.absorb_into is not None:
            if plan.extend:
                extended.append((plan.absorbed_end, now, plan.absorb_into))
            continue
        if plan.check_state:
            check = against_state(states.get(action.openid), kind, action.expires_at,
                                  cancelled_one=False)
            if check.set_end:
                db.execute("UPDATE blacklist SET expires_at = ?, updated_at = ? WHERE"
                           " openid = ?", [check.end, now, action.openid])
            if check.needless:
                continue
        rows.append((action.openid, str(kind), action.rule_id, action.reason, "rule",
                     event_id, queued_status(dry_run), now, now, action.expires_at))
    _insert_many(db, "actions", _ACTION_COLUMNS, rows)
    if extended:  # even with no rows, executemany prepares the statement
        db.conn.executemany(_EXTEND_ABSORBING, extended)


def enqueue_action(db: Database, action: Action, now: int, *, event_id: int | None = None,
                   source: str = "rule", dry_run: bool = False) -> int | None:
    """Queue one API action, collapsing it against what is already queued or applied.

    :func:`bot.core.outbox.plan_enqueue` and :func:`~bot.core.outbox.against_state`
    decide (the last word wins, a permanent blacklist outranks a timed one); this
    reads the follower's rows for them and writes what they decide. In dry-run the
    row is written as ``dry_run``: a would-be action, never claimed, never sent.
    Returns the new outbox row id, or None when nothing needed queueing.
    """
    kind = ActionKind(action.kind)
    if not is_valid_openid(action.openid):
        log.warning("not queueing %s for malformed OpenID %r", kind, action.openid[:64])
        return None
    queued = [Queued(*row) for row in db.execute(
        "SELECT id, kind, status, attempts, expires_at FROM actions WHERE openid = ?"
        " AND status IN (?, ?) ORDER BY id", [action.openid, *active_statuses(dry_run)],
    ).fetchall()]
    plan = plan_enqueue(kind, action.expires_at, queued, dry_run=dry_run, source=source)
    _cancel(db, plan, action, kind, now)
    if plan.absorb_into is not None:
        if plan.extend:
            db.execute(_EXTEND_ABSORBING, [plan.absorbed_end, now, plan.absorb_into])
        return None
    if plan.check_state and _needless(db, action, kind, now, bool(plan.cancel)):
        return None
    cur = db.execute(
        "INSERT INTO actions (openid, kind, rule_id, reason, source, event_id, status,"
        " created_at, updated_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        [action.openid, str(kind), action.rule_id, action.reason, source, event_id,
         queued_status(dry_run), now, now, action.expires_at],
    )
    return cur.lastrowid


def _cancel(db: Database, plan: EnqueuePlan, action: Action, kind: ActionKind, now: int
            ) -> None:
    """Cancel the unsent opposites the plan names; a cancelled unblacklist hands the
    blacklist in force the new one's end."""
    for row_id in plan.cancel:
        db.execute("UPDATE actions SET status = 'cancelled', updated_at = ?, errmsg = ?"
                   " WHERE id = ?", [now, f"superseded by {kind}", row_id])
    if plan.reset_end:
        db.execute("UPDATE blacklist SET expires_at = ?, updated_at = ? WHERE openid = ?"
                   " AND status = 'blacklisted'", [action.expires_at, now, action.openid])


def _needless(db: Database, action: Action, kind: ActionKind, now: int,
              cancelled_one: bool) -> bool:
    """Ask :func:`~bot.core.outbox.against_state` with the follower's recorded state,
    and record the extended end it may set."""
    row = db.execute("SELECT status, expires_at FROM blacklist WHERE openid = ?",
                     [action.openid]).fetchone()
    check = against_state(tuple(row) if row else None, kind, action.expires_at,
                          cancelled_one=cancelled_one)
    if check.set_end:
        db.execute("UPDATE blacklist SET expires_at = ?, updated_at = ? WHERE openid = ?",
                   [check.end, now, action.openid])
    return check.needless


def row_to_event(row: sqlite3.Row | tuple[Any, ...], columns: Sequence[str]) -> Event:
    """Rebuild an :class:`Event` from an ``events`` row (for replay and ``why``)."""
    data = dict(zip(columns, row, strict=True))
    return Event(
        openid=data["openid"], account=data["account"], create_time=data["create_time"],
        msg_type=data["msg_type"], event=data["event"], msg_id=data["msg_id"],
        texts=MappingProxyType(json.loads(data["texts"] or "{}")),
        fields=MappingProxyType(json.loads(data["fields"] or "{}")),
    )


def iter_events(db: Database, since: int = 0) -> Iterator[tuple[int, Event]]:
    """Yield ``(event_id, Event)`` for stored events received at or after ``since``."""
    cur = db.execute("SELECT * FROM events WHERE received_at >= ? ORDER BY id", [since])
    columns = [d[0] for d in cur.description]
    for row in cur:
        yield row[0], row_to_event(row, columns)


def purge_content(db: Database, before: int, limit: int = 5000, *, now: float | None = None
                  ) -> int:
    """Drop followers' words from what is older than ``before``; return rows changed.

    Message content goes, and so do the excerpts that rule evidence and action
    reasons quote (``... at 3-8: "..."`` becomes ``... at 3-8: [purged]``); which
    rule fired, where and why stays. At most ``limit`` rows of each table, so that
    one call never holds the writer (and so every push) for long: call it again
    while it returns ``limit`` or more. ``now`` (default: the clock) tells a row stamped
    by a wrong clock, over a day ahead of it.
    """
    now = time.time() if now is None else now
    events = _due(db, "events", "received_at", "purged", before=before, limit=limit, now=now)
    db.conn.executemany("UPDATE events SET texts = NULL, fields = NULL, purged = 1"
                        " WHERE id = ?", [(row_id,) for row_id, _ in events])
    changed = len(events)
    for table, column in (("decisions", "evidence"), ("actions", "reason")):
        rows = _due(db, table, "created_at", column, before=before, limit=limit, now=now)
        db.conn.executemany(f"UPDATE {table} SET {column} = ? WHERE id = ?",
                            [(redact_quotes(text), row_id) for row_id, text in rows])
        changed += len(rows)
    # Who is blacklisted now: a few rows; only reasons that quote a follower change (an
    # admin's own quotes stay, and are not counted: the caller loops while rows change).
    rows = db.execute("SELECT openid, reason FROM blacklist WHERE since < ? AND reason LIKE ?",
                      [before, '%at %: "%']).fetchall()
    redacted = [(new, openid) for openid, reason in rows
                if (new := redact_quotes(reason)) != reason]
    db.conn.executemany("UPDATE blacklist SET reason = ? WHERE openid = ?", redacted)
    return changed + len(redacted)


def _due(db: Database, table: str, stamp: str, column: str, *, before: int, limit: int,
         now: float) -> list[tuple[int, Any]]:
    """Up to ``limit`` ``(id, column)`` of ``table`` stamped before ``before``, walking
    ids from where the last purge of it stopped (kept in ``kv``), and moving that mark.

    Ids grow with time, so no index is needed (one would cost every push) and rows
    purged once are never read again.
    """
    key = kv.PURGE_PREFIX + table
    mark = kv.get(db, key)
    rows = db.execute(f"SELECT id, {stamp}, {column} FROM {table} WHERE id > ? ORDER BY id"
                      f" LIMIT ?", [int(mark) if mark else 0, limit]).fetchall()
    # A row stamped over a day ahead came from a wrong clock: waiting for its date would
    # hold every row behind it, so it goes now.
    future = int(now) + 86400
    due = list(itertools.takewhile(lambda row: row[1] < before or row[1] > future, rows))
    if due:
        kv.put(db, key, str(due[-1][0]), before)
    return [(row[0], row[2]) for row in due]


# An excerpt as Evidence.describe() quotes it: JSON-escaped after "at START-END: ". A
# reason cut at its length limit may end inside the quote.
_QUOTED = re.compile(r'(at \d+-\d+: )"(?:[^"\\]|\\.)*(?:"|\\?$)')


def redact_quotes(text: str) -> str:
    """``text`` with every quoted excerpt of a follower's words replaced by [purged]."""
    return _QUOTED.sub(r"\1[purged]", text)


def pending_count(db: Database) -> int:
    """How many outbox actions wait to be sent (pending or being sent)."""
    row = db.execute(
        "SELECT COUNT(*) FROM actions WHERE status IN ('pending', 'sending')"
    ).fetchone()
    return int(row[0])
