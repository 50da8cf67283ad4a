"""``learn`` and learning from admins, against a real service, SQLite file and fake API."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.app import build_app
from bot.classifier.files import read_jsonl, seed_samples
from bot.classifier.train import fit
from bot.cli import main
from bot.config import build_config
from bot.core.models import Sample
from bot.jobs.models import ModelWatcher
from bot.rules import RuleEngine, RuleSet, load_ruleset
from bot.storage.sqlite.adapters import SqliteClassifierStore
from tests.fake_wechat import FakeWeChat
from tests.learning_data import ham_texts, spam_texts, write_jsonl
from tests.pushes import TOKEN, signed_query, text_xml
from tests.test_end_to_end import wait_for

# Training with the shipped seeds (and 5-fold cross-validation in `learn`) takes seconds
# of CPU per call: more than the suite's per-test limit allows on a loaded 2-core machine.
pytestmark = pytest.mark.timeout(180)

RULES = """
rules:
  - id: model-spam
    msg_types: [text]
    classifier: {min_score: 0.8}
    action: blacklist
  - id: word-spam
    keywords: [加微信]
    action: blacklist
"""


def setup(tmp_path: Path, fake: FakeWeChat | None = None) -> tuple[Path, Any]:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "r.yaml").write_text(RULES, encoding="utf-8")
    raw: dict[str, Any] = {
        "wechat": {"token": TOKEN},
        "storage": {"path": str(tmp_path / "bot.db")},
        "rules": {"dir": str(rules), "reload_seconds": 0.2},
        "actions": {"max_delay_seconds": 0.2},
        "export": {"dir": str(tmp_path / "exports")},
    }
    if fake is not None:
        raw["wechat"].update(appid=fake.appid, secret=fake.secret, api_base=fake.base_url)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path, build_config(raw)


def rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "bot.db") as conn:
        return conn.execute(sql).fetchall()


def test_learn_rejects_a_file_with_bad_lines_and_stores_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = setup(tmp_path)
    good = write_jsonl(tmp_path / "good.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "好", "label": "spam"}\nnot json\n'
                   '{"text": "x", "label": "maybe"}\n{"label": "ham"}\n', encoding="utf-8")
    assert main(["learn", str(good), str(bad), "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:2: not JSON" in out
    assert f"{bad}:3: 'label' must be" in out and f"{bad}:4: 'text'" in out
    assert "3 bad line(s): nothing stored" in out
    assert not (tmp_path / "bot.db").exists() or rows(tmp_path, "SELECT * FROM samples") == []


def test_learn_stores_once_trains_and_reports_cross_validated_figures(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = setup(tmp_path)
    data = write_jsonl(tmp_path / "data.jsonl")
    spam_file = tmp_path / "spam.txt"
    spam_file.write_text("高佣返利，私聊我\n\n", encoding="utf-8")
    assert main(["learn", str(data), "--spam", str(spam_file), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "73 sample(s) read: 72 new, 0 relabelled, 1 known" in out
    assert "5-fold cross-validated at score >= 0.8: precision" in out
    assert rows(tmp_path, "SELECT count(*) FROM samples") == [(72,)]
    assert main(["learn", str(data), "--config", str(config)]) == 0
    assert "72 sample(s) read: 0 new, 0 relabelled, 72 known" in capsys.readouterr().out
    assert [r[0] for r in rows(tmp_path, "SELECT source FROM models ORDER BY id")] == \
        ["learn", "learn"]


async def test_service_picks_up_a_learnt_model_and_the_classifier_rule_blacklists(
        aiohttp_client: Any, tmp_path: Path, fake_wechat: FakeWeChat) -> None:
    config_path, config = setup(tmp_path, fake_wechat)
    client = await aiohttp_client(build_app(config))

    async def health() -> dict[str, Any]:
        return dict(await (await client.get("/healthz")).json())

    # first start: a model from the shipped seed samples, trained off the event loop
    await wait_for_async(lambda h: h.get("model") is not None, health)
    seeded = (await health())["model"]["samples"]
    code = await asyncio.to_thread(main, ["learn", str(write_jsonl(tmp_path / "d.jsonl")),
                                          "--config", str(config_path)])
    assert code == 0
    await wait_for_async(lambda h: h["model"]["samples"] == seeded + 72, health, timeout=5)
    spammer, ordinary = "oModelSpammer000000000000001", "oModelOrdinary00000000000001"
    for i, (openid, text) in enumerate([(spammer, "稳赚不赔，速来私我吧"),
                                        (ordinary, "孩子的学校什么时候开始呢？")]):
        response = await client.post("/wechat", params=signed_query(),
                                     data=text_xml(openid, text, 5000 + i))
        assert response.status == 200
    await wait_for(lambda: spammer in fake_wechat.blacklist)
    assert ordinary not in fake_wechat.blacklist
    evidence = rows(tmp_path, f"SELECT evidence FROM decisions WHERE openid = '{spammer}'")
    assert evidence and evidence[0][0].startswith("classifier score ")

    # a corrupt newer model is refused: the last good one stays, /healthz says why
    with sqlite3.connect(tmp_path / "bot.db") as conn:
        conn.execute("INSERT INTO models (trained_at, samples, source, blob)"
                     " VALUES (1, 1, 'x', x'00ff')")
    await wait_for_async(lambda h: "model_error" in h, health, timeout=5)
    state = await health()
    assert state["status"] == "degraded" and state["model"]["samples"] == seeded + 72
    late = "oModelSpammer000000000000002"
    await client.post("/wechat", params=signed_query(),
                      data=text_xml(late, "日入过千，看我主页", 6000))
    await wait_for(lambda: late in fake_wechat.blacklist)

    # a month later their blacklist still stands: what they wrote is learnt as spam
    await wait_for(lambda: rows(tmp_path, "SELECT count(*) FROM blacklist WHERE status ="
                                          " 'blacklisted'") == [(2,)])
    with sqlite3.connect(tmp_path / "bot.db") as conn:
        conn.execute(f"UPDATE blacklist SET since = since - 31 * 86400 WHERE openid = '{spammer}'")
    code = await asyncio.to_thread(main, ["learn", "--from-history", "30d",
                                          "--config", str(config_path)])
    assert code == 0
    assert rows(tmp_path, "SELECT openid, label, source FROM samples WHERE source = 'history'"
                ) == [(spammer, "spam", "history")]


async def wait_for_async(predicate: Any, probe: Any, timeout: float = 30.0) -> None:
    async def loop() -> None:
        while not predicate(await probe()):
            await asyncio.sleep(0.1)  # polling an outside effect, not timing logic

    await asyncio.wait_for(loop(), timeout)


async def test_admins_corrections_become_samples_and_can_be_forgotten(
        aiohttp_client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path, config = setup(tmp_path)  # dry-run: decisions recorded, nothing sent
    client = await aiohttp_client(build_app(config))
    wrongly, spammer = "oWronglyBlacklisted000000001", "oQuietSpammer000000000000001"
    pushes = [(wrongly, "我想加微信支付的优惠券，可以吗", 1), (spammer, spam_texts()[0], 2),
              (spammer, spam_texts()[7], 3)]
    for openid, text, msg_id in pushes:
        response = await client.post("/wechat", params=signed_query(),
                                     data=text_xml(openid, text, msg_id))
        assert response.status == 200
    await client.close()
    remove = ["blacklist", "remove", wrongly, "--config", str(config_path)]
    assert await asyncio.to_thread(main, remove) == 0
    assert "learnt 1 of their texts as ham" in capsys.readouterr().out
    add = ["blacklist", "add", spammer, "--config", str(config_path)]
    assert await asyncio.to_thread(main, add) == 0
    assert "learnt 2 of their texts as spam" in capsys.readouterr().out
    stored = rows(tmp_path, "SELECT openid, label, source, text FROM samples ORDER BY id")
    assert stored == [(wrongly, "ham", "blacklist remove", pushes[0][1]),
                      (spammer, "spam", "blacklist add", pushes[2][1]),
                      (spammer, "spam", "blacklist add", pushes[1][1])]
    # removing someone no rule blacklisted teaches nothing
    assert await asyncio.to_thread(main, ["blacklist", "remove", spammer, "--config",
                                          str(config_path)]) == 0
    assert "learnt" not in capsys.readouterr().out
    assert main(["learn", "--forget", spammer, "--config", str(config_path)]) == 0
    assert f"forgot 2 sample(s) of {spammer}" in capsys.readouterr().out
    assert rows(tmp_path, "SELECT openid FROM samples") == [(wrongly,)]


def test_rules_check_warns_without_a_model_and_rules_test_explains_the_score(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = setup(tmp_path)
    assert main(["rules", "check", "--config", str(config)]) == 0
    assert "warning: no classifier model is trained yet" in capsys.readouterr().out
    assert main(["rules", "test", "--text", "高佣返利，私聊我", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "no classifier model is trained yet" in out and "no rule fires" in out
    assert main(["learn", str(write_jsonl(tmp_path / "d.jsonl")), "--config",
                 str(config)]) == 0
    capsys.readouterr()
    assert main(["rules", "check", "--config", str(config)]) == 0
    assert "classifier: model trained" in capsys.readouterr().out
    assert main(["rules", "test", "--text", "高佣返利，私聊我", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    score = re.search(r"classifier score: (\d\.\d{3}) \(rules fire at >= 0\.8\)", out)
    assert score and float(score[1]) >= 0.9, out
    assert "weighing most: '" in out
    assert "fires: model-spam -> blacklist: classifier score" in out


async def test_training_never_overwrites_a_model_stored_meanwhile(store: Any) -> None:
    models = SqliteClassifierStore(store)
    assert await models.latest_model_id() == 0
    learnt = await models.save_model(b"learnt", trained_at=1, samples=1, source="learn")
    # a seed training that began with no model stored must not supersede it
    assert await models.save_model(b"seed", trained_at=2, samples=2, source="seed",
                                   unless_newer_than=0) == 0
    assert await models.model_ids() == [learnt]
    assert await models.save_model(b"nightly", trained_at=3, samples=3, source="nightly",
                                   unless_newer_than=learnt) > learnt


async def test_a_restart_with_a_corrupt_newest_model_uses_the_last_good_one(
        store: Any) -> None:
    models = SqliteClassifierStore(store)
    good = fit([Sample(t, True) for t in spam_texts()] + [Sample(t, False) for t in ham_texts()],
               now=1_700_000_000)
    first = await models.save_model(good.dumps(), trained_at=1, samples=72, source="learn")
    await models.save_model(b"\x00\xff", trained_at=2, samples=1, source="x")
    ruleset = RuleSet(())
    engine = RuleEngine(ruleset)
    watcher = ModelWatcher(models, engine, 60, clock=lambda: 1_700_000_100.0)
    assert await watcher.check_once()
    assert engine.model is not None and watcher.model is not None
    assert watcher.model.trained_at == 1_700_000_000 and first == 1
    assert watcher.last_error is not None and watcher.last_error.startswith("model 2:")


async def test_stored_models_of_an_older_feature_version_make_way_for_a_fresh_one(
        store: Any, tmp_path: Path) -> None:
    models = SqliteClassifierStore(store)
    older = {"format": 1, "features": "char-1-2-grams/light-fold/v1", "bias": 0.0,
             "spam": 1, "ham": 1, "trained_at": 1, "weights": {"私": 1.0}}
    first = await models.save_model(zlib.compress(json.dumps(older).encode()),
                                    trained_at=1, samples=2, source="learn")
    (tmp_path / "r.yaml").write_text(RULES, encoding="utf-8")
    engine = RuleEngine(load_ruleset(tmp_path))
    watcher = ModelWatcher(models, engine, 60, clock=lambda: 1_700_000_100.0)
    assert not await watcher.check_once()  # refused: a fresh model is trained and stored
    assert watcher.last_error is not None and "run `learn` again" in watcher.last_error
    assert engine.model is None and len(await models.model_ids()) == 2
    assert await watcher.check_once()  # the next poll puts it in force
    assert watcher.model is not None and watcher.model.samples == len(seed_samples())
    assert await models.model_ids() == [first + 1, first]
    assert not await watcher.check_once()  # and trains no more


def test_labelled_files_strip_texts_and_refuse_lone_surrogates(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": " 加我领红包 \\r", "label": "spam"}\n'
                    '{"text": "\\ud800坏", "label": "ham"}\n', encoding="utf-8")
    errors: list[str] = []
    assert read_jsonl(path, errors) == [Sample("加我领红包", True)]
    assert errors == [f"{path}:2: 'text' is not valid Unicode (a lone surrogate)"]


def test_a_zero_min_score_is_where_figures_are_quoted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = setup(tmp_path)
    rules = tmp_path / "rules" / "r.yaml"
    rules.write_text(RULES.replace("min_score: 0.8", "min_score: 0.0"), encoding="utf-8")
    assert main(["learn", str(write_jsonl(tmp_path / "d.jsonl")), "--config",
                 str(config)]) == 0
    assert "cross-validated at score >= 0:" in capsys.readouterr().out
