"""Blacklist snapshots in SQLite: staging, swap, keyset scans for diff and reconciliation.

Every function takes the sqlite-utils ``Database`` and runs inside the caller's
transaction (``Store.call`` or ``run_sync``); each touches at most one chunk of rows, so
the service's writer thread is never held for long by a 1,000,000-entry snapshot.
"""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from bot.storage.ports import SnapshotRow
from bot.storage.sqlite import kv

# Staged and superseded snapshots live under these day prefixes until swapped or purged,
# so a failed export never touches the day's complete snapshot.
STAGING_PREFIX = "staging:"
REPLACED_PREFIX = "replaced:"
# The run a same-day export replaced: what that day's report compares with.
EARLIER_PREFIX = "earlier:"


_COLUMNS = "id, day, taken_at, total, complete, csv_path, report_path"


def _row(row: Any) -> SnapshotRow | None:
    if row is None:
        return None
    day = row[1].removeprefix(EARLIER_PREFIX)  # an earlier run of the day reads as that day
    return SnapshotRow(row[0], day, row[2], row[3], bool(row[4]), row[5], row[6])


# ---------------------------------------------------------------- staging and swap


def create_staging(db: Database, day: str, taken_at: int, token: str) -> int:
    """A new, incomplete snapshot row for ``day``; its entries are added page by page."""
    cur = db.execute(
        "INSERT INTO snapshots (day, taken_at, total, complete) VALUES (?, ?, 0, 0)",
        [f"{STAGING_PREFIX}{day}:{token}", taken_at],
    )
    return int(cur.lastrowid or 0)


def add_entries(db: Database, snapshot_id: int, openids: list[str]) -> int:
    """Add a page of OpenIDs (duplicates ignored); return how many were new."""
    before = db.conn.total_changes
    db.conn.executemany(
        "INSERT OR IGNORE INTO snapshot_entries (snapshot_id, openid) VALUES (?, ?)",
        [(snapshot_id, o) for o in openids],
    )
    return db.conn.total_changes - before


def promote(db: Database, snapshot_id: int, day: str, total: int, replaced_token: str
            ) -> int | None:
    """Make a staged snapshot the day's complete one; return the id of a snapshot that
    is no longer needed (the caller deletes it), if any.

    A snapshot the day already had is kept as the day's earlier run: the new report
    compares with it (the run before), not with the previous day. Only the latest
    earlier run is kept; the one it supersedes is returned for deletion.
    """
    old = db.execute("SELECT id FROM snapshots WHERE day = ?", [day]).fetchone()
    if old is None:
        db.execute("UPDATE snapshots SET day = ?, total = ?, complete = 1 WHERE id = ?",
                   [day, total, snapshot_id])
        return None
    older = db.execute("SELECT id FROM snapshots WHERE day = ?",
                       [f"{EARLIER_PREFIX}{day}"]).fetchone()
    if older is not None:  # named for purge_leftovers, should the caller crash
        db.execute("UPDATE snapshots SET day = ? WHERE id = ?",
                   [f"{REPLACED_PREFIX}{day}:{replaced_token}", older[0]])
    db.execute("UPDATE snapshots SET day = ? WHERE id = ?", [f"{EARLIER_PREFIX}{day}", old[0]])
    db.execute("UPDATE snapshots SET day = ?, total = ?, complete = 1 WHERE id = ?",
               [day, total, snapshot_id])
    return int(older[0]) if older is not None else None


def set_paths(db: Database, snapshot_id: int, csv_path: str, report_path: str) -> None:
    """Record where the snapshot's CSV and report were written."""
    db.execute("UPDATE snapshots SET csv_path = ?, report_path = ? WHERE id = ?",
               [csv_path, report_path, snapshot_id])


