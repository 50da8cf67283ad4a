"""Hostile config files through the real loader: a Config, or a ConfigError naming the key.

Random sections, keys and values (the real ones and others), random YAML text, alias
bombs: ``load_config`` returns a Config or raises ConfigError starting with the file's
path; when the YAML parsed, the message names the key in quotes; a secret's value is
never echoed; nothing takes 2 s.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.config import SECTIONS, Config, load_config
from bot.core.errors import ConfigError
from tests.hostile import scaled

TALLY: Counter[str] = Counter()
SECRET = "S3cretValueNeverShown"
KEYS = {name: [f.name for f in fields(cls)] for name, cls in SECTIONS.items()}
SECRET_KEYS = {("wechat", "secret"), ("wechat", "token"), ("wechat", "encoding_aes_key"),
               ("wechat", "previous_encoding_aes_key")}


def names_key(message: str) -> bool:
    """The message quotes a key (as written), or is about the file's top level."""
    return bool(re.search(r"'[^']*'", message)) or "the top level" in message


def load(tmp_path: Path, text: str, *, parsed: bool) -> Config | None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    TALLY["inputs"] += 1
    started = time.monotonic()
    try:
        config: Config | None = load_config(str(path), env={})
        message = ""
    except ConfigError as exc:
        config, message = None, str(exc)
    elapsed = time.monotonic() - started
    bad = elapsed > 2 or (message and not message.startswith(str(path)))
    bad = bad or (parsed and message and not names_key(message))
    bad = bad or SECRET in message
    TALLY["failures"] += bool(bad)
    assert elapsed < 2, f"loading took {elapsed:.2f} s"
    assert config is not None or message.startswith(str(path)), message
    assert len(message) < 2000, f"a message of {len(message)} characters"
    if parsed and message and "invalid YAML" not in message:
        assert names_key(message), f"names no key: {message}"
    assert SECRET not in message, f"a secret echoed: {message}"
    return config


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["0 3 * * *", "* * * *", "61 25 * * *", "Asia/Shanghai",
                     "Mars/Olympus", "../../etc", "https://api.weixin.qq.com", "http://x/y",
                     "/wechat", "/healthz", "full", "normal", "DEBUG", "1" * 43, "a" * 43]))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)


@st.composite
def config_documents(draw: st.DrawFn) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from((*SECTIONS, "wechatt", "")), max_size=5,
                                 unique=True)):
        keys = KEYS.get(section, ["x"])
        chosen = draw(st.lists(st.sampled_from((*keys, "bogus")), max_size=4, unique=True))
        body: dict[str, Any] = {}
        for key in chosen:
            value = draw(_values)
            if (section, key) in SECRET_KEYS and draw(st.booleans()):
                value = draw(st.sampled_from([SECRET, [SECRET], {"x": SECRET}, 12345]))
            body[key] = value
        document[section] = body if draw(st.integers(0, 9)) else draw(_values)
    return document


@settings(max_examples=scaled(100))
@given(document=config_documents())
def test_config_documents_load_or_name_the_key(tmp_path: Path, document: dict[str, Any]
                                               ) -> None:
    load(tmp_path, yaml.safe_dump(document, allow_unicode=True), parsed=True)


_soup = st.lists(st.sampled_from([
    "wechat:", "server:", "\n", "  ", "port: ", "8080", "&a ", "*a", "<<: *a", "!!timestamp x",
    "!!int ", "!!float ", "!!binary ", "!!python/name:os.system", "{", "[", "'", "\t", "\x01",
    "\ufeff", "\ud800", "---\n", "? ", ": ", "1e999", "0o777", "~",
]), max_size=30).map("".join)


@settings(max_examples=scaled(80))
@given(text=st.one_of(_soup, st.text(max_size=100)))
@example(text="!!int wechat:")  # PyYAML's ValueError escaped load_config
@example(text="!!int ")  # IndexError
@example(text="!!timestamp x")  # AttributeError
@example(text="wechat:\n  token: !!int S3cretValueNeverShown\n")
def test_any_text_loads_or_says_where(tmp_path: Path, text: str) -> None:
    load(tmp_path, text, parsed=False)


def test_an_alias_bomb_in_a_config_is_refused_quickly(tmp_path: Path) -> None:
    # 9**8 = 43 million items from nine lines; quoting it whole took seconds and megabytes.
    lines = ["x0: &x0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 9)}]" for i in range(1, 8)]
    text = "anchors:\n" + "".join(f"  {line}\n" for line in lines) + "server:\n  host: *x7\n"
    assert load(tmp_path, text, parsed=True) is None


def test_zz_config_fuzz_counts() -> None:
    print(f"\nfuzzed config files: {dict(TALLY)}")
    assert TALLY["inputs"] > 0 and not TALLY["failures"]
