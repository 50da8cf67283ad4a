"""``rules check`` reports every error of every file in one pass, blames the right copy of
a duplicate id, suggests the key meant, and echoes regexes as written."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bot.cli import main
from bot.core.errors import RuleError
from bot.rules import load_ruleset
from bot.rules.loader import SHIPPED_DIR

BAD = """rules:
  - id: job-scam
    keyword: [刷单]
    action: blacklist
  - id: my-regex
    regex: ['(?<=a)b']
    action: blacklist
  - id: good-one
    keywords: [兼职]
    action: warn
    examples:
      match: ["今天天气"]
"""


def errors(directory: Path) -> list[str]:
    with pytest.raises(RuleError) as caught:
        load_ruleset(directory)
    return caught.value.errors


def test_every_error_of_every_file_in_one_pass(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(SHIPPED_DIR / "jobs.yaml", tmp_path / "jobs.yaml")
    (tmp_path / "mine.yaml").write_text(BAD, encoding="utf-8")
    (tmp_path / "other.yaml").write_text(
        "rules:\n  - id: other\n    keywords: [x]\n    action: log\n    colour: red\n",
        encoding="utf-8")
    mine, other = tmp_path / "mine.yaml", tmp_path / "other.yaml"
    assert errors(tmp_path) == [
        f"{mine}:2: rule 'job-scam': a rule needs at least one condition (keywords, regex, "
        "contact, classifier, flood)",
        f"{mine}:2: duplicate rule id 'job-scam' (already defined at "
        f"{tmp_path / 'jobs.yaml'}:10); rename this one",
        f"{mine}:3: rule 'job-scam': unknown key 'keyword': did you mean 'keywords'?",
        f"{mine}:6: rule 'my-regex': regex '(?<=a)b' is not valid RE2 syntax: invalid perl "
        "operator: (?<= (RE2 runs in linear time, so it has no backreferences or look-around)",
        f"{mine}:11: rule 'good-one': example '今天天气' should match but does not",
        f"{other}:5: rule 'other': unknown key 'colour' (expected one of: id, description, "
        "enabled, msg_types, keywords, regex, contact, classifier, flood, except, action, "
        "warn_limit, warn_window, duration, reply, reply_blacklisted, examples)",
    ]
    config = tmp_path.parent / f"{tmp_path.name}.yml"  # outside the rules directory
    config.write_text(f"rules:\n  dir: {tmp_path}\n", encoding="utf-8")
    assert main(["rules", "check", "--config", str(config)]) == 1
    assert capsys.readouterr().out.endswith(
        "6 errors in 2 files: the rules in " f"{tmp_path} are rejected (a running service "
        "keeps its last good rules)\n")


def test_a_duplicate_blames_the_operators_file_not_the_shipped_one(tmp_path: Path) -> None:
    shutil.copy(SHIPPED_DIR / "jobs.yaml", tmp_path / "jobs.yaml")
    mine = tmp_path / "aaa-first-by-name.yaml"
    mine.write_text("rules:\n  - id: job-scam\n    keywords: [刷单]\n    action: log\n",
                    encoding="utf-8")
    os.utime(mine, (1_000_000, 1_000_000))  # even when older than the shipped copy
    assert errors(tmp_path) == [
        f"{mine}:2: duplicate rule id 'job-scam' (already defined at "
        f"{tmp_path / 'jobs.yaml'}:10); rename this one"]


def test_between_two_own_files_the_newer_one_is_blamed(tmp_path: Path) -> None:
    rule = "rules:\n  - id: same\n    keywords: [x]\n    action: log\n"
    old, new = tmp_path / "z-old.yaml", tmp_path / "a-new.yaml"
    old.write_text(rule, encoding="utf-8")
    new.write_text(rule, encoding="utf-8")
    os.utime(old, (1_000_000, 1_000_000))
    os.utime(new, (2_000_000, 2_000_000))
    assert errors(tmp_path) == [f"{new}:2: duplicate rule id 'same' (already defined at "
                                f"{old}:2); rename this one"]


@pytest.mark.parametrize(("key", "meant"), [("keyword", "keywords"), ("regexp", "regex"),
                                            ("warnlimit", "warn_limit"), ("msg_type", "msg_types")])
def test_an_unknown_key_suggests_the_one_meant(tmp_path: Path, key: str, meant: str) -> None:
    (tmp_path / "r.yaml").write_text(f"rules:\n  - id: a\n    keywords: [x]\n    action: log\n"
                                     f"    {key}: 1\n", encoding="utf-8")
    assert any(f"unknown key '{key}': did you mean '{meant}'?" in e for e in errors(tmp_path))


def test_a_regex_is_echoed_as_written(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - id: a\n    regex: ['VX\\d{6}']\n    action: log\n", encoding="utf-8")
    [error] = errors(tmp_path)
    assert "regex 'VX\\d{6}' can never match" in error and "\\\\" not in error