def delete_entries_chunk(db: Database, snapshot_id: int, limit: int) -> int:
    """Delete up to ``limit`` entries of a snapshot; return how many went."""
    edge = db.execute(
        "SELECT openid FROM snapshot_entries WHERE snapshot_id = ? ORDER BY openid"
        " LIMIT 1 OFFSET ?", [snapshot_id, limit - 1],
    ).fetchone()
    if edge is None:
        cur = db.execute("DELETE FROM snapshot_entries WHERE snapshot_id = ?", [snapshot_id])
    else:
        cur = db.execute("DELETE FROM snapshot_entries WHERE snapshot_id = ? AND openid <= ?",
                         [snapshot_id, edge[0]])
    return int(cur.rowcount)


def delete_snapshot_row(db: Database, snapshot_id: int) -> None:
    """Delete a snapshot row whose entries are already gone."""
    db.execute("DELETE FROM snapshots WHERE id = ?", [snapshot_id])


def leftovers(db: Database) -> list[int]:
    """Staged or replaced snapshots a crash or an earlier run left behind."""
    rows = db.execute(
        "SELECT id FROM snapshots WHERE day LIKE ? OR day LIKE ? ORDER BY id",
        [STAGING_PREFIX + "%", REPLACED_PREFIX + "%"],
    ).fetchall()
    return [r[0] for r in rows]


# ---------------------------------------------------------------- lookups


def get_snapshot(db: Database, day: str) -> SnapshotRow | None:
    """The complete snapshot of ``day`` (YYYY-MM-DD), if any."""
    return _row(db.execute(f"SELECT {_COLUMNS} FROM snapshots WHERE day = ? AND complete = 1",
                           [day]).fetchone())


def previous_snapshot(db: Database, day: str) -> SnapshotRow | None:
    """What ``day``'s snapshot is compared to: the run it replaced that same day (its
    ``day`` is then ``day``), else the latest complete snapshot of a day before."""
    earlier = _row(db.execute(f"SELECT {_COLUMNS} FROM snapshots WHERE day = ? AND"
                              " complete = 1", [f"{EARLIER_PREFIX}{day}"]).fetchone())
    return earlier or _row(db.execute(
        f"SELECT {_COLUMNS} FROM snapshots WHERE complete = 1 AND day < ? AND day GLOB"
        " '[0-9]*' ORDER BY day DESC LIMIT 1", [day]).fetchone())


def latest_day(db: Database) -> str | None:
    """The day of the newest complete snapshot."""
    row = db.execute("SELECT MAX(day) FROM snapshots WHERE complete = 1 AND day GLOB '[0-9]*'"
                     ).fetchone()
    return row[0] if row else None


def prunable(db: Database, before_day: str, keep: int = 2) -> list[int]:
    """Complete snapshots older than ``before_day`` whose entries may go.

    The ``keep`` newest complete snapshots keep theirs whatever their age: the next
    export compares against them. A day's earlier run goes with the day's files.
    """
    rows = db.execute(
        "SELECT id FROM snapshots WHERE complete = 1 AND day < ? AND day GLOB '[0-9]*'"
        " AND id NOT IN (SELECT id FROM snapshots WHERE complete = 1 AND day GLOB '[0-9]*'"
        " ORDER BY day DESC LIMIT ?) AND EXISTS (SELECT 1 FROM snapshot_entries e"
        " WHERE e.snapshot_id = snapshots.id)"
        " UNION SELECT id FROM snapshots WHERE day GLOB ? AND substr(day, ?) < ?"
        " AND EXISTS (SELECT 1 FROM snapshot_entries e WHERE e.snapshot_id = snapshots.id)",
        [before_day, keep, f"{EARLIER_PREFIX}*", len(EARLIER_PREFIX) + 1, before_day],
    ).fetchall()
    return [r[0] for r in rows]


def has_entries(db: Database, snapshot_id: int) -> bool:
    """False once retention pruned a snapshot's entries (or it was empty)."""
    return db.execute("SELECT 1 FROM snapshot_entries WHERE snapshot_id = ? LIMIT 1",
                      [snapshot_id]).fetchone() is not None


