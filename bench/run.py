"""`make bench`: the webhook beside a bare aiohttp handler and WeRoBot, then the other benches.

Starts each server as its own process on a free loopback port, drives it with
bench/loadgen.py (another process: concurrency 32, signed plain-mode text pushes,
thousands of distinct OpenIDs, distinct MsgIds) and prints msgs/s, p50/p99 and the
server's **CPU microseconds per push** (its process CPU time over the measured window,
every thread, divided by the pushes answered in it). On this shared machine every
figure drifts with the host's load, CPU per push included (the same code measured
120-250 us a push within one hour): each server runs ``--rounds`` times, interleaved,
and the table shows medians and the median same-round ratio to the bare handler.

``--profile`` (``make bench PROFILE=1``) adds a profiled run of the service and a table
of where a push's CPU goes, stage by stage. ``--before DIR`` serves a checkout of the
code before a change (e.g. ``git archive main | tar -x -C DIR``) beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "benchtoken"
WEROBOT_VENV = Path(tempfile.gettempdir()) / "bench-werobot-venv"
# Targets of issue 12, for the service with the default rules (classifier included).
CPU_TARGET_US, P99_TARGET_MS, WEROBOT_RATIO = 130.0, 15.0, 3.0
ISSUE_BARE_US = 47.0  # the bare handler's CPU a request when the issue set 130
# The same service and rules with no two texts alike: the engine's memory of recent
# texts never helps (the other lines repeat five texts, as greetings and adverts do).
DISTINCT = "  ... every text distinct"
AIOHTTP_ONLY = "  ... push_front: false"  # the same service, every request through aiohttp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    """Until /healthz answers and, when rules use the classifier, a model is in force
    (a first start trains the seed model: the load must not race it). A server whose
    /healthz is no JSON, or an HTTP error, is up once it answers at all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                body = r.read()
        except urllib.error.HTTPError:
            return
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


def drive(port: int, args: argparse.Namespace, token: str, pid: int, distinct: bool = False
          ) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "loadgen.py"), "--port", str(port),
         "--token", token, "--seconds", str(args.seconds), "--warmup", str(args.warmup),
         "--concurrency", str(args.concurrency), "--msgid-base", str(int(time.time()) * 1000),
         "--pid", str(pid), *(["--distinct"] if distinct else [])],
        check=True, capture_output=True, text=True, cwd=ROOT,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def worker_pid(proc: subprocess.Popen[bytes]) -> int:
    """The process serving requests: a pre-forking master's only child, else itself."""
    try:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    except OSError:
        return proc.pid
    return int(children[0]) if len(children) == 1 else proc.pid


