"""The console's pages: Overview, Decisions, Follower, Queue, Rules, Reports."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bot.core.errors import RuleError, explain
from bot.core.models import MESSAGE_TYPES, Action, ActionKind, Event, is_valid_openid, text_field
from bot.core.normalize import Folded
from bot.core.timefmt import when
from bot.rules import load_ruleset, parse_duration
from bot.rules.explain import explain_event, history_horizon
from bot.storage.ports import DecisionQuery, DecisionRow
from bot.web.admin.auth import Session
from bot.web.admin.chart import hourly_svg
from bot.web.admin.console import PREFIX, Console, form_of
from bot.web.admin.i18n import translator

PERIODS = (("1h", "p_1h"), ("24h", "p_24h"), ("7d", "p_7d"), ("30d", "p_30d"), ("all", "p_all"))
ACTIONS = ("blacklist", "unblacklist", "warn", "log")
EXCERPT = 60
TEST_OPENID = "oConsoleTestFollower00000000"
REPORT_NAME = re.compile(r"report-(\d{4}-\d{2}-\d{2})\.html")
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
MAX_TEST_TEXT = 4000


class Pages:
    """Every page handler; each gets the request and the operator's session."""

    def __init__(self, console: Console):
        self.c = console
        self.d = console.deps

    def register(self, app: web.Application) -> None:
        """Add every page's routes (all behind the session guard)."""
        route = self.c.route
        self.c.add_login(app)
        route(app, "GET", PREFIX, self.overview)
        route(app, "GET", f"{PREFIX}/decisions", self.decisions)
        route(app, "GET", f"{PREFIX}/follower", self.follower)
        route(app, "POST", f"{PREFIX}/follower/action", self.follower_action)
        route(app, "GET", f"{PREFIX}/queue", self.queue)
        route(app, "POST", f"{PREFIX}/queue/retry", self.retry)
        route(app, "POST", f"{PREFIX}/queue/dismiss", self.dismiss)
        route(app, "POST", f"{PREFIX}/queue/resume", self.resume)
        route(app, "GET", f"{PREFIX}/rules", self.rules)
        route(app, "POST", f"{PREFIX}/rules/test", self.rules_test)
        route(app, "GET", f"{PREFIX}/reports", self.reports)
        route(app, "GET", f"{PREFIX}/reports/file/{{name}}", self.report_file)

    def _when(self, ts: float | None) -> str:
        return when(ts, self.d.config.export.timezone)

    # ------------------------------------------------------------ overview

    async def overview(self, request: web.Request, session: Session) -> web.StreamResponse:
        t = translator(self.c.lang(request))
        now = self.d.clock()
        tz = self.d.config.export.timezone
        midnight = _local_midnight(now, tz)
        until = (int(now) // 3600 + 1) * 3600
        health, activity, queue, hourly, last_run, day = await asyncio.gather(
            self.d.health(), self.d.store.activity(midnight), self.d.store.queue(0),
            self.d.snapshots.decisions_per_hour(until), self.d.snapshots.read_last_run(),
            self.d.snapshots.latest_day())
        counts = dict(queue.counts)
        paused = queue.paused_until > now
        attention = _attention(t, health, counts, paused=paused, until=queue.paused_until,
                               reason=queue.paused_reason, fmt=self._when)
        start = until - 24 * 3600
        labels = [self._when(start + i * 3600)[11:13] + ":00" for i in range(len(hourly))]
        chart = hourly_svg(hourly, labels, x_title=t("hour_axis").format(tz=tz),
                           y_title=t("decisions_axis"), aria=t("decisions_per_hour"))
        last_export = None
        if last_run or day:
            snapshot = await self.d.snapshots.get(day) if day else None
            last_export = {"when": self._when(last_run or (snapshot.taken_at if snapshot
                                                           else None)),
                           "total": snapshot.total if snapshot else "-",
                           "day": day if snapshot and snapshot.report_path else ""}
        return self.c.render(
            request, session, "overview.html", "overview", health=health, activity=activity,
            decisions_today=sum(activity.decisions.values()), counts=counts,
            attention=attention, chart=_Markup(chart), last_export=last_export,
            dry_run=self.d.config.dry_run,
            paused_text=(f"{t('until')} {self._when(queue.paused_until)}" if paused
                         else t("no")))

    # ------------------------------------------------------------ decisions

    async def decisions(self, request: web.Request, session: Session) -> web.StreamResponse:
        q = request.query
        since_key = q.get("since", "7d")
        seconds = parse_duration(since_key) if since_key != "all" else None
        now = int(self.d.clock())
        query = DecisionQuery(
            rule_id=q.get("rule", "")[:100], action=q.get("action", "")[:20],
            openid=q.get("openid", "").strip()[:100],
            since=now - seconds if seconds else 0, before_id=_int(q.get("before")), limit=50)
        rows = await self.d.store.decisions(query)
        t = translator(self.c.lang(request))
        model = self.d.engine.model
        shown = await asyncio.to_thread(self._decision_rows, rows, model, t("purged"))
        older = ""
        if len(rows) == query.limit:
            params = {k: v for k, v in q.items() if k not in ("before", "lang", "note")}
            older = f"{PREFIX}/decisions?{urlencode({**params, 'before': rows[-1].id})}"
        rule_ids = sorted({r.id for r in self.d.engine.ruleset.rules} | {"cli"}
                          | ({query.rule_id} if query.rule_id else set()))
        return self.c.render(request, session, "decisions.html", "decisions", rows=shown,
                             q=query, since=since_key, periods=PERIODS, actions=ACTIONS,
                             rule_ids=rule_ids, older=older)

    def _decision_rows(self, rows: list[DecisionRow], model: Any, purged: str
                       ) -> list[dict[str, Any]]:
        out = []
        for r in rows:
            text = " / ".join(v for v in r.texts.values() if v)
            score = "-"
            if model is not None and text:
                score = f"{max(model.score(v) for v in r.texts.values() if v):.2f}"
            excerpt = purged if r.purged else (text[:EXCERPT] + ("…" if len(text) > EXCERPT
                                                                 else ""))
            out.append({"when": self._when(r.created_at), "openid": r.openid,
                        "rule_id": r.rule_id, "action": r.action, "evidence": r.evidence,
                        "excerpt": excerpt, "score": score})
        return out

    # ------------------------------------------------------------ follower

    async def follower(self, request: web.Request, session: Session) -> web.StreamResponse:
        openid = request.query.get("openid", "").strip()
        t = translator(self.c.lang(request))
        if not openid:
            rows = await self.d.store.blacklisted(100)
            listed = [{"openid": b.openid, "since": self._when(b.since), "rule_id": b.rule_id,
                       "reason": b.reason, "expires": self._when(b.expires_at)} for b in rows]
            return self.c.render(request, session, "follower.html", "follower", openid="",
                                 history=None, blacklisted=listed)
        if not is_valid_openid(openid):
            return self.c.render(request, session, "follower.html", "follower", openid=openid,
                                 history=None, blacklisted=[], error=t("bad_openid"),
                                 status=400)
        history = await self.d.store.follower(openid, 50)
        if history.state:
            status, rule_id, reason, since, expires = history.state
            state = f"{t('st_' + status)} · {t('since')} {self._when(since)} · {rule_id or '-'}"
            state += f" ({reason})" if reason else ""
            state += f" · {t('expires')} {self._when(expires)}" if expires else ""
        else:
            state = t("never_blacklisted")
        decisions = [{"when": self._when(c), "rule_id": r, "action": a, "evidence": e,
                      "kind": f"{m}/{ev}" if ev else (m or "cli")}
                     for c, r, a, e, m, ev in history.decisions]
        actions = [{"when": self._when(c), "kind": k, "status": s, "source": src,
                    "rule_id": r,
                    "error": f"{code}: {msg or ''} {t.errcode(code, explain(code))}".strip()
                    if code is not None else ""}
                   for c, k, s, src, r, code, msg in history.actions]
        return self.c.render(request, session, "follower.html", "follower", openid=openid,
                             history=history, state_text=state, decisions=decisions,
                             actions=actions, blacklisted=[])

    async def follower_action(self, request: web.Request, session: Session
                              ) -> web.StreamResponse:
        form = form_of(request)
        openid = str(form.get("openid", "")).strip()
        kind = str(form.get("kind", ""))
        duration = str(form.get("duration", "")).strip()
        if not is_valid_openid(openid) or kind not in ("blacklist", "unblacklist"):
            raise web.HTTPBadRequest(text="invalid OpenID or action")
        seconds = parse_duration(duration) if duration else None
        if duration and seconds is None:
            raise web.HTTPBadRequest(text="invalid duration")
        now = int(self.d.clock())
        reason = str(form.get("reason", "")).strip()[:200] or "web console"
        action = Action(ActionKind(kind), openid, "cli", reason,
                        now + seconds if seconds and kind == "blacklist" else None)
        ids, learnt = await self.d.store.admin_actions([action], now,
                                                       dry_run=self.d.config.dry_run)
        self.d.wake()
        queued = sum(1 for i in ids if i is not None)
        note = "dry_run_recorded" if self.d.config.dry_run else (
            "queued" if queued else "already")
        raise web.HTTPSeeOther(f"{PREFIX}/follower?" + urlencode(
            {"openid": openid, "note": note, "n": queued, "learnt": learnt}))

    # ------------------------------------------------------------ queue

    async def queue(self, request: web.Request, session: Session) -> web.StreamResponse:
        status = await self.d.store.queue(50)
        t = translator(self.c.lang(request))
        now = self.d.clock()
        sections = [(title, [{"id": r[0], "openid": r[1], "kind": r[2], "status": r[3],
                              "source": r[4], "when": self._when(r[5]), "attempts": r[6],
                              "errcode": r[7], "errmsg": r[8] or "",
                              "explain": t.errcode(r[7], explain(r[7]))}
                             for r in rows]) for title, rows in status.sections]
        return self.c.render(request, session, "queue.html", "queue",
                             paused=status.paused_until > now,
                             paused_until=self._when(status.paused_until),
                             paused_reason=status.paused_reason, counts=status.counts,
                             sections=sections, dry_run=self.d.config.dry_run)

    async def retry(self, request: web.Request, session: Session) -> web.StreamResponse:
        if self.d.config.dry_run:
            raise web.HTTPSeeOther(f"{PREFIX}/queue?note=dry_run_refused")
        openid = str(form_of(request).get("openid", "")).strip()
        if openid and not is_valid_openid(openid):
            raise web.HTTPBadRequest(text="invalid OpenID")
        ids = await self.d.store.requeue([openid] if openid else [], int(self.d.clock()))
        self.d.wake()
        raise web.HTTPSeeOther(f"{PREFIX}/queue?" + urlencode({"note": "requeued",
                                                               "n": len(ids)}))

    async def dismiss(self, request: web.Request, session: Session) -> web.StreamResponse:
        action_id = _int(str(form_of(request).get("id", "")))
        if not action_id:
            raise web.HTTPBadRequest(text="invalid action id")
        ids, _unknown = await self.d.store.dismiss([action_id], int(self.d.clock()))
        raise web.HTTPSeeOther(f"{PREFIX}/queue?" + urlencode({"note": "dismissed",
                                                               "n": len(ids)}))

    async def resume(self, request: web.Request, session: Session) -> web.StreamResponse:
        until, _reason = await self.d.store.resume()
        self.d.wake()
        note = "resumed" if until > self.d.clock() else "not_paused"
        raise web.HTTPSeeOther(f"{PREFIX}/queue?note={note}")

    # ------------------------------------------------------------ rules

    async def rules(self, request: web.Request, session: Session, *,
                    result: dict[str, Any] | None = None, test: dict[str, str] | None = None
                    ) -> web.StreamResponse:
        t = translator(self.c.lang(request))
        ruleset = self.d.engine.ruleset
        errors = await asyncio.to_thread(_rule_errors, self.d.config.rules.dir)
        last_error, loaded_at = self.d.rules_state()
        if last_error and not errors:  # the files were fixed since; the error is in force
            errors = last_error.splitlines()
        model = self.d.engine.model
        model_text = t("no_model")
        summary = getattr(model, "summary", None)
        if callable(summary):
            info = summary()
            model_text = t("model_text").format(
                samples=info["samples"], spam=info["spam"], ham=info["ham"],
                trained=self._when(info["trained_at"]))
        elif model is not None:
            model_text = t("model_loaded")
        rules = [{"id": r.id, "where": f"{r.spec.file}:{r.spec.line}", "action": r.spec.action,
                  "description": r.spec.description} for r in ruleset.rules]
        test = test or {}
        return self.c.render(
            request, session, "rules.html", "rules", errors=errors, summary=ruleset.summary(),
            loaded_at=self._when(loaded_at) if loaded_at else "", model_text=model_text,
            files=ruleset.files, rules=rules, msg_types=[*MESSAGE_TYPES, "event"],
            test_text=test.get("text", ""), test_type=test.get("type", "text"),
            test_openid=test.get("openid", ""), result=result)

    async def rules_test(self, request: web.Request, session: Session) -> web.StreamResponse:
        t = translator(self.c.lang(request))
        form = form_of(request)
        text = str(form.get("text", ""))[:MAX_TEST_TEXT]
        msg_type = str(form.get("type", "text"))
        openid = str(form.get("openid", "")).strip()
        if msg_type not in (*MESSAGE_TYPES, "event"):
            msg_type = "text"
        test = {"text": text, "type": msg_type, "openid": openid}
        if openid and not is_valid_openid(openid):
            return await self.rules(request, session, test=test, result=None)
        ruleset, model = self.d.engine.ruleset, self.d.engine.model
        now = int(self.d.clock())
        name = text_field(msg_type)
        event = Event(openid=openid or TEST_OPENID, account="", create_time=now,
                      msg_type=msg_type, texts=MappingProxyType({name: text} if name else {}))
        warnings: dict[str, list[int]] = {}
        history: list[tuple[int, str]] = []
        story = ""
        if openid:
            horizon = history_horizon(ruleset)
            warnings, history = await self.d.store.follower_story(openid,
                                                                  now - max(horizon, 1))
            story = t("story").format(pushes=len(history), warnings=", ".join(
                f"{rule_id} {len(times)}" for rule_id, times in warnings.items()) or "0")
        explanation = await asyncio.to_thread(explain_event, ruleset, event, model,
                                              warnings=warnings, history=history)
        score = "-" if explanation.score is None else f"{explanation.score:.3f}"
        if explanation.score is not None and explanation.threshold is not None:
            score += f" ({t('fires_at')} ≥ {explanation.threshold:g})"
        result = {"normalised": Folded(text).dense, "history": story, "score": score,
                  "fired": explanation.fired, "near": explanation.near_misses,
                  "actions": explanation.decision.actions, "reply": explanation.decision.reply}
        return await self.rules(request, session, result=result, test=test)

    # ------------------------------------------------------------ reports

    async def reports(self, request: web.Request, session: Session) -> web.StreamResponse:
        days = await asyncio.to_thread(_report_days, Path(self.d.config.export.dir))
        day = request.query.get("day", "")
        if day not in days:
            day = days[0] if days and not day else ""
        return self.c.render(request, session, "reports.html", "reports", days=days, day=day)

    async def report_file(self, request: web.Request, session: Session) -> web.StreamResponse:
        name = request.match_info["name"]
        if not REPORT_NAME.fullmatch(name):
            raise web.HTTPNotFound()
        path = Path(self.d.config.export.dir) / name
        try:
            body = await asyncio.to_thread(path.read_bytes)
        except OSError:
            raise web.HTTPNotFound() from None
        return web.Response(body=body, content_type="text/html", charset="utf-8")


class _Markup(str):
    """Server-built HTML (the SVG chart, every text in it escaped) that jinja2 keeps as is."""

    __slots__ = ()

    def __html__(self) -> str:
        return str(self)


def _attention(t: Any, health: dict[str, Any], counts: dict[str, int], *, paused: bool,
               until: float, reason: str, fmt: Any) -> list[dict[str, Any]]:
    """What needs the operator, each with its fix."""
    items: list[dict[str, Any]] = []
    if paused:
        fix = t("fix_45009") if "45009" in reason else t("fix_pause")
        items.append({"css": "paused", "title": f"{t('sending_paused_until')} {fmt(until)}",
                      "text": reason, "fix": fix, "resume": True, "queue": False})
    if counts.get("failed"):
        items.append({"css": "alert", "title": t("att_failed").format(n=counts["failed"]),
                      "text": t("att_failed_text"), "fix": t("fix_failed"), "resume": False,
                      "queue": True})
    if health.get("rules_error"):
        items.append({"css": "alert", "title": t("rules_rejected"),
                      "text": str(health["rules_error"]).splitlines()[0],
                      "fix": t("fix_rules"), "resume": False, "queue": False})
    if health.get("error"):
        items.append({"css": "alert", "title": t("status_" + health.get("status", "down")),
                      "text": str(health["error"]), "fix": t("fix_database"), "resume": False,
                      "queue": False})
    return items


def _rule_errors(directory: str) -> list[str]:
    """Every error of the rule files on disk now, as ``file:line: message``."""
    try:
        load_ruleset(directory)
    except RuleError as exc:
        return list(exc.errors)
    return []


def _report_days(directory: Path) -> list[str]:
    """Days with a report in the export directory, newest first."""
    if not directory.is_dir():
        return []
    days = [m.group(1) for p in directory.iterdir() if (m := REPORT_NAME.fullmatch(p.name))]
    return sorted(days, reverse=True)


def _local_midnight(now: float, tz: str) -> int:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    local = datetime.fromtimestamp(now, ZoneInfo(tz))
    return int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp())


def _int(value: str | None) -> int:
    return int(value) if value and value.isdigit() and len(value) < 19 else 0
