"""The classifier: features, training, the stored model, and the ``classifier`` condition."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from bot.classifier import features
from bot.classifier.features import (
    BUCKETS,
    buckets,
    classifier_form,
    distinct_buckets,
    grams,
)
from bot.classifier.model import SHORT_FORM, Model, ModelError
from bot.classifier.train import cross_validate, fit
from bot.core.errors import RuleError
from bot.core.models import Event, Sample
from bot.rules import RuleEngine, load_ruleset
from tests.learning_data import ham_texts, spam_texts

CLASSIFIER_RULES = """
rules:
  - id: model-spam
    msg_types: [text]
    classifier: {min_score: 0.8}
    action: blacklist
  - id: model-and-word
    classifier: {min_score: 0.5}
    keywords: [私聊]
    action: warn
"""


def samples() -> list[Sample]:
    return [Sample(t, True) for t in spam_texts()] + [Sample(t, False) for t in ham_texts()]


@pytest.fixture(scope="module")
def model() -> Model:
    return fit(samples(), now=1_700_000_000).prepare()


def push(text: str, openid: str = "oFollower0000000000000001") -> Event:
    return Event(openid=openid, account="gh", create_time=1_700_000_000, msg_type="text",
                 msg_id="1", texts={"content": text})


def test_classifier_form_folds_evasions_but_keeps_punctuation() -> None:
    assert classifier_form("ＶＸ  兼職\u200b 12345！") == "vx 兼职 00000!"


def test_every_gram_has_a_bucket_and_the_model_weighs_each_bucket_once() -> None:
    assert grams("私聊私") == ["私", "私聊", "私_私", "聊", "聊私", "聊_$", "私", "私$", "私_$"]
    found = buckets("私聊私").tolist()
    assert len(found) == 9 and found[0] == found[6]  # one gram, one bucket, wherever
    assert all(0 <= b < BUCKETS for b in found)
    assert len(set(found)) == 8  # all but the second 私 (no collision among these)
    assert distinct_buckets("私聊私").tolist() == sorted(set(found))
    assert buckets("").tolist() == [] and distinct_buckets("").tolist() == []
    assert grams("") == [] and grams("a") == ["a", "a$", "a_$"]
    # a pair is not its two characters, (a, b) is not (b, a), neighbours are not two
    # apart, and the end of the text is not a character
    # a, b, ab, ba, a$, b$, a_$, b_$
    assert len(set(buckets("ab").tolist() + buckets("ba").tolist())) == 8
    assert buckets("a_b").tolist()[2] not in buckets("ab").tolist()
    assert buckets("0000")[3:6].tolist() == buckets("000")[:3].tolist()


def test_buckets_are_the_documented_arithmetic_on_code_points() -> None:
    def bucket(key: int) -> int:
        return (key * features._SPREAD & 0xFFFFFFFF) >> (32 - features.BUCKET_BITS)

    for form in ["私聊", "ab😀", "\U0010ffff好"]:
        points = [*map(ord, form), 3, 3]
        expected = [bucket(key) for i in range(len(form)) for key in (
            points[i], points[i] * features._PAIR + points[i + 1] & 0xFFFFFFFF,
            points[i] * features._PAIR - points[i + 2] & 0xFFFFFFFF)]
        assert buckets(form).tolist() == expected


def test_a_trained_model_separates_spam_from_ham(model: Model) -> None:
    assert model.score("高佣返利，私聊我领取") > 0.9
    assert model.score("今天的外卖味道不错，谢谢") < 0.1
    assert model.spam == 36 and model.ham == 36 and model.trained_at == 1_700_000_000
    top = dict(model.explain("高佣返利，私聊我"))
    assert top and all(weight > 0 for weight in top.values())


@pytest.mark.parametrize("text", ["高佣返利，私聊我领取", "今天的外卖味道不错，谢谢", "好",
                                  "", "   ", "兼职" * 600, "私聊" * (SHORT_FORM // 2),
                                  "私聊" * (SHORT_FORM // 2) + "我"],
                         ids=["spam", "ham", "one-char", "empty", "blank", "over-cap",
                              "short-form", "past-short-form"])
def test_explain_shares_add_up_to_the_score(model: Model, text: str) -> None:
    shares = model.explain(text, top=10_000)
    assert model.bias + sum(w for _, w in shares) == pytest.approx(model.margin(text),
                                                                   abs=1e-5)
    assert 0 < model.score(text) < 1


def test_a_lone_surrogate_or_astral_character_is_scored(model: Model) -> None:
    assert 0 < model.score("私聊\ud800我") < 1
    assert 0 < model.score("私聊😀我\U0010ffff") < 1
    assert model.margin("\udfff") == model.bias and model.explain("\udfff") == []
    assert len(buckets("a\ud800")) == 6  # should the fold ever let one through


def test_a_model_survives_storage_and_refuses_corruption(model: Model) -> None:
    again = Model.loads(model.dumps())
    assert again.score("兼职日结，私聊我") == pytest.approx(model.score("兼职日结，私聊我"))
    with pytest.raises(ModelError, match="corrupt"):
        Model.loads(b"not a model")
    with pytest.raises(ModelError, match="run `learn` again"):
        Model.loads(zlib.compress(b'{"format": 1, "features": "char-1-2-grams/light-fold/'
                                  b'v1", "weights": {"a": 1.0}}'))  # the previous format
    with pytest.raises(ModelError, match="run `learn` again"):
        Model.loads(zlib.compress(b'{"format": 2, "features": "other"}'))


def packed(values: list[float], dtype: str) -> str:
    return base64.b64encode(np.array(values, dtype=dtype).tobytes()).decode("ascii")


@pytest.mark.parametrize(("gaps", "values", "message"), [
    ([1], packed([1.0], "<f4"), "base64 text"),
    ("AAE=", packed([1.0], "<f4"), "ValueError"),  # 2 bytes: not a whole number
    ("%%%%", packed([1.0], "<f4"), "Error"),  # not base64
    (packed([1, 2], "<u4"), packed([1.0], "<f4"), "differ in length"),
    (packed([1, 0], "<u4"), packed([1.0, 2.0], "<f4"), "given twice"),
    (packed([BUCKETS], "<u4"), packed([1.0], "<f4"), "outside"),
    (packed([BUCKETS - 1, 1], "<u4"), packed([1.0, 1.0], "<f4"), "outside"),
    (packed([1], "<u4"), packed([float("nan")], "<f4"), "not a finite number"),
], ids=["not-text", "partial", "not-base64", "lengths", "twice", "past-table",
        "sum-past-table", "nan"])
def test_a_model_with_bad_weights_is_refused(model: Model, gaps: object, values: str,
                                             message: str) -> None:
    body = json.loads(zlib.decompress(model.dumps()))
    body["buckets"], body["weights"] = gaps, values
    with pytest.raises(ModelError, match="corrupt") as caught:
        Model.loads(zlib.compress(json.dumps(body).encode()))
    assert message in str(caught.value)


def test_a_stored_model_scores_exactly_as_the_fresh_one(model: Model) -> None:
    again = Model.loads(model.dumps())
    assert again.weights == model.weights and again.bias == model.bias
    texts = [*spam_texts(), *ham_texts(), "完全没见过的字句"]
    assert [again.score(t) for t in texts] == [model.score(t) for t in texts]
    assert again.explain("高佣返利，私聊我") == model.explain("高佣返利，私聊我")


def test_cross_validation_reports_figures_at_the_threshold() -> None:
    quality, scores = cross_validate(samples(), threshold=0.5, folds=3)
    assert len(scores) == 72 and quality.folds == 3
    assert quality.recall > 0.8 and quality.fpr < 0.2


def test_training_needs_both_labels() -> None:
    with pytest.raises(ValueError, match="both"):
        fit([Sample("只有一种", True)], now=0)


def test_classifier_condition_holds_only_with_a_model(tmp_path: Path, model: Model) -> None:
    (tmp_path / "r.yaml").write_text(CLASSIFIER_RULES, encoding="utf-8")
    ruleset = load_ruleset(tmp_path)
    assert ruleset.classifier_threshold == 0.5
    engine = RuleEngine(ruleset)
    assert engine.evaluate(push("高佣返利，私聊我")).empty  # no model: never holds
    engine.use_model(model)
    decision = engine.evaluate(push("高佣返利，私聊我"))
    assert [h.rule_id for h in decision.hits] == ["model-spam", "model-and-word"]
    assert "classifier score 0.9" in decision.hits[0].evidence
    assert decision.actions[0].rule_id == "model-spam"
    # AND: the keyword holds but the model is sure this is ham
    assert engine.evaluate(push("这篇文章挺好的，私聊也行")).empty


@pytest.mark.parametrize(("body", "message"), [
    ("classifier: 0.9", "must be a mapping"),
    ("classifier: {min_score: 1.5}", "from 0.0 to 1.0"),
    ("classifier: {min_score: yes}", "from 0.0 to 1.0"),
    ("classifier: {min: 0.5}", "unknown key 'classifier.min'"),
    ("classifier: {min_score: 0.9}\n    examples: {match: [x]}", "cannot be checked"),
], ids=["not-mapping", "above-one", "bool", "unknown-key", "examples"])
def test_bad_classifier_conditions_name_file_and_line(tmp_path: Path, body: str,
                                                      message: str) -> None:
    (tmp_path / "r.yaml").write_text(
        f"rules:\n  - id: bad\n    action: log\n    {body}\n", encoding="utf-8")
    with pytest.raises(RuleError) as caught:
        load_ruleset(tmp_path)
    assert message in str(caught.value) and "r.yaml:" in str(caught.value)


def test_grams_that_separate_the_classes_are_scaled_up() -> None:
    from bot.classifier.train import _Design, _nb_scale
    texts = [("甲乙", True), ("甲丙", True), ("丁乙", False), ("丁丙", False)]
    design = _Design([distinct_buckets(classifier_form(t)) for t, _ in texts])
    y = np.array([spam for _, spam in texts], dtype=np.float64)
    by_bucket = dict(zip(design.vocab.tolist(), _nb_scale(design, y, np.ones(len(y))),
                         strict=True))
    scale = {g: by_bucket[int(buckets(g)[len(g) - 1])]  # a character, or the pair "甲乙"
             for g in ("甲", "乙", "丙", "丁", "甲乙")}
    assert scale["乙"] == scale["丙"] == 0  # as often in spam as in ham: says nothing
    assert scale["甲"] == pytest.approx(scale["丁"])  # one class only, either one
    assert scale["甲"] > 0
    assert scale["甲乙"] > 0
    assert np.mean(list(by_bucket.values())) == pytest.approx(1)
