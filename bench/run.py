"""`make bench`: the webhook against a bare aiohttp handler, then the other benches.

Starts each server as its own process on a free loopback port, drives it with
bench/loadgen.py (another process: concurrency 32, signed plain-mode text pushes,
thousands of distinct OpenIDs, distinct MsgIds) and prints msgs/s, p50/p99, ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "benchtoken"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Until /healthz answers and, when rules use the classifier, a model is in force
    (a first start trains the seed model: the load must not race it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                body = r.read()
        except OSError:
            time.sleep(0.2)
            continue
        try:
            health = json.loads(body)
        except ValueError:  # the bare handlers answer anything: up is ready
            return
        if not isinstance(health, dict) or not health.get("uses_classifier") \
                or health.get("model") is not None:
            return
        time.sleep(0.2)
    raise RuntimeError("server did not become ready")


def drive(port: int, args: argparse.Namespace, token: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "loadgen.py"), "--port", str(port),
         "--token", token, "--seconds", str(args.seconds), "--warmup", str(args.warmup),
         "--concurrency", str(args.concurrency), "--msgid-base", str(int(time.time()) * 1000)],
        check=True, capture_output=True, text=True, cwd=ROOT,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run_server(cmd: list[str], port: int, args: argparse.Namespace, token: str
               ) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_ready(port, proc)
        return drive(port, args, token)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def write_config(workdir: Path, port: int, synchronous: str = "full",
                 rules_dir: Path = ROOT / "rules") -> Path:
    config = workdir / "config.yaml"
    config.write_text(
        f"wechat:\n  token: {TOKEN}\n"
        f"server:\n  host: 127.0.0.1\n  port: {port}\n"
        f"storage:\n  path: {workdir / 'bench.db'}\n  synchronous: {synchronous}\n"
        f"rules:\n  dir: {rules_dir}\n"
        f"actions:\n  dry_run: true\n"
        f"export:\n  dir: {workdir / 'exports'}\n"
        f"logging:\n  level: WARNING\n",
        encoding="utf-8",
    )
    return config


def bench_webhook(args: argparse.Namespace) -> None:
    """Four servers, each its own process, one after another under the same load.

    Between the bare handler and the webhook sit two stages that show where the
    time goes: the floor (aiohttp plus the real store, nothing else) and the real
    webhook with no rules loaded (signature, parsing, retry memory, metrics, store).
    """
    results: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        results.append(("bare aiohttp (ceiling)", run_server(
            [sys.executable, str(ROOT / "bench" / "bare_server.py"), str(port)],
            port, args, "")))
        port = free_port()
        results.append(("aiohttp + store (floor)", run_server(
            [sys.executable, str(ROOT / "bench" / "floor_server.py"), str(port),
             str(work / "floor.db"), args.synchronous], port, args, "")))
        no_rules = work / "no-rules"
        no_rules.mkdir()
        for name, rules_dir in (("bot webhook, no rules", no_rules),
                                ("bot webhook, default rules", ROOT / "rules")):
            served = work / name.replace(" ", "_").replace(",", "")
            served.mkdir()
            port = free_port()
            config = write_config(served, port, args.synchronous, rules_dir)
            results.append((name, run_server(
                [sys.executable, "-m", "bot", "serve", "--config", str(config)],
                port, args, TOKEN)))
    bare = results[0][1]["rps"]
    print(f"\nwebhook bench: {args.concurrency} connections, {args.seconds:.0f} s after "
          f"{args.warmup:.0f} s warm-up, signed plain-mode text pushes, "
          f"storage.synchronous={args.synchronous}")
    print(f"{'server':<30}{'msgs/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}"
          f"{'vs bare':>9}{'us/msg':>9}")
    for name, result in results:
        rps = result["rps"]
        print(f"{name:<30}{rps:>10.0f}{result['p50_ms']:>10.2f}{result['p99_ms']:>10.2f}"
              f"{result['errors']:>8.0f}{rps / bare if bare else 0.0:>9.2f}"
              f"{1e6 / rps if rps else 0.0:>9.1f}")
    real = results[-1][1]
    ratio = real["rps"] / bare if bare else 0.0
    verdict = "met" if ratio >= 0.6 and real["p99_ms"] < 10 else "NOT met"
    print(f"target (default rules): ratio >= 0.6 and p99 < 10 ms: {verdict} "
          f"(ratio {ratio:.2f}, p99 {real['p99_ms']:.2f} ms)")
    print("us/msg is wall time per message at saturation: one server process, one core.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--only", choices=["webhook", "engine", "export", "classifier",
                                           "replicas"],
                        default=None)
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full",
                        help="storage.synchronous of the served config")
    args = parser.parse_args()
    if args.only in (None, "webhook"):
        bench_webhook(args)
    for name in ("engine", "classifier", "export", "replicas"):
        script = ROOT / "bench" / f"bench_{name}.py"
        if args.only in (None, name) and script.exists():
            print(f"\n--- bench/bench_{name}.py ---", flush=True)
            subprocess.run([sys.executable, str(script)], check=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})


if __name__ == "__main__":
    main()
