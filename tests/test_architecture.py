"""The layers' boundaries: a pure core, SQL only in the SQLite backend, one source of facts."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main
from bot.commands.rules import sample_event
from bot.core.models import MESSAGE_TYPES, TEXT_FIELDS
from bot.wechat.push import parse_event

ROOT = Path(__file__).resolve().parents[1]
BOT = ROOT / "bot"
FORBIDDEN_IN_CORE = ("aiohttp", "sqlite_utils", "sqlite3", "apscheduler", "wechatpy",
                     "bot.storage", "bot.web", "bot.wechat", "bot.jobs", "bot.config",
                     "bot.metrics", "bot.services", "bot.app")


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at any depth of the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((BOT / "core").glob("*.py")), ids=lambda p: p.name)
def test_core_imports_no_adapter(path: Path) -> None:
    bad = sorted(name for name in imported_modules(path)
                 if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IN_CORE))
    assert not bad, f"{path.name} imports {bad}"


def test_core_loads_without_io_frameworks() -> None:
    code = ("import sys, pkgutil, importlib, bot.core; "
            "[importlib.import_module('bot.core.' + m.name) "
            " for m in pkgutil.iter_modules(bot.core.__path__)]; "
            f"bad = [m for m in {FORBIDDEN_IN_CORE!r} if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("layer", ["jobs", "web", "wechat", "rules"])
def test_edges_use_ports_not_the_sqlite_backend(layer: str) -> None:
    """The webhook, the jobs and the client see storage only through its Protocols."""
    forbidden = ("bot.storage.sqlite", "sqlite_utils", "bot.services", "bot.app",
                 "bot.commands", "bot.cli")
    bad = {str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p)
                                            if m.startswith(forbidden))
           for p in (BOT / layer).glob("*.py")}
    assert {k: v for k, v in bad.items() if v} == {}


SQL = re.compile(r"\b(SELECT\s+\S|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
                 r"CREATE\s+(TABLE|INDEX))")


BACKENDS = ("storage/sqlite", "storage/postgres")


def test_sql_lives_only_in_the_storage_backends() -> None:
    outside = [str(p.relative_to(ROOT)) for p in BOT.rglob("*.py")
               if not any(b in p.as_posix() for b in BACKENDS)
               and SQL.search(p.read_text("utf-8"))]
    assert outside == []


@pytest.mark.parametrize("layer", ["jobs", "web", "wechat", "rules", "core"])
def test_edges_do_not_import_the_postgres_backend(layer: str) -> None:
    bad = {str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p)
                                            if m.startswith(("bot.storage.postgres", "asyncpg")))
           for p in (BOT / layer).glob("*.py")}
    assert {k: v for k, v in bad.items() if v} == {}


def test_only_the_sqlite_backend_and_edges_import_sqlite() -> None:
    allowed = {"bot/cli.py", "bot/jobs/retention.py", "bot/services.py"}  # error types, wiring
    users = {str(p.relative_to(ROOT)) for p in BOT.rglob("*.py")
             if "storage/sqlite" not in p.as_posix()
             and {"sqlite3", "sqlite_utils"} & {m.split(".")[0] for m in imported_modules(p)}}
    assert users <= allowed, users - allowed


# ---------------------------------------------------------------- one source of facts


@pytest.mark.parametrize("msg_type", [*MESSAGE_TYPES, "event"])
def test_rules_test_builds_the_event_a_push_would_carry(msg_type: str) -> None:
    """`rules test --type T` and the push parser agree on where T's text goes."""
    fields = TEXT_FIELDS.get(msg_type, ())
    body = "".join(f"<{tag}>加微信</{tag}>" for tag, _name in fields)
    extra = "<Event>subscribe</Event><EventKey>加微信</EventKey>" if msg_type == "event" else ""
    pushed = parse_event(
        f"<xml><ToUserName>gh</ToUserName><FromUserName>oFollower000000000000000001"
        f"</FromUserName><CreateTime>1</CreateTime><MsgType>{msg_type}</MsgType>"
        f"<MsgId>1</MsgId>{body}{extra}</xml>".encode())
    tried = sample_event(msg_type, "加微信", "oFollower000000000000000001", 1)
    assert set(tried.texts) <= set(pushed.texts)
    assert bool(tried.texts) == bool(pushed.texts)


def test_rules_test_reports_no_keyword_hit_for_an_event(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An event push carries no text: `rules test --type event` must not report a hit."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "spam.yaml").write_text(
        "rules:\n  - id: spam\n    keywords: [加微信]\n    action: blacklist\n",
        encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  path: {tmp_path / 'bot.db'}\nrules:\n  dir: {rules}\n",
                      encoding="utf-8")
    assert main(["rules", "test", "--type", "event", "--text", "加微信",
                 "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "no rule fires" in out and "carries no text" in out
    assert main(["rules", "test", "--type", "text", "--text", "加微信",
                 "--config", str(config)]) == 0
    assert "fires: spam" in capsys.readouterr().out


def test_one_kv_key_module_and_one_store_protocol() -> None:
    sources = {p: p.read_text("utf-8") for p in BOT.rglob("*.py")}
    kv_keys = re.compile(r"[\"'](outbox\.(owner|paused)|export\.(lock|last_run)|"
                         r"wechat\.access_token|purge\.)")
    assert [str(p.relative_to(ROOT)) for p, s in sources.items() if kv_keys.search(s)] == [
        "bot/storage/sqlite/kv.py"]
    assert not [p for p, s in sources.items() if "StoreLike" in s]
