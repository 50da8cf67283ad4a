"""Rule files: every schema error with its file:line, matching, except, examples, engine."""

from __future__ import annotations

import time
from pathlib import Path
from types import MappingProxyType

import pytest

from bot.core.errors import RuleError
from bot.core.models import ActionKind, Event
from bot.rules import RuleEngine, RuleSet, load_ruleset

ROOT = Path(__file__).resolve().parents[1]
USER = "oSpammer00000000000000000001"


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path / "rules", "r.yaml", text)
    with pytest.raises(RuleError) as caught:
        load_ruleset(path.parent)
    return caught.value.errors


def engine_for(tmp_path: Path, text: str) -> RuleEngine:
    return RuleEngine(load_ruleset(write(tmp_path / "rules", "r.yaml", text).parent))


def event(content: str = "", *, t: int = 1_700_000_000, openid: str = USER,
          msg_type: str = "text", **texts: str) -> Event:
    fields = {"content": content, **texts} if content else texts
    return Event(openid=openid, account="gh_test", create_time=t, msg_type=msg_type,
                 event="subscribe" if msg_type == "event" else None,
                 texts=MappingProxyType(fields))


SCHEMA_ERRORS = [
    ("rules:\n  - id: a\n    keywords: [x\n", "r.yaml:4: invalid YAML"),
    ("rules:\n  - id: a\n    keywords: [x]\n    action: log\n    colour: red\n",
     "r.yaml:5: rule 'a': unknown key 'colour'"),
    ("rules:\n  - id: a\n    action: log\n", "r.yaml:2: rule 'a': a rule needs at least one "
                                              "condition"),
    ("rules:\n  - id: a\n    keywords: []\n    action: blacklist\n",
     "r.yaml:3: rule 'a': 'keywords' is an empty list"),
    ("rules:\n  - id: a\n    regex: ['(a)\\1']\n    action: log\n",
     "r.yaml:3: rule 'a': regex '(a)\\1' is not valid RE2 syntax"),  # as written
    ("rules:\n  - id: a\n    regex: ['(?=x)y']\n    action: log\n", "no backreferences or "
                                                                     "look-around"),
    ("rules:\n  - id: a\n    regex: ['VX\\d{6}']\n    action: log\n",
     "r.yaml:3: rule 'a': regex 'VX\\d{6}' can never match: the text it runs on is folded"),
    ("rules:\n  - id: a\n    regex: ['bad\\.xyz']\n    action: log\n",
     "r.yaml:3: rule 'a': regex 'bad\\.xyz' can never match: '.' never appears"),
    ("rules:\n  - id: a\n    keywords: [x]\n    msg_types: []\n    action: log\n",
     "rule 'a': 'msg_types' is empty"),
    ("rules:\n  - id: a\n    keywords: [x]\n    action: blacklist\n    duration: 7 days\n",
     "r.yaml:5: rule 'a': 'duration' must be a duration like 30s, 15m, 12h or 7d"),
    ("rules:\n  - id: a\n    keywords: 加微信\n    action: log\n",
     "r.yaml:3: rule 'a': 'keywords' must be a list of strings, got a string"),
    ("rules:\n  - id: a\n    keywords: [x, 3]\n    action: log\n",
     "r.yaml:3: rule 'a': every 'keywords' entry must be a non-empty string, got an integer"),
    ("rules:\n  - id: a\n    keywords: [x]\n    action: ban\n",
     "r.yaml:4: rule 'a': 'action' must be one of: blacklist, unblacklist, warn, log"),
    ("rules:\n  - id: a\n    keywords: [x]\n", "r.yaml:2: rule 'a': missing required key "
                                               "'action'"),
    ("rules:\n  - id: Bad Id\n    keywords: [x]\n    action: log\n",
     "r.yaml:2: rule #1: 'id' must match [a-z0-9_-]+"),
    ("rules:\n  - keywords: [x]\n    action: log\n", "r.yaml:2: rule #1: missing required key "
                                                    "'id'"),
    ("rules:\n  - id: a\n    flood: {messages: 0, seconds: 60}\n    action: log\n",
     "r.yaml:3: rule 'a': 'flood.messages' must be a positive integer, got 0"),
    ("rules:\n  - id: a\n    flood: 10\n    action: log\n", "'flood' must be a mapping"),
    ("rules:\n  - id: a\n    keywords: [x]\n    msg_types: [sms]\n    action: log\n",
     "r.yaml:4: rule 'a': unknown message type 'sms'"),
    ("rules:\n  - id: a\n    contact: [email]\n    action: log\n",
     "r.yaml:3: rule 'a': unknown contact kind 'email'"),
    ("rules:\n  - id: a\n    keywords: [x]\n    action: log\n    enabled: yes please\n",
     "r.yaml:5: rule 'a': 'enabled' must be true or false"),
    ("rules:\n  - id: a\n    keywords: [x]\n    action: log\n    warn_limit: 3\n",
     "r.yaml:5: rule 'a': 'warn_limit' only applies to 'action: warn'"),
    ("rules:\n  - id: a\n    keywords: [x]\n    action: log\n    duration: 1d\n",
     "r.yaml:5: rule 'a': 'duration' only applies to blacklist"),
    ("rules:\n  - id: a\n    keywords: ['!!!']\n    action: log\n",
     "is only spaces or punctuation"),
    ("rules:\n  - id: a\n    keywords: [x]\n    keywords: [y]\n    action: log\n",
     "r.yaml:4: duplicate key 'keywords' (first on line 3)"),
    ("rules: {id: a}\n", "r.yaml:1: 'rules' must be a list of rules, got a mapping"),
    ("- id: a\n", "r.yaml:1: the top level must be a mapping"),
    ("rule:\n  - id: a\n", "r.yaml:1: top level: unknown key 'rule': did you mean 'rules'?"),
    ("rules:\n  - id: a\n    keywords: [spam]\n    action: log\n    examples:\n"
     "      match: [ham]\n", "r.yaml:5: rule 'a': example 'ham' should match but does not"),
    ("rules:\n  - id: a\n    keywords: [spam]\n    action: log\n    examples:\n"
     "      no_match: [a spam b]\n",
     "r.yaml:5: rule 'a': example 'a spam b' should not match but does (keyword 'spam'"),
    ("rules:\n  - id: a\n    keywords: [spam]\n    action: log\n    examples: {matches: [x]}\n",
     "r.yaml:5: rule 'a': unknown key 'examples.matches'"),
]


