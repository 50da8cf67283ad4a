"""export.notify_url: https only, public addresses only unless allowed, no redirects followed.

Checked when the config is loaded (the URL's form and what its host resolves to) and
again when the summary is sent (the addresses the connection would use).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.config import build_config
from bot.core.errors import ConfigError
from bot.jobs.export_files import notify
from tests.tls import make_tls

KEY = "ROBOTKEY123"


@dataclass
class Robot:
    port: int
    client_ssl: Any
    received: list[str] = field(default_factory=list)

    def url(self, host: str, path: str = "/send") -> str:
        return f"https://{host}:{self.port}{path}?key={KEY}"


@pytest.fixture
async def robot(tmp_path: Path) -> AsyncIterator[Robot]:
    server_ssl, client_ssl = make_tls(tmp_path)
    state = Robot(0, client_ssl)

    async def send(request: web.Request) -> web.Response:
        state.received.append(request.path)
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def redirect(request: web.Request) -> web.Response:
        state.received.append(request.path)
        raise web.HTTPFound(f"/send?key={KEY}")

    app = web.Application()
    app.router.add_post("/send", send)
    app.router.add_post("/redirect", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl)
    await site.start()
    state.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield state
    finally:
        await runner.cleanup()


def _config(url: str, **export: Any) -> Any:
    return build_config({"export": {"notify_url": url, **export}}, "c.yaml")


@pytest.mark.parametrize("url", [
    "http://8.8.8.8/cgi-bin/webhook/send?key=K",
    "ftp://8.8.8.8/x",
    "https:///nohost",
    "https://user:pw@8.8.8.8/x",
    "https://127.0.0.1/x",
    "https://localhost/x",  # a name: judged by what it resolves to
    "https://10.0.0.5/x",
    "https://192.168.1.1/x",
    "https://169.254.169.254/latest/meta-data",
    "https://100.64.0.1/x",
    "https://[::1]/x",
    "https://[::ffff:127.0.0.1]/x",
    "https://[fe80::1]/x",
    "https://0.0.0.0/x",
    "https://8.8.8.8:99999/x",
])
def test_config_refuses_a_notify_url_that_is_not_public_https(url: str) -> None:
    with pytest.raises(ConfigError, match="'export.notify_url'") as info:
        _config(url)
    assert "key=" not in str(info.value), "the URL (and the robot's key) is not echoed"


def test_config_accepts_public_https_and_private_only_when_allowed() -> None:
    assert _config("https://8.8.8.8/cgi-bin/webhook/send?key=K").export.notify_url
    assert _config("https://127.0.0.1:8443/x", notify_allow_private=True).export.notify_url
    with pytest.raises(ConfigError, match="https"):
        _config("http://127.0.0.1/x", notify_allow_private=True)  # https all the same


async def test_send_time_refuses_loopback_by_address_and_by_name(
        robot: Robot, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    for host in ("127.0.0.1", "localhost"):
        assert await notify(robot.url(host), "x", ssl_context=robot.client_ssl) is False
    assert robot.received == [], "a refused target is never connected to"
    assert "non-public" in caplog.text
    assert KEY not in caplog.text, "the robot's key is never logged"


async def test_send_time_allowed_private_posts_but_follows_no_redirect(
        robot: Robot, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    ok = await notify(robot.url("localhost"), "x", allow_private=True,
                      ssl_context=robot.client_ssl)
    assert ok is True and robot.received == ["/send"]
    redirected = await notify(robot.url("127.0.0.1", "/redirect"), "x", allow_private=True,
                              ssl_context=robot.client_ssl)
    assert redirected is False
    assert robot.received == ["/send", "/redirect"], "the redirect was not followed"
    assert "redirect" in caplog.text and KEY not in caplog.text


async def test_send_time_refuses_plain_http(robot: Robot) -> None:
    url = robot.url("127.0.0.1").replace("https://", "http://")
    assert await notify(url, "x", allow_private=True) is False
    assert robot.received == []
