"""``admin hash-password``: make the hash that ``admin.password`` holds (the web console)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TextIO

from bot.commands import add_config_option
from bot.core.errors import BotError
from bot.core.passwords import MIN_LENGTH, hash_password


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``admin`` command group."""
    parser = sub.add_parser("admin", help="web console set-up (the /admin password)",
                            description="Set up the web console served under /admin.")
    group = parser.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    p = group.add_parser(
        "hash-password", help="read a password, print its hash for admin.password",
        description="Read the console password (asked twice on a terminal, else the first "
                    "line of stdin) and print its scrypt hash. Put the hash in admin.password"
                    " or, better, in the environment: BOT_ADMIN_PASSWORD='<hash>' (single "
                    "quotes: it contains $). The password itself is stored nowhere.")
    add_config_option(p)  # accepted like every command's; the hash needs no config
    p.set_defaults(handler=run_hash, needs_config=False)


def read_password(stdin: TextIO | None = None) -> str:
    """The password from the terminal (twice) or the first line of a piped stdin."""
    stream = stdin if stdin is not None else sys.stdin
    if stream.isatty():
        first = getpass.getpass("console password: ")
        if getpass.getpass("again: ") != first:
            raise BotError("the two passwords differ; nothing printed")
        password = first
    else:
        password = stream.readline().rstrip("\r\n")
    if len(password) < MIN_LENGTH:
        raise BotError(f"the password must have at least {MIN_LENGTH} characters")
    return password


def run_hash(_args: argparse.Namespace, _config: object) -> int:
    """Print the hash of the password read."""
    print(hash_password(read_password()))
    return 0
