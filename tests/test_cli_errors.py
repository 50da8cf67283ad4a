"""Operators' mistakes (paths, encodings, a taken port) end in one clear line, no traceback."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest
import yaml

from bot.cli import main
from tests.fake_wechat import FakeWeChat, make_openids

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


async def run_cli(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WECHAT_", "BOT_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_config_path_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                    ) -> None:
    assert main(["blacklist", "status", "--config", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"config error: {tmp_path}: cannot read the config file" in err


def test_config_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes("logging:\n  level: INFO  # 日志\n".encode("gbk"))
    assert main(["blacklist", "status", "--config", str(config)]) == 2
    assert f"config error: {config}: not UTF-8 text" in capsys.readouterr().err


def test_openid_file_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path / "config.yaml", {"storage": {"path": str(tmp_path / "bot.db")}})
    ids = tmp_path / "ids.txt"
    ids.write_bytes(f"{make_openids(1)[0]}  # 举报\n".encode("gbk"))
    code = main(["blacklist", "add", "--file", str(ids), "--queue-only", "--config",
                 str(config)])
    assert code == 1
    assert f"--file {ids}: not UTF-8 text" in capsys.readouterr().err


def test_storage_path_under_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                   ) -> None:
    (tmp_path / "data").write_text("not a directory", encoding="utf-8")
    config = write(tmp_path / "config.yaml",
                   {"storage": {"path": str(tmp_path / "data" / "bot.db")}})
    code = main(["blacklist", "add", make_openids(1)[0], "--queue-only", "--config",
                 str(config)])
    assert code == 1
    assert capsys.readouterr().err == f"error: File exists: {tmp_path / 'data'}\n"


async def test_export_dir_under_a_file(tmp_path: Path, fake_wechat: FakeWeChat) -> None:
    fake_wechat.blacklist.update(make_openids(3))
    (tmp_path / "exports").write_text("not a directory", encoding="utf-8")
    config = write(tmp_path / "config.yaml", {
        "wechat": {"appid": fake_wechat.appid, "secret": fake_wechat.secret,
                   "api_base": fake_wechat.base_url},
        "storage": {"path": str(tmp_path / "bot.db")},
        "export": {"dir": str(tmp_path / "exports" / "daily")}})
    code, _out, err = await run_cli("export", "--config", str(config))
    assert code == 1, err
    assert "Traceback" not in err
    assert "error: Not a directory: " in err and str(tmp_path / "exports") in err


async def test_serve_with_the_port_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write(tmp_path / "config.yaml", {
            "wechat": {"token": "pushtoken"},
            "server": {"host": "127.0.0.1", "port": port},
            "storage": {"path": str(tmp_path / "bot.db")},
            "rules": {"dir": str(ROOT / "rules")},
            "export": {"dir": str(tmp_path / "exports")}})
        code, _out, err = await run_cli("serve", "--config", str(config))
    assert code == 1, err
    assert "Traceback" not in err
    assert "address already in use" in err.splitlines()[-1]
    assert err.splitlines()[-1].startswith("error: ")
    assert "serving WeChat pushes" not in err, "it never served"
