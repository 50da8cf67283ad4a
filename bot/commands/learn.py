"""``learn``: add labelled samples, train the classifier, store the model."""

from __future__ import annotations

import argparse
import time

from bot.config import Config
from bot.errors import BotError, RuleError
from bot.learn import DEFAULT_THRESHOLD, SampleFileError, read_files, train_and_store
from bot.models import is_valid_openid
from bot.rules import load_ruleset, parse_duration
from bot.rules.schema import MAX_DURATION_DAYS
from bot.samples import add_samples, forget, sample_count, texts_of_standing_blacklists
from bot.store import open_db, run_sync


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``learn`` command."""
    from bot.cli import add_config_option

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

    def store(db):  # type: ignore[no-untyped-def]
        lines = []
        if args.forget:
            gone = forget(db, None if args.forget == "all" else args.forget)
            lines.append(f"forgot {gone} sample(s)"
                         + ("" if args.forget == "all" else f" of {args.forget}"))
        if samples:
            added = add_samples(db, ((s.text, s.spam) for s in samples), source="learn",
                                now=now)
            lines.append(f"files: {len(samples)} sample(s) read: {added.added} new, "
                         f"{added.relabelled} relabelled, {added.unchanged} known")
        if stood is not None:
            total = followers = 0
            for openid, texts in texts_of_standing_blacklists(db, stood, now):
                added = add_samples(db, ((t, True) for t in texts), source="history",
                                    now=now, openid=openid)
                total += added.stored
                followers += 1
            lines.append(f"history: {total} new spam sample(s) from {followers} follower(s) "
                         f"blacklisted by a rule at least {args.from_history} ago")
        return lines

    for line in run_sync(config.storage.path, store):
        print(line)
    db = open_db(config.storage.path)
    try:
        trained = train_and_store(db, threshold=threshold, now=now, source="learn")
        total = sample_count(db)
    except ValueError as exc:  # one label only: nothing to tell apart
        print(f"not trained: {exc}; the model in force stays")
        return 0 if args.forget and not samples else 1
    finally:
        db.close()
    model = trained.model
    print(f"trained on {model.samples} sample(s) ({model.spam} spam, {model.ham} ham: "
          f"{total} stored, {trained.seeds} shipped seeds) in {trained.seconds:.1f} s "
          f"CPU; model {trained.model_id} in force, {len(model.weights)} n-grams")
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
    return ruleset.classifier_threshold or DEFAULT_THRESHOLD
