"""Rule files -> validated RuleSpecs; every error names file:line and what was expected."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

import yaml

from bot.core.errors import shown
from bot.core.models import MESSAGE_TYPES, ActionKind
from bot.core.normalize import fold
from bot.rules.contact import compile_re2

RULE_KEYS = ("id", "description", "enabled", "msg_types", "keywords", "regex", "contact",
             "classifier", "flood", "except", "action", "warn_limit", "warn_window",
             "duration", "reply", "reply_blacklisted", "examples")
CONDITION_KEYS = ("keywords", "regex", "contact", "classifier", "flood")
TOP_KEYS = ("allowlist", "rules")
CONTACT_KINDS = ("wechat_id", "qq", "phone", "url")
RULE_TYPES = (*MESSAGE_TYPES, "event")
DEFAULT_WARN_WINDOW = 86400
_ID_RE = re.compile(r"[a-z0-9_-]+")
_DURATION_RE = re.compile(r"(\d{1,15})\s*([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Ten years: longer is a typo, and its end would not fit a date or an SQLite integer.
MAX_DURATION_DAYS = 3650


@dataclass(frozen=True)
class FloodSpec:
    """``messages`` or more within ``seconds`` (this one included)."""

    messages: int
    seconds: int


@dataclass(frozen=True)
class RuleSpec:
    """One validated rule as written (compiled later by :mod:`bot.rules.compiled`)."""

    id: str
    file: str
    line: int
    action: ActionKind
    description: str = ""
    enabled: bool = True
    msg_types: frozenset[str] | None = None
    keywords: tuple[str, ...] = ()
    regex: tuple[str, ...] = ()
    contact: tuple[str, ...] = ()
    flood: FloodSpec | None = None
    classifier: float | None = None  # min_score: the model's spam probability
    except_: tuple[str, ...] = ()
    warn_limit: int | None = None
    warn_window: int = DEFAULT_WARN_WINDOW
    duration: int | None = None
    reply: str | None = None
    # A warn rule's reply when this offence escalates to a blacklist (no reply if unset:
    # the warning's "do it again and ..." would be a lie by then).
    reply_blacklisted: str | None = None
    examples_match: tuple[str, ...] = ()
    examples_no_match: tuple[str, ...] = ()
    examples_line: int = 0


@dataclass(frozen=True)
class FileSpec:
    """A parsed rule file: its rules and allowlist (errors, if any, are raised instead)."""

    path: str
    rules: tuple[RuleSpec, ...]
    allowlist: frozenset[str]


def parse_duration(value: Any) -> int | None:
    """Seconds for ``30s`` / ``15m`` / ``12h`` / ``7d`` up to MAX_DURATION_DAYS; else None."""
    if not isinstance(value, str):
        return None
    match = _DURATION_RE.fullmatch(value.strip())
    if not match or int(match[1]) == 0:
        return None
    seconds = int(match[1]) * _UNITS[match[2]]
    return seconds if seconds <= MAX_DURATION_DAYS * 86400 else None


# ------------------------------------------------------------------ YAML with lines


class _Map(dict[Any, Any]):
    line = 0
    key_lines: dict[Any, int]


class _Seq(list[Any]):
    line = 0
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences remember their lines (and duplicate keys)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.duplicates: list[tuple[int, Any]] = []

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        return construct_reporting_line(super().construct_object, node, deep)


def construct_reporting_line(construct: Any, node: yaml.Node, deep: bool) -> Any:
    """``construct(node, deep)``, with PyYAML's own slips on odd scalars (``!!timestamp
    x`` raises AttributeError, ``!!int`` on a huge float OverflowError) turned into a
    YAML error at the node's line."""
    try:
        return construct(node, deep)
    except (ValueError, TypeError, AttributeError, OverflowError, IndexError) as exc:
        raise yaml.constructor.ConstructorError(
            None, None, f"cannot read the value {shown(node.value)[:60]} as "
            f"{node.tag.replace('tag:yaml.org,2002:', '!!')} "
            f"({exc.__class__.__name__})", node.start_mark) from None


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    result = _Map()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            loader.duplicates.append((line, "a mapping key must be a plain value"))
            continue
        if key in result:
            loader.duplicates.append((line, f"duplicate key '{key}' (first on line "
                                            f"{result.key_lines[key]})"))
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines.setdefault(key, line)
    return result


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _Seq:
    result = _Seq(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)  # type: ignore[arg-type]
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)  # type: ignore[arg-type]


