"""The pure rule engine: an Event in, a Decision out; flood and warn state behind a Protocol."""

from __future__ import annotations

from typing import Protocol

from bot.core.models import NO_DECISION, Action, ActionKind, Decision, Event, RuleHit
from bot.core.timefmt import span
from bot.core.windows import SlidingWindows
from bot.core.wording import plural
from bot.rules.compiled import Plan, Rule, RuleSet, Scorer, TextMatch

REASON_MAX = 500
# Which reply a follower gets when several rules fire: the strongest action speaks, and
# only a rule that took that action may answer (a warning's "do it again and you will be
# blacklisted" does not fit a blacklist).
_REPLY_PRIORITY = (ActionKind.BLACKLIST, ActionKind.WARN, ActionKind.UNBLACKLIST, ActionKind.LOG)


class WindowState(Protocol):
    """Timestamps per key over sliding windows (in memory now; Redis sorted sets later)."""

    def add(self, key: str, now: int, horizon: int, keep: int) -> None:
        """Record one event at ``now``; events older than ``horizon`` may be forgotten."""

    def count(self, key: str, now: int, seconds: int) -> int:
        """Events of ``key`` in ``(now - seconds, now]``."""

    def reset(self, key: str) -> None:
        """Forget ``key``."""


class RuleEngine:
    """Evaluates events against the rules in force; keeps flood and warn counts.

    Pure: time is the event's CreateTime and nothing is read or written outside the
    state objects. Not thread-safe: call it from the event loop only.
    """

    def __init__(self, ruleset: RuleSet, *, flood: WindowState | None = None,
                 warns: WindowState | None = None, model: Scorer | None = None):
        self._ruleset = ruleset
        self.model = model
        self.flood = flood if flood is not None else SlidingWindows()
        self.warns = warns if warns is not None else SlidingWindows()

    @property
    def ruleset(self) -> RuleSet:
        """The rules in force."""
        return self._ruleset

    def replace(self, ruleset: RuleSet) -> None:
        """Put new rules in force; flood windows and warn counts carry over."""
        self._ruleset = ruleset  # one reference swap: an evaluation sees old or new, whole

    def use_model(self, model: Scorer | None) -> None:
        """Put a (new) trained model in force for ``classifier`` conditions."""
        self.model = model
        self._ruleset.forget_matches()

    def evaluate(self, event: Event) -> Decision:
        """Every rule that fires for ``event``, the actions to take and the reply."""
        ruleset = self._ruleset
        plan = ruleset.plan_for(event.kind)
        if not plan.rules:
            return NO_DECISION
        allowlisted = event.openid in ruleset.allowlist
        matches = ruleset.recent_matches(event.texts, plan, self.model)
        counts = {} if allowlisted else self._count_flood(plan, event)
        candidates = plan.textless
        if matches:  # only rules whose text conditions met something can fire, in rule order
            indices = sorted({*matches, *(r.index for r in plan.textless)})
            candidates = tuple(ruleset.rules[i] for i in indices)
        hits: list[RuleHit] = []
        replies: dict[ActionKind, str] = {}
        for rule in candidates:
            flood = rule.flood
            if flood is not None and counts.get(rule.id, 0) < flood.messages:
                continue  # the common case for flood rules: decided before any text work
            hit = self._fire(rule, event, matches.get(rule.index), counts, allowlisted)
            if hit is None:
                continue
            hits.append(hit)
            text = _reply(rule, hit.action)
            if text:
                replies.setdefault(hit.action, text)
        if not hits:
            return NO_DECISION
        taken = {hit.action for hit in hits}
        reply = replies.get(next(k for k in _REPLY_PRIORITY if k in taken))
        actions = () if allowlisted else _actions(event, hits, candidates)
        return Decision(hits=tuple(hits), actions=actions, reply=reply)

    def _count_flood(self, plan: Plan, event: Event) -> dict[str, int]:
        """Record this push in each flood group that sees it; messages per rule id."""
        counts: dict[str, int] = {}
        for flood in plan.floods:
            key = f"{flood.group}|{event.openid}"
            self.flood.add(key, event.create_time, flood.horizon, flood.keep)
            for seconds, rule_ids in flood.windows:  # rules sharing a window count once
                count = self.flood.count(key, event.create_time, seconds)
                for rule_id in rule_ids:
                    counts[rule_id] = count
        return counts

    def _fire(self, rule: Rule, event: Event, match: TextMatch | None,
              counts: dict[str, int], allowlisted: bool) -> RuleHit | None:
        flood = rule.flood  # evaluate() passes only the flood rules whose count is reached
        count = counts.get(rule.id, 0) if flood is not None else 0
        if not rule.text_conditions_hold(match):
            return None
        evidence = match.evidence() if match else []
        parts = [e.describe() for e in evidence]
        if flood is not None:
            parts.append(f"flood: {count} messages within {flood.seconds}s "
                         f"(limit {flood.messages})")
        action = rule.spec.action
        if allowlisted:
            parts.insert(0, f"allowlisted, {action} not applied")
            action = ActionKind.LOG
        elif action is ActionKind.WARN and rule.spec.warn_limit:
            action, note = self._warn(rule, event)
            parts.append(note)
        first = evidence[0] if evidence else None
        return RuleHit(rule.id, action, "; ".join(parts),
                       field=first.field if first else None, span=first.span if first else None)

    def _warn(self, rule: Rule, event: Event) -> tuple[ActionKind, str]:
        """Count a warning; past ``warn_limit`` within the window, escalate to blacklist."""
        spec = rule.spec
        limit = spec.warn_limit or 0
        key = f"{spec.id}|{event.openid}"
        self.warns.add(key, event.create_time, spec.warn_window, limit + 1)
        count = self.warns.count(key, event.create_time, spec.warn_window)
        if count > limit:
            self.warns.reset(key)  # the ladder starts again once the blacklist is lifted
            return ActionKind.BLACKLIST, (f"offence {count} after {plural(limit, 'warning')}"
                                          f" within {span(spec.warn_window)}: escalated to "
                                          "blacklist")
        return ActionKind.WARN, f"warning {count} of {limit}"


def _reply(rule: Rule, taken: ActionKind) -> str | None:
    """The rule's reply for the action it took: its ``reply`` when it took its own action,
    ``reply_blacklisted`` when its warning escalated, none when allowlisting made it log."""
    spec = rule.spec
    if taken is spec.action:
        return spec.reply
    if taken is ActionKind.BLACKLIST and spec.action is ActionKind.WARN:
        return spec.reply_blacklisted
    return None


def _actions(event: Event, hits: list[RuleHit], rules: tuple[Rule, ...]
             ) -> tuple[Action, ...]:
    """One API action per follower: a blacklist wins over an unblacklist."""
    by_id = {rule.id: rule for rule in rules}
    for kind in (ActionKind.BLACKLIST, ActionKind.UNBLACKLIST):
        chosen = [h for h in hits if h.action is kind]
        if not chosen:
            continue
        reason = "; ".join(f"{h.rule_id}: {h.evidence}" for h in chosen)[:REASON_MAX]
        expires_at = None
        if kind is ActionKind.BLACKLIST:
            durations = [by_id[h.rule_id].spec.duration for h in chosen]
            # a permanent blacklist from any rule outranks every timed one
            if all(d is not None for d in durations):
                expires_at = event.create_time + max(d for d in durations if d is not None)
        return (Action(kind, event.openid, chosen[0].rule_id, reason, expires_at),)
    return ()
