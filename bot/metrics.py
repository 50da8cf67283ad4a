"""Prometheus metrics: one registry per running service (tests build several)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# The *_created series double the output and nobody graphs them.
disable_created_metrics()


class Metrics:
    """Every metric the service exports, registered on a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.pushes = Counter(
            "bot_pushes", "Pushes received, by message type and outcome",
            ["msg_type", "outcome"], registry=r,
        )
        self.push_latency = Histogram(
            "bot_push_latency_seconds", "Time from request to answer for a push",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.decisions = Counter(
            "bot_rule_hits", "Rule hits, by rule and action", ["rule_id", "action"], registry=r,
        )
        self.api_calls = Counter(
            "bot_api_calls", "WeChat API calls, by endpoint and outcome (ok or errcode)",
            ["endpoint", "outcome"], registry=r,
        )
        self.actions = Counter(
            "bot_actions_settled", "Outbox actions settled, by kind and final status",
            ["kind", "status"], registry=r,
        )
        self.pending_actions = Gauge(
            "bot_pending_actions", "Outbox actions waiting to be sent", registry=r,
        )
        self.rules_loaded = Gauge("bot_rules_loaded", "Rules currently in force", registry=r)
        self.rule_reload_errors = Counter(
            "bot_rule_reload_errors", "Rule reloads rejected because a file had errors",
            registry=r,
        )
        self.exports = Counter(
            "bot_exports", "Blacklist exports, by outcome", ["outcome"], registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
