"""``rules check`` and ``rules test``: validate rule files, try them on a text or on history."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from bot.classifier.model import Model, ModelError
from bot.commands import add_config_option
from bot.config import Config
from bot.core.errors import BotError, RuleError
from bot.core.models import MESSAGE_TYPES, TEXT_FIELDS, ActionKind, Decision, Event, text_field
from bot.core.normalize import Folded
from bot.core.timefmt import when
from bot.core.wording import plural
from bot.rules import RuleEngine, RuleSet, load_ruleset, parse_duration
from bot.rules.explain import describe_explanation, explain_event, history_horizon
from bot.rules.loader import empty_rules_warning
from bot.rules.schema import MAX_DURATION_DAYS
from bot.services import admin_store

TEST_OPENID = "oRulesTestFollower0000000000"
LIST_LIMIT = 50


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``rules check`` and ``rules test``."""
    group = sub.add_parser("rules", help="check rule files or try them before deploying",
                           description="Validate the YAML rules or see what they would do.")
    inner = group.add_subparsers(dest="rules_command", metavar="SUBCOMMAND", required=True)
    check = inner.add_parser("check", help="validate every rule file (exit 1 on any error)",
                             description="Load and validate every *.yaml/*.yml rule file, "
                                         "run their examples, print errors as file:line.")
    check.add_argument("--dir", help="rules directory to check (default: rules.dir)")
    add_config_option(check)
    check.set_defaults(handler=run_check)
    test = inner.add_parser("test", help="show which rules fire for a text, or replay history",
                            description="Try rules on one text (--text) or on the stored "
                                        "events (--replay), compared with what was actioned.")
    what = test.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="a message text to evaluate")
    what.add_argument("--replay", action="store_true", help="run over stored events")
    test.add_argument("--type", default="text", choices=[*MESSAGE_TYPES, "event"],
                      help="message type of --text (default text)")
    test.add_argument("--openid", default=TEST_OPENID, help="sender OpenID for --text")
    test.add_argument("--since", default="7d", help="replay events received within (7d)")
    test.add_argument("--rules", "--dir", dest="dir",
                      help="rules directory to try (default: rules.dir)")
    add_config_option(test)
    test.set_defaults(handler=run_test)


def run_check(args: argparse.Namespace, config: Config) -> int:
    """Print every error (exit 1) or a summary (exit 0)."""
    directory = args.dir or config.rules.dir
    try:
        ruleset = load_ruleset(directory)
    except RuleError as exc:
        for line in exc.errors:
            print(line)
        files = len({line.split(":", 1)[0] for line in exc.errors})
        print(f"{plural(len(exc.errors), 'error')} in {plural(files, 'file')}: the rules in "
              f"{directory} are rejected (a running service keeps its last good rules)")
        return 1
    print(f"ok: {directory}: {ruleset.describe()}")
    if not ruleset.files:
        print(f"warning: {empty_rules_warning(directory)}")
    if ruleset.uses_classifier:
        print(classifier_note(config))
    return 0


def stored_model(config: Config) -> Model | None:
    """The model in force in ``config``'s database (None: no database or no model);
    ModelError when it cannot be read."""
    blob = admin_store(config).newest_model_blob()
    return Model.loads(blob) if blob is not None else None


def classifier_note(config: Config) -> str:
    """Whether the classifier rules can fire: the model in force, or a warning."""
    try:
        model = stored_model(config)
    except ModelError as exc:
        return f"warning: classifier rules never fire: {exc}"
    if model is None:
        return ("warning: no classifier model is trained yet, so classifier rules never "
                "fire; `serve` trains one from the shipped seed samples at its first start,"
                " `python -m bot learn FILE` from your own")
    return (f"classifier: model trained {when(model.trained_at, config.export.timezone)} "
            f"on {model.samples} samples ({model.spam} spam, {model.ham} ham)")


def run_test(args: argparse.Namespace, config: Config) -> int:
    """``rules test --text`` or ``rules test --replay``."""
    directory = args.dir or config.rules.dir
    engine = RuleEngine(load_ruleset(directory))
    model = stored_model(config) if engine.ruleset.uses_classifier else None
    engine.use_model(model)
    if args.replay:
        since = parse_duration(args.since)
        if since is None:
            raise BotError(f"--since must be a duration like 12h or 7d, at most "
                           f"{MAX_DURATION_DAYS}d, got {args.since!r}")
        start = int(time.time()) - since
        with admin_store(config).replay_source(start) as (events, by_rules, by_hand):
            report = replay(events, engine, by_rules, by_hand)
        print("\n".join(report.lines(directory, args.since)))
        return 0
    event = sample_event(args.type, args.text, args.openid, int(time.time()))
    print(f"normalised: {Folded(args.text).dense!r}")
    if not event.texts:
        print(f"note: a {args.type} push carries no text the rules see; only conditions "
              "without text (flood, msg_types) can fire")
    if model is not None:
        print(f"classifier score: {model.score(args.text):.3f}"
              f" (rules fire at >= {engine.ruleset.classifier_threshold:g})")
        weighed = model.explain(args.text)
        if weighed:
            print("  weighing most: " + ", ".join(f"{g!r} {w:+.2f}" for g, w in weighed))
    elif engine.ruleset.uses_classifier:
        print(classifier_note(config))
    warnings, history = ({}, []) if args.openid == TEST_OPENID else \
        follower_story(config, engine.ruleset, args.openid, event.create_time)
    explanation = explain_event(engine.ruleset, event, model, warnings=warnings,
                                history=history)
    print("\n".join(describe(explanation.decision, config.export.timezone)))
    print("\n".join(describe_explanation(explanation)))
    return 0


