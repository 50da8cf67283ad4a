"""Why each rule fired or not: every condition that held and every one that did not.

Pure, beside the engine: ``rules test`` and the console's Rules page both call
:func:`explain_event`. It evaluates on a fresh engine (the live one's flood and warn
windows are never touched), seeded with the follower's real history when given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bot.core.models import ActionKind, Decision, Event, RuleHit
from bot.rules.compiled import Plan, Rule, RuleSet, Scorer, TextMatch
from bot.rules.engine import RuleEngine

CONTACT_NAMES = {"wechat_id": "WeChat ID", "qq": "QQ number", "phone": "phone number",
                 "url": "URL"}


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition of a rule: its name, whether it held, and the evidence or the gap."""

    name: str  # msg_types | keywords | regex | contact | classifier | flood
    held: bool
    detail: str


@dataclass(frozen=True, slots=True)
class RuleCheck:
    """One rule against one event: fired (with its hit) or not, condition by condition."""

    rule_id: str
    where: str  # file:line
    action: ActionKind
    conditions: tuple[Condition, ...]
    hit: RuleHit | None = None

    @property
    def fired(self) -> bool:
        return self.hit is not None

    @property
    def near_miss(self) -> bool:
        """Not fired, yet a condition that looks at the push (not only its type) held."""
        return not self.fired and any(c.held for c in self.conditions if c.name != "msg_types")

    def describe(self) -> str:
        """One line: which conditions held and which did not."""
        held = "; ".join(f"{c.name} held ({c.detail})" for c in self.conditions if c.held)
        missed = "; ".join(f"{c.name} did NOT hold ({c.detail})" for c in self.conditions
                           if not c.held)
        return f"{self.rule_id} [{self.where}]: " + " | ".join(p for p in (held, missed) if p)


@dataclass(frozen=True)
class Explanation:
    """What the rules decide for an event, every rule that fired or nearly did, and the
    classifier's score (None without a model)."""

    decision: Decision
    checks: tuple[RuleCheck, ...]
    score: float | None = None
    threshold: float | None = None
    allowlisted: bool = False

    @property
    def fired(self) -> list[RuleCheck]:
        return [c for c in self.checks if c.fired]

    @property
    def near_misses(self) -> list[RuleCheck]:
        return [c for c in self.checks if c.near_miss]


def explain_event(ruleset: RuleSet, event: Event, model: Scorer | None = None, *,
                  warnings: Mapping[str, Sequence[int]] | None = None,
                  history: Iterable[tuple[int, str]] = ()) -> Explanation:
    """Evaluate ``event`` and explain every rule's conditions.

    ``warnings``: per rule id, when the follower was warned by it (since its last
    escalation); ``history``: ``(create_time, kind)`` of the follower's earlier pushes,
    for flood windows. Both default to a follower never seen.
    """
    engine = RuleEngine(ruleset, model=model)
    _seed(engine, ruleset, event, warnings or {}, history)
    decision = engine.evaluate(event)
    hits = {hit.rule_id: hit for hit in decision.hits}
    matches = ruleset.match_texts(event.texts, Plan.of(ruleset.rules), model)
    checks = []
    for rule in ruleset.rules:
        conditions = _conditions(rule, event, matches.get(rule.index), engine, model)
        check = RuleCheck(rule.id, f"{rule.spec.file}:{rule.spec.line}", rule.spec.action,
                          conditions, hits.get(rule.id))
        if check.fired or check.near_miss:
            checks.append(check)
    score = max((model.score(t) for t in event.texts.values() if t), default=None) \
        if model is not None else None
    return Explanation(decision, tuple(checks), score, ruleset.classifier_threshold,
                       event.openid in ruleset.allowlist)


def history_horizon(ruleset: RuleSet) -> int:
    """How far back a follower's history matters to ``ruleset``: its longest warn window
    or flood window, in seconds (0: none)."""
    return max([r.spec.warn_window for r in ruleset.rules if r.spec.warn_limit]
               + [seconds for seconds, _ in ruleset.flood_groups.values()], default=0)


def _seed(engine: RuleEngine, ruleset: RuleSet, event: Event,
          warnings: Mapping[str, Sequence[int]], history: Iterable[tuple[int, str]]) -> None:
    by_id = {rule.id: rule for rule in ruleset.rules}
    for rule_id, times in warnings.items():
        rule = by_id.get(rule_id)
        if rule is None or not rule.spec.warn_limit:
            continue
        key = f"{rule_id}|{event.openid}"
        for t in sorted(times):
            engine.warns.add(key, t, rule.spec.warn_window, rule.spec.warn_limit + 1)
    flood_rules = [r for r in ruleset.rules if r.flood is not None]
    if not flood_rules:
        return
    for t, kind in sorted(history):
        groups = {r.flood_group for r in flood_rules
                  if r.spec.msg_types is None or kind in r.spec.msg_types}
        for group in groups:
            horizon, keep = ruleset.flood_groups[group]
            engine.flood.add(f"{group}|{event.openid}", t, horizon, keep)


def _conditions(rule: Rule, event: Event, match: TextMatch | None, engine: RuleEngine,
                model: Scorer | None) -> tuple[Condition, ...]:
    spec = rule.spec
    out: list[Condition] = []
    if spec.msg_types is not None:
        seen = event.kind in spec.msg_types
        out.append(Condition("msg_types", seen, f"{event.kind} "
                             f"{'is' if seen else 'is not'} in {sorted(spec.msg_types)}"))
    if spec.keywords:
        found = match.keywords if match else None
        out.append(Condition("keywords", found is not None, found.describe() if found else
                             f"none of its {len(spec.keywords)} keywords (or only inside an"
                             " except phrase)"))
    if spec.regex:
        found = match.regex if match else None
        out.append(Condition("regex", found is not None, found.describe() if found else
                             f"none of {', '.join(repr(p) for p in spec.regex[:3])}"
                             f"{' ...' if len(spec.regex) > 3 else ''} matched"))
    if spec.contact:
        found = match.contact if match else None
        wanted = "/".join(CONTACT_NAMES.get(k, k) for k in spec.contact)
        out.append(Condition("contact", found is not None,
                             found.describe() if found else f"no {wanted} found"))
    if spec.classifier is not None:
        found = match.classifier if match else None
        if found is not None:
            detail = found.label
        elif model is None:
            detail = "no trained model: never holds"
        else:
            best = max((model.score(t) for t in event.texts.values() if t), default=0.0)
            detail = f"score {best:.3f} < {spec.classifier:g}"
        out.append(Condition("classifier", found is not None, detail))
    if rule.flood is not None:
        key = f"{rule.flood_group}|{event.openid}"
        count = engine.flood.count(key, event.create_time, rule.flood.seconds)
        out.append(Condition("flood", count >= rule.flood.messages,
                             f"{count} messages within {rule.flood.seconds}s, "
                             f"needs {rule.flood.messages}"))
    return tuple(out)


def describe_explanation(explanation: Explanation) -> list[str]:
    """The near misses as lines (after what fired): each with what held and what not."""
    misses = explanation.near_misses
    if not misses:
        return []
    lines = ["near misses (some conditions held, not all):"]
    lines += [f"  {check.describe()}" for check in misses]
    return lines