@pytest.mark.parametrize(("text", "expected"), SCHEMA_ERRORS,
                         ids=[f"e{i}" for i in range(len(SCHEMA_ERRORS))])
def test_schema_error_names_file_line_and_expectation(tmp_path: Path, text: str,
                                                      expected: str) -> None:
    errors = errors_of(tmp_path, text)
    assert any(expected in error for error in errors), errors
    assert all(error.startswith(str(tmp_path / "rules" / "r.yaml") + ":") for error in errors)


def test_every_error_of_a_file_is_reported(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, "rules:\n  - id: a\n    action: nope\n"
                                 "  - id: b\n    keywords: [x]\n    action: log\n    z: 1\n")
    assert len(errors) >= 3


def test_duplicate_id_names_both_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "rules:\n  - id: same\n    keywords: [x]\n    action: log\n")
    write(tmp_path, "b.yml", "rules:\n\n  - id: same\n    keywords: [y]\n    action: log\n")
    with pytest.raises(RuleError) as caught:
        load_ruleset(tmp_path)
    assert caught.value.errors == [
        f"{tmp_path / 'b.yml'}:3: duplicate rule id 'same' (already defined at "
        f"{tmp_path / 'a.yaml'}:2); rename this one"]


@pytest.mark.parametrize("pattern", [r"(?P<id>\d{6,})", r"v\pN{6,}", r"加[，,]?微",
                                     r"www\.?spam", r"[A-Za-z]\d"])