def read_yaml(text: str, path: str) -> tuple[Any, list[str]]:
    """Parse one file; return (data, errors) with YAML errors as ``file:line: ...``."""
    try:
        loader = _Loader(text)  # the reader refuses control characters here already
    except yaml.reader.ReaderError as exc:
        code = exc.character
        char = f"the character U+{code:04X}" if isinstance(code, int) else "a character"
        return None, [f"{path}:{yaml_error_line(exc, text)}: invalid YAML: {char} is not "
                      "allowed in YAML (a control character?): remove it"]
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
        return None, [f"{path}:{yaml_error_line(exc, text)}: invalid YAML: {problem}"]
    finally:
        loader.dispose()
    return data, [f"{path}:{line}: {message}" for line, message in loader.duplicates]


def yaml_error_line(exc: yaml.YAMLError, text: str) -> int:
    """The 1-based line a YAML error points at (1 when it points nowhere)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return int(mark.line) + 1
    position = getattr(exc, "position", None)  # a ReaderError: a character offset
    return text.count("\n", 0, position) + 1 if isinstance(position, int) else 1


# ------------------------------------------------------------------ validation


def _kind(value: Any) -> str:
    return {dict: "a mapping", _Map: "a mapping", list: "a list", _Seq: "a list",
            str: "a string", bool: "true/false", int: "an integer", float: "a number",
            type(None): "nothing"}.get(type(value), type(value).__name__)


def as_written(text: str) -> str:
    """A rule author's string quoted as they wrote it: ``'v[x信]\\d{6,}'``, not the
    doubled backslashes of repr()."""
    return f'"{text}"' if "'" in text and '"' not in text else f"'{text}'"


def unknown_key(key: Any, expected: tuple[str, ...], prefix: str = "") -> str:
    """``unknown key 'keyword': did you mean 'keywords'?`` (or the keys expected)."""
    close = difflib.get_close_matches(str(key), expected, n=1, cutoff=0.6)
    if close:
        return f"unknown key '{prefix}{key}': did you mean '{prefix}{close[0]}'?"
    return f"unknown key '{prefix}{key}' (expected one of: {', '.join(expected)})"


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class _FileChecker:
    """Validates one parsed file, collecting every error rather than stopping at one."""

    def __init__(self, path: str):
        self.path = path
        self.errors: list[str] = []
        self.ids: list[tuple[str, int]] = []  # every valid id and its line, bad rules too

    def error(self, line: int, message: str) -> None:
        self.errors.append(f"{self.path}:{line}: {message}")

    def check_file(self, data: Any) -> FileSpec:
        if data is None:
            return FileSpec(self.path, (), frozenset())
        if not isinstance(data, _Map):
            self.error(getattr(data, "line", 1), "the top level must be a mapping with "
                       f"'rules:' (and optionally 'allowlist:'), got {_kind(data)}")
            return FileSpec(self.path, (), frozenset())
        for key in data:
            if key not in TOP_KEYS:
                self.error(data.key_lines[key], f"top level: {unknown_key(key, TOP_KEYS)}")
        allowlist = self.strings(data, "allowlist", "allowlist")
        rules: list[RuleSpec] = []
        raw_rules = data.get("rules")
        if raw_rules is not None and not isinstance(raw_rules, _Seq):
            self.error(data.key_lines["rules"], f"'rules' must be a list of rules, got "
                       f"{_kind(raw_rules)}")
        elif raw_rules is not None:
            for index, raw in enumerate(raw_rules):
                spec = self.check_rule(raw, raw_rules.item_lines[index], index)
                if spec is not None:
                    rules.append(spec)
        return FileSpec(self.path, tuple(rules), frozenset(allowlist))

    def strings(self, mapping: _Map, key: str, label: str) -> tuple[str, ...]:
        """A list of non-empty strings under ``key`` (absent -> empty)."""
        value = mapping.get(key)
        if value is None:
            return ()
        line = mapping.key_lines[key]
        if not isinstance(value, _Seq):
            self.error(line, f"{label}: '{key}' must be a list of strings, got {_kind(value)}"
                       f" (write [{shown(value)}] for one entry)" if isinstance(value, str) else
                       f"{label}: '{key}' must be a list of strings, got {_kind(value)}")
            return ()
        good = []
        for item, item_line in zip(value, value.item_lines, strict=True):
            if not isinstance(item, str) or not item.strip():
                self.error(item_line, f"{label}: every '{key}' entry must be a non-empty "
                           f"string, got {_kind(item)} {shown(item)}")
            else:
                good.append(item)
        return tuple(good)

    def check_rule(self, raw: Any, line: int, index: int) -> RuleSpec | None:
        if not isinstance(raw, _Map):
            self.error(line, f"rule #{index + 1} must be a mapping of keys, got {_kind(raw)}")
            return None
        before = len(self.errors)
        rule_id = self.rule_id(raw, line, index)
        if len(self.errors) == before:
            self.ids.append((rule_id, line))
        label = f"rule '{rule_id}'"
        for key in raw:
            if key not in RULE_KEYS:
                self.error(raw.key_lines[key], f"{label}: {unknown_key(key, RULE_KEYS)}")
        for key in CONDITION_KEYS:  # an empty list is no condition: it would match all
            if isinstance(raw.get(key), list) and not raw[key]:
                self.error(raw.key_lines[key], f"{label}: '{key}' is an empty list; "
                           f"list at least one entry or remove the key")
        if not any(raw.get(key) for key in CONDITION_KEYS):
            self.error(line, f"{label}: a rule needs at least one condition "
                       f"({', '.join(CONDITION_KEYS)})")
        fields = _RuleFields(self, raw, label)
        spec = fields.build(rule_id, line)
        return spec if len(self.errors) == before else None

    def rule_id(self, raw: _Map, line: int, index: int) -> str:
        value = raw.get("id")
        if value is None:
            self.error(line, f"rule #{index + 1}: missing required key 'id'")
            return f"#{index + 1}"
        if not isinstance(value, str) or not _ID_RE.fullmatch(value):
            self.error(raw.key_lines["id"], f"rule #{index + 1}: 'id' must match [a-z0-9_-]+, "
                       f"got {shown(value)}")
            return f"#{index + 1}"
        return value


class _RuleFields:
    """Reads and type-checks each key of one rule."""

    def __init__(self, checker: _FileChecker, raw: _Map, label: str):
        self.checker, self.raw, self.label = checker, raw, label

    def fail(self, key: str, message: str) -> None:
        self.checker.error(self.raw.key_lines.get(key, self.raw.line), f"{self.label}: "
                           f"{message}")

    def typed(self, key: str, kind: type, what: str) -> Any:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(key, f"'{key}' must be {what}, got {_kind(value)} {shown(value)}")
            return None
        return value

    def build(self, rule_id: str, line: int) -> RuleSpec:
        action = self.action()
        duration = self.duration("duration")
        flood = self.flood()
        warn_limit = self.typed("warn_limit", int, "a positive integer")
        if warn_limit is not None and warn_limit < 1:
            self.fail("warn_limit", "'warn_limit' must be at least 1")
        if warn_limit is not None and action is not ActionKind.WARN:
            self.fail("warn_limit", "'warn_limit' only applies to 'action: warn'")
        if duration is not None and action not in (ActionKind.BLACKLIST, ActionKind.WARN):
            self.fail("duration", "'duration' only applies to blacklist (or warn escalating "
                      "to blacklist)")
        reply_blacklisted = self.typed("reply_blacklisted", str, "a string")
        if reply_blacklisted is not None and warn_limit is None:
            self.fail("reply_blacklisted", "'reply_blacklisted' only applies to a warn rule "
                      "with 'warn_limit' (the reply when a warning escalates to blacklist)")
        warn_window = self.duration("warn_window") or (flood.seconds if flood else None)
        classifier = self.classifier()
        match, no_match = self.examples()
        if classifier is not None and (match or no_match):
            self.fail("examples", "'examples' cannot be checked on a rule with 'classifier' "
                      "(its verdict depends on the trained model); try texts with "
                      "`python -m bot rules test --text ...` instead")
        return RuleSpec(
            id=rule_id, file=self.checker.path, line=line,
            action=action or ActionKind.LOG,
            description=self.typed("description", str, "a string") or "",
            enabled=self.typed("enabled", bool, "true or false") is not False,
            msg_types=self.msg_types(), keywords=self.keywords("keywords"),
            regex=self.regexes(), contact=self.contact(),
            flood=flood, classifier=classifier, except_=self.keywords("except"),
            warn_limit=warn_limit, warn_window=warn_window or DEFAULT_WARN_WINDOW,
            duration=duration, reply=self.typed("reply", str, "a string"),
            reply_blacklisted=reply_blacklisted,
            examples_match=match, examples_no_match=no_match,
            examples_line=self.raw.key_lines.get("examples", line),
        )

    def regexes(self) -> tuple[str, ...]:
        patterns = self.checker.strings(self.raw, "regex", self.label)
        raw = self.raw.get("regex")
        lines = raw.item_lines if isinstance(raw, _Seq) else []
        good = []
        for pattern, line in zip(patterns, lines, strict=False):
            try:
                compile_re2(pattern)
            except ValueError as exc:
                self.checker.error(line, f"{self.label}: regex {as_written(pattern)} is not "
                                   "valid RE2 "
                                   f"syntax: {exc} (RE2 runs in linear time, so it has no "
                                   "backreferences or look-around)")
                continue
            problem = unmatchable(pattern)
            if problem:
                self.checker.error(line, f"{self.label}: regex {as_written(pattern)} can never "
                                   "match: "
                                   f"{problem}")
            else:
                good.append(pattern)
        return tuple(good)

    def keywords(self, key: str) -> tuple[str, ...]:
        words = self.checker.strings(self.raw, key, self.label)
        for word in words:
            if not fold(word):
                self.fail(key, f"'{key}' entry {as_written(word)} is only spaces or punctuation, "
                          "which matching ignores")
        return words

    def action(self) -> ActionKind | None:
        value = self.raw.get("action")
        choices = ", ".join(kind.value for kind in ActionKind)
        if value is None:
            self.fail("action", f"missing required key 'action' (one of: {choices})")
            return None
        if not isinstance(value, str) or value not in {kind.value for kind in ActionKind}:
            self.fail("action", f"'action' must be one of: {choices}, got {shown(value)}")
            return None
        return ActionKind(value)

    def duration(self, key: str) -> int | None:
        value = self.raw.get(key)
        if value is None:
            return None
        seconds = parse_duration(value)
        if seconds is None:
            self.fail(key, f"'{key}' must be a duration like 30s, 15m, 12h or 7d, at most "
                      f"{MAX_DURATION_DAYS}d, got {shown(value)}")
        return seconds

    def flood(self) -> FloodSpec | None:
        value = self.raw.get("flood")
        if value is None:
            return None
        if not isinstance(value, _Map):
            self.fail("flood", f"'flood' must be a mapping {{messages: N, seconds: S}}, got "
                      f"{_kind(value)}")
            return None
        for key in value:
            if key not in ("messages", "seconds"):
                self.checker.error(value.key_lines[key], f"{self.label}: "
                                   f"{unknown_key(key, ('messages', 'seconds'), 'flood.')}")
        numbers: dict[str, Any] = {}
        for key in ("messages", "seconds"):
            number = value.get(key)
            if not _positive(number):
                self.checker.error(value.key_lines.get(key, value.line), f"{self.label}: "
                                   f"'flood.{key}' must be a positive integer, got {shown(number)}")
            numbers[key] = number
        messages, seconds = numbers["messages"], numbers["seconds"]
        if _positive(messages) and _positive(seconds):
            return FloodSpec(messages, seconds)
        return None

    def classifier(self) -> float | None:
        value = self.raw.get("classifier")
        if value is None:
            return None
        if not isinstance(value, _Map):
            self.fail("classifier", "'classifier' must be a mapping {min_score: 0.0..1.0}, "
                      f"got {_kind(value)}")
            return None
        for key in value:
            if key != "min_score":
                self.checker.error(value.key_lines[key], f"{self.label}: "
                                   f"{unknown_key(key, ('min_score',), 'classifier.')}")
        score = value.get("min_score")
        if isinstance(score, bool) or not isinstance(score, int | float) \
                or not 0.0 <= score <= 1.0:
            self.checker.error(value.key_lines.get("min_score", value.line),
                               f"{self.label}: 'classifier.min_score' must be a number "
                               f"from 0.0 to 1.0, got {shown(score)}")
            return None
        return float(score)

    def msg_types(self) -> frozenset[str] | None:
        types = self.checker.strings(self.raw, "msg_types", self.label)
        if "msg_types" in self.raw and not types:
            self.fail("msg_types", "'msg_types' is empty: list the types the rule is for, "
                      "or leave the key out for every type")
        for name in types:
            if name not in RULE_TYPES:
                self.fail("msg_types", f"unknown message type '{name}' in 'msg_types' "
                          f"(expected some of: {', '.join(RULE_TYPES)})")
        return frozenset(types) if types else None

    def contact(self) -> tuple[str, ...]:
        kinds = self.checker.strings(self.raw, "contact", self.label)
        for name in kinds:
            if name not in CONTACT_KINDS:
                self.fail("contact", f"unknown contact kind '{name}' (expected some of: "
                          f"{', '.join(CONTACT_KINDS)})")
        return kinds

    def examples(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        value = self.raw.get("examples")
        if value is None:
            return (), ()
        if not isinstance(value, _Map):
            self.fail("examples", "'examples' must be a mapping {match: [...], "
                      f"no_match: [...]}}, got {_kind(value)}")
            return (), ()
        for key in value:
            if key not in ("match", "no_match"):
                self.checker.error(value.key_lines[key], f"{self.label}: "
                                   f"{unknown_key(key, ('match', 'no_match'), 'examples.')}")
        strings = self.checker.strings
        return strings(value, "match", self.label), strings(value, "no_match", self.label)


# What a regex may not hold, since it runs on the folded text: escaped or literal
# characters that folding removes (\. \/ a space, CJK punctuation) unless optional,
# and upper-case letters outside escapes such as \D or \p{Han} (unless (?i) is set).
# Character classes are left alone: [，,] or [A-Za-z] can still match something.
_CLASS = re.compile(r"\[(?:\\.|[^\]\\])*\]")
_ESCAPE_OR_PROPERTY = re.compile(r"\\[pP](?:\{[^}]*\}|[A-Za-z])|\\.|\(\?P?<[^>]*>")
_LITERAL_DROPPED = re.compile(r"(?:\\(.)|([^\\\w(){}|*+?.^$:!=<>,-]))(?![?*]|\{0)")


def unmatchable(pattern: str) -> str | None:
    """Why ``pattern`` can never match the folded text, or None (when unsure too)."""
    outside = _CLASS.sub("", pattern)
    if "(?i" not in pattern and re.search(r"[A-Z]", _ESCAPE_OR_PROPERTY.sub("", outside)):
        return ("the text it runs on is folded to lower case (write 'vx', not 'VX', "
                "or start the regex with (?i))")
    for match in _LITERAL_DROPPED.finditer(outside):
        char = match.group(1) or match.group(2)
        if char and not char.isalnum() and not fold(char):
            return (f"{char!r} never appears in the text it runs on: spaces, punctuation "
                    "and symbols are removed before matching (match the words around it)")
    return None
