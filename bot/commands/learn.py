"""``learn``: add labelled samples, train the classifier, store the model."""

from __future__ import annotations

import argparse
import time

from bot.classifier.files import SampleFileError, read_files, seed_samples
from bot.classifier.model import DEFAULT_THRESHOLD
from bot.commands import add_config_option
from bot.config import Config
from bot.core.errors import BotError, RuleError
from bot.core.models import is_valid_openid
from bot.rules import load_ruleset, parse_duration
from bot.rules.schema import MAX_DURATION_DAYS
from bot.services import admin_store


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``learn`` command."""
    parser = sub.add_parser(
        "learn", help="teach the classifier with labelled texts, then retrain it",
        description="Add labelled samples to the stored training set (a text is stored "
                    "once; a new label replaces the old), train the classifier on them and "
                    "the shipped seed samples, store the model (a running service uses it "
                    "within a few seconds) and print cross-validated figures.")
    parser.add_argument("files", nargs="*", metavar="FILE",
                        help='JSONL, one {"text": ..., "label": "spam"|"ham"} a line')
    parser.add_argument("--spam", action="append", default=[], metavar="FILE",
                        help="a file of spam texts, one a line (repeatable)")
    parser.add_argument("--ham", action="append", default=[], metavar="FILE",
                        help="a file of ordinary texts, one a line (repeatable)")
    parser.add_argument("--from-history", nargs="?", const="30d", default=None,
                        metavar="DURATION",
                        help="also learn, as spam, what followers wrote whose rule "
                             "blacklist has stood this long (default 30d)")
    parser.add_argument("--forget", metavar="OPENID|all",
                        help="delete the samples learnt from one follower (or all samples),"
                             " then retrain")
    add_config_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    """Store, train, report."""
    if args.forget and args.forget != "all" and not is_valid_openid(args.forget):
        raise BotError(f"--forget {args.forget!r}: not an OpenID (or 'all')")
    stood = None
    if args.from_history is not None:
        stood = parse_duration(args.from_history)
        if stood is None:
            raise BotError(f"--from-history must be a duration like 30d, at most "
                           f"{MAX_DURATION_DAYS}d, got {args.from_history!r}")
    try:
        samples = read_files(args.files, args.spam, args.ham)
    except SampleFileError as exc:
        for line in exc.errors[:50]:
            print(line)
        print(f"{len(exc.errors)} bad line(s): nothing stored")
        return 1
    now = int(time.time())
    threshold = shipped_threshold(config)

    learnt = admin_store(config).learn_into(samples, now=now, stood=stood,
                        forget=None if not args.forget else
                        ("" if args.forget == "all" else args.forget))
    if learnt.forgot is not None:
        print(f"forgot {learnt.forgot} sample(s)"
              + ("" if args.forget == "all" else f" of {args.forget}"))
    if samples:
        added = learnt.added
        print(f"files: {len(samples)} sample(s) read: {added.added} new, "
              f"{added.relabelled} relabelled, {added.unchanged} known")
    if stood is not None:
        print(f"history: {learnt.history} new spam sample(s) from {learnt.followers} "
              f"follower(s) blacklisted by a rule at least {args.from_history} ago")
    stored = learnt.stored
    from bot.classifier.train import train  # numpy: only when training

    seeds = seed_samples()
    started = time.process_time()
    try:
        model = train(stored, seeds, threshold=threshold, now=now)
    except ValueError as exc:  # one label only: nothing to tell apart
        print(f"not trained: {exc}; the model in force stays")
        return 0 if args.forget and not samples else 1
    seconds = time.process_time() - started
    model_id = admin_store(config).store_model(model.dumps(), trained_at=now,
                                               samples=model.samples, source="learn")
    print(f"trained on {model.samples} sample(s) ({model.spam} spam, {model.ham} ham: "
          f"{len(stored)} stored, {len(seeds)} shipped seeds) in {seconds:.1f} s CPU; "
          f"model {model_id} in force, {len(model.weights)} weighted n-gram buckets")
    if model.quality is None:
        print("cross-validation: needs at least 10 stored samples of both labels")
    else:
        print(model.quality.describe())
    return 0


def shipped_threshold(config: Config) -> float:
    """The lowest ``classifier.min_score`` of the rules in force (figures are quoted
    there), or DEFAULT_THRESHOLD when no rule uses the classifier."""
    try:
        ruleset = load_ruleset(config.rules.dir)
    except RuleError:
        return DEFAULT_THRESHOLD
    threshold = ruleset.classifier_threshold
    return DEFAULT_THRESHOLD if threshold is None else threshold