def entries_chunk(db: Database, snapshot_id: int, after: str, limit: int) -> list[str]:
    """The next ``limit`` OpenIDs of a snapshot after ``after``, in order (keyset paging)."""
    rows = db.execute(
        "SELECT openid FROM snapshot_entries WHERE snapshot_id = ? AND openid > ?"
        " ORDER BY openid LIMIT ?", [snapshot_id, after, limit],
    ).fetchall()
    return [r[0] for r in rows]


# ---------------------------------------------------------------- keyset scans

# Each scan walks a driving set in OpenID order, ``limit`` rows a call, and flags the rows
# that are findings. Parameters: (*scan params, after, limit).
SCANS: dict[str, str] = {
    # In snapshot ?1, not in snapshot ?2.
    "missing_from": (
        "SELECT n.openid, NOT EXISTS (SELECT 1 FROM snapshot_entries p WHERE"
        " p.snapshot_id = ? AND p.openid = n.openid) FROM snapshot_entries n"
        " WHERE n.snapshot_id = ? AND n.openid > ? ORDER BY n.openid LIMIT ?"
    ),
    # On the platform, but we never blacklisted them (or we removed them), and our row did
    # not change while the export ran (taken_at ?2).
    "hand_added": (
        "SELECT n.openid, NOT EXISTS (SELECT 1 FROM blacklist b WHERE b.openid = n.openid"
        " AND (b.status = 'blacklisted' OR b.updated_at >= ?)) FROM snapshot_entries n"
        " WHERE n.snapshot_id = ? AND n.openid > ? ORDER BY n.openid LIMIT ?"
    ),
    # We blacklisted them before the export started, yet the platform does not list them.
    "hand_removed": (
        "SELECT b.openid, NOT EXISTS (SELECT 1 FROM snapshot_entries n WHERE"
        " n.snapshot_id = ? AND n.openid = b.openid) FROM blacklist b"
        " WHERE b.status = 'blacklisted' AND b.updated_at < ? AND b.openid > ?"
        " ORDER BY b.openid LIMIT ?"
    ),
}


def scan_chunk(db: Database, scan: str, params: list[Any], after: str, limit: int
               ) -> tuple[str | None, list[str]]:
    """One chunk of a scan: the last key seen (None at the end) and the flagged OpenIDs."""
    rows = db.execute(SCANS[scan], [*params, after, limit]).fetchall()
    if not rows:
        return None, []
    return rows[-1][0], [r[0] for r in rows if r[1]]


def unreflected_actions(db: Database, snapshot_id: int, sample: int) -> tuple[int, list[dict]]:
    """Our queued or failed actions the platform does not show (count, first ``sample``).

    A pending/sending/failed blacklist whose follower is absent from the snapshot, or such
    an unblacklist whose follower is still in it. Superseded rows are not counted.
    """
    where = (
        " FROM actions a WHERE a.status IN ('pending', 'sending', 'failed')"
        " AND a.kind IN ('blacklist', 'unblacklist')"
        " AND a.id = (SELECT MAX(id) FROM actions x WHERE x.openid = a.openid"
        "   AND x.kind IN ('blacklist', 'unblacklist'))"
        " AND (a.kind = 'blacklist') = NOT EXISTS (SELECT 1 FROM snapshot_entries n"
        "   WHERE n.snapshot_id = ? AND n.openid = a.openid)"
    )
    count = db.execute("SELECT COUNT(*)" + where, [snapshot_id]).fetchone()[0]
    rows = db.execute(
        "SELECT a.openid, a.kind, a.status, a.errcode, a.errmsg" + where
        + " ORDER BY a.id LIMIT ?", [snapshot_id, sample],
    ).fetchall()
    keys = ("openid", "kind", "status", "errcode", "errmsg")
    return int(count), [dict(zip(keys, r, strict=True)) for r in rows]


# ---------------------------------------------------------------- activity for the report


def action_counts(db: Database, since: int, until: int) -> list[tuple[str, str, int]]:
    """Settled actions in the window: (kind, status, count)."""
    return [tuple(r) for r in db.execute(  # type: ignore[misc]
        "SELECT kind, status, COUNT(*) FROM actions WHERE updated_at >= ? AND updated_at < ?"
        " AND status IN ('done', 'failed', 'dry_run', 'skipped') GROUP BY kind, status"
        " ORDER BY kind, status", [since, until]).fetchall()]


