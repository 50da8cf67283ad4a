"""``why OPENID``: every decision, action and blacklist state we hold about a follower."""

from __future__ import annotations

import argparse
import time
from typing import Any

from bot.commands import add_config_option
from bot.config import Config
from bot.core.errors import describe_error
from bot.core.timefmt import when, when_long
from bot.core.wording import plural
from bot.services import admin_store
from bot.storage.ports import FollowerHistory


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``why`` command."""
    parser = sub.add_parser("why", help="show every decision about a follower and why",
                            description="List the rule hits, actions and blacklist state "
                                        "recorded for one OpenID.")
    parser.add_argument("openid", help="the follower's OpenID")
    parser.add_argument("--limit", type=int, default=50, help="most recent N decisions (50)")
    add_config_option(parser)
    parser.set_defaults(handler=run)


def explain(history: FollowerHistory, timezone: str, now: float) -> list[str]:
    """Human-readable lines: blacklist state (and what is queued), then decisions and
    actions, newest first."""
    if not history.seen:
        return ["never seen: no push, decision or action is recorded for this OpenID "
                "(OpenIDs differ per Official Account: is it this account's?)"]
    lines = [_state_line(history, timezone)]
    lines += [_queued_line(row, history, timezone, now) for row in history.queued]
    count, first, last = history.pushes
    lines.append(f"pushes: {plural(count, 'push', 'pushes')}" + (
        f", first {when(first, timezone)}, last {when(last, timezone)}" if count else
        " received from this follower"))
    if not history.decisions:
        lines.append("decisions: none, no rule ever fired for this follower")
    else:
        lines.append(f"decisions ({len(history.decisions)} shown):")
    for created, rule_id, action, evidence, msg_type, event in history.decisions:
        kind = f"{msg_type}/{event}" if event else (msg_type or "cli")
        stamp = when(created, timezone)
        lines.append(f"  {stamp}  {action:<11} {rule_id:<20} [{kind}] {evidence}")
    if history.actions:
        lines.append(f"actions ({len(history.actions)} shown):")
    for created, kind, status, source, rule_id, errcode, errmsg in history.actions:
        error = f" {describe_error(errcode, errmsg or '')}" if errcode is not None or \
            (errmsg and status in ("failed", "pending")) else ""
        stamp = when(created, timezone)
        lines.append(f"  {stamp}  {kind:<11} {status:<9} {_via(source, rule_id)}{error}")
    return lines


def _via(source: str, rule_id: str) -> str:
    """``via cli``, ``via expiry``, ``via rule job-scam``: the rule only when it says more."""
    return f"via {source}" if not rule_id or rule_id == source else f"via {source} {rule_id}"


def _state_line(history: FollowerHistory, timezone: str) -> str:
    if history.state is None:
        return ("state: not blacklisted yet (queued, below)" if history.queued else
                "state: not blacklisted (never through this service)")
    status, rule_id, reason, since, expires = history.state
    return (f"state: {status} since {when(since, timezone)} by {rule_id or '-'}"
            f"{f' ({reason})' if reason else ''}"
            f"{f', expires {when(expires, timezone)}' if expires else ''}")


def _queued_line(row: tuple[Any, ...], history: FollowerHistory, timezone: str, now: float) -> str:
    _id, kind, status, source, rule_id, created, attempts, errcode, errmsg = row
    line = (f"queued: {kind} {_via(source, rule_id)} since {when(created, timezone)}, "
            f"{'being sent' if status == 'sending' else 'waiting to be sent'}, "
            f"{plural(attempts, 'attempt')} so far")
    if errcode is not None or errmsg:
        line += f", last {describe_error(errcode, errmsg or '')}"
    if history.paused_until > now:
        line += (f"; SENDING PAUSED until {when_long(history.paused_until, timezone)}: "
                 f"{history.paused_reason}")
    return line


def run(args: argparse.Namespace, config: Config) -> int:
    """Print the explanation; exit 0 (1 for an OpenID never seen: no push, decision or
    action)."""
    history = admin_store(config).follower_history(args.openid, args.limit)
    print(f"{args.openid}:")
    print("\n".join(explain(history, config.export.timezone, time.time())))
    return 0 if history.seen else 1
