"""The console's labels: Chinese (the default, operators are Chinese) and English."""

from __future__ import annotations

from collections.abc import Mapping

LANGS = ("zh", "en")

# key: (Chinese, English)
LABELS: dict[str, tuple[str, str]] = {
    "console": ("审核控制台", "Moderation console"),
    "overview": ("概览", "Overview"),
    "decisions": ("审核记录", "Decisions"),
    "follower": ("粉丝", "Follower"),
    "queue": ("发送队列", "Queue"),
    "rules": ("规则", "Rules"),
    "reports": ("每日报告", "Reports"),
    "login": ("登录", "Sign in"),
    "logout": ("退出", "Sign out"),
    "password": ("密码", "Password"),
    "sign_in": ("登录", "Sign in"),
    "wrong_password": ("密码错误", "Wrong password"),
    "too_many": ("失败次数过多，请 {minutes} 分钟后再试", "Too many failed attempts: try again "
                 "in {minutes} minutes"),
    "form_expired": ("表单已过期，请重新登录", "The form has expired: sign in again"),
    "status": ("状态", "Status"),
    "status_ok": ("正常", "ok"),
    "status_degraded": ("降级", "degraded"),
    "status_down": ("故障", "down"),
    "dry_run_on": ("演练模式：只记录，不调用微信接口", "Dry-run: decisions recorded, no WeChat "
                   "API call"),
    "pushes_today": ("今日消息", "Pushes today"),
    "decisions_today": ("今日处理", "Decisions today"),
    "pending": ("待发送", "Pending"),
    "failed": ("失败", "Failed"),
    "paused": ("暂停", "Paused"),
    "until": ("至", "until"),
    "no": ("否", "no"),
    "rules_rejected": ("规则文件有错误，已沿用上次正确的规则", "Rule files rejected: the last "
                       "good rules stay in force"),
    "decisions_per_hour": ("每小时处理数（最近24小时）", "Decisions per hour (last 24 hours)"),
    "hour_axis": ("小时（{tz}）", "Hour ({tz})"),
    "decisions_axis": ("处理数", "Decisions"),
    "last_export": ("最近一次导出", "Last export"),
    "blacklist_total": ("黑名单总数", "blacklisted"),
    "open_report": ("打开报告", "open the report of"),
    "no_export": ("尚未导出", "No export yet"),
    "fix": ("处理办法", "Fix"),
    "sending_paused_until": ("发送已暂停，直到", "Sending paused until"),
    "sending_not_paused": ("发送正常，未暂停", "Sending is not paused"),
    "resume_sending": ("恢复发送", "Resume sending"),
    "resume_hint": ("已在公众平台重置配额或修正密钥后，点击恢复发送（命令行：blacklist resume）",
                    "Once the quota is reset on the platform (or the secret fixed), resume "
                    "(CLI: blacklist resume)"),
    "fix_45009": ("接口每日配额已用完：在公众平台“接口权限”中重置配额，然后点击恢复发送；否则将在"
                  "北京时间零点或一小时内自动重试", "Daily API quota used up: reset it on the "
                  "platform, then resume; otherwise sending retries within the hour or at "
                  "Beijing midnight"),
    "fix_pause": ("检查 AppSecret 与 IP 白名单，修正后点击恢复发送", "Check the AppSecret and "
                  "the IP allowlist, then resume"),
    "att_failed": ("{n} 个操作发送失败", "{n} actions failed"),
    "att_failed_text": ("微信拒绝了这些操作（见错误码说明）", "WeChat refused them (see each "
                        "errcode's explanation)"),
    "fix_failed": ("在发送队列中重试，或对无效的 OpenID 点击忽略", "Retry them on the Queue page"
                   ", or dismiss the invalid OpenIDs"),
    "fix_rules": ("按 文件:行号 修正规则文件，保存后几秒内自动重新加载", "Fix the files at "
                  "file:line; they reload within seconds of saving"),
    "fix_database": ("检查数据库文件与磁盘空间", "Check the database file and the disk"),
    "rule": ("规则", "Rule"),
    "action": ("动作", "Action"),
    "actions": ("操作", "Actions"),
    "time": ("时间", "Time"),
    "any": ("全部", "any"),
    "filter": ("筛选", "Filter"),
    "evidence": ("证据", "Evidence"),
    "excerpt": ("原文摘录", "Excerpt"),
    "score": ("分类器评分", "Classifier score"),
    "score_note": ("评分由当前模型对原文计算（原文已清除时无评分）", "Scores are the current "
                   "model's on the stored text (none once the text is purged)"),
    "purged": ("（已按保留期清除）", "(purged after the retention period)"),
    "older": ("更早的记录", "Older"),
    "none": ("无", "none"),
    "p_1h": ("最近1小时", "last hour"),
    "p_24h": ("最近24小时", "last 24 hours"),
    "p_7d": ("最近7天", "last 7 days"),
    "p_30d": ("最近30天", "last 30 days"),
    "p_all": ("全部时间", "all time"),
    "action_blacklist": ("拉黑", "blacklist"),
    "action_unblacklist": ("取消拉黑", "unblacklist"),
    "action_warn": ("警告", "warn"),
    "action_log": ("仅记录", "log"),
    "look_up": ("查询", "Look up"),
    "state": ("当前状态", "State"),
    "never_blacklisted": ("未经本服务拉黑", "never blacklisted through this service"),
    "never_seen": ("本服务没有该粉丝的任何记录", "Nothing is recorded about this OpenID"),
    "bad_openid": ("不是有效的 OpenID", "Not a valid OpenID"),
    "reason": ("原因", "Reason"),
    "permanent": ("永久", "permanent"),
    "do_blacklist": ("拉黑", "Blacklist"),
    "do_unblacklist": ("取消拉黑", "Unblacklist"),
    "feeds_classifier": ("手动拉黑/取消拉黑会作为样本训练分类器（与命令行相同）", "Blacklisting or"
                         " unblacklisting by hand also teaches the classifier (as the CLI does)"),
    "type": ("类型", "Type"),
    "kind": ("操作", "Kind"),
    "source": ("来源", "Source"),
    "error": ("错误", "Error"),
    "since": ("起始", "since"),
    "expires": ("到期", "expires"),
    "blacklisted_now": ("经本服务拉黑的粉丝", "Followers blacklisted through this service"),
    "st_pending": ("待发送", "pending"),
    "st_sending": ("发送中", "sending"),
    "st_done": ("已完成", "done"),
    "st_failed": ("失败", "failed"),
    "st_cancelled": ("已取消", "cancelled"),
    "st_skipped": ("已跳过", "skipped"),
    "st_dry_run": ("演练", "dry-run"),
    "st_dismissed": ("已忽略", "dismissed"),
    "st_blacklisted": ("已拉黑", "blacklisted"),
    "st_removed": ("已取消拉黑", "removed"),
    "sec_pending": ("待发送", "Pending"),
    "sec_failed": ("失败", "Failed"),
    "sec_recent": ("最近完成", "Recently settled"),
    "attempts": ("尝试次数", "Attempts"),
    "retry": ("重试", "Retry"),
    "retry_all": ("全部重试", "Retry all"),
    "dismiss": ("忽略", "Dismiss"),
    "rule_errors": ("规则文件错误", "Rule file errors"),
    "rule_errors_note": ("有错误的文件整个被拒绝，其余规则照常生效", "A file with an error is "
                         "rejected whole; the last good rules stay in force"),
    "in_force": ("生效中", "In force"),
    "sum_files": ("文件", "files"),
    "sum_rules": ("规则", "rules"),
    "sum_keywords": ("关键词", "keywords"),
    "sum_regexes": ("正则", "regexes"),
    "sum_disabled": ("已停用", "disabled"),
    "sum_allowlist": ("白名单", "allowlisted"),
    "loaded_at": ("加载于", "loaded at"),
    "model": ("分类模型", "Classifier model"),
    "no_model": ("尚未训练：分类器条件不会成立", "none trained: classifier conditions never hold"),
    "model_loaded": ("已加载", "loaded"),
    "model_text": ("{samples} 条样本（垃圾 {spam}，正常 {ham}），训练于 {trained}", "{samples} "
                   "samples ({spam} spam, {ham} ham), trained {trained}"),
    "test_box": ("测试规则", "Try the rules"),
    "optional": ("可选，使用其真实警告记录", "optional: uses their real warnings"),
    "try_it": ("测试", "Try"),
    "normalised": ("规范化文本", "Normalised"),
    "fires": ("命中的规则", "Rules that fire"),
    "fires_at": ("规则触发阈值", "rules fire at"),
    "no_rule_fires": ("没有规则命中", "No rule fires"),
    "near_misses": ("差一点命中（部分条件成立）", "Near misses (some conditions held)"),
    "held": ("成立的条件", "Held"),
    "not_held": ("未成立的条件", "Did not hold"),
    "reply": ("回复", "Reply"),
    "story": ("该粉丝的历史：{pushes} 条消息，警告 {warnings}", "This follower's history: "
              "{pushes} pushes, warnings {warnings}"),
    "files": ("已加载的文件", "Loaded files"),
    "rule_list": ("规则列表", "Rules"),
    "where": ("位置", "Where"),
    "description": ("说明", "Description"),
    "no_reports": ("尚无报告", "No report yet"),
    "note_queued": ("已加入发送队列：{n} 个操作；学习样本 {learnt} 条", "Queued: {n} action(s);"
                    " {learnt} sample(s) learnt"),
    "note_already": ("已是该状态或已合并到队列中的操作", "Already in that state, or merged "
                     "with a queued action"),
    "note_dry_run_recorded": ("演练模式：仅记录，不发送", "Dry-run: recorded, not sent"),
    "note_requeued": ("已重新排队：{n} 个失败操作", "{n} failed action(s) queued again"),
    "note_dismissed": ("已忽略：{n} 个失败操作，重试时不再发送", "{n} failed action(s) "
                       "dismissed: retry leaves them alone"),
    "note_resumed": ("已恢复发送", "Sending resumed"),
    "note_not_paused": ("发送未暂停", "Sending was not paused"),
    "note_dry_run_refused": ("演练模式下无法发送，未做任何更改", "Dry-run: nothing can be sent,"
                             " nothing was changed"),
}