def test_regexes_that_can_match_are_accepted(tmp_path: Path, pattern: str) -> None:
    load_ruleset(write(tmp_path / "rules", "r.yaml",
                       f"rules:\n  - id: a\n    regex: ['{pattern}']\n    action: log\n").parent)


def test_regexes_too_large_together_name_a_file_and_line(tmp_path: Path) -> None:
    # Each compiles alone; RE2 cannot compile the set of both.
    write(tmp_path, "a.yaml", "rules:\n  - id: a\n    keywords: [x]\n    action: log\n")
    write(tmp_path, "b.yaml", "rules:\n  - id: b\n    regex: ['加\\p{Han}{2,1000}群']\n"
                              "    action: log\n  - id: c\n    regex: ['进\\p{Han}{2,1000}群']\n"
                              "    action: log\n")
    with pytest.raises(RuleError) as caught:
        load_ruleset(tmp_path)
    assert caught.value.errors[0].startswith(f"{tmp_path / 'b.yaml'}:2: the 2 regexes")


def test_missing_directory_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="rules directory not found"):
        load_ruleset(tmp_path / "nope")
    write(tmp_path, "empty.yaml", "# nothing yet\n")
    write(tmp_path, "notes.txt", "not a rule file")
    ruleset = load_ruleset(tmp_path)
    assert len(ruleset) == 0 and ruleset.summary()["files"] == 1


def test_summary_counts(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "allowlist: [oStaff000000]\nrules:\n"
          "  - id: a\n    keywords: [x, y, Y]\n    action: log\n"
          "  - id: b\n    keywords: [z]\n    enabled: false\n    action: log\n")
    ruleset = load_ruleset(tmp_path)
    assert len(ruleset) == 1
    assert ruleset.summary() == {"files": 1, "rules": 1, "keywords": 2, "regexes": 0,
                                 "disabled": 1, "allowlist": 1}
    assert len(RuleSet.empty()) == 0


# ------------------------------------------------------------------ matching

SPAM = """
rules:
  - id: spam
    keywords: [加微信, vx, 刷单, 口交]
    except: [路口交通]
    action: blacklist
"""


@pytest.mark.parametrize("text", [
    "加 微 信", "加\u200b微\u200b信", "ＶＸ 123", "Vx", "刷單賺錢", "前面路口交通 口交服务",
    "路口交，通宵", "加~微~信", "加|微|信",
], ids=["spaced", "zero-width", "full-width", "case", "traditional", "hit-beside-except",
        "except-split-by-punctuation", "tilde", "bar"])
def test_disguised_keywords_are_caught(tmp_path: Path, text: str) -> None:
    decision = engine_for(tmp_path, SPAM).evaluate(event(text))
    assert [h.rule_id for h in decision.hits] == ["spam"]
    assert decision.actions[0].kind is ActionKind.BLACKLIST


@pytest.mark.parametrize("text", ["前面路口交通拥堵", "今天天气不错", "微信支付",
                                  "前面路口，交通管制了", "我到路口 交通很堵"],
                         ids=["except", "plain", "unrelated", "keyword-split-by-comma",
                              "keyword-split-by-space"])
def test_ordinary_texts_pass(tmp_path: Path, text: str) -> None:
    assert engine_for(tmp_path, SPAM).evaluate(event(text)).empty


SPLIT = """
rules:
  - id: spam
    keywords: [口交, 送彩金]
    except: [口交通, 口交换, 口交给, 彩金属, 路口交]
    action: blacklist
"""


