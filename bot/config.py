"""Configuration: load ``config.yaml`` once, apply env overrides, validate every key."""

from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from bot.core.errors import ConfigError, shown
from bot.core.netpolicy import is_public, url_problem

DEFAULT_PATH = "config.yaml"
ENV_OVERRIDES = {
    "WECHAT_APPID": ("wechat", "appid"),
    "WECHAT_SECRET": ("wechat", "secret"),
    "WECHAT_TOKEN": ("wechat", "token"),
    "WECHAT_ENCODING_AES_KEY": ("wechat", "encoding_aes_key"),
    "WECHAT_PREVIOUS_ENCODING_AES_KEY": ("wechat", "previous_encoding_aes_key"),
    "WECHAT_API_BASE": ("wechat", "api_base"),
    "BOT_STORAGE_DSN": ("storage", "dsn"),
    "BOT_ADMIN_PASSWORD": ("admin", "password"),
}


@dataclass(frozen=True)
class WeChatConfig:
    """Credentials and endpoints of the Official Account."""

    appid: str = ""
    secret: str = ""
    token: str = ""
    encoding_aes_key: str = ""
    previous_encoding_aes_key: str = ""
    api_base: str = "https://api.weixin.qq.com"

    def __repr__(self) -> str:  # secrets must never reach a log line through repr()
        return f"WeChatConfig(appid={self.appid!r}, api_base={self.api_base!r}, secrets=***)"


@dataclass(frozen=True)
class ServerConfig:
    """Where the webhook listens and what it accepts."""

    host: str = "0.0.0.0"  # noqa: S104 - a webhook must be reachable by WeChat
    port: int = 8080
    path: str = "/wechat"
    max_body_bytes: int = 65536
    timestamp_tolerance_seconds: int = 300
    idle_timeout_seconds: float = 15.0  # a connection with no request in flight is closed
    push_front: bool = True  # pushes framed off the socket (bot.web.front); false: aiohttp


@dataclass(frozen=True)
class StorageConfig:
    """The backend (the SQLite file, or a PostgreSQL shared by several replicas) and how
    long followers' message content is kept. ``dsn`` may carry a password: never shown."""

    path: str = "data/bot.db"
    retention_days: int = 30
    synchronous: str = "full"
    backend: str = "sqlite"
    dsn: str = ""

    def __repr__(self) -> str:  # the DSN's password must never reach a log line
        return (f"StorageConfig(backend={self.backend!r}, path={self.path!r}, "
                f"retention_days={self.retention_days}, dsn={'***' if self.dsn else ''!r})")


@dataclass(frozen=True)
class RulesConfig:
    """Where the rule files live and how often they are checked for changes."""

    dir: str = "rules"
    reload_seconds: float = 2.0


@dataclass(frozen=True)
class ActionsConfig:
    """How decided actions are sent to WeChat."""

    batch_size: int = 20
    max_delay_seconds: float = 2.0
    dry_run: bool = False


@dataclass(frozen=True)
class ExportConfig:
    """The nightly blacklist export."""

    cron: str = "0 3 * * *"
    timezone: str = "Asia/Shanghai"
    dir: str = "data/exports"
    retention_days: int = 90
    notify_url: str = ""
    notify_allow_private: bool = False  # true: notify_url may reach private addresses


@dataclass(frozen=True)
class LoggingConfig:
    """Log verbosity."""

    level: str = "INFO"


@dataclass(frozen=True)
class AdminConfig:
    """The web console under /admin: off while ``password`` (a hash) is empty."""

    password: str = ""  # made by `python -m bot admin hash-password`
    cookie_secure: str = "auto"  # auto: Secure when served over https (or X-Forwarded-Proto)
    session_hours: float = 12.0
    login_attempts: int = 5  # failed logins allowed per client address per 15 minutes

    def __repr__(self) -> str:  # the hash never reaches a log line through repr()
        return (f"AdminConfig(enabled={bool(self.password)}, "
                f"cookie_secure={self.cookie_secure!r}, session_hours={self.session_hours})")


@dataclass(frozen=True)
class Config:
    """The whole, validated configuration. Build it with :func:`load_config`."""

    wechat: WeChatConfig = WeChatConfig()
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    rules: RulesConfig = RulesConfig()
    actions: ActionsConfig = ActionsConfig()
    export: ExportConfig = ExportConfig()
    logging: LoggingConfig = LoggingConfig()
    admin: AdminConfig = AdminConfig()
    source: str = ""

    @property
    def dry_run(self) -> bool:
        """True when no API call may be made: asked for, or no credentials to make one."""
        return self.actions.dry_run or not (self.wechat.appid and self.wechat.secret)

    @property
    def dry_run_reason(self) -> str:
        """Why the service is in dry-run mode, for the start-up log."""
        if self.actions.dry_run:
            return "actions.dry_run is true"
        if not (self.wechat.appid and self.wechat.secret):
            return "wechat.appid / wechat.secret are not configured"
        return ""


