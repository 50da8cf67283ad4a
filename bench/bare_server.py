"""The HTTP ceiling: a bare aiohttp handler that reads the body and answers success."""

from __future__ import annotations

import sys

from aiohttp import web


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="success")


async def handle_health(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    app = web.Application()
    app.router.add_post("/wechat", handle)
    app.router.add_get("/healthz", handle_health)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