def follower_story(config: Config, ruleset: RuleSet, openid: str, now: int
                   ) -> tuple[dict[str, list[int]], list[tuple[int, str]]]:
    """The follower's warnings and recent pushes from the database, as the engine would
    count them (nothing when there is no database), and says what was found."""
    horizon = history_horizon(ruleset)
    if config.storage.backend == "sqlite" and not Path(config.storage.path).is_file():
        print(f"note: no database at {config.storage.path}: {openid}'s history is unknown")
        return {}, []
    store = admin_store(config)
    warnings = store.follower_warnings(openid, now - horizon) if horizon else {}
    history = store.follower_pushes(openid, now - max(horizon, 1))
    counted = ", ".join(f"{len(t)} by {rule_id}" for rule_id, t in warnings.items())
    print(f"history of {openid}: {len(history)} pushes and warnings "
          f"{counted or 'none'} within the rules' windows")
    return warnings, history


def sample_event(msg_type: str, text: str, openid: str, now: int) -> Event:
    """The event a push of ``msg_type`` carrying ``text`` becomes, as the parser builds it
    (``bot.core.models.TEXT_FIELDS``): a type without a text field gets none."""
    name = text_field(msg_type)
    return Event(openid=openid, account="", create_time=now, msg_type=msg_type,
                 texts=MappingProxyType({name: text} if name else {}))


def describe(decision: Decision, timezone: str) -> list[str]:
    """Human-readable lines for one decision, times in ``timezone``."""
    if decision.empty:
        return ["no rule fires"]
    lines = [f"fires: {hit.rule_id} -> {hit.action}: {hit.evidence}" for hit in decision.hits]
    for action in decision.actions:
        expiry = f" (expires at {when(action.expires_at, timezone)})" if action.expires_at else ""
        lines.append(f"action: {action.kind} {action.openid} by {action.rule_id}{expiry}")
    if decision.reply:
        lines.append(f"reply: {decision.reply}")
    return lines


@dataclass
class ReplayReport:
    """What a rules directory would have done to the stored history, beside what the
    rules in force did; blacklists made by hand are listed apart, not compared."""

    events: int = 0
    purged: int = 0
    hits: Counter[str] = field(default_factory=Counter)
    would: dict[str, str] = field(default_factory=dict)
    was: set[str] = field(default_factory=set)
    by_hand: set[str] = field(default_factory=set)

    def lines(self, directory: str, since: str) -> list[str]:
        """The report as printed."""
        would = set(self.would)
        new = sorted(would - self.was - self.by_hand)
        gone = sorted(self.was - would)
        out = [f"replayed {plural(self.events, 'event')} from the last {since} with "
               f"{directory}" + (f" ({self.purged} with content purged)" if self.purged else ""),
               f"these rules would blacklist {plural(len(would), 'follower')}; the rules in "
               f"force blacklisted {len(self.was)}; both {len(would & self.was)}",
               f"newly blacklisted by these rules: {len(new)}"]
        out += [f"  + {openid}  ({self.would[openid]})" for openid in new[:LIST_LIMIT]]
        out.append(f"blacklisted by the rules in force, not by these: {len(gone)}")
        out += [f"  - {openid}" for openid in gone[:LIST_LIMIT]]
        out.append(f"blacklisted by hand meanwhile (CLI or console; not compared): "
                   f"{len(self.by_hand)}")
        out += [f"  * {openid}" + (f"  (these rules too: {self.would[openid]})"
                                   if openid in self.would else "")
                for openid in sorted(self.by_hand)[:LIST_LIMIT]]
        out.append("hits per rule:" if self.hits else "no rule fired")
        out += [f"  {rule_id}: {count}" for rule_id, count in self.hits.most_common()]
        return out


def replay(events: Iterable[Event], engine: RuleEngine, was: set[str],
           by_hand: set[str] | None = None) -> ReplayReport:
    """Run ``engine`` over stored ``events``; ``was``: who the rules blacklisted meanwhile,
    ``by_hand``: who admins blacklisted."""
    report = ReplayReport(was=was, by_hand=by_hand or set())
    for event in events:
        report.events += 1
        if not event.texts and event.msg_type in TEXT_FIELDS:  # a type that carries text
            report.purged += 1
        decision = engine.evaluate(event)
        report.hits.update(hit.rule_id for hit in decision.hits)
        for action in decision.actions:
            if action.kind is ActionKind.BLACKLIST:
                report.would.setdefault(action.openid, action.rule_id)
    return report
