"""The web console under /admin (off unless ``admin.password`` holds a hash)."""

from __future__ import annotations

from aiohttp import web

from bot.web.admin.console import Console, ConsoleDeps
from bot.web.admin.pages import Pages

__all__ = ["ConsoleDeps", "setup_console"]


def setup_console(app: web.Application, deps: ConsoleDeps) -> Console:
    """Add every /admin route to ``app``; all but the sign-in page need a session."""
    console = Console(deps)
    Pages(console).register(app)
    return console