SECTIONS: dict[str, type] = {
    "wechat": WeChatConfig,
    "server": ServerConfig,
    "storage": StorageConfig,
    "rules": RulesConfig,
    "actions": ActionsConfig,
    "export": ExportConfig,
    "logging": LoggingConfig,
    "admin": AdminConfig,
}
_SECRET_KEYS = frozenset({"secret", "token", "encoding_aes_key", "previous_encoding_aes_key",
                          "dsn", "password"})
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def resolve_path(cli_path: str | None) -> str:
    """The config file to read: ``--config``, else ``$BOT_CONFIG``, else ``./config.yaml``."""
    return cli_path or os.environ.get("BOT_CONFIG") or DEFAULT_PATH


def load_config(path: str | None = None, env: dict[str, str] | None = None) -> Config:
    """Read, override from the environment and validate; raise ConfigError naming the key."""
    env = dict(os.environ) if env is None else env
    source = resolve_path(path)
    raw = _read_yaml(source)
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            if raw.get(section) is None:  # absent, or present but empty (`wechat:`)
                raw[section] = {}
            if isinstance(raw[section], dict):
                raw[section][key] = env[var]
    return build_config(raw, source)


def _read_yaml(source: str) -> dict[str, Any]:
    path = Path(source)
    if not path.exists():
        raise ConfigError(f"{source}: config file not found (use --config PATH or BOT_CONFIG)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start}); save the config "
                          "file as UTF-8") from None
    except OSError as exc:  # a directory, no permission, ...
        raise ConfigError(f"{source}: cannot read the config file: "
                          f"{exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or exc
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    return data


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader whose slips on odd scalars (``!!int x`` ValueError, ``!!timestamp x``
    AttributeError, ``!!int`` on nothing IndexError) become YAML errors with a line."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, AttributeError, OverflowError, IndexError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read a value as {node.tag} ({exc.__class__.__name__})",
                node.start_mark) from None


