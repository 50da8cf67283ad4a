"""Closed-loop HTTP load generator for the webhook bench: keep-alive, N connections.

Runs in its own process so it does not share the server's core. Prints one JSON line:
requests, errors, seconds, rps, p50_ms, p99_ms, and with ``--pid`` the server process's
CPU seconds over the measured window (user + system, every thread, from /proc) and
``cpu_us`` per request: what a push costs, whatever else the machine is doing; and
``loop_us``, the main thread's share (the event loop's; the rest is the store's writer
and checkpoint threads).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time
from collections.abc import Iterator
from urllib.parse import urlencode

TEXTS = [
    "你好，请问今天的活动几点开始？",
    "想咨询一下会员卡的积分规则，谢谢",
    "加微信 abc12345 领取福利",
    "这个文章写得真好，转发给朋友了",
    "What time does the store open tomorrow?",
]


# The ten heavenly stems: a number written with them makes a text unique without
# looking like a phone or QQ number (which digits would, to the contact detectors).
_STEMS = "甲乙丙丁戊己庚辛壬癸"


def distinct_tag(number: int) -> str:
    return "".join(_STEMS[int(digit)] for digit in str(number))


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].lower()
        start = head.find(b"content-length:")
        length = int(head[start + 15:head.find(b"\r\n", start) if head.find(b"\r\n", start) > 0
                          else len(head)]) if start >= 0 else 0
        if len(self.buffer) < end + 4 + length:
            return
        status = int(self.buffer[9:12])
        if b"\r\nconnection: close" in head:
            self.closed = True  # reconnect before the next request
        self.buffer = self.buffer[end + 4 + length:]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))


def make_request(host: str, port: int, target: str, body: bytes) -> bytes:
    return (f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: text/xml\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def cpu_seconds(stat_file: str) -> float:
    """CPU seconds (user + system) used so far by what a ``/proc`` stat file describes:
    ``/proc/PID/stat`` a process, all its threads; ``/proc/PID/task/TID/stat`` a thread."""
    with open(stat_file, "rb") as stat:
        # the command name (field 2) may hold spaces: count fields after its ')'
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sample_cpu(pid: int, at: float, into: list[tuple[float, float]]) -> None:
    """Read ``pid``'s CPU time, and its main thread's (the event loop's, in the
    service), at perf_counter ``at`` (the window's edges)."""
    await asyncio.sleep(max(0.0, at - time.perf_counter()))
    into.append((cpu_seconds(f"/proc/{pid}/stat"), cpu_seconds(f"/proc/{pid}/task/{pid}/stat")))


async def worker(index: int, args: argparse.Namespace, target: str, *, deadline: float,
                 warmup_end: float, latencies: list[float], counters: dict[str, int],
                 msg_ids: Iterator[int]) -> None:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(Connection, args.host, args.port)
    seq = 0
    while time.perf_counter() < deadline:
        seq += 1
        openid = f"oBench{(index * 7919 + seq) % args.openids:022d}"
        msg_id = next(msg_ids)  # one sequence for every connection, as WeChat's ids grow
        text = TEXTS[seq % len(TEXTS)]
        if args.distinct:  # no two pushes alike: nothing the service remembers helps
            text = f"{text}（{distinct_tag(index * 10_000_000 + seq)}）"
        body = (
            "<xml><ToUserName><![CDATA[gh_bench]]></ToUserName>"
            f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{text}]]></Content><MsgId>{msg_id}</MsgId></xml>"
        ).encode()
        started = time.perf_counter()
        if conn.closed:  # a server without keep-alive (gunicorn's sync worker) closed it
            _, conn = await loop.create_connection(Connection, args.host, args.port)
        conn.waiter = loop.create_future()
        assert conn.transport is not None
        conn.transport.write(make_request(args.host, args.port, target, body))
        status = await conn.waiter
        finished = time.perf_counter()
        counters["total"] += 1
        if finished < warmup_end or finished > deadline:
            continue
        if status != 200:
            counters["errors"] += 1
        latencies.append(finished - started)
    assert conn.transport is not None
    conn.transport.close()


async def main_async(args: argparse.Namespace) -> dict[str, float]:
    query = ""
    if args.token:
        from bot.wechat.push import sign

        ts = str(int(time.time()))
        query = "?" + urlencode({"signature": sign(args.token, ts, "benchnonce"),
                                 "timestamp": ts, "nonce": "benchnonce"})
    target = args.path + query
    start = time.perf_counter()
    warmup_end = start + args.warmup
    deadline = warmup_end + args.seconds
    latencies: list[float] = []
    counters = {"errors": 0, "total": 0}
    cpu: list[tuple[float, float]] = []
    msg_ids = itertools.count(args.msgid_base)
    samplers = [sample_cpu(args.pid, at, cpu) for at in (warmup_end, deadline)] \
        if args.pid else []
    await asyncio.gather(*samplers, *(worker(
        i, args, target, deadline=deadline, warmup_end=warmup_end, latencies=latencies,
        counters=counters, msg_ids=msg_ids) for i in range(args.concurrency)))
    latencies.sort()
    count = len(latencies)
    out = {
        "requests": count, "errors": counters["errors"], "seconds": args.seconds,
        "total_requests": counters["total"],
        "rps": count / args.seconds,
        "p50_ms": latencies[count // 2] * 1000 if count else 0.0,
        "p99_ms": latencies[int(count * 0.99)] * 1000 if count else 0.0,
        "max_ms": latencies[-1] * 1000 if count else 0.0,
    }
    if len(cpu) == 2:
        (first, first_loop), (last, last_loop) = cpu
        out["cpu_s"] = last - first
        out["cpu_us"] = (last - first) / count * 1e6 if count else 0.0
        out["loop_us"] = (last_loop - first_loop) / count * 1e6 if count else 0.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/wechat")
    parser.add_argument("--token", default="")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--openids", type=int, default=50_000)
    parser.add_argument("--msgid-base", type=int, default=0,
                        help="the first MsgId; every connection draws from one sequence")
    parser.add_argument("--distinct", action="store_true",
                        help="make every text distinct (a number in CJK stems appended); "
                        "by default five texts repeat, as greetings and adverts do")
    parser.add_argument("--pid", type=int, default=0,
                        help="server process whose CPU time to measure over the window")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(main_async(args))))


if __name__ == "__main__":
    main()
