"""Shared pytest fixtures: add generic, documented fixtures here (several areas use them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.config import build_config
from bot.services import build_services
from bot.storage.sqlite.store import Store
from tests.fake_wechat import FakeWeChat, start_fake


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A running Store (the database's owning thread) on a fresh SQLite file, built as
    the service builds it (:func:`bot.services.build_services`)."""
    config = build_config({"storage": {"path": str(tmp_path / "bot.db")}})
    running = build_services(config).storage.store
    await running.start()
    yield running
    await running.close()


@pytest.fixture
async def fake_wechat() -> AsyncIterator[FakeWeChat]:
    """A running fake WeChat API (see tests/fake_wechat.py) on an ephemeral 127.0.0.1 port.

    Use ``.base_url`` as ``wechat.api_base``, ``.appid``/``.secret`` as credentials;
    inspect ``.blacklist`` (a set), ``.calls`` / ``.calls_to(name)``; inject faults with
    ``.script(endpoint, errcode(-1), http_error(500), delay(s), drop(), ...)``, ``.invalid``
    (OpenIDs that fail a batch with 40003), ``.revoke_tokens()``, ``.down = True``;
    ``.page_size`` / ``.page_end`` shape getblacklist paging.
    """
    fake = FakeWeChat()
    runner = await start_fake(fake)
    try:
        yield fake
    finally:
        await runner.cleanup()