# What an errcode means, in Chinese (English: bot.core.errors.EXPLANATIONS, the CLI's).
ERRCODES_ZH: dict[int, str] = {
    -1: "微信系统繁忙，将自动退避重试。",
    40003: "批次中有无效的 OpenID（可能不是本公众号的粉丝）：重试不会成功，请忽略。",
    40013: "AppID 错误：检查 wechat.appid。",
    40125: "AppSecret 错误：检查 wechat.secret（可能已被重置）。",
    40164: "本服务器 IP 不在公众号的接口 IP 白名单中：在公众平台“基本配置”中添加。",
    40032: "单次超过 20 个 OpenID，批次已拆分。",
    45009: "今日接口配额已用完：发送暂停，操作保留在队列中；配额重置（北京时间零点）或在公众平台"
           "清零后恢复。",
    45011: "每分钟配额已用完，下一分钟继续发送。",
    48001: "公众号未获此接口权限：只有已认证的公众号才能拉黑粉丝。认证后点击重试。",
    49003: "该 OpenID 不属于本公众号（其他 AppID 的粉丝）：重试不会成功，请忽略。",
}


class Translator:
    """``t(key)``: the label in one language (the key itself when none is defined)."""

    def __init__(self, lang: str):
        self.index = 0 if lang == "zh" else 1

    def __call__(self, key: str) -> str:
        pair = LABELS.get(key)
        return pair[self.index] if pair else key

    def errcode(self, code: int | None, english: str) -> str:
        """An errcode's explanation in this language (``english``: the CLI's text)."""
        if self.index == 0 and code in ERRCODES_ZH:
            return ERRCODES_ZH[code]
        return english

    def note(self, key: str, query: Mapping[str, str]) -> str | None:
        """The note after a change (``?note=KEY&n=..``); only known keys and numbers."""
        pair = LABELS.get(f"note_{key}")
        if pair is None:
            return None
        numbers = {k: int(v) if v.isdigit() and len(v) < 10 else 0
                   for k in ("n", "learnt") if (v := query.get(k, "0")) is not None}
        return pair[self.index].format(**numbers)


def translator(lang: str) -> Translator:
    """The labels of ``lang`` (zh or en)."""
    return Translator(lang)
