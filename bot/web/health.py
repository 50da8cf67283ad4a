"""/healthz and /metrics: the service's state as JSON, and the Prometheus exposition."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bot.metrics import CONTENT_TYPE_LATEST, Metrics

_SEVERITY = {"ok": 0, "degraded": 1, "down": 2}


def worsen(state: dict[str, Any], status: str) -> None:
    """Raise the health status to ``status``, never lower it (down stays down: 503)."""
    if _SEVERITY[status] > _SEVERITY[state["status"]]:
        state["status"] = status


async def healthz(health: Callable[[], Awaitable[dict[str, Any]]]) -> web.Response:
    """/healthz: 200 with the service's state as JSON (503 when the store is down)."""
    state = await health()
    status = 200 if state.get("status") != "down" else 503
    return web.Response(status=status, text=json.dumps(state, ensure_ascii=False),
                        content_type="application/json")


def metrics_response(metrics: Metrics) -> web.Response:
    """/metrics: the Prometheus text exposition."""
    response = web.Response(body=metrics.render())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
