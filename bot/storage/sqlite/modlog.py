"""The mod log: stored decisions, newest first, with the text each was about."""

from __future__ import annotations

from sqlite_utils import Database

from bot.storage.ports import ModLogEntry


def mod_log(db: Database, *, since: int, rule_id: str | None = None,
            action: str | None = None, limit: int = 50) -> list[ModLogEntry]:
    """Decisions created at or after ``since``, newest first, optionally of one rule or
    one action (``decisions_created`` serves the range)."""
    sql = ("SELECT d.created_at, d.openid, d.rule_id, d.action, d.evidence, e.texts"
           " FROM decisions d LEFT JOIN events e ON e.id = d.event_id"
           " WHERE d.created_at >= ?")
    params: list[object] = [since]
    if rule_id is not None:
        sql += " AND d.rule_id = ?"
        params.append(rule_id)
    if action is not None:
        sql += " AND d.action = ?"
        params.append(action)
    sql += " ORDER BY d.created_at DESC, d.id DESC LIMIT ?"
    params.append(limit)
    return [ModLogEntry(*row) for row in db.execute(sql, params).fetchall()]
