"""Load a rules directory: read, validate, check duplicates and examples, compile."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from bot.core.errors import RuleError
from bot.rules.compiled import RuleSet
from bot.rules.schema import FileSpec, RuleSpec, _FileChecker, read_yaml

SUFFIXES = (".yaml", ".yml")
# The rule files shipped with the project (rules/ beside the package, as in the image).
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "rules"


def rule_files(directory: Path) -> list[Path]:
    """Every ``*.yaml`` / ``*.yml`` file directly in ``directory``, sorted by name."""
    return sorted(p for p in directory.iterdir() if p.suffix in SUFFIXES and p.is_file())


def empty_rules_warning(directory: str | Path) -> str:
    """What an empty rules directory means, for ``rules check`` and the start-up log."""
    return (f"no rule files (*.yaml, *.yml) in {directory}: no rule is in force and every "
            "push is only recorded; copy the shipped rules/ there or set rules.dir")


@dataclass
class ParsedFile:
    """One rule file as read: its valid rules (``spec``, even when other rules of the
    file have errors, so their examples are checked in the same pass), every rule id
    with its line, the errors, and whether it is a shipped file left unchanged."""

    path: Path
    spec: FileSpec | None
    ids: list[tuple[str, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    shipped: bool = False
    mtime: float = 0.0


def parse_file(path: Path) -> tuple[FileSpec | None, list[str]]:
    """Read and validate one rule file; (spec, []) or (None, errors)."""
    parsed = read_file(path)
    return (None, parsed.errors) if parsed.errors else (parsed.spec, [])


def read_file(path: Path) -> ParsedFile:
    """Read and validate one rule file, collecting every error in it."""
    name = str(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ParsedFile(path, None, errors=[f"{name}:1: not UTF-8 text ({exc.reason} at "
                                              f"byte {exc.start})"])
    except OSError as exc:
        return ParsedFile(path, None, errors=[f"{name}:1: cannot read: {exc.strerror}"])
    parsed = ParsedFile(path, None, shipped=_is_shipped(path, raw), mtime=_mtime(path))
    data, parsed.errors = read_yaml(text, name)
    if parsed.errors and data is None:
        return parsed
    checker = _FileChecker(name)
    parsed.spec = checker.check_file(data)
    parsed.ids = checker.ids
    parsed.errors.extend(checker.errors)
    return parsed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _is_shipped(path: Path, raw: bytes) -> bool:
    """Whether ``path`` is one of the shipped rule files, unchanged."""
    shipped = SHIPPED_DIR / path.name
    try:
        return shipped.resolve() == path.resolve() or shipped.read_bytes() == raw
    except OSError:
        return False


def load_ruleset(directory: str | Path) -> RuleSet:
    """Load every rule file of ``directory``; raise RuleError listing every problem of
    every file in one pass (schema, duplicate ids, examples)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RuleError([f"{directory}:0: rules directory not found"])
    parsed = [read_file(path) for path in rule_files(directory)]
    errors = [e for p in parsed for e in p.errors]
    errors.extend(_duplicates(parsed))
    files = [p.spec for p in parsed if p.spec is not None]
    specs = _unique_rules(files)
    enabled = [spec for spec in specs if spec.enabled]
    ruleset = RuleSet(enabled, allowlist=[o for f in files for o in f.allowlist],
                      files=[f.path for f in files], disabled=len(specs) - len(enabled))
    errors.extend(ruleset.check_examples())
    errors.extend(_disabled_examples(specs))
    if errors:
        raise RuleError(sorted(errors, key=_place))
    return ruleset


_PLACE = re.compile(r"(.*?):(\d+): ")


def _place(error: str) -> tuple[str, int]:
    """Where an error is (file, line), so one file's errors read top to bottom."""
    found = _PLACE.match(error)
    return (found[1], int(found[2])) if found else (error, 0)


def _duplicates(parsed: list[ParsedFile]) -> list[str]:
    """A rule id defined twice: the error names the copy in the file an operator added or
    changed last (not a shipped file, else the newer one), and where the first is."""
    order = sorted(parsed, key=lambda p: (not p.shipped, p.mtime, str(p.path)))
    seen: dict[str, tuple[Path, int]] = {}
    errors = []
    for file in order:
        for rule_id, line in file.ids:
            first = seen.get(rule_id)
            if first is None:
                seen[rule_id] = (file.path, line)
            else:
                errors.append(f"{file.path}:{line}: duplicate rule id '{rule_id}' (already "
                              f"defined at {first[0]}:{first[1]}); rename this one")
    return errors


def _unique_rules(files: list[FileSpec]) -> list[RuleSpec]:
    """The valid rules, each id once (duplicates are reported by :func:`_duplicates`)."""
    seen: set[str] = set()
    specs = []
    for file in files:
        for spec in file.rules:
            if spec.id not in seen:
                seen.add(spec.id)
                specs.append(spec)
    return specs


def _disabled_examples(specs: list[RuleSpec]) -> list[str]:
    """Disabled rules' examples are checked too: enabling one must not surprise."""
    disabled = [spec for spec in specs if not spec.enabled]
    if not disabled:
        return []
    return RuleSet(disabled).check_examples()