def build_config(raw: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a parsed mapping into a Config (the one validation entry point)."""
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown key '{name}' (expected one of: {', '.join(SECTIONS)})"
            )
        sections[name] = _build_section(name, SECTIONS[name], value, source)
    config = Config(**sections, source=source)
    _check_values(config, source)
    return config


def _build_section(name: str, cls: type, value: Any, source: str) -> Any:
    if value is None:
        return cls()
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: '{name}' must be a mapping of keys")
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        if key not in known:
            raise ConfigError(
                f"{source}: unknown key '{name}.{key}' (expected one of: {', '.join(known)})"
            )
        kwargs[key] = _coerce(f"{name}.{key}", type(getattr(cls(), key)), item, source)
    return cls(**kwargs)


def _coerce(key: str, expected: type, value: Any, source: str) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: '{key}' must be a finite number, got {shown(value)}")
    if expected is str and value is None:
        return ""
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    message = f"{source}: '{key}' must be {_TYPE_NAMES[expected]}"
    if key.rsplit(".", maxsplit=1)[-1] not in _SECRET_KEYS:  # never echo a secret
        message += f", got {type(value).__name__} {shown(value)}"
    raise ConfigError(message)


def _fail(source: str, key: str, message: str) -> None:
    raise ConfigError(f"{source}: '{key}' {message}")


# Routes of the service's own besides the push path.
_OWN_PATHS = frozenset(("/healthz", "/metrics"))


def _check_values(config: Config, source: str) -> None:
    _check_wechat(config.wechat, source)
    _check_storage(config.storage, source)
    checks = [
        (config.server.path.startswith("/"), "server.path", "must start with '/'"),
        (config.server.path not in _OWN_PATHS, "server.path",
         f"must not be {' or '.join(sorted(_OWN_PATHS))}: the service serves those itself"),
        (1 <= config.server.port <= 65535, "server.port", "must be between 1 and 65535"),
        (1024 <= config.server.max_body_bytes <= 10 * 1024 * 1024, "server.max_body_bytes",
         "must be between 1024 and 10485760"),
        (config.server.timestamp_tolerance_seconds >= 1, "server.timestamp_tolerance_seconds",
         "must be at least 1"),
        (0 < config.server.idle_timeout_seconds <= 3600, "server.idle_timeout_seconds",
         "must be greater than 0 and at most 3600"),
        (config.storage.retention_days >= 1, "storage.retention_days", "must be at least 1 (days)"),
        (config.storage.synchronous in {"full", "normal"}, "storage.synchronous",
         "must be full (a commit survives a power cut) or normal (a process crash only)"),
        (config.rules.reload_seconds > 0, "rules.reload_seconds", "must be greater than 0"),
        (1 <= config.actions.batch_size <= 20, "actions.batch_size",
         f"must be between 1 and 20 (WeChat's limit), got {config.actions.batch_size}"),
        (config.actions.max_delay_seconds > 0, "actions.max_delay_seconds",
         "must be greater than 0"),
        (config.export.retention_days >= 1, "export.retention_days", "must be at least 1 (days)"),
        (config.logging.level.upper() in {"DEBUG", "INFO", "WARNING", "ERROR"}, "logging.level",
         "must be one of DEBUG, INFO, WARNING, ERROR"),
    ]
    for ok, key, message in checks:
        if not ok:
            _fail(source, key, message)
    _check_schedule(config.export, source)
    _check_notify(config.export, source)
    _check_admin(config.admin, config.server.path, source)


def _check_admin(admin: AdminConfig, push_path: str, source: str) -> None:
    from bot.core.passwords import hash_problem

    problem = hash_problem(admin.password) if admin.password else None
    if problem:  # the value itself is never echoed
        _fail(source, "admin.password", f"must be a password hash ({problem}): make one with"
              " `python -m bot admin hash-password` (or set BOT_ADMIN_PASSWORD to it)")
    if admin.cookie_secure not in {"auto", "always", "never"}:
        _fail(source, "admin.cookie_secure", "must be auto, always or never")
    if not 0 < admin.session_hours <= 24 * 30:
        _fail(source, "admin.session_hours", "must be between 0 and 720 (hours)")
    if admin.login_attempts < 1:
        _fail(source, "admin.login_attempts", "must be at least 1")
    if push_path == "/admin" or push_path.startswith("/admin/"):
        _fail(source, "server.path", "must not be under /admin: the web console lives there")


def _check_wechat(wechat: WeChatConfig, source: str) -> None:
    for key in ("encoding_aes_key", "previous_encoding_aes_key"):
        value = getattr(wechat, key)
        if value and not re.fullmatch(r"[A-Za-z0-9]{43}", value):
            _fail(source, f"wechat.{key}",
                  "must be exactly 43 letters and digits (as the platform shows it)")
    if wechat.encoding_aes_key and not wechat.appid:
        _fail(source, "wechat.encoding_aes_key",
              "needs wechat.appid too: decryption checks the AppID")
    if wechat.previous_encoding_aes_key and not wechat.encoding_aes_key:
        _fail(source, "wechat.previous_encoding_aes_key",
              "needs wechat.encoding_aes_key to be set too")
    if not re.fullmatch(r"https?://[^/\s?#]+", wechat.api_base):
        _fail(source, "wechat.api_base",
              "must be scheme://host[:port] with no path, e.g. https://api.weixin.qq.com")


def _check_storage(storage: StorageConfig, source: str) -> None:
    if storage.backend not in {"sqlite", "postgres"}:
        _fail(source, "storage.backend",
              f"must be sqlite (one process, the default) or postgres (several replicas),"
              f" got {storage.backend!r}")
    if storage.backend == "postgres" and not storage.dsn:
        _fail(source, "storage.dsn", "is needed with storage.backend: postgres (or set"
              " BOT_STORAGE_DSN), e.g. postgresql://bot@db-host:5432/bot")
    if storage.dsn and not re.match(r"postgres(ql)?://", storage.dsn):
        # the value itself is not echoed: it may hold a password
        _fail(source, "storage.dsn", "must be a postgresql://user:password@host:port/dbname"
              " URL")


def _check_notify(export: ExportConfig, source: str) -> None:
    """https only; no private, loopback or link-local address unless allowed, judged on
    what the host resolves to (a name is resolved; one that does not resolve now is
    checked again when the summary is sent)."""
    if not export.notify_url:
        return
    problem = url_problem(export.notify_url)
    if problem:
        _fail(source, "export.notify_url", problem)
    if export.notify_allow_private:
        return
    host = urlsplit(export.notify_url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return
    private = sorted({str(info[4][0]) for info in infos if not is_public(str(info[4][0]))})
    if private:
        _fail(source, "export.notify_url",
              f"reaches a non-public address ({', '.join(private)}): a private, loopback "
              "or link-local target needs export.notify_allow_private: true")


def _check_schedule(export: ExportConfig, source: str) -> None:
    try:
        tz = ZoneInfo(export.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{source}: 'export.timezone' must be an IANA time zone such as Asia/Shanghai, "
            f"got {export.timezone!r}"
        ) from None
    from apscheduler.triggers.cron import CronTrigger  # the cron parser lives in APScheduler

    if len(export.cron.split()) != 5:
        raise ConfigError(
            f"{source}: 'export.cron' must have 5 fields (minute hour day month weekday), "
            f"got {export.cron!r}"
        )
    try:
        CronTrigger.from_crontab(export.cron, timezone=tz)
    except ValueError as exc:
        raise ConfigError(
            f"{source}: 'export.cron' is not a valid cron expression: {exc}") from None
