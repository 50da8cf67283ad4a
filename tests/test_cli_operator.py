"""Small things a new operator trips on: --config before the command, an empty rules
directory, Python dicts in the log, "1 actions"."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_app
from bot.cli import main
from bot.config import build_config
from bot.core.wording import plural

RULE = "rules:\n  - id: r1\n    keywords: [spamword]\n    action: log\n"


def config_file(tmp_path: Path, rules: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(f"rules:\n  dir: {rules}\nstorage:\n  path: {tmp_path / 'bot.db'}\n",
                    encoding="utf-8")
    return path


@pytest.mark.parametrize("where", ["before", "after", "both"])
def test_config_is_accepted_before_the_command_too(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    good, empty = tmp_path / "good", tmp_path / "empty"
    good.mkdir()
    empty.mkdir()
    (good / "r.yaml").write_text(RULE, encoding="utf-8")
    config = str(config_file(tmp_path, good))
    other = tmp_path / "other"
    other.mkdir()
    decoy = str(config_file(other, empty))
    argv = {"before": ["--config", config, "rules", "check"],
            "after": ["rules", "check", "--config", config],
            "both": ["--config", decoy, "rules", "check", "--config", config]}[where]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"ok: {good}: 1 file, 1 rule in force, 1 keyword, 0 regexes" in out, \
        "the --config after the command wins over one before it"


def test_an_empty_rules_directory_is_a_warning(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "rules"
    empty.mkdir()
    assert main(["rules", "check", "--config", str(config_file(tmp_path, empty))]) == 0
    out = capsys.readouterr().out
    assert f"warning: no rule files (*.yaml, *.yml) in {empty}: no rule is in force" in out


async def test_start_up_logs_read_as_sentences(aiohttp_client: Any, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    empty = tmp_path / "rules"
    empty.mkdir()
    config = build_config({"storage": {"path": str(tmp_path / "bot.db")},
                           "rules": {"dir": str(empty)}, "wechat": {"token": "t0ken"}})
    await aiohttp_client(build_app(config))
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("bot")]
    rules = [m for m in messages if m.startswith("rules: ")]
    assert rules == ["rules: 0 files, 0 rules in force, 0 keywords, 0 regexes, "
                     "0 allowlisted OpenIDs"], messages
    assert not [m for m in messages if "{'" in m], "no Python dict in the log"
    assert any(m.startswith("no rule files (*.yaml, *.yml) in ") for m in messages)


@pytest.mark.parametrize(("count", "expected"), [(0, "0 actions"), (1, "1 action"),
                                                 (2, "2 actions")])
def test_counts_are_pluralised(count: int, expected: str) -> None:
    assert plural(count, "action") == expected
    assert plural(count, "regex", "regexes").startswith(f"{count} regex")
