"""`make eval`: detection on labelled texts, rules alone and rules + classifier (k-fold).

Each text is pushed through the real rule engine as a text message from its own
follower (no flood). A text counts as caught when a rule blacklists or warns.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.classifier.files import seed_samples  # noqa: E402
from bot.classifier.model import Model  # noqa: E402
from bot.classifier.train import fold_models, train  # noqa: E402
from bot.core.models import (  # noqa: E402
    ActionKind,
    Event,
    Sample,  # noqa: E402
)
from bot.rules import RuleEngine, load_ruleset  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "spam-dev.jsonl"
CAUGHT = (ActionKind.BLACKLIST, ActionKind.WARN)


def read(path: Path) -> list[dict[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            row = json.loads(line)
            rows.append({"text": row["text"], "label": row["label"],
                         "category": row.get("category", row["label"])})
    return rows


def verdicts(rows: list[dict[str, str]], rules_dir: Path,
             models: list[Model | None] | None = None) -> list[tuple[bool, str]]:
    """Per row: caught?, and the rules that fired. ``models[i]`` scores row i."""
    ruleset = load_ruleset(rules_dir)
    out = []
    for i, row in enumerate(rows):
        engine = RuleEngine(ruleset, model=models[i] if models else None)
        event = Event(openid=f"oEval{i:08d}", account="gh_eval", create_time=1_700_000_000,
                      msg_type="text", msg_id=str(i), texts={"content": row["text"]})
        decision = engine.evaluate(event)
        fired = [h.rule_id for h in decision.hits if h.action in CAUGHT]
        out.append((bool(fired), ",".join(fired)))
    return out


def report(title: str, rows: list[dict[str, str]], result: list[tuple[bool, str]],
           show: int) -> None:
    spam = [i for i, r in enumerate(rows) if r["label"] == "spam"]
    ham = [i for i, r in enumerate(rows) if r["label"] == "ham"]
    tp = sum(result[i][0] for i in spam)
    fp = sum(result[i][0] for i in ham)
    print(f"\n== {title}")
    print(f"recall {tp / len(spam):.3f} ({tp}/{len(spam)})  "
          f"precision {tp / (tp + fp) if tp + fp else 0:.3f}  "
          f"ham FPR {fp / len(ham):.4f} ({fp}/{len(ham)})")
    by_cat: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_cat[r["category"]].append(i)
    for cat, idx in sorted(by_cat.items()):
        hit = sum(result[i][0] for i in idx)
        kind = "recall" if rows[idx[0]]["label"] == "spam" else "FPR   "
        print(f"  {cat:<14} {kind} {hit / len(idx):.3f} ({hit}/{len(idx)})")
    fired = Counter(rule for ok, rules in result if ok for rule in rules.split(","))
    print("  rules that fired: " + ", ".join(f"{k} {v}" for k, v in fired.most_common()))
    rng = random.Random(0)
    misses = [i for i in spam if not result[i][0]]
    false = [i for i in ham if result[i][0]]
    print(f"  {min(show, len(misses))} misses:")
    for i in rng.sample(misses, min(show, len(misses))):
        print(f"    [{rows[i]['category']}] {rows[i]['text'][:80]!r}")
    print(f"  {min(show, len(false))} false positives:")
    for i in rng.sample(false, min(show, len(false))):
        print(f"    [{rows[i]['category']}] {result[i][1]}: {rows[i]['text'][:80]!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rules", type=Path, default=ROOT / "rules")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--show", type=int, default=10)
    parser.add_argument("--only", choices=("rules", "seed", "kfold"), default=None)
    args = parser.parse_args()
    if not args.data.is_file():
        print(f"eval: skipped, no labelled data at {args.data} "
              "(pass a JSONL file of {text, label})")
        return 0
    rows = read(args.data)
    print(f"{len(rows)} texts from {args.data}")
    threshold = load_ruleset(args.rules).classifier_threshold
    print(f"classifier rules fire at score >= {threshold}")
    if args.only in (None, "rules"):
        report("rules alone (no model)", rows, verdicts(rows, args.rules), args.show)
    samples = [Sample(r["text"], r["label"] == "spam") for r in rows]
    seeds = seed_samples()
    if args.only in (None, "seed"):
        started = time.process_time()
        model = train([], seeds, threshold=0.9, now=0, validate=False).prepare()
        print(f"\nseed model: {model.samples} seed samples, trained in "
              f"{time.process_time() - started:.1f} s CPU")
        scores = [model.score(s.text) for s in samples]
        curve(samples, scores)
        report("rules + seed model (out of the box, no learn)", rows,
               verdicts(rows, args.rules, [model] * len(rows)), args.show)
    if args.only in (None, "kfold"):
        models, scores = kfold(samples, seeds, args.folds)
        print(f"\n{args.folds}-fold: each text scored by a model trained on the other folds"
              " plus the seeds")
        curve(samples, scores)
        report(f"rules + classifier, {args.folds}-fold (after learn on this file)", rows,
               verdicts(rows, args.rules, models), args.show)
    return 0


def kfold(samples: list[Sample], seeds: list[Sample], folds: int
          ) -> tuple[list[Model | None], list[float]]:
    """For each sample, the model of the fold that held it out, and its score."""
    models: list[Model | None] = [None] * len(samples)
    scores = [0.0] * len(samples)
    started = time.process_time()
    for model, held in fold_models(samples, seeds, folds=folds):
        model.prepare()
        for i in held:
            models[i], scores[i] = model, model.score(samples[i].text)
    print(f"\ntrained {folds} models in {time.process_time() - started:.1f} s CPU")
    return models, scores


def curve(samples: list[Sample], scores: list[float]) -> None:
    """The classifier alone: recall at fixed ham false-positive rates (threshold-free)."""
    ham = sorted((p for s, p in zip(samples, scores, strict=True) if not s.spam),
                 reverse=True)
    spam = [p for s, p in zip(samples, scores, strict=True) if s.spam]
    parts = []
    for rate in (0.001, 0.005, 0.01):
        cut = ham[int(len(ham) * rate)]
        parts.append(f"recall {sum(p > cut for p in spam) / len(spam):.3f} at FPR "
                     f"{rate:.1%} (score > {cut:.3f})")
    print("classifier alone: " + "; ".join(parts))


if __name__ == "__main__":
    sys.exit(main())
