"""``why``: a clean follower is not an unknown OpenID, a queued blacklist is shown as
queued, sources and durations read as an operator writes them."""

from __future__ import annotations

import time
from pathlib import Path
from types import MappingProxyType

import pytest

from bot.cli import main
from bot.core.models import NO_DECISION, Action, ActionKind, Decision, Event, RuleHit
from bot.rules import RuleEngine, load_ruleset
from bot.storage.sqlite.actions import set_pause
from bot.storage.sqlite.admin import follower_history, queue_admin_actions, reading
from bot.storage.sqlite.store import insert_event, run_sync

CLEAN = "oCleanFollower00000000000001"
NEVER = "oNeverSeen000000000000000001"
SPAMMER = "oQueuedSpammer00000000000001"


def push(openid: str, text: str, at: int, msg_id: str) -> Event:
    return Event(openid=openid, account="gh", create_time=at, msg_type="text", msg_id=msg_id,
                 texts=MappingProxyType({"content": text}))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(f"storage:\n  path: {tmp_path / 'bot.db'}\n", encoding="utf-8")
    return path


def why(config: Path, openid: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["why", openid, "--config", str(config)])
    return code, capsys.readouterr().out


def test_a_clean_follower_is_not_an_openid_never_seen(
        tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now = int(time.time())
    db = tmp_path / "bot.db"
    for i in range(3):
        run_sync(db, lambda d, i=i: insert_event(d, push(CLEAN, "你好", now + i, str(i)),
                                                 NO_DECISION, now=now + i))
    code, clean = why(config, CLEAN, capsys)
    assert code == 0
    assert "state: not blacklisted" in clean and "pushes: 3 pushes, first " in clean
    assert "decisions: none, no rule ever fired" in clean
    code, never = why(config, NEVER, capsys)
    assert code == 1 and never.splitlines()[1].startswith("never seen: no push, decision")
    assert "pushes:" not in never


def test_a_queued_blacklist_shows_as_queued_and_paused_not_never_blacklisted(
        tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now = int(time.time())
    db = tmp_path / "bot.db"
    decision = Decision(hits=(RuleHit("contact-spam", ActionKind.BLACKLIST, "keyword"),),
                        actions=(Action(ActionKind.BLACKLIST, SPAMMER, "contact-spam"),))
    run_sync(db, lambda d: insert_event(d, push(SPAMMER, "加微信", now, "9"), decision,
                                        now=now))
    run_sync(db, lambda d: set_pause(d, now + 3600, "WeChat API errcode 45009 (quota)", now))
    code, out = why(config, SPAMMER, capsys)
    assert code == 0
    assert "never blacklisted" not in out and "state: not blacklisted yet (queued, below)" in out
    queued = [line for line in out.splitlines() if line.startswith("queued: ")]
    assert len(queued) == 1, out
    assert queued[0].startswith("queued: blacklist via rule contact-spam since ")
    assert "waiting to be sent, 0 attempts so far; SENDING PAUSED until " in queued[0]
    assert "+08:00 (Asia/Shanghai): WeChat API errcode 45009 (quota)" in queued[0]
    with reading(db, "") as read:  # the library function the web console shows too
        history = follower_history(read, SPAMMER)
    assert history.seen and len(history.queued) == 1 and history.pushes[0] == 1


def test_an_admins_action_reads_via_cli_once(
        tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "bot.db"
    queue_admin_actions(db, [Action(ActionKind.BLACKLIST, SPAMMER, "cli", "spam")],
                        int(time.time()), dry_run=False)
    _code, out = why(config, SPAMMER, capsys)
    assert " via cli" in out and "via cli cli" not in out
    assert "pushes: 0 pushes received from this follower" in out
    assert "queued: blacklist via cli since " in out


def test_an_escalation_says_its_window_as_a_duration(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - id: ladder\n    keywords: [spamword]\n    action: warn\n"
        "    warn_limit: 1\n", encoding="utf-8")
    engine = RuleEngine(load_ruleset(tmp_path))
    engine.evaluate(push(SPAMMER, "spamword", 1000, "1"))
    hit = engine.evaluate(push(SPAMMER, "spamword", 1001, "2")).hits[0]
    assert hit.action is ActionKind.BLACKLIST
    assert "offence 2 after 1 warning within 1d: escalated" in hit.evidence, hit.evidence
