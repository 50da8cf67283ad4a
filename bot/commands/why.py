"""``why OPENID``: every decision, action and blacklist state we hold about a follower."""

from __future__ import annotations

import argparse

from sqlite_utils import Database

from bot.commands import existing_db, when
from bot.config import Config
from bot.storage.sqlite.store import open_db


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``why`` command."""
    from bot.cli import add_config_option

    parser = sub.add_parser("why", help="show every decision about a follower and why",
                            description="List the rule hits, actions and blacklist state "
                                        "recorded for one OpenID.")
    parser.add_argument("openid", help="the follower's OpenID")
    parser.add_argument("--limit", type=int, default=50, help="most recent N decisions (50)")
    add_config_option(parser)
    parser.set_defaults(handler=run)


def explain(db: Database, openid: str, timezone: str, limit: int = 50) -> list[str]:
    """Human-readable lines: blacklist state, then decisions and actions, newest first."""
    lines = []
    state = db.execute("SELECT status, rule_id, reason, since, expires_at FROM blacklist"
                       " WHERE openid = ?", [openid]).fetchone()
    if state:
        status, rule_id, reason, since, expires = state
        lines.append(f"state: {status} since {when(since, timezone)} by {rule_id or '-'}"
                     f"{f' ({reason})' if reason else ''}"
                     f"{f', expires {when(expires, timezone)}' if expires else ''}")
    else:
        lines.append("state: never blacklisted through this service")
    rows = db.execute(
        "SELECT d.created_at, d.rule_id, d.action, d.evidence, e.msg_type, e.event"
        " FROM decisions d LEFT JOIN events e ON e.id = d.event_id"
        " WHERE d.openid = ? ORDER BY d.id DESC LIMIT ?", [openid, limit]).fetchall()
    lines.append(f"decisions ({len(rows)} shown):")
    for created, rule_id, action, evidence, msg_type, event in rows:
        kind = f"{msg_type}/{event}" if event else (msg_type or "cli")
        stamp = when(created, timezone)
        lines.append(f"  {stamp}  {action:<11} {rule_id:<20} [{kind}] {evidence}")
    actions = db.execute(
        "SELECT created_at, kind, status, source, rule_id, errcode, errmsg FROM actions"
        " WHERE openid = ? ORDER BY id DESC LIMIT ?", [openid, limit]).fetchall()
    lines.append(f"actions ({len(actions)} shown):")
    for created, kind, status, source, rule_id, errcode, errmsg in actions:
        error = f" errcode {errcode}: {errmsg}" if errcode is not None else ""
        stamp = when(created, timezone)
        lines.append(f"  {stamp}  {kind:<11} {status:<9} via {source} {rule_id}{error}")
    return lines


def run(args: argparse.Namespace, config: Config) -> int:
    """Print the explanation; exit 0 (1 when nothing at all is known about the follower)."""
    db = open_db(existing_db(config.storage.path, "nothing is recorded about anyone"))
    try:
        lines = explain(db, args.openid, config.export.timezone, args.limit)
        known = db.execute(
            "SELECT 1 FROM decisions WHERE openid = ? UNION ALL"
            " SELECT 1 FROM actions WHERE openid = ? LIMIT 1", [args.openid, args.openid],
        ).fetchone()
    finally:
        db.close()
    print(f"{args.openid}:")
    print("\n".join(lines))
    return 0 if known else 1
