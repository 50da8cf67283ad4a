"""Command line: parse arguments, call the library, map errors to exit codes."""

from __future__ import annotations

import argparse
import importlib
import logging
import sqlite3
import sys
from collections.abc import Sequence

from bot.commands import add_config_option
from bot.config import load_config
from bot.core.errors import BotError, ConfigError
from bot.core.timefmt import ZoneFormatter

# Each module defines register(subparsers); a handler is set with
# parser.set_defaults(handler=fn) and called as fn(args, config) -> exit code.
COMMAND_MODULES = (
    "bot.commands.serve",
    "bot.commands.rules",
    "bot.commands.why",
    "bot.commands.decisions",
    "bot.commands.blacklist",
    "bot.commands.export",
    "bot.commands.learn",
    "bot.commands.admin",
)

EXIT_FAILED, EXIT_CONFIG = 1, 2
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
__all__ = ["COMMAND_MODULES", "add_config_option", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, every command with its help text."""
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description="Moderation service for WeChat Official Accounts.",
    )
    # Accepted before the command too (``python -m bot --config F rules check``); the one
    # after the command, the contract's place, wins when both are given.
    parser.add_argument("--config", dest="config_before", metavar="PATH", default=None,
                        help="configuration file, as each command's --config")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command group still being written
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def configure_logging(level: str, timezone: str) -> None:
    """Stamp log lines in ``export.timezone`` with the offset, as every other time the
    operators read; keep APScheduler's per-run INFO lines ("Running job ...") out."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in root.handlers:  # ours from basicConfig, not a test runner's capture
        if getattr(handler, "stream", None) is sys.stderr:
            handler.setFormatter(ZoneFormatter(LOG_FORMAT, timezone))
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def config_path(args: argparse.Namespace) -> str | None:
    """``--config`` after the command, else before it, else None (env or ./config.yaml)."""
    return getattr(args, "config", None) or getattr(args, "config_before", None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (2 for a configuration error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    try:
        # a command that needs no config (making the admin.password hash) gets None
        config = load_config(config_path(args)) \
            if getattr(args, "needs_config", True) else None
        if config is not None:
            configure_logging(config.logging.level, config.export.timezone)
        return int(args.handler(args, config))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except sqlite3.OperationalError as exc:  # e.g. the database stayed locked too long
        print(f"database error: {exc} ({config_path(args) or 'config.yaml'})",
              file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # a path in the config that cannot be used, the port taken, ...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
