"""Hostile rule files through the real loader: a good load or file:line errors, quickly.

Random YAML, rule-shaped documents with random values, alias bombs, recursive aliases,
huge keyword lists and pathological regexes: ``load_ruleset`` returns a RuleSet or
raises RuleError whose every line is ``file:line: message``; nothing else escapes, no
load takes 2 s, no message grows with the size of an alias bomb.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.core.errors import RuleError
from bot.rules import RuleSet, load_ruleset
from bot.rules.schema import RULE_KEYS
from tests.hostile import scaled

SLOW = 2.0
TALLY: Counter[str] = Counter()


def load(tmp_path: Path, text: str, slow: float = SLOW) -> tuple[RuleSet | None, list[str]]:
    """Load a rules dir holding only ``text``; (ruleset, []) or (None, error lines)."""
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    path = rules / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    TALLY["inputs"] += 1
    started = time.monotonic()
    try:
        ruleset: RuleSet | None = load_ruleset(rules)
        errors: list[str] = []
    except RuleError as exc:
        ruleset, errors = None, exc.errors
    elapsed = time.monotonic() - started
    if elapsed > slow or any(not re.match(rf"{re.escape(str(path))}:\d+: \S", e)
                             for e in errors):
        TALLY["failures"] += 1
    assert elapsed < slow, f"loading took {elapsed:.2f} s"
    assert ruleset is not None or errors, "rejected without saying why"
    for line in errors:
        assert re.match(rf"{re.escape(str(path))}:\d+: \S", line), line[:300]
        # Proportional to the file at most (an example may be quoted), never beyond.
        assert len(line) < 2000 + 3 * len(text), f"an error line of {len(line)} characters"
    return ruleset, errors


# ---------------------------------------------------------------- strategies

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**80, 2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["blacklist", "warn", "log", "unblacklist", "7d", "0s", "99999999999d",
                     "text", "event", "qq", "url", "加微信", " ", "·", "[", "(a*)*b",
                     "\\d{6,}", "VX", "\\.", "(?i)VX", "\ufeff", "\u200b"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(RULE_KEYS), st.text(max_size=8)), inner,
                    max_size=4)), max_leaves=12)


@st.composite
def rule_documents(draw: st.DrawFn) -> str:
    """Rule-shaped YAML: real keys (and some unknown ones) with any values."""
    rules = []
    for _ in range(draw(st.integers(0, 4))):
        keys = draw(st.lists(st.sampled_from((*RULE_KEYS, "keyword", "bogus")), max_size=8,
                             unique=True))
        rule: dict[str, Any] = {key: draw(_values) for key in keys}
        if draw(st.booleans()):
            rule.update(id=draw(st.sampled_from(["r1", "r2", "R!", ""])), action="log",
                        keywords=draw(st.lists(st.text(min_size=1, max_size=6), min_size=1,
                                               max_size=5)))
        rules.append(rule)
    document: dict[str, Any] = {"rules": rules}
    if draw(st.booleans()):
        document["allowlist"] = draw(_values)
    if draw(st.booleans()):
        document[draw(st.text(max_size=6))] = draw(_values)
    return yaml.safe_dump(document, allow_unicode=draw(st.booleans()))


_yaml_soup = st.lists(st.sampled_from([
    "rules:", "\n", "  - ", "id: a", "action: log", "keywords: [", "]", "{", "}", "&x ", "*x",
    "*y", "<<: *x", "!!binary ", "!!python/object:os.system ", "? ", ": ", "'", '"', "\t",
    "%YAML 1.1\n", "---\n", "...\n", "|\n", ">-\n", "#", "\ufeff", "\x00", "\x85", "\ud800",
    "!!timestamp 2001-12-14", "!!set {a}", "2001-12-14", "0x1F", "1e400", ".nan", "~",
]), max_size=40).map("".join)


# ---------------------------------------------------------------- properties


@settings(max_examples=scaled(80))
@given(text=rule_documents())
@example(text="rules:\n- action: []\n  id: null\n")  # TypeError: unhashable action
def test_rule_shaped_documents_load_or_say_where(tmp_path: Path, text: str) -> None:
    load(tmp_path, text)


@settings(max_examples=scaled(60))
@given(text=st.one_of(_yaml_soup, st.text(max_size=200)))
@example(text="!!timestamp 2001-12-14rules:")  # PyYAML's AttributeError escaped the loader
@example(text="rules:\n  - id: a\x1f\n")  # ReaderError raised before the parse began
@example(text="rules: !!int x\n")
def test_any_text_loads_or_says_where(tmp_path: Path, text: str) -> None:
    load(tmp_path, text)


def _bomb(kind: str, levels: int = 7, width: int = 9) -> str:
    """A billion-laughs YAML: ``levels`` anchors each holding ``width`` of the previous,
    under an unknown top-level key (itself an error, with its line)."""
    if kind == "list":
        lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    else:
        lines = ["a0: &a0 {k: lol}"]
        lines += [f"a{i}: &a{i} {{{', '.join(f'k{j}: *a{i - 1}' for j in range(width))}}}"
                  for i in range(1, levels)]
    return "bombs:\n" + "".join(f"  {line}\n" for line in lines)


BOMBS = {
    "keywords": "rules:\n  - id: x\n    keywords: {b}\n    action: log\n",
    "description": "rules:\n  - id: x\n    keywords: [a]\n    description: {b}\n"
                   "    action: log\n",
    "action": "rules:\n  - id: x\n    keywords: [a]\n    action: {b}\n",
    "id": "rules:\n  - id: {b}\n    keywords: [a]\n    action: log\n",
    "duration": "rules:\n  - id: x\n    keywords: [a]\n    action: blacklist\n"
                "    duration: {b}\n",
    "flood": "rules:\n  - id: x\n    flood: {{messages: {b}, seconds: {b}}}\n    action: log\n",
    "examples": "rules:\n  - id: x\n    keywords: [a]\n    action: log\n"
                "    examples: {{match: {b}}}\n",
    "allowlist": "allowlist: {b}\nrules: []\n",
    "rules": "rules: {b}\n",
}


@pytest.mark.parametrize("kind", ["list", "mapping"])
@pytest.mark.parametrize("where", sorted(BOMBS))
def test_alias_bombs_are_refused_quickly_with_a_short_message(tmp_path: Path, kind: str,
                                                              where: str) -> None:
    # 9**7 = 4.8 million items from eight lines, wherever the bomb is put.
    _, errors = load(tmp_path, _bomb(kind) + BOMBS[where].format(b="*a6"))
    assert errors and sum(map(len, errors)) < 20_000


@pytest.mark.parametrize("text", [
    "rules: &r [*r]\n",
    "a: &a {b: *a}\nrules: []\n",
    "rules:\n  - &x {id: x, keywords: [*x], action: log}\n",
    "base: &b {keywords: [加微信], action: blacklist}\nrules:\n"
    "  - {<<: *b, id: one}\n  - {<<: [*b, *b, *b], id: two}\n",
    "rules:\n  - id: x\n    keywords: [a]\n    action: log\n    <<: {<<: {<<: {id: y}}}\n",
], ids=["recursive-list", "recursive-map", "self-in-keywords", "merge-keys", "nested-merge"])
def test_recursive_aliases_and_merge_keys(tmp_path: Path, text: str) -> None:
    load(tmp_path, text)


def test_a_huge_keyword_list_loads(tmp_path: Path) -> None:
    words = [f"词{i:05d}组" for i in range(10_000)]
    text = "rules:\n  - id: many\n    action: log\n    keywords:\n" + "".join(
        f"      - {w}\n" for w in words)
    # Its load time grows with the list (about 0.3 s here); 10 s tells a hang from that
    # on a busy shared machine.
    ruleset, errors = load(tmp_path, text, slow=10.0)
    assert ruleset is not None and not errors, errors[:3]
    assert len(ruleset) == 1


PATHOLOGICAL = ["(a*)*b", "(a|aa)*c", "(x+x+)+y", "(a|a?)+$", "((a{100}){100}){100}",
                "a{1001}", "(?P<n>a)(?P=n)", "(?=a)b", "a\\1", "\\p{Bogus}", "[", "(" * 500,
                "a" * 5000 + "(", "|".join(f"w{i}" for i in range(3000)), "(?i)VX\\d+",
                "\\x{110000}", "[z-a]", "a**", "(?<n>a)"]


@pytest.mark.parametrize("pattern", PATHOLOGICAL, ids=range(len(PATHOLOGICAL)))
def test_pathological_regexes_load_or_say_where(tmp_path: Path, pattern: str) -> None:
    # The examples make the loader run the regex on long adversarial texts too.
    victims = ["a" * 50_000 + "!", "x" * 50_000, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac"]
    text = yaml.safe_dump({"rules": [{"id": "re", "regex": [pattern], "action": "log",
                                      "examples": {"no_match": victims}}]})
    load(tmp_path, text)


def test_zz_rule_fuzz_counts() -> None:
    print(f"\nfuzzed rule files: {dict(TALLY)}")
    assert TALLY["inputs"] > 0 and not TALLY["failures"]