@pytest.mark.parametrize(("text", "fires"), [
    ("口 交通宵陪伴", True), ("好的。口.交换服务", True), ("注册送彩 金属于新用户", True),
    ("提供口交，通宵陪伴", True), ("前面路口，交通管制了", False), ("前面路口交通拥堵", False),
    ("提供口 交通宵陪伴", True), ("提供口.交换服务", True),
], ids=["split-at-start", "split-after-a-break", "split-bonus", "comma-after", "left-phrase",
        "plain-except", "split-after-a-word", "dot-split-after-a-word"])
def test_a_split_keyword_is_excused_only_by_a_phrase_reaching_left(tmp_path: Path, text: str,
                                                                  fires: bool) -> None:
    # 口交 split by what the follower wrote is a word boundary only where an except phrase
    # says so from the left (路口，交通 is 路口交); anywhere else it is an evasion.
    assert (not engine_for(tmp_path, SPLIT).evaluate(event(text)).empty) is fires


def test_evidence_names_field_and_original_span(tmp_path: Path) -> None:
    text = "你好！加 微\u200b信吧"
    hit = engine_for(tmp_path, SPAM).evaluate(event(text)).hits[0]
    assert hit.field == "content"
    assert hit.span is not None and text[hit.span[0]:hit.span[1]] == "加 微\u200b信"
    assert "keyword '加微信'" in hit.evidence


def test_link_fields_are_matched_each(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, "rules:\n  - id: l\n    msg_types: [link]\n"
                                  "    keywords: [刷单]\n    action: log\n")
    hit = engine.evaluate(event(msg_type="link", title="好文", description="刷 单 返利",
                                url="http://x.cn")).hits[0]
    assert hit.field == "description" and hit.span == (0, 3)
    assert engine.evaluate(event("刷单")).empty  # a text message is not a link


def test_msg_types_event_sees_every_event(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, "rules:\n  - id: churn\n    msg_types: [event]\n"
                                  "    flood: {messages: 2, seconds: 60}\n    action: log\n")
    assert engine.evaluate(event(msg_type="event", t=1)).empty
    assert engine.evaluate(event("hi", t=2)).empty  # messages do not count
    assert [h.rule_id for h in engine.evaluate(event(msg_type="event", t=3)).hits] == ["churn"]


def test_keywords_and_regex_are_anded(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, "rules:\n  - id: a\n    keywords: [兼职]\n"
                                  "    regex: ['日结\\d{3,}']\n    action: log\n")
    assert engine.evaluate(event("兼职")).empty
    assert engine.evaluate(event("日结300")).empty
    hit = engine.evaluate(event("兼职 日结 300")).hits[0]
    assert "keyword '兼职'" in hit.evidence and "regex" in hit.evidence


def test_pathological_regex_does_not_stall(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, "rules:\n  - id: evil\n    regex: ['(a+)+$']\n"
                                  "    action: log\n")
    started = time.perf_counter()
    assert engine.evaluate(event("a" * 50_000 + "b")).empty  # backtracking's worst case
    assert not engine.evaluate(event("a" * 50_000)).empty
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(("text", "kind"), [
    ("加V", "wechat_id"), ("➕vx", "wechat_id"), ("加 薇 信", "wechat_id"),
    ("薇信 abc12345", "wechat_id"),
    ("加~微~信 abc12345", "wechat_id"), ("+V：abc12345", "wechat_id"),
    ("加＋微＋信 abc12345", "wechat_id"), ("企鹅号 12345678", "qq"),
    ("我微信号是 abc_12345", "wechat_id"), ("qq:１２３４５６７８", "qq"),
    ("扣扣 一二三四五六七", "qq"), ("电话 一三八 1234 五六七八", "phone"), ("①③⑧①②③④⑤⑥⑦⑧", "phone"),
    ("壹叁捌壹贰叁肆伍陆柒捌", "phone"), ("看 www。spam．com", "url"), ("https://x.cn/a", "url"),
], ids=lambda v: v if v in {"wechat_id", "qq", "phone", "url"} else None)
def test_contact_detection(tmp_path: Path, text: str, kind: str) -> None:
    engine = engine_for(tmp_path, f"rules:\n  - id: c\n    contact: [{kind}]\n"
                                  "    action: log\n")
    hit = engine.evaluate(event(text)).hits
    assert hit and f"contact {kind}" in hit[0].evidence, text


