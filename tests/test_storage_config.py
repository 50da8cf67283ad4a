"""``storage.backend`` and ``storage.dsn``: SQLite stays the default, errors name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import build_config, load_config
from bot.core.errors import ConfigError


def test_sqlite_is_the_default_backend() -> None:
    config = build_config({})
    assert config.storage.backend == "sqlite" and config.storage.dsn == ""


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ({"backend": "mysql"}, "'storage.backend' must be sqlite"),
        ({"backend": "postgres"}, "'storage.dsn' is needed with storage.backend: postgres"),
        ({"backend": "postgres", "dsn": "mysql://u:hunter2@h/db"}, "'storage.dsn' must be a"),
        ({"dsn": 5}, "'storage.dsn' must be a string"),
    ],
    ids=["unknown-backend", "postgres-needs-dsn", "dsn-scheme", "dsn-type"],
)
def test_bad_storage_values_name_the_key(storage: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        build_config({"storage": storage}, "cfg.yaml")
    assert "hunter2" not in str(info.value)


def test_dsn_from_the_environment_and_never_in_repr(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("storage:\n  backend: postgres\n", encoding="utf-8")
    dsn = "postgresql://bot:s3cret-pw@db.internal:5432/bot"
    config = load_config(str(path), env={"BOT_STORAGE_DSN": dsn})
    assert config.storage.backend == "postgres" and config.storage.dsn == dsn
    assert "s3cret-pw" not in repr(config) and "s3cret-pw" not in repr(config.storage)
