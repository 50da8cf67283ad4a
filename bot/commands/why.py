"""``why OPENID``: every decision, action and blacklist state we hold about a follower."""

from __future__ import annotations

import argparse

from bot.commands import add_config_option
from bot.config import Config
from bot.core.timefmt import when
from bot.services import admin_store
from bot.storage.sqlite.admin import FollowerHistory


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``why`` command."""
    parser = sub.add_parser("why", help="show every decision about a follower and why",
                            description="List the rule hits, actions and blacklist state "
                                        "recorded for one OpenID.")
    parser.add_argument("openid", help="the follower's OpenID")
    parser.add_argument("--limit", type=int, default=50, help="most recent N decisions (50)")
    add_config_option(parser)
    parser.set_defaults(handler=run)


def explain(history: FollowerHistory, timezone: str) -> list[str]:
    """Human-readable lines: blacklist state, then decisions and actions, newest first."""
    lines = []
    if history.state:
        status, rule_id, reason, since, expires = history.state
        lines.append(f"state: {status} since {when(since, timezone)} by {rule_id or '-'}"
                     f"{f' ({reason})' if reason else ''}"
                     f"{f', expires {when(expires, timezone)}' if expires else ''}")
    else:
        lines.append("state: never blacklisted through this service")
    lines.append(f"decisions ({len(history.decisions)} shown):")
    for created, rule_id, action, evidence, msg_type, event in history.decisions:
        kind = f"{msg_type}/{event}" if event else (msg_type or "cli")
        stamp = when(created, timezone)
        lines.append(f"  {stamp}  {action:<11} {rule_id:<20} [{kind}] {evidence}")
    lines.append(f"actions ({len(history.actions)} shown):")
    for created, kind, status, source, rule_id, errcode, errmsg in history.actions:
        error = f" errcode {errcode}: {errmsg}" if errcode is not None else ""
        stamp = when(created, timezone)
        lines.append(f"  {stamp}  {kind:<11} {status:<9} via {source} {rule_id}{error}")
    return lines


def run(args: argparse.Namespace, config: Config) -> int:
    """Print the explanation; exit 0 (1 when nothing at all is known about the follower)."""
    history = admin_store(config).follower_history(args.openid, args.limit)
    print(f"{args.openid}:")
    print("\n".join(explain(history, config.export.timezone)))
    return 0 if history.known else 1
