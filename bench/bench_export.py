"""Export 1,000,000 OpenIDs from the fake WeChat API (in its own process): time and peak RSS.

Usage: .venv/bin/python bench/bench_export.py [COUNT] [PAGE_SIZE]
"""

from __future__ import annotations

import asyncio
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.config import build_config  # noqa: E402
from bot.jobs.export import Progress  # noqa: E402
from bot.services import build_services  # noqa: E402
from bot.storage.sqlite.store import Store  # noqa: E402

SERVER = """
import asyncio, sys
from tests.fake_wechat import FakeWeChat, make_openids, start_fake
async def main():
    fake = FakeWeChat(page_size=int(sys.argv[2]))
    fake.blacklist.update(make_openids(int(sys.argv[1])))
    fake._ordered()
    await start_fake(fake)
    print(fake.base_url, fake.appid, fake.secret, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def probe_store(store: Store, waits: list[float]) -> None:
    """What a push would feel: a tiny write through the same Store while exporting."""
    while True:
        started = time.perf_counter()
        await store.call(lambda db: db.execute(
            "INSERT INTO kv (key, value, updated_at) VALUES ('probe', '', 0) ON CONFLICT(key)"
            " DO UPDATE SET updated_at = updated_at + 1"))
        waits.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def bench(count: int, page_size: int) -> None:
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, str(count), str(page_size), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE)
    assert server.stdout is not None
    base_url, appid, secret = (await server.stdout.readline()).decode().split()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = build_config({
                "wechat": {"appid": appid, "secret": secret, "api_base": base_url},
                "storage": {"path": str(Path(tmp) / "bot.db")},
                "export": {"dir": str(Path(tmp) / "exports")}})
            async with build_services(config, api_timeout=60) as services:
                store = services.storage.store
                before = rss_mb()
                pages: list[Progress] = []
                exporter = services.exporter(on_page=pages.append)
                waits: list[float] = []
                probe = asyncio.create_task(probe_store(store, waits))
                started = time.perf_counter()
                result = await exporter.run()
                elapsed = time.perf_counter() - started
                # The next night: the same list again, now diffed against the first snapshot.
                tomorrow = services.exporter(clock=lambda: time.time() + 86400)
                started = time.perf_counter()
                second = await tomorrow.run()
                elapsed_diff = time.perf_counter() - started
                probe.cancel()
            size = result.paths["csv"].stat().st_size
            db = sum(p.stat().st_size for p in Path(tmp).glob("bot.db*"))
            print(f"{count} OpenIDs, page size {page_size}: {result.progress.pages} pages in "
                  f"{elapsed:.1f}s; peak RSS {rss_mb():.0f} MB (before export {before:.0f} MB); "
                  f"CSV {size / 1e6:.1f} MB; DB+WAL {db / 1e6:.0f} MB; end: "
                  f"{result.progress.end}")
            waits.sort()
            print(f"a concurrent one-row commit every 10 ms waited p50 "
                  f"{waits[len(waits) // 2] * 1000:.1f} ms, p99 "
                  f"{waits[int(len(waits) * 0.99)] * 1000:.1f} ms, max {waits[-1] * 1000:.1f} ms"
                  f" ({len(waits)} commits)")
            print(f"next day, diffed against it: {elapsed_diff:.1f}s (added "
                  f"{second.report.added}, removed {second.report.removed})")
    finally:
        server.terminate()
        await server.wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    asyncio.run(bench(n, size))