def action_failures(db: Database, since: int, until: int, limit: int = 20
                    ) -> list[tuple[str, int | None, str, int]]:
    """Failed actions in the window grouped by errcode: (kind, errcode, errmsg, count)."""
    return [tuple(r) for r in db.execute(  # type: ignore[misc]
        "SELECT kind, errcode, COALESCE(MAX(errmsg), ''), COUNT(*) FROM actions"
        " WHERE status = 'failed' AND updated_at >= ? AND updated_at < ?"
        " GROUP BY kind, errcode ORDER BY COUNT(*) DESC LIMIT ?", [since, until, limit]
    ).fetchall()]


def failed_actions(db: Database, since: int, until: int, limit: int = 50
                   ) -> list[tuple[str, str, int | None, str]]:
    """Actions that failed for good in the window: (kind, openid, errcode, errmsg), the
    first ``limit`` by id, for the report to name who was not actioned."""
    return [tuple(r) for r in db.execute(  # type: ignore[misc]
        "SELECT kind, openid, errcode, COALESCE(errmsg, '') FROM actions WHERE status ="
        " 'failed' AND updated_at >= ? AND updated_at < ? ORDER BY id LIMIT ?",
        [since, until, limit]).fetchall()]


def rule_hits(db: Database, since: int, until: int) -> list[tuple[str, str, int]]:
    """Decisions in the window per rule: (rule_id, action, count), most hits first."""
    return [tuple(r) for r in db.execute(  # type: ignore[misc]
        "SELECT rule_id, action, COUNT(*) FROM decisions WHERE created_at >= ?"
        " AND created_at < ? GROUP BY rule_id, action ORDER BY COUNT(*) DESC, rule_id",
        [since, until]).fetchall()]


def decisions_per_hour(db: Database, until: int, hours: int = 24) -> list[int]:
    """Decisions in each of the ``hours`` hours before ``until``, oldest first."""
    since = until - hours * 3600
    counts = [0] * hours
    for bucket, n in db.execute(
        "SELECT (created_at - ?) / 3600, COUNT(*) FROM decisions WHERE created_at >= ?"
        " AND created_at < ? GROUP BY 1", [since, since, until]).fetchall():
        if 0 <= bucket < hours:
            counts[int(bucket)] = int(n)
    return counts


# ---------------------------------------------------------------- kv: last run and lock


def read_last_run(db: Database) -> float | None:
    """When the last export finished successfully (unix seconds), if ever."""
    value = kv.get(db, kv.LAST_RUN_KEY)
    try:
        return float(json.loads(value)["at"]) if value is not None else None
    except (ValueError, KeyError, TypeError):
        return None


def write_last_run(db: Database, at: float, day: str) -> None:
    """Remember a successful export (the scheduler's catch-up check reads it)."""
    kv.put(db, kv.LAST_RUN_KEY, json.dumps({"at": at, "day": day}), int(at))


def acquire_lock(db: Database, owner: str, now: float, ttl: float) -> str | None:
    """Take (or refresh) the export lock; return the other holder's name when it is held.

    The row expires ``ttl`` seconds after its last refresh, so a crashed holder frees it.
    """
    value = kv.get(db, kv.LOCK_KEY)
    if value is not None:
        held = json.loads(value)
        if held.get("owner") != owner and float(held.get("until", 0)) > now:
            return str(held.get("owner"))
    kv.put(db, kv.LOCK_KEY, json.dumps({"owner": owner, "until": now + ttl}), int(now))
    return None


def release_lock(db: Database, owner: str) -> None:
    """Drop the export lock if ``owner`` holds it."""
    value = kv.get(db, kv.LOCK_KEY)
    if value is not None and json.loads(value).get("owner") == owner:
        kv.delete(db, kv.LOCK_KEY)

