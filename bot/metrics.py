"""Prometheus metrics: one registry per running service (tests build several)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "PlainCounter", "PlainHistogram"]

# The *_created series double the output and nobody graphs them.
disable_created_metrics()


class _Count:
    """One labelled series of a :class:`PlainCounter`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (default 1)."""
        self.value += amount


class PlainCounter:
    """A labelled counter of plain floats, rendered only when /metrics is scraped.

    For the per-push series: prometheus_client's Counter takes a lock and builds label
    tuples on every ``inc``; this costs one attribute add. Event-loop use only (not
    thread-safe), which is where every push is counted.
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]):
        self.name, self.documentation = name, documentation
        self.labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], _Count] = {}

    def labels(self, *values: str) -> _Count:
        """The series for these label values (created at 0 on first use)."""
        series = self._series.get(values)
        if series is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}")
            series = self._series[values] = _Count()
        return series

    def collect(self) -> Iterator[Metric]:
        """The Prometheus family, built at scrape time."""
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, series in list(self._series.items()):
            family.add_metric(list(values), series.value)
        yield family


class PlainHistogram:
    """A histogram of plain counts per bucket, rendered only when scraped (see
    :class:`PlainCounter`)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]):
        self.name, self.documentation = name, documentation
        self.bounds = tuple(sorted(buckets))
        self._counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self._counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def collect(self) -> Iterator[Metric]:
        """The Prometheus family (cumulative buckets, +Inf last), built at scrape time."""
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self._counts, strict=True):
            running += count
            cumulative.append((_bound(bound), running))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], cumulative, self.sum)
        yield family


class GroupCommits:
    """The SQLite store's transactions and the calls they held, read when scraped: their
    ratio is the size of a group commit (under load, many pushes share one fsync)."""

    def __init__(self) -> None:
        self.source: Callable[[], tuple[int, int]] | None = None  # (commits, calls)

    def collect(self) -> Iterator[Metric]:
        """The two counters; none until a store is watched (PostgreSQL has no writer)."""
        if self.source is None:
            return
        commits, calls = self.source()
        yield CounterMetricFamily("bot_store_commits", "Transactions the SQLite store's "
                                  "writer committed (each a group commit)", value=commits)
        yield CounterMetricFamily("bot_store_committed_calls", "Pushes and other calls "
                                  "those transactions held", value=calls)


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class Metrics:
    """Every metric the service exports, registered on a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # Counted on every push: plain numbers, rendered at scrape time.
        self.pushes = PlainCounter(
            "bot_pushes", "Pushes received, by message type and outcome",
            ["msg_type", "outcome"],
        )
        self.push_latency = PlainHistogram(
            "bot_push_latency_seconds", "Time from request to answer for a push",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.decisions = PlainCounter(
            "bot_rule_hits", "Rule hits, by rule and action", ["rule_id", "action"],
        )
        self.group_commits = GroupCommits()  # see watch_store
        for plain in (self.pushes, self.push_latency, self.decisions, self.group_commits):
            r.register(plain)  # type: ignore[arg-type]  # a collector: collect() is enough
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

    def watch_store(self, source: Callable[[], tuple[int, int]]) -> None:
        """Export the store's (commits, calls so committed), read when scraped."""
        self.group_commits.source = source

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
