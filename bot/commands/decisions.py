"""``decisions``: the mod log in the terminal, newest first."""

from __future__ import annotations

import argparse
import json
import time

from bot.commands import add_config_option
from bot.config import Config
from bot.core.errors import BotError
from bot.core.models import ActionKind
from bot.core.timefmt import when
from bot.rules import parse_duration
from bot.services import admin_store
from bot.storage.ports import ModLogEntry

EXCERPT = 40


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``decisions`` command."""
    parser = sub.add_parser(
        "decisions", help="the mod log: recent rule hits, newest first",
        description="Every decision recorded (one line per rule hit): when, the follower, "
                    "the rule, the action, the text and the evidence.")
    parser.add_argument("--since", default="1d",
                        help="how far back, e.g. 30m, 1h, 7d (default 1d)")
    parser.add_argument("--rule", default=None, metavar="ID", help="only this rule's hits")
    parser.add_argument("--action", default=None, choices=[str(k) for k in ActionKind],
                        help="only hits that took this action")
    parser.add_argument("--limit", type=int, default=50, help="at most N lines (50)")
    add_config_option(parser)
    parser.set_defaults(handler=run)


def excerpt(texts: str | None, limit: int = EXCERPT) -> str:
    """The follower's words (first text field) on one line, cut at ``limit`` characters."""
    if not texts:
        return "-"
    try:
        fields = json.loads(texts)
    except ValueError:
        return "-"
    text = " ".join(str(next(iter(fields.values()), "")).split()) if fields else ""
    return (text[:limit] + "…" if len(text) > limit else text) or "-"


def line(entry: ModLogEntry, timezone: str) -> str:
    """One mod log line."""
    return (f"{when(entry.created_at, timezone)}  {entry.action:<11} {entry.rule_id:<22} "
            f"{entry.openid}  {excerpt(entry.texts)!s}  [{entry.evidence}]")


def run(args: argparse.Namespace, config: Config) -> int:
    """Print the mod log; exit 0 (1 when nothing matches)."""
    seconds = parse_duration(args.since)
    if seconds is None:
        raise BotError(f"--since {args.since!r}: expected a duration such as 30m, 1h or 7d")
    if args.limit < 1:
        raise BotError("--limit must be at least 1")
    since = int(time.time()) - seconds
    entries = admin_store(config).mod_log(since=since, rule_id=args.rule, action=args.action,
                                          limit=args.limit)
    timezone = config.export.timezone
    wanted = " ".join(f for f in (f"rule {args.rule}" if args.rule else "",
                                  f"action {args.action}" if args.action else "") if f)
    print(f"decisions since {when(since, timezone)} ({timezone})"
          f"{f', {wanted}' if wanted else ''}: {len(entries)} shown, newest first")
    for entry in entries:
        print(line(entry, timezone))
    return 0 if entries else 1
