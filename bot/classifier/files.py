"""Labelled texts from files: operators' JSONL and plain files, and the shipped seeds."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from bot.core.errors import BotError
from bot.core.models import Sample

log = logging.getLogger(__name__)
MAX_TEXT = 10_000


class SampleFileError(BotError):
    """Labelled files with bad lines: every problem as ``file:line: message``."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


def read_jsonl(path: Path, errors: list[str]) -> list[Sample]:
    """``{"text", "label": "spam"|"ham"}`` a line; extra keys are ignored."""
    samples = []
    for number, line in enumerate(_lines(path, errors), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"{path}:{number}: not JSON ({exc.msg})")
            continue
        if not isinstance(row, dict):
            errors.append(f"{path}:{number}: expected an object {{\"text\", \"label\"}}")
            continue
        text, label = row.get("text"), row.get("label")
        if label not in ("spam", "ham"):
            errors.append(f"{path}:{number}: 'label' must be \"spam\" or \"ham\", "
                          f"got {label!r}")
        elif not isinstance(text, str) or _text_problem(text):
            errors.append(f"{path}:{number}: 'text' {_text_problem(text)}")
        else:
            samples.append(Sample(text.strip(), label == "spam"))
    return samples


def read_plain(path: Path, spam: bool, errors: list[str]) -> list[Sample]:
    """One text a line (blank lines skipped)."""
    samples = []
    for number, line in enumerate(_lines(path, errors), start=1):
        if not line.strip():
            continue
        if problem := _text_problem(line):
            errors.append(f"{path}:{number}: text {problem}")
        else:
            samples.append(Sample(line.strip(), spam))
    return samples


def _lines(path: Path, errors: list[str]) -> list[str]:
    try:
        # split on \n only: texts may hold U+2028 and friends, which splitlines() breaks on
        return path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError as exc:
        errors.append(f"{path}:1: not UTF-8 text (byte {exc.start})")
    except OSError as exc:
        errors.append(f"{path}:0: cannot read: {exc.strerror}")
    return []


def _text_problem(text: object) -> str | None:
    if not isinstance(text, str) or not text.strip():
        return "must be a non-empty string"
    if len(text) > MAX_TEXT:
        return f"is longer than {MAX_TEXT} characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, written as \ud800 in JSON
        return "is not valid Unicode (a lone surrogate)"
    return None


def read_files(jsonl: Sequence[str], spam: Sequence[str], ham: Sequence[str]
               ) -> list[Sample]:
    """Every sample of the files; SampleFileError (nothing returned) on any bad line."""
    errors: list[str] = []
    samples = [s for p in jsonl for s in read_jsonl(Path(p), errors)]
    samples += [s for p in spam for s in read_plain(Path(p), True, errors)]
    samples += [s for p in ham for s in read_plain(Path(p), False, errors)]
    if errors:
        raise SampleFileError(errors)
    return samples


def seed_samples() -> list[Sample]:
    """The shipped seed set: texts this project wrote, one a line, per label."""
    out: list[Sample] = []
    folder = resources.files("bot.classifier") / "seed"
    for name, spam in (("spam.txt", True), ("ham.txt", False)):
        try:
            text = (folder / name).read_text(encoding="utf-8")
        except OSError:  # an installation without package data: train on what is stored
            log.warning("seed samples %s missing from the installation", name)
            continue
        out += [Sample(line.strip(), spam) for line in text.split("\n")
                if line.strip() and not line.startswith("#")]
    return out
