"""Compiled rules: one Aho-Corasick automaton for every keyword, RE2 regexes, contacts."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import ahocorasick
import re2

from bot.core.errors import RuleError
from bot.core.normalize import DENSE, Folded, fold
from bot.core.wording import plural
from bot.rules.contact import _OPTIONS, DETECTOR, compile_re2
from bot.rules.schema import FloodSpec, RuleSpec, as_written

# One encoder: json.dumps with a keyword argument builds a new one per call.
_QUOTE = json.JSONEncoder(ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Evidence:
    """Where a text condition held: which field, the original span and its text."""

    label: str
    field: str
    span: tuple[int, int]
    text: str

    def describe(self) -> str:
        # JSON-quoted: the retention purge finds the follower's words by this quoting
        quoted = _QUOTE.encode(self.text)
        return f"{self.label} in {self.field} at {self.span[0]}-{self.span[1]}: {quoted}"


class Scorer(Protocol):
    """A trained model as the rules see it (bot.classifier.Model)."""

    def score(self, text: str) -> float:
        """The spam probability of ``text``, 0..1."""


# How much of the follower's text a classifier hit quotes as its evidence.
CLASSIFIER_EXCERPT = 60
# Followers send the same words again and again (greetings, menu replies, the one
# advert a campaign pushes from many accounts): what the text conditions met in a
# recent text is remembered, for this many texts of up to this many characters.
MATCH_MEMORY, MATCH_MEMORY_CHARS = 4096, 200


@dataclass(slots=True)
class TextMatch:
    """The text conditions one rule met on one event (first evidence of each)."""

    keywords: Evidence | None = None
    regex: Evidence | None = None
    contact: Evidence | None = None
    classifier: Evidence | None = None

    def evidence(self) -> list[Evidence]:
        """What held, in the order evidence is reported."""
        return [e for e in (self.keywords, self.regex, self.contact, self.classifier) if e]


def has_text_condition(spec: RuleSpec) -> bool:
    """Whether a rule looks at the text (and so needs a match to fire)."""
    return bool(spec.keywords or spec.regex or spec.contact or spec.classifier is not None)


@dataclass(frozen=True)
class Rule:
    """One enabled rule, ready to evaluate."""

    spec: RuleSpec
    index: int
    regexes: tuple[tuple[str, Any], ...]
    flood_group: str
    # The spec's, as plain attributes: the engine reads them for every push
    id: str = field(init=False)
    flood: FloodSpec | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", self.spec.id)
        object.__setattr__(self, "flood", self.spec.flood)

    def text_conditions_hold(self, match: TextMatch | None) -> bool:
        """True when every text condition the rule has (keywords, regex, contact,
        classifier) held."""
        spec = self.spec
        if not has_text_condition(spec):
            return True
        if match is None:
            return False
        return ((not spec.keywords or match.keywords is not None)
                and (not spec.regex or match.regex is not None)
                and (not spec.contact or match.contact is not None)
                and (spec.classifier is None or match.classifier is not None))


@dataclass(frozen=True)
class FloodCount:
    """A flood group that a kind of push is counted in, and what to count there."""

    group: str
    horizon: int  # the longest window of the group's rules: older messages are forgotten
    keep: int     # the most messages any of them needs
    windows: tuple[tuple[int, tuple[str, ...]], ...]  # (seconds, ids of rules with it)


@dataclass(frozen=True)
class Plan:
    """What evaluating one kind of push involves, worked out once per kind."""

    rules: tuple[Rule, ...]
    active: frozenset[int]        # rules with a text condition
    textless: tuple[Rule, ...]    # rules that fire on flood alone
    flood_rules: tuple[Rule, ...]
    contact_kinds: frozenset[str]
    classifier_rules: tuple[Rule, ...]
    floods: tuple[FloodCount, ...]  # where the flood rules count a push

    @classmethod
    def of(cls, rules: tuple[Rule, ...]) -> Plan:
        flood_rules = tuple(r for r in rules if r.flood is not None)
        return cls(rules, frozenset(r.index for r in rules if has_text_condition(r.spec)),
                   tuple(r for r in rules if not has_text_condition(r.spec)),
                   flood_rules,
                   frozenset(k for r in rules for k in r.spec.contact),
                   tuple(r for r in rules if r.spec.classifier is not None),
                   _flood_counts(flood_rules))


def _flood_counts(rules: tuple[Rule, ...]) -> tuple[FloodCount, ...]:
    """Per group, in rule order: its windows, each counted once for the rules sharing it.

    A group is the rules of one ``msg_types``: a kind's plan holds all of a group or
    none of it, so its horizon and keep here are the rule set's.
    """
    windows: dict[str, dict[int, list[str]]] = {}
    needs: dict[str, tuple[int, int]] = {}
    for rule in rules:
        assert rule.flood is not None
        horizon, keep = needs.get(rule.flood_group, (0, 0))
        needs[rule.flood_group] = (max(horizon, rule.flood.seconds),
                                   max(keep, rule.flood.messages))
        windows.setdefault(rule.flood_group, {}).setdefault(rule.flood.seconds, []).append(
            rule.id)
    return tuple(FloodCount(group, *needs[group],
                            tuple((seconds, tuple(ids)) for seconds, ids in by_window.items()))
                 for group, by_window in windows.items())


@dataclass
class _Scan:
    """Per-event scratch: keyword hits and except spans per rule, for one field."""

    keyword_hits: dict[int, list[tuple[int, int, str]]] = field(default_factory=dict)
    except_spans: dict[int, list[tuple[int, int]]] = field(default_factory=dict)


class RuleSet:
    """Every enabled rule of a rules directory, compiled; immutable once built (but
    for the memory of recent texts' matches, which only saves work)."""

    def __init__(self, specs: Iterable[RuleSpec], allowlist: Iterable[str] = (),
                 files: Iterable[str] = (), disabled: int = 0):
        self.files = tuple(files)
        self.allowlist = frozenset(allowlist)
        self.disabled = disabled
        self.rules = tuple(
            Rule(spec, index, tuple((p, compile_re2(p)) for p in spec.regex),
                 ",".join(sorted(spec.msg_types)) if spec.msg_types else "*")
            for index, spec in enumerate(specs)
        )
        self._automaton, self.keyword_count = self._build_automaton()
        self._regex_set, self._regex_index = self._build_regex_set()
        self._plans: dict[str, Plan] = {}
        self.flood_groups = self._build_flood_groups()
        self._recent: dict[tuple[str, str], tuple[Plan, Scorer | None,
                                                  dict[int, TextMatch]]] = {}

    @classmethod
    def empty(cls) -> RuleSet:
        """A rule set with no rules (start-up with a broken rules directory)."""
        return cls(())

    def __len__(self) -> int:
        return len(self.rules)

    def summary(self) -> dict[str, int]:
        """Counts for logs, /healthz and ``rules check``."""
        return {"files": len(self.files), "rules": len(self.rules),
                "keywords": self.keyword_count, "regexes": len(self._regex_index),
                "disabled": self.disabled, "allowlist": len(self.allowlist)}

    def describe(self) -> str:
        """The summary as a line for people: ``10 files, 42 rules (1 disabled), ...``."""
        disabled = f" ({self.disabled} disabled)" if self.disabled else ""
        return ", ".join([plural(len(self.files), "file"),
                          plural(len(self.rules), "rule in force", "rules in force") + disabled,
                          plural(self.keyword_count, "keyword"),
                          plural(len(self._regex_index), "regex", "regexes"),
                          plural(len(self.allowlist), "allowlisted OpenID")])

    def plan_for(self, kind: str) -> Plan:
        """The rules that see a push of this kind (``text`` ... or ``event``), prepared."""
        plan = self._plans.get(kind)
        if plan is None:
            plan = Plan.of(tuple(r for r in self.rules
                                 if r.spec.msg_types is None or kind in r.spec.msg_types))
            if len(self._plans) < 64:  # unknown types are unbounded; cache the usual ones
                self._plans[kind] = plan
        return plan

    # ------------------------------------------------------------------ build

    def _build_automaton(self) -> tuple[Any, int]:
        entries: dict[str, tuple[list[int], list[int], str]] = {}
        for rule in self.rules:
            for word in rule.spec.keywords:
                entries.setdefault(fold(word), ([], [], word))[0].append(rule.index)
            for word in rule.spec.except_:
                entries.setdefault(fold(word), ([], [], word))[1].append(rule.index)
        entries.pop("", None)
        if not entries:
            return None, 0
        automaton = ahocorasick.Automaton()
        for folded, (kw_rules, ex_rules, word) in entries.items():
            key = as_bytes(folded)
            automaton.add_word(key, (len(key), tuple(kw_rules), tuple(ex_rules), word))
        automaton.make_automaton()
        return automaton, sum(1 for v in entries.values() if v[0])

    def _build_regex_set(self) -> tuple[Any, list[tuple[int, int]]]:
        index: list[tuple[int, int]] = []
        if not any(rule.regexes for rule in self.rules):
            return None, index
        regex_set = re2.Set.SearchSet(_OPTIONS)
        try:
            for rule in self.rules:
                for position, (pattern, _) in enumerate(rule.regexes):
                    regex_set.Add(pattern)
                    index.append((rule.index, position))
            regex_set.Compile()
        except Exception:  # re2's own error type: each regex compiled alone, the set did not
            # Too big together (RE2's memory budget): name the rule with the longest regex.
            worst = max((r for r in self.rules if r.regexes),
                        key=lambda r: max(len(p) for p, _ in r.regexes))
            raise RuleError([
                f"{worst.spec.file}:{worst.spec.line}: the {len(index)} regexes of the rules"
                " are too large for RE2 to compile together; simplify this rule's regex"
                " (large counted repetitions such as {2,1000} cost the most) or others"]
            ) from None
        return regex_set, index

    def _build_flood_groups(self) -> dict[str, tuple[int, int]]:
        """Per msg_types group: (longest window, most messages any rule needs)."""
        return {flood.group: (flood.horizon, flood.keep) for flood in
                _flood_counts(tuple(r for r in self.rules if r.flood is not None))}

    # ------------------------------------------------------------------ matching

    @property
    def classifier_threshold(self) -> float | None:
        """The lowest ``classifier.min_score`` of the rules (None: no rule uses one)."""
        return min((r.spec.classifier for r in self.rules if r.spec.classifier is not None),
                   default=None)

    @property
    def uses_classifier(self) -> bool:
        """Whether any rule has a ``classifier`` condition."""
        return self.classifier_threshold is not None

    def recent_matches(self, texts: Mapping[str, str], plan: Plan,
                       model: Scorer | None = None) -> dict[int, TextMatch]:
        """:meth:`match_texts`, remembered for recent one-field texts: the engine's path.

        The answer may be shared with later pushes of the same text: read it, never
        change it. A new ``plan`` or ``model`` is never answered from memory.
        """
        if len(texts) != 1:
            return self.match_texts(texts, plan, model)
        key = next(iter(texts.items()))
        if len(key[1]) > MATCH_MEMORY_CHARS:
            return self.match_texts(texts, plan, model)
        known = self._recent.get(key)
        if known is not None and known[0] is plan and known[1] is model:
            return known[2]
        matches = self.match_texts(texts, plan, model)
        if len(self._recent) >= MATCH_MEMORY:
            self._recent.clear()  # cheaper than keeping an order; refills in a moment
        self._recent[key] = (plan, model, matches)
        return matches

    def forget_matches(self) -> None:
        """Drop the remembered matches (a new model: the old one need not stay alive)."""
        self._recent.clear()

    def match_texts(self, texts: Mapping[str, str], plan: Plan,
                    model: Scorer | None = None) -> dict[int, TextMatch]:
        """Text conditions met, per rule index, over every field of the event.

        Without a ``model`` no classifier condition holds.
        """
        active, contact_kinds = plan.active, plan.contact_kinds
        if not active:
            return {}
        scoring = plan.classifier_rules if model is not None else ()
        matches: dict[int, TextMatch] = {}
        for name, text in texts.items():
            if not text:
                continue
            folded = Folded(text)
            if self._automaton is not None:
                self._match_keywords(name, folded, active, matches)
            if self._regex_set is not None:
                self._match_regexes(name, folded, active, matches)
            if contact_kinds:
                self._match_contacts(name, folded, plan.rules, contact_kinds, matches)
            if scoring:
                assert model is not None
                self._match_classifier(name, text, model.score(text), scoring, matches)
        return matches

    @staticmethod
    def _match_classifier(name: str, text: str, score: float, rules: tuple[Rule, ...],
                          matches: dict[int, TextMatch]) -> None:
        for rule in rules:
            minimum = rule.spec.classifier
            if minimum is None or score < minimum:
                continue
            match = matches.setdefault(rule.index, TextMatch())
            if match.classifier is None:
                end = min(len(text), CLASSIFIER_EXCERPT)
                match.classifier = Evidence(f"classifier score {score:.3f} >= {minimum:g}",
                                            name, (0, end), text[:end])

    def _match_keywords(self, name: str, folded: Folded, active: frozenset[int],
                        matches: dict[int, TextMatch]) -> None:
        found = list(self._automaton.iter(as_bytes(folded.dense)))
        if not found:
            return  # most texts: nothing more to build
        scan = _Scan()
        char_at = _char_offset(folded.dense, len(found))
        for end, (length, kw_rules, ex_rules, word) in found:
            start, stop = char_at(end - length + 1), char_at(end + 1)
            for index in kw_rules:
                if index in active:
                    scan.keyword_hits.setdefault(index, []).append((start, stop, word))
            for index in ex_rules:
                if index in active:
                    scan.except_spans.setdefault(index, []).append((start, stop))
        for index, hits in scan.keyword_hits.items():
            match = matches.setdefault(index, TextMatch())
            if match.keywords is not None:
                continue
            excepts = scan.except_spans.get(index, ())
            for start, end, word in hits:
                if not any(_excuses(folded, (a, b), (start, end)) for a, b in excepts):
                    span, original = folded.excerpt(start, end)
                    match.keywords = Evidence(f"keyword '{word}'", name, span, original)
                    break

    def _match_regexes(self, name: str, folded: Folded, active: frozenset[int],
                       matches: dict[int, TextMatch]) -> None:
        for position in self._regex_set.Match(folded.dense) or ():
            index, which = self._regex_index[position]
            if index not in active:
                continue
            match = matches.setdefault(index, TextMatch())
            if match.regex is not None:
                continue
            pattern, compiled = self.rules[index].regexes[which]
            found = compiled.search(folded.dense)
            if found:
                span, original = folded.excerpt(*found.span())
                match.regex = Evidence(f"regex '{pattern}'", name, span, original)

    @staticmethod
    def _match_contacts(name: str, folded: Folded, rules: tuple[Rule, ...],
                        kinds: frozenset[str], matches: dict[int, TextMatch]) -> None:
        found = DETECTOR.find(folded, kinds)
        if not found:
            return
        for rule in rules:
            if not rule.spec.contact:
                continue
            match = matches.setdefault(rule.index, TextMatch())
            if match.contact is not None:
                continue
            for kind in rule.spec.contact:
                hit = found.get(kind)
                if hit is not None:
                    span, original = folded.excerpt(hit.start, hit.end, form=hit.form)
                    match.contact = Evidence(f"contact {kind}", name, span, original)
                    break

    def check_examples(self) -> list[str]:
        """Every failing ``examples`` entry, as ``file:line: message``."""
        errors = []
        for rule in self.rules:
            spec = rule.spec
            if not has_text_condition(spec) or spec.classifier is not None:
                continue
            for text, expected in ([(t, True) for t in spec.examples_match]
                                   + [(t, False) for t in spec.examples_no_match]):
                match = self.match_texts({"content": text}, Plan.of((rule,))).get(rule.index)
                if rule.text_conditions_hold(match) != expected:
                    errors.append(_example_error(spec, text, expected, match))
        return errors


def _excuses(folded: Folded, phrase: tuple[int, int], hit: tuple[int, int]) -> bool:
    """Whether an except phrase found at dense span ``phrase`` cancels the keyword hit at
    dense span ``hit``, as the follower wrote them.

    Nothing folding dropped (space, punctuation, symbol) may lie in the phrase outside
    the hit: 口交，通宵 folds to 口交通 but is not 路口交通. What splits the keyword itself
    counts as a word boundary only inside a phrase reaching left of the hit (路口，交通 is
    路口交): 口 交通宵 and 提供口 交通宵 are evasions, so the rule files list the words
    that end before such a split (村口交, 伤口交 ...).
    """
    if not (phrase[0] <= hit[0] and hit[1] <= phrase[1]):
        return False
    original = folded.original
    first, stop = folded.span(*phrase)
    hit_first, hit_stop = folded.span(*hit)
    split = False
    for index in range(first, stop):
        if not DENSE[ord(original[index])]:
            if not hit_first <= index < hit_stop:
                return False
            split = True
    return not split or phrase[0] < hit[0]


def as_bytes(text: str) -> str:
    """``text``'s UTF-8 bytes, one latin-1 character each, for the keyword automaton.

    pyahocorasick walks a node's children one by one; over CJK a node can have
    thousands (measured: 29 us a message at 10,000 keywords). Over bytes no node has
    more than 256, and the cost stays flat (8-11 us from 10,000 to 100,000 keywords).
    UTF-8 is self-synchronising, so a keyword's bytes only ever match whole characters
    (``char_offsets`` maps their byte offsets back).
    """
    return text.encode("utf-8").decode("latin-1")


# Up to this many keyword hits, each byte offset is mapped back by decoding the bytes
# before it; past it, a table for the whole text (linear however many hits).
FEW_HITS = 16


def _char_offset(text: str, hits: int) -> Callable[[int], int]:
    """Byte offset into ``as_bytes(text)`` -> character offset into ``text``."""
    if text.isascii():
        return int  # one byte a character
    if hits > FEW_HITS:
        return char_offsets(text).__getitem__
    raw = text.encode("utf-8")
    return lambda at: len(raw[:at].decode("utf-8"))


def char_offsets(text: str) -> list[int]:
    """For each byte offset into ``as_bytes(text)``, the character offset in ``text``.

    Built once per text with hits, so any number of hits costs linear time.
    """
    offsets: list[int] = []
    for index, char in enumerate(text):
        offsets.extend([index] * len(char.encode("utf-8")))
    offsets.append(len(text))
    return offsets


def _example_error(spec: RuleSpec, text: str, expected: bool, match: TextMatch | None) -> str:
    where = f"{spec.file}:{spec.examples_line or spec.line}: rule '{spec.id}'"
    if expected:
        return f"{where}: example {as_written(text)} should match but does not"
    found = [e.describe() for e in match.evidence()] if match else []
    return (f"{where}: example {as_written(text)} should not match but does "
            f"({'; '.join(found)})")