@pytest.mark.parametrize("text", [
    "增加微信支付", "请问微信怎么绑定", "订单号 2023120112", "一三八", "我们一起去看电影",
    "welcome.home", "邮件 a@b.com", "国产微芯片", "安徽信息工程学院", "权威信号",
    "南极有企鹅100000只", "C++ vs JavaScript",
], ids=["add-payment", "question", "order-no", "short-numerals", "yiqi", "not-url", "email",
        "microchip", "anhui", "authority", "penguins", "c-plus-plus"])
def test_contact_detection_stays_quiet(tmp_path: Path, text: str) -> None:
    engine = engine_for(tmp_path, "rules:\n  - id: c\n    contact: [wechat_id, qq, phone, url]"
                                  "\n    action: log\n")
    assert engine.evaluate(event(text)).empty, text


# ------------------------------------------------------------------ decisions

def test_several_rules_give_one_blacklist_with_every_hit(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, """
rules:
  - id: a
    keywords: [刷单]
    action: blacklist
    duration: 1d
  - id: b
    keywords: [返利]
    action: blacklist
    duration: 7d
  - id: c
    keywords: [刷单]
    action: log
""")
    decision = engine.evaluate(event("刷单返利", t=1000))
    assert [h.rule_id for h in decision.hits] == ["a", "b", "c"]
    assert len(decision.actions) == 1
    action = decision.actions[0]
    assert (action.kind, action.rule_id, action.expires_at) == (ActionKind.BLACKLIST, "a",
                                                                1000 + 7 * 86400)
    assert "a:" in action.reason and "b:" in action.reason


def test_permanent_blacklist_outranks_timed_and_unblacklist(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, """
rules:
  - id: timed
    keywords: [x]
    action: blacklist
    duration: 1h
  - id: forever
    keywords: [y]
    action: blacklist
  - id: pardon
    keywords: [z]
    action: unblacklist
""")
    assert engine.evaluate(event("x y z")).actions[0].expires_at is None
    only = engine.evaluate(event("z")).actions
    assert [a.kind for a in only] == [ActionKind.UNBLACKLIST]


def test_allowlisted_followers_are_never_actioned(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, "allowlist: [oStaff000000]\n" + SPAM.strip() + "\n"
                        "  - id: noisy\n    flood: {messages: 1, seconds: 60}\n"
                        "    action: blacklist\n")
    decision = engine.evaluate(event("加微信", openid="oStaff000000"))
    assert decision.actions == () and decision.reply is None
    assert [(h.rule_id, h.action) for h in decision.hits] == [("spam", ActionKind.LOG)]
    assert "allowlisted" in decision.hits[0].evidence


def test_log_rules_only_record(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, "rules:\n  - id: shadow\n    keywords: [优惠]\n"
                                  "    action: log\n    reply: 收到\n")
    decision = engine.evaluate(event("优惠"))
    assert decision.hits[0].action is ActionKind.LOG and decision.actions == ()
    assert decision.reply == "收到"


WARN = """
rules:
  - id: ads
    keywords: [广告]
    action: warn
    warn_limit: 2
    warn_window: 1h
    duration: 1d
    reply: 请勿发广告
"""


def test_warn_escalates_after_warn_limit_within_the_window(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, WARN)
    first, second = engine.evaluate(event("广告", t=0)), engine.evaluate(event("广告", t=10))
    for decision, n in ((first, 1), (second, 2)):
        assert decision.hits[0].action is ActionKind.WARN and decision.actions == ()
        assert decision.reply == "请勿发广告" and f"warning {n} of 2" in decision.hits[0].evidence
    third = engine.evaluate(event("广告", t=20))
    assert third.hits[0].action is ActionKind.BLACKLIST
    action = third.actions[0]
    assert action.kind is ActionKind.BLACKLIST and action.expires_at == 20 + 86400
    assert "warning 1 of 2" in engine.evaluate(event("广告", t=30)).hits[0].evidence  # reset


