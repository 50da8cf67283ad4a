"""Helpers for the hostile-input and fault tests: hypothesis profiles, a real server process.

Profiles: ``suite`` (the default, bounded so ``make test`` stays quick) and ``fuzz``
(``make fuzz``: many more examples), chosen with ``BOT_FUZZ_PROFILE``.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, settings

from tests.pushes import AES_KEY, APPID, TOKEN

ROOT = Path(__file__).resolve().parents[1]

settings.register_profile(
    "suite", max_examples=150, deadline=None, derandomize=False, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture])
settings.register_profile(
    "fuzz", parent=settings.get_profile("suite"), max_examples=5000)
PROFILE = os.environ.get("BOT_FUZZ_PROFILE", "suite")
settings.load_profile(PROFILE)


def scaled(suite: int) -> int:
    """``suite`` examples in the suite profile, 30 times as many under ``make fuzz``."""
    return suite * 30 if PROFILE == "fuzz" else suite


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, port: int, tmp: Path, *, rules_dir: Path | None = None,
                 extra: str = "", live: dict[str, str] | None = None,
                 synchronous: str = "full") -> Path:
    """A serve config: plain and safe mode accepted, dry-run unless ``live`` credentials."""
    wechat = (f"wechat:\n  token: {TOKEN}\n  appid: {APPID}\n"
              f"  encoding_aes_key: {AES_KEY}\n")
    if live:
        wechat = (f"wechat:\n  token: {TOKEN}\n  appid: {live['appid']}\n"
                  f"  secret: {live['secret']}\n  api_base: {live['api_base']}\n")
    path.write_text(
        wechat + f"server:\n  host: 127.0.0.1\n  port: {port}\n"
        f"storage:\n  path: {tmp / 'bot.db'}\n  synchronous: {synchronous}\n"
        f"rules:\n  dir: {rules_dir or ROOT / 'rules'}\n"
        f"export:\n  dir: {tmp / 'exports'}\n" + extra, encoding="utf-8")
    return path


@dataclass
class ServerProcess:
    """``python -m bot serve`` in a child process, its log in a file."""

    config: Path
    port: int
    log_path: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    baseline_rss: int = 0
    _conn: http.client.HTTPConnection | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start the server and wait until /healthz answers."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("WECHAT_")}
        env.update(self.env_extra)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--config", str(self.config)],
            cwd=ROOT, env=env, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                status, _ = self.request("GET", "/healthz", timeout=1)
                if status in (200, 503):
                    return self
            except OSError:
                time.sleep(0.1)  # waiting for another process to listen
        raise AssertionError(f"service did not start:\n{self.log()}")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 5.0
                ) -> tuple[int, bytes]:
        """One request on a fresh connection: (status, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def send(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """One request on a kept-alive connection (a new one when the server closed it)."""
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                self._conn.request(method, path, body=body)
                response = self._conn.getresponse()
                answer = response.read()
                if response.will_close:
                    self._conn.close()
                    self._conn = None
                return response.status, answer
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def rss_kb(self) -> int:
        """The server's resident set size now, in KiB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def log(self) -> str:
        """Everything the server logged so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit; its return code."""
        assert self.proc is not None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)
