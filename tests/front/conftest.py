"""The push front's tests run on asyncio's loop and on uvloop, which ``serve`` runs on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import uvloop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item
                                  ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Both loops for every test in this folder: their transports hand a connection
    over to aiohttp (``set_protocol``) each its own way."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