def test_warnings_outside_the_window_do_not_escalate(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, WARN)
    for t in (0, 3600, 7200, 10800):  # each one an hour after the last: never 3 in (t-1h, t]
        assert engine.evaluate(event("广告", t=t)).hits[0].action is ActionKind.WARN
    assert engine.evaluate(event("广告", t=10801)).hits[0].action is ActionKind.WARN
    assert engine.evaluate(event("广告", t=10802)).hits[0].action is ActionKind.BLACKLIST


FLOOD = """
rules:
  - id: flood
    flood: {messages: 5, seconds: 60}
    action: blacklist
"""


def test_flood_fires_at_exactly_n_within_the_window(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, FLOOD)
    for t in (0, 10, 20, 30):  # N-1 messages
        assert engine.evaluate(event("hi", t=t)).empty
    hit = engine.evaluate(event("hi", t=59)).hits[0]  # the 5th within (-1, 59]
    assert "flood: 5 messages within 60s" in hit.evidence


def test_flood_window_expiry(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, FLOOD)
    for t in (0, 10, 20, 30):
        engine.evaluate(event("hi", t=t))
    assert engine.evaluate(event("hi", t=60)).empty  # t=0 has left the window (0, 60]
    assert not engine.evaluate(event("hi", t=61)).empty  # 10, 20, 30, 60, 61


def test_flood_is_per_follower(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, FLOOD)
    for i in range(10):
        assert engine.evaluate(event("hi", t=i, openid=f"oUser{i:08d}")).empty


def test_replace_keeps_flood_state(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, FLOOD)
    for t in range(4):
        engine.evaluate(event("hi", t=t))
    engine.replace(load_ruleset(write(tmp_path / "other", "f.yaml", FLOOD).parent))
    assert not engine.evaluate(event("hi", t=4)).empty


# ------------------------------------------------------------------ shipped rules

def test_shipped_rules_load_with_passing_examples_and_quickly() -> None:
    started = time.perf_counter()
    ruleset = load_ruleset(ROOT / "rules")
    assert time.perf_counter() - started < 2.0
    summary = ruleset.summary()
    assert summary["files"] >= 5 and summary["rules"] >= 6 and summary["keywords"] > 30
    for rule in ruleset.rules:
        if rule.spec.keywords or rule.spec.regex or rule.spec.contact:
            assert rule.spec.examples_match and rule.spec.examples_no_match, rule.id


@pytest.mark.parametrize("text", [
    "老师您好，请问今天的作业是什么？", "前面路口交通拥堵，绕行吧",
    "我的电话是13812345678，麻烦回电",
    "刷单是诈骗吗？我好像被骗了", "请问房贷利率是多少", "已转发到微信群，谢谢分享",
    "考试上岸了！", "这个接口交互怎么调用", "http://mp.weixin.qq.com/s/abc 这篇文章不错",
    "这款手机用的是国产微芯片", "我在安徽信息工程学院读书", "南极有企鹅100000只",
    "海口交警提醒大家注意安全", "请问你们银行有无抵押贷款吗？", "衣服被划了个新口子",
    "18K彩金项链多少钱", "我想咨询加急办理，我电话13812345678",
], ids=[f"ordinary{i}" for i in range(17)])
def test_shipped_rules_leave_ordinary_followers_alone(text: str) -> None:
    decision = RuleEngine(load_ruleset(ROOT / "rules")).evaluate(event(text))
    assert decision.actions == () and not [h for h in decision.hits
                                           if h.action is not ActionKind.LOG], decision
