"""`serve` as a real process: dry-run start-up, clear logs, SIGTERM drains and closes."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

from tests.pushes import TOKEN, signed_query, text_xml

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(port: int, proc: subprocess.Popen[str], timeout: float = 20.0) -> dict:
    import json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                return dict(json.load(r))
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)  # waiting for another process to listen
    raise AssertionError("service did not become healthy")


def test_serve_dry_run_then_sigterm_drains_and_closes(tmp_path: Path) -> None:
    port = free_port()
    db_path = tmp_path / "bot.db"
    config = tmp_path / "config.yaml"
    config.write_text(
        f"wechat:\n  token: {TOKEN}\nserver:\n  host: 127.0.0.1\n  port: {port}\n"
        f"storage:\n  path: {db_path}\nrules:\n  dir: {ROOT / 'rules'}\n"
        f"export:\n  dir: {tmp_path / 'exports'}\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WECHAT_")}
    proc = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--config", str(config)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        health = wait_healthy(port, proc)
        assert health["status"] == "ok" and health["dry_run"] is True and health["rules"] > 0
        body = text_xml("oServeFollower00000000000001", "hello", 424242).encode()
        url = f"http://127.0.0.1:{port}/wechat?{urlencode(signed_query())}"
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=5) as r:
            assert r.read() == b"success"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "DRY-RUN" in stderr and f"http://127.0.0.1:{port}/wechat" in stderr
    assert "database closed" in stderr
    assert "pushtoken123" not in stderr, "the push token must never be logged"
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
