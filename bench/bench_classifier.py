"""Classifier cost per push: CPU microseconds to score a text, beside a yardstick."""

from __future__ import annotations

import json
import random
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.classifier.files import seed_samples  # noqa: E402
from bot.classifier.model import Model  # noqa: E402
from bot.classifier.train import train  # noqa: E402
from bot.core.models import Sample  # noqa: E402

DEV = ROOT.parent / "shared" / "data" / "spam-dev.jsonl"
RNG = random.Random(7)
ROUNDS = 300


def texts(pool: list[str], length: int, n: int = 50) -> list[str]:
    """``n`` texts of exactly ``length`` characters cut from the pool's own texts."""
    joined = "".join(pool)
    starts = [RNG.randrange(0, len(joined) - length) for _ in range(n)]
    return [joined[s:s + length] for s in starts]


def cpu_us(fn, items: list[str]) -> float:  # type: ignore[no-untyped-def]
    for item in items[:10]:
        fn(item)
    started = time.process_time()
    for _ in range(ROUNDS):
        for item in items:
            fn(item)
    return (time.process_time() - started) / (ROUNDS * len(items)) * 1e6


def main() -> None:
    models: list[tuple[str, Model]] = []
    seeds = seed_samples()
    if seeds:
        models.append(("seed model", train([], seeds, threshold=0.9, now=0,
                                           validate=False).prepare()))
    if DEV.is_file():
        rows = [json.loads(line) for line in DEV.read_text(encoding="utf-8").split("\n")
                if line.strip()]
        dev = [Sample(r["text"], r["label"] == "spam") for r in rows]
        started = time.process_time()
        model = train(dev, seeds, threshold=0.9, now=0, validate=False).prepare()
        print(f"trained on {model.samples} samples (dev file + seeds) in "
              f"{time.process_time() - started:.1f} s CPU")
        models.append(("dev-trained model", model))
    if not models:
        print("classifier bench: skipped, no seed samples and no dev file")
        return
    pool = [s.text for s in seeds] or ["兼职日结私聊我今天的外卖很好吃"]
    xml = ("<xml><ToUserName><![CDATA[gh]]></ToUserName><FromUserName><![CDATA[oAbc]]>"
           "</FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType>"
           "<Content><![CDATA[" + pool[0] + "]]></Content><MsgId>1</MsgId></xml>").encode()
    yardstick = cpu_us(lambda _t: ET.fromstring(xml), ["x"] * 50)
    print(f"yardstick in this run: ElementTree parse of a text push {yardstick:.1f} us CPU")
    print(f"{'model':<20}{'buckets':>8}{'chars':>7}{'us/score':>10}{'x ET parse':>12}")
    for name, model in models:
        for length in (20, 100, 500):
            us = cpu_us(model.score, texts(pool, length))
            print(f"{name:<20}{len(model.weights):>8}{length:>7}{us:>10.1f}"
                  f"{us / yardstick:>12.1f}")
    print("target: <= 20 us for a 100-character text")


if __name__ == "__main__":
    main()
