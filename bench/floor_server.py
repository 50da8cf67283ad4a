"""The architecture's floor: aiohttp plus the real store committing every push.

No signature, no XML parsing, no rules, no retry memory, no metrics: each request
is read, committed through the service's Recorder (the store's writer thread and group
commit the service uses, same schema, same ``synchronous``) and answered after its
COMMIT. What the bench shows between this line and the bare handler is what
durable storage off the event loop costs; what it shows between this line and the
webhook is what the per-push work of the service costs.

Usage: floor_server.py PORT DB_PATH [full|normal]
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time

from aiohttp import web

from bot.config import build_config
from bot.core.models import NO_DECISION, Event
from bot.services import Services, build_services


def build(services: Services) -> web.Application:
    """The app: one POST route that commits a push per request, and /healthz."""
    sequence = itertools.count()
    recorder = services.storage.recorder

    async def push(request: web.Request) -> web.Response:
        await request.read()
        number = next(sequence)
        event = Event(openid=f"oFloor{number % 50_000:022d}", account="gh_bench",
                      create_time=int(time.time()), msg_type="text", msg_id=str(number),
                      texts={"content": "floor"})
        await recorder.record(event, NO_DECISION)
        return web.Response(text="success")

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def lifetime(_app: web.Application):  # type: ignore[no-untyped-def]
        await services.storage.start()
        yield
        await services.storage.close()

    app = web.Application()
    app.router.add_post("/wechat", push)
    app.router.add_get("/healthz", health)
    app.cleanup_ctx.append(lifetime)
    return app


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    synchronous = sys.argv[3] if len(sys.argv) > 3 else "full"
    try:
        import uvloop
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    sys.setswitchinterval(0.001)  # as `serve` sets it
    config = build_config({"storage": {"path": path, "synchronous": synchronous}})
    web.run_app(build(build_services(config)), host="127.0.0.1", port=port,
                access_log=None, print=None)


if __name__ == "__main__":
    main()