def run_server(cmd: list[str], port: int, args: argparse.Namespace, token: str, *,
               pythonpath: Path = ROOT, cwd: Path = ROOT, before_load: object = None,
               distinct: bool = False) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "BENCH_TOKEN": TOKEN}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_ready(port, proc)
        if callable(before_load):
            before_load(proc)
        result = drive(port, args, token, worker_pid(proc), distinct)
        result["per_commit"] = group_commit_size(port)
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def group_commit_size(port: int) -> float:
    """Calls per group commit over the run, from the service's /metrics (0: not a
    service, or no commit)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode("utf-8", "replace")
    except OSError:  # the bare handlers and WeRoBot have no /metrics
        return 0.0
    values = dict(line.split(" ", 1) for line in text.splitlines()
                  if line.startswith(("bot_store_commits_total ",
                                      "bot_store_committed_calls_total ")))
    commits = float(values.get("bot_store_commits_total", 0))
    return float(values.get("bot_store_committed_calls_total", 0)) / commits if commits else 0.0


def write_config(workdir: Path, port: int, synchronous: str = "full",
                 rules_dir: Path = ROOT / "rules", push_front: bool = True) -> Path:
    config = workdir / "config.yaml"
    config.write_text(
        f"wechat:\n  token: {TOKEN}\n"
        f"server:\n  host: 127.0.0.1\n  port: {port}\n"
        + ("" if push_front else "  push_front: false\n")  # older checkouts lack the key
        + f"storage:\n  path: {workdir / 'bench.db'}\n  synchronous: {synchronous}\n"
        f"rules:\n  dir: {rules_dir}\n"
        f"actions:\n  dry_run: true\n"
        f"export:\n  dir: {workdir / 'exports'}\n"
        f"logging:\n  level: WARNING\n",
        encoding="utf-8",
    )
    return config


def werobot_python() -> Path | None:
    """A Python with WeRoBot and gunicorn: a scratch venv, made on first use."""
    python = WEROBOT_VENV / "bin" / "python"
    if not (WEROBOT_VENV / ".ready").exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(WEROBOT_VENV)], check=True,
                           capture_output=True, timeout=120)
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", "werobot",
                            "gunicorn"], check=True, capture_output=True, timeout=600)
        except (subprocess.SubprocessError, OSError) as exc:
            print(f"WeRoBot line skipped: cannot install WeRoBot + gunicorn in "
                  f"{WEROBOT_VENV} ({exc.__class__.__name__})")
            shutil.rmtree(WEROBOT_VENV, ignore_errors=True)
            return None
        (WEROBOT_VENV / ".ready").touch()
    return python


def served(name: str, work: Path, args: argparse.Namespace, rules_dir: Path, *,
           code: Path = ROOT, distinct: bool = False, push_front: bool = True
           ) -> tuple[str, dict[str, float]]:
    """The service (``python -m bot serve``) of the checkout ``code`` on ``rules_dir``."""
    workdir = work / name.replace(" ", "_").replace(",", "")
    workdir.mkdir()
    port = free_port()
    config = write_config(workdir, port, args.synchronous, rules_dir, push_front)
    return name, run_server([sys.executable, "-m", "bot", "serve", "--config", str(config)],
                            port, args, TOKEN, pythonpath=code, cwd=code, distinct=distinct)


def bench_webhook(args: argparse.Namespace) -> None:
    """Each server its own process, one after another under the same load, in
    ``--rounds`` rounds; each line reports its median round (this VM's speed drifts
    by half within minutes: a line measured once says more about when it ran)."""
    rounds: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        werobot = werobot_python() if not args.no_werobot else None
        for number in range(args.rounds):
            round_dir = work / f"round{number}"
            round_dir.mkdir()
            for name, result in one_round(round_dir, args, werobot):
                rounds.setdefault(name, []).append(result)
            print(f"round {number + 1} of {args.rounds} done", flush=True)
        results = [(name, median_round(runs)) for name, runs in rounds.items()]
        report(results, args, rounds)
        if args.profile:
            from stages import print_stages  # bench/stages.py, beside this script

            print_stages(*profile_run(work, args), unprofiled=dict(results)[DISTINCT])


def one_round(work: Path, args: argparse.Namespace, werobot: Path | None
              ) -> list[tuple[str, dict[str, float]]]:
    """Every server once: the ceiling, the floor, the service (and the code before)."""
    results: list[tuple[str, dict[str, float]]] = []
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
    results.append(served("bot webhook, no rules", work, args, no_rules))
    before = Path(args.before).resolve() if args.before else None
    if before is not None:
        results.append(served("before: default rules", work, args, before / "rules",
                              code=before))
    results.append(served("bot webhook, default rules", work, args, ROOT / "rules"))
    results.append(served(AIOHTTP_ONLY, work, args, ROOT / "rules", push_front=False))
    if before is not None:
        results.append(served("before: distinct texts", work, args, before / "rules",
                              code=before, distinct=True))
    results.append(served(DISTINCT, work, args, ROOT / "rules", distinct=True))
    if werobot is not None:
        port = free_port()
        results.append(("WeRoBot, gunicorn 1 sync", run_server(
            [str(werobot), "-m", "gunicorn", "-w", "1", "-k", "sync", "-b",
             f"127.0.0.1:{port}", "--chdir", str(ROOT / "bench"), "werobot_app:app"],
            port, args, TOKEN)))
    return results


def median_round(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median CPU a push (its other figures with it: they belong
    together); the median throughput when no CPU was measured."""
    key = "cpu_us" if all("cpu_us" in run for run in runs) else "rps"
    return sorted(runs, key=lambda run: run.get(key, 0.0))[len(runs) // 2]


def profile_run(work: Path, args: argparse.Namespace) -> tuple[Path, dict[str, float]]:
    """The service with the default rules under cProfile, every text distinct (the
    engine's whole work, none of it remembered); the stats file and its load."""
    workdir = work / "profiled"
    workdir.mkdir()
    port = free_port()
    config = write_config(workdir, port, args.synchronous, ROOT / "rules")
    stats = workdir / "serve.prof"
    result = run_server(
        [sys.executable, str(ROOT / "bench" / "profiled_serve.py"), str(stats), "--",
         "serve", "--config", str(config)], port, args, TOKEN,
        before_load=lambda proc: os.kill(proc.pid, signal.SIGUSR1), distinct=True)
    deadline = time.monotonic() + 30
    while not (stats.with_suffix(".prof.json")).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return stats, result


def paired(rounds: dict[str, list[dict[str, float]]], name: str, other: str, key: str
           ) -> float:
    """The median over rounds of ``name``'s ``key`` over ``other``'s in the same round:
    ratios of lines measured minutes apart drift less than their figures."""
    ratios = sorted(a.get(key, 0.0) / b[key] for a, b in
                    zip(rounds.get(name, []), rounds.get(other, []), strict=False)
                    if b.get(key))
    return ratios[len(ratios) // 2] if ratios else 0.0


def report(results: list[tuple[str, dict[str, float]]], args: argparse.Namespace,
           rounds: dict[str, list[dict[str, float]]]) -> None:
    by_name = dict(results)
    bare = "bare aiohttp (ceiling)"
    print(f"\nwebhook bench: {args.concurrency} connections, {args.seconds:.0f} s after "
          f"{args.warmup:.0f} s warm-up, signed plain-mode text pushes, "
          f"storage.synchronous={args.synchronous}; median of {args.rounds} interleaved "
          f"rounds (x bare: median of the same-round ratios)")
    print(f"{'server':<30}{'msgs/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'errors':>8}{'CPU us/push':>13}{'loop us':>9}{'CPU x bare':>12}{'rps x bare':>12}"
          f"{'/commit':>9}")
    for name, result in results:
        print(f"{name:<30}{result['rps']:>9.0f}{result['p50_ms']:>9.2f}"
              f"{result['p99_ms']:>9.2f}{result.get('max_ms', 0.0):>9.1f}"
              f"{result['errors']:>8.0f}{result.get('cpu_us', 0.0):>13.1f}"
              f"{result.get('loop_us', 0.0):>9.1f}"
              f"{paired(rounds, name, bare, 'cpu_us'):>12.2f}"
              f"{paired(rounds, name, bare, 'rps'):>12.2f}"
              + (f"{result['per_commit']:>9.1f}" if result.get("per_commit") else ""))
    for label, name in (("repeated texts", "bot webhook, default rules"),
                        ("distinct texts", DISTINCT)):
        line = by_name[name]
        times_bare = paired(rounds, name, bare, "cpu_us")
        # Judged against the bare handler of the same round: the issue set 130 us when
        # its bare handler took 47, and this VM's absolute figures halve or double.
        print(f"target CPU <= {CPU_TARGET_US:.0f} us/push (default rules + classifier), "
              f"{label}: {'met' if 0 < times_bare <= CPU_TARGET_US / ISSUE_BARE_US else 'NOT met'}"
              f" ({times_bare:.2f}x bare, target {CPU_TARGET_US / ISSUE_BARE_US:.2f}x = 130 us"
              f" over the issue's bare 47 us; {line.get('cpu_us', 0.0):.1f} us in this run)")
        print(f"target p99 < {P99_TARGET_MS:.0f} ms at c={args.concurrency}, {label}: "
              f"{'met' if line['p99_ms'] < P99_TARGET_MS else 'NOT met'} "
              f"({line['p99_ms']:.2f} ms)")
    for label, name, before in (("repeated texts", "bot webhook, default rules",
                                 "before: default rules"),
                                ("distinct texts", DISTINCT, "before: distinct texts")):
        if before in by_name:
            print(f"throughput vs before, {label}: {paired(rounds, name, before, 'rps'):.2f}x "
                  f"msgs/s, {1 / (paired(rounds, name, before, 'cpu_us') or 1):.2f}x less CPU "
                  f"a push (target 2x)")
    werobot = "WeRoBot, gunicorn 1 sync"
    if werobot in by_name:
        ratio = paired(rounds, "bot webhook, default rules", werobot, "rps")
        print(f"throughput vs WeRoBot: {ratio:.2f}x msgs/s (target {WEROBOT_RATIO:g}x: "
              f"{'met' if ratio >= WEROBOT_RATIO else 'NOT met'}), "
              f"{1 / (paired(rounds, 'bot webhook, default rules', werobot, 'cpu_us') or 1):.2f}"
              f"x less CPU a push")
    print("CPU us/push: the server process's CPU time (all threads, user + system) over the "
          "measured window / pushes answered; the load generator runs in its own process. "
          "loop us: the main thread's part (the event loop's; the rest is the store's writer "
          "and checkpoint threads). /commit: pushes (and other store calls) per group "
          "commit over the run, from the service's /metrics.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3,
                        help="servers run this many times each, interleaved; medians shown")
    parser.add_argument("--only", choices=["webhook", "engine", "export", "classifier",
                                           "replicas"],
                        default=None)
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full",
                        help="storage.synchronous of the served config")
    parser.add_argument("--profile", action="store_true",
                        help="add a profiled run of the service and its stage table")
    parser.add_argument("--before", default=None,
                        help="a checkout of the code before a change, served beside it")
    parser.add_argument("--no-werobot", action="store_true", help="skip the WeRoBot line")
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
