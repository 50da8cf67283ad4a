"""Load a rules directory: read, validate, check duplicates and examples, compile."""

from __future__ import annotations

from pathlib import Path

from bot.core.errors import RuleError
from bot.rules.compiled import RuleSet
from bot.rules.schema import FileSpec, RuleSpec, _FileChecker, read_yaml

SUFFIXES = (".yaml", ".yml")


def rule_files(directory: Path) -> list[Path]:
    """Every ``*.yaml`` / ``*.yml`` file directly in ``directory``, sorted by name."""
    return sorted(p for p in directory.iterdir() if p.suffix in SUFFIXES and p.is_file())


def empty_rules_warning(directory: str | Path) -> str:
    """What an empty rules directory means, for ``rules check`` and the start-up log."""
    return (f"no rule files (*.yaml, *.yml) in {directory}: no rule is in force and every "
            "push is only recorded; copy the shipped rules/ there or set rules.dir")


def parse_file(path: Path) -> tuple[FileSpec | None, list[str]]:
    """Read and validate one rule file; (spec, []) or (None, errors)."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return None, [f"{name}:1: not UTF-8 text ({exc.reason} at byte {exc.start})"]
    except OSError as exc:
        return None, [f"{name}:1: cannot read: {exc.strerror}"]
    data, errors = read_yaml(text, name)
    if errors and data is None:
        return None, errors
    checker = _FileChecker(name)
    spec = checker.check_file(data)
    errors.extend(checker.errors)
    return (None, errors) if errors else (spec, [])


def load_ruleset(directory: str | Path) -> RuleSet:
    """Load every rule file of ``directory``; raise RuleError listing every problem."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RuleError([f"{directory}:0: rules directory not found"])
    errors: list[str] = []
    files: list[FileSpec] = []
    for path in rule_files(directory):
        spec, file_errors = parse_file(path)
        errors.extend(file_errors)
        if spec is not None:
            files.append(spec)
    specs = _unique_rules(files, errors)
    enabled = [spec for spec in specs if spec.enabled]
    ruleset = RuleSet(enabled, allowlist=[o for f in files for o in f.allowlist],
                      files=[f.path for f in files], disabled=len(specs) - len(enabled))
    errors.extend(ruleset.check_examples())
    errors.extend(_disabled_examples(specs))
    if errors:
        raise RuleError(errors)
    return ruleset


def _unique_rules(files: list[FileSpec], errors: list[str]) -> list[RuleSpec]:
    seen: dict[str, RuleSpec] = {}
    specs = []
    for file in files:
        for spec in file.rules:
            first = seen.get(spec.id)
            if first is not None:
                errors.append(f"{spec.file}:{spec.line}: duplicate rule id '{spec.id}' "
                              f"(already defined at {first.file}:{first.line})")
                continue
            seen[spec.id] = spec
            specs.append(spec)
    return specs


def _disabled_examples(specs: list[RuleSpec]) -> list[str]:
    """Disabled rules' examples are checked too: enabling one must not surprise."""
    disabled = [spec for spec in specs if not spec.enabled]
    if not disabled:
        return []
    return RuleSet(disabled).check_examples()
