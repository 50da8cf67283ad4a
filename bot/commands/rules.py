"""``rules check`` and ``rules test``: validate rule files, try them on a text or on history."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import MappingProxyType

from bot.classifier.model import Model, ModelError
from bot.commands import add_config_option
from bot.config import Config
from bot.core.errors import BotError, RuleError
from bot.core.models import MESSAGE_TYPES, TEXT_FIELDS, ActionKind, Decision, Event, text_field
from bot.core.normalize import Folded
from bot.core.timefmt import when
from bot.rules import RuleEngine, load_ruleset, parse_duration
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
        print(f"{len(exc.errors)} error(s): rules in {directory} rejected")
        return 1
    summary = ruleset.summary()
    print(f"ok: {directory}: " + ", ".join(f"{v} {k}" for k, v in summary.items()))
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
        with admin_store(config).replay_source(start) as (events, actioned):
            report = replay(events, engine, actioned)
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
    print("\n".join(describe(engine.evaluate(event), config.export.timezone)))
    return 0


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
    """What a rules directory would have done to the stored history, beside what was done."""

    events: int = 0
    purged: int = 0
    hits: Counter[str] = field(default_factory=Counter)
    would: dict[str, str] = field(default_factory=dict)
    was: set[str] = field(default_factory=set)

    def lines(self, directory: str, since: str) -> list[str]:
        new = sorted(set(self.would) - self.was)
        gone = sorted(self.was - set(self.would))
        out = [f"replayed {self.events} events from the last {since} with {directory}"
               + (f" ({self.purged} with content purged)" if self.purged else ""),
               f"would blacklist {len(self.would)} follower(s); "
               f"were blacklisted {len(self.was)}; both {len(set(self.would) & self.was)}",
               f"newly blacklisted by these rules: {len(new)}"]
        out += [f"  + {openid}  ({self.would[openid]})" for openid in new[:LIST_LIMIT]]
        out.append(f"blacklisted before, not by these rules: {len(gone)}")
        out += [f"  - {openid}" for openid in gone[:LIST_LIMIT]]
        out.append("hits per rule:" if self.hits else "no rule fired")
        out += [f"  {rule_id}: {count}" for rule_id, count in self.hits.most_common()]
        return out


def replay(events: Iterable[Event], engine: RuleEngine, was: set[str]) -> ReplayReport:
    """Run ``engine`` over stored ``events``; ``was``: who was blacklisted meanwhile."""
    report = ReplayReport(was=was)
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
