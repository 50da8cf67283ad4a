"""``serve``: run the webhook, the batcher and the scheduler."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

from aiohttp import web

from bot.commands import add_config_option
from bot.config import Config

log = logging.getLogger("bot.serve")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``serve`` command."""
    parser = sub.add_parser("serve", help="serve the WeChat webhook (and batcher, scheduler)",
                            description="Serve the push endpoint, /healthz and /metrics.")
    add_config_option(parser)
    parser.set_defaults(handler=run)


def announce(config: Config) -> None:
    """Say at start-up what is served, where, and in which mode."""
    log.info("config: %s", config.source)
    if config.dry_run:
        log.warning("DRY-RUN: decisions are recorded but no WeChat API call is made (%s)",
                    config.dry_run_reason)
    else:
        log.info("WeChat API: %s (AppID %s)", config.wechat.api_base, config.wechat.appid)
    if not config.wechat.token:
        log.warning("wechat.token is not set: every push will be refused with 403 until it is")
    if config.wechat.encoding_aes_key:
        log.info("safe mode: encrypted pushes accepted%s",
                 " (previous EncodingAESKey still accepted)"
                 if config.wechat.previous_encoding_aes_key else "")


def listening(config: Config) -> None:
    """Once the socket is bound: only then is the service serving."""
    server = config.server
    settle_heap()
    log.info("serving WeChat pushes on http://%s:%d%s (health: /healthz, metrics: "
             "/metrics)", server.host, server.port, server.path)


# Collections of the youngest generation per allocations: at CPython's 700 a push's
# short-lived objects trigger one every few pushes, each walking every young container.
GC_THRESHOLD = (20_000, 20, 20)


def settle_heap() -> None:
    """Once started: move what start-up built (rules, automatons, the model) out of the
    collector's sight, and collect the young generation less often.

    Those objects live as long as the process; without ``gc.freeze`` every full
    collection walks them all again (one per ~100 young ones at the defaults).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def run(args: argparse.Namespace, config: Config) -> int:
    """Serve until SIGTERM/SIGINT, then drain requests and close the database."""
    try:
        import uvloop  # a dependency (not on Windows): ~15% more pushes per second
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # The store's writer thread needs the GIL back after every SQLite statement; at the
    # default 5 ms switch interval it waits behind the busy event loop. 1 ms measured
    # +9% pushes/s and a lower p99 in `make bench`.
    sys.setswitchinterval(0.001)
    announce(config)
    asyncio.run(serve(config))
    log.info("stopped")
    return 0


async def serve(config: Config) -> None:
    """Serve until SIGTERM or SIGINT; then answer the requests already read (for up to
    10 s), close every connection and run the application's cleanup."""
    from bot.app import build_app, push_site

    runner = web.AppRunner(build_app(config), access_log=None, shutdown_timeout=10.0)
    await runner.setup()
    try:
        await push_site(runner, config).start()
        listening(config)
        await _signalled()
    finally:
        await runner.cleanup()


async def _signalled() -> None:
    """Until SIGTERM or SIGINT (Ctrl-C)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
