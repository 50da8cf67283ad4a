"""CLI command groups: each module exposes ``register(subparsers)``; they parse and print."""

from __future__ import annotations

import argparse


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """Give a command the contract's ``--config PATH`` option."""
    parser.add_argument(
        "--config", metavar="PATH", default=None,
        help="configuration file (default: $BOT_CONFIG or ./config.yaml)",
    )
