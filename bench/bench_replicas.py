"""2 replicas of ``bot serve`` on one PostgreSQL against 1 on SQLite, same load, same run.

A throwaway PostgreSQL (tests/pgserver.py: Debian's binaries, a temp dir, fsync on as
in production) serves both replicas; each replica gets half the connections from its
own bench/loadgen.py process. Default rules, dry-run (no WeChat API). Reported: pushes
per second, p50/p99 latency, and CPU microseconds per push of the replicas and of
PostgreSQL, read from /proc over the measured window. Every process shares one small
machine, so the CPU per push is the figure to compare, not the throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import TOKEN, free_port, wait_ready  # noqa: E402
from tests.pgserver import PostgresServer, available  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (those still running)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def postgres_pids(server: PostgresServer) -> list[int]:
    """The postmaster and its children (one backend per connection)."""
    master = int((server.data / "postmaster.pid").read_text().split()[0])
    pids = [master]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == master:
                pids.append(int(entry.name))
    return pids


def write_config(workdir: Path, port: int, storage: str) -> Path:
    config = workdir / f"config-{port}.yaml"
    config.write_text(
        f"wechat:\n  token: {TOKEN}\n"
        f"server:\n  host: 127.0.0.1\n  port: {port}\n"
        f"storage:\n{storage}"
        f"rules:\n  dir: {ROOT / 'rules'}\n"
        f"actions:\n  dry_run: true\n"
        f"export:\n  dir: {workdir / 'exports'}\n"
        f"logging:\n  level: WARNING\n", encoding="utf-8")
    return config


def measure(configs: list[Path], ports: list[int], args: argparse.Namespace,
            server: PostgresServer | None) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "bot", "serve", "--config", str(c)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for c in configs]
    try:
        for port, proc in zip(ports, procs, strict=True):
            wait_ready(port, proc)
        per = max(1, args.concurrency // len(ports))
        drivers = [subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "loadgen.py"), "--port", str(port),
             "--token", TOKEN, "--seconds", str(args.seconds), "--warmup", str(args.warmup),
             "--concurrency", str(per),
             "--msgid-base", str(int(time.time()) * 1000 + i * 10**12)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True) for i, port in enumerate(ports)]
        time.sleep(args.warmup)
        pids = [p.pid for p in procs]
        pg = postgres_pids(server) if server is not None else []
        bot_cpu, pg_cpu = cpu_seconds(pids), cpu_seconds(pg)
        outs = [d.communicate()[0] for d in drivers]
        bot_cpu, pg_cpu = cpu_seconds(pids) - bot_cpu, cpu_seconds(pg) - pg_cpu
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    results = [json.loads(out.strip().splitlines()[-1]) for out in outs]
    requests = sum(r["requests"] for r in results)
    return {"rps": requests / args.seconds, "requests": requests,
            "errors": sum(r["errors"] for r in results),
            "p50_ms": max(r["p50_ms"] for r in results),
            "p99_ms": max(r["p99_ms"] for r in results),
            "bot_us": bot_cpu * 1e6 / requests if requests else 0.0,
            "pg_us": pg_cpu * 1e6 / requests if requests else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    if not available():
        print("replicas bench skipped: PostgreSQL binaries not installed")
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        sqlite = measure([write_config(work, port, f"  path: {work / 'bench.db'}\n")],
                         [port], args, None)
        server = PostgresServer(durable=True).start()
        try:
            dsn = server.dsn()
            ports = [free_port(), free_port()]
            configs = [write_config(work, p, f"  backend: postgres\n  dsn: \"{dsn}\"\n")
                       for p in ports]
            postgres = measure(configs, ports, args, server)
        finally:
            server.stop()
    print(f"replicas bench: {args.concurrency} connections in all, {args.seconds:.0f} s after "
          f"{args.warmup:.0f} s warm-up, default rules, dry-run")
    print(f"{'setup':<34}{'msgs/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
          f"{'bot us/msg':>12}{'pg us/msg':>11}")
    for name, r in (("1 replica, SQLite", sqlite), ("2 replicas, one PostgreSQL", postgres)):
        print(f"{name:<34}{r['rps']:>9.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
              f"{r['errors']:>8.0f}{r['bot_us']:>12.0f}{r['pg_us']:>11.0f}")
    ratio = postgres["rps"] / sqlite["rps"] if sqlite["rps"] else 0.0
    cost = ((postgres["bot_us"] + postgres["pg_us"]) / sqlite["bot_us"]
            if sqlite["bot_us"] else 0.0)
    print(f"2 x PostgreSQL vs 1 x SQLite: throughput x{ratio:.2f}, CPU per push x{cost:.2f}"
          " (replicas + database, same machine)")


if __name__ == "__main__":
    main()
