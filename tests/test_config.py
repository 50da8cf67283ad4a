"""Configuration: every bad value is an error naming its key; env overrides secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import build_config, load_config
from bot.core.errors import ConfigError


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"wechat": {"appid": "x", "colour": 1}}, "unknown key 'wechat.colour'"),
        ({"webhook": {}}, "unknown key 'webhook'"),
        ({"server": {"port": "80"}}, "'server.port' must be an integer"),
        ({"server": {"port": True}}, "'server.port' must be an integer"),
        ({"actions": {"dry_run": "yes"}}, "'actions.dry_run' must be true or false"),
        ({"wechat": {"encoding_aes_key": "a" * 43}}, "needs wechat.appid"),
        ({"wechat": {"encoding_aes_key": "short"}}, "'wechat.encoding_aes_key' must be exactly 43"),
        ({"actions": {"batch_size": 21}}, "'actions.batch_size' must be between 1 and 20"),
        ({"actions": {"batch_size": 0}}, "'actions.batch_size' must be between 1 and 20"),
        ({"export": {"cron": "0 3 * *"}}, "'export.cron' must have 5 fields"),
        ({"export": {"cron": "0 25 * * *"}}, "'export.cron' is not a valid cron"),
        ({"export": {"timezone": "Mars/Base"}}, "'export.timezone' must be an IANA"),
        ({"wechat": {"api_base": "https://api.weixin.qq.com/cgi-bin"}}, "'wechat.api_base'"),
        ({"server": {"path": "wechat"}}, "'server.path' must start with '/'"),
        ({"storage": {"retention_days": 0}}, "'storage.retention_days'"),
        ({"storage": {"synchronous": "off"}}, "'storage.synchronous' must be full"),
        ({"server": "8080"}, "'server' must be a mapping"),
        ({"server": {"path": "/metrics"}}, "'server.path' must not be /healthz or /metrics"),
        ({"server": {"path": "/healthz"}}, "'server.path' must not be /healthz or /metrics"),
        ({"actions": {"max_delay_seconds": float("inf")}},
         "'actions.max_delay_seconds' must be a finite number"),
        ({"rules": {"reload_seconds": float("nan")}}, "'rules.reload_seconds' must be a finite"),
    ],
    ids=["unknown-key", "unknown-section", "wrong-type", "bool-not-int", "bool", "aes-appid",
         "aes-length",
         "batch-too-big", "batch-zero", "cron-fields", "cron-value", "timezone", "api-base-path",
         "path-slash", "retention", "synchronous", "section-type", "path-metrics", "path-healthz",
         "delay-inf", "reload-nan"],
)
def test_bad_values_name_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config(raw, "cfg.yaml")


def test_secret_values_never_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"wechat": {"secret": 12345678}}, "cfg.yaml")
    assert "12345678" not in str(info.value)
    assert "wechat.secret" in str(info.value)


def test_defaults_are_the_contract() -> None:
    config = build_config({})
    assert config.server.path == "/wechat" and config.server.port == 8080
    assert config.actions.batch_size == 20 and config.actions.max_delay_seconds == 2.0
    assert config.export.cron == "0 3 * * *" and config.export.timezone == "Asia/Shanghai"
    assert config.storage.path == "data/bot.db" and config.rules.dir == "rules"
    assert config.dry_run, "no credentials means dry-run"


def test_shipped_config_is_valid() -> None:
    config = load_config(str(Path(__file__).resolve().parents[1] / "config.yaml"), env={})
    assert config.dry_run and "appid" in config.dry_run_reason


def test_env_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("wechat:\n  appid: fromfile\n  secret: filesecret\n", encoding="utf-8")
    env = {"WECHAT_SECRET": "envsecret", "WECHAT_API_BASE": "http://127.0.0.1:9999"}
    config = load_config(str(path), env=env)
    assert config.wechat.appid == "fromfile"
    assert config.wechat.secret == "envsecret"
    assert config.wechat.api_base == "http://127.0.0.1:9999"
    assert not config.dry_run
    assert "envsecret" not in repr(config)


def test_env_overrides_an_empty_section(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("wechat:\nserver:\n  port: 9000\n", encoding="utf-8")
    env = {"WECHAT_APPID": "wxenv", "WECHAT_SECRET": "s", "WECHAT_TOKEN": "t",
           "WECHAT_ENCODING_AES_KEY": "a" * 43, "WECHAT_PREVIOUS_ENCODING_AES_KEY": "b" * 43}
    config = load_config(str(path), env=env)
    assert config.wechat.appid == "wxenv" and config.wechat.token == "t"
    assert config.wechat.previous_encoding_aes_key == "b" * 43
    assert not config.dry_run


def test_config_path_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "other.yaml"
    path.write_text("server:\n  port: 9090\n", encoding="utf-8")
    monkeypatch.setenv("BOT_CONFIG", str(path))
    assert load_config(None, env={}).server.port == 9090


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"), env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: [1,\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(str(bad), env={})


def test_previous_key_needs_current_key() -> None:
    with pytest.raises(ConfigError, match="previous_encoding_aes_key"):
        build_config({"wechat": {"appid": "wx1", "previous_encoding_aes_key": "a" * 43}})
