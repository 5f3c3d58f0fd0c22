"""Prometheus metrics: request counts and latency, DB transaction timings, reactor lag.

Served on a listener with the ``metrics`` resource (off unless configured).
Metrics are process-global, as Prometheus expects; several Homeservers in one
process (tests) share them.
"""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "mxserver_http_requests_total", "HTTP requests by endpoint, method and status", ["endpoint", "method", "status"]
)
REQUEST_SECONDS = Histogram(
    "mxserver_http_request_seconds",
    "HTTP request latency by endpoint",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DB_TXN_SECONDS = Histogram(
    "mxserver_db_transaction_seconds",
    "Database transaction time by transaction name",
    ["desc"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
FEDERATION_REQUESTS = Counter(
    "mxserver_federation_client_requests_total",
    "Outbound federation requests by endpoint (the path up to its first parameter) and outcome",
    ["endpoint", "outcome"],
)
REACTOR_LAG = Gauge("mxserver_reactor_lag_seconds", "How late the last reactor tick ran")

# Application services (mxserver.appservice.sender), per service ID.
APPSERVICE_QUEUE = Gauge(
    "mxserver_appservice_queue_length",
    "Events, ephemeral data and to-device messages queued per application service, not yet acknowledged",
    ["appservice"],
)
APPSERVICE_TRANSACTIONS = Counter(
    "mxserver_appservice_transactions_total",
    "Transactions per application service by outcome (sent; failed: retried with the same ID)",
    ["appservice", "outcome"],
)
APPSERVICE_EVENTS_SENT = Counter(
    "mxserver_appservice_events_sent_total", "Room events acknowledged per application service", ["appservice"]
)
APPSERVICE_LAST_SUCCESS = Gauge(
    "mxserver_appservice_last_success_timestamp_seconds",
    "When an application service last acknowledged a transaction (Unix time)",
    ["appservice"],
)
APPSERVICE_BACKING_OFF = Gauge(
    "mxserver_appservice_backing_off", "1 while an application service is backing off after a failure", ["appservice"]
)


class ReactorLagMonitor:
    """Schedules a call every ``interval`` seconds and records how late it runs."""

    def __init__(self, clock: Any, interval: float = 1.0) -> None:
        self._clock = clock
        self._interval = interval
        self._call: Any = None

    def start(self) -> None:
        self._schedule()

    def _schedule(self) -> None:
        expected = self._clock.seconds() + self._interval
        self._call = self._clock.callLater(self._interval, self._tick, expected)

    def _tick(self, expected: float) -> None:
        REACTOR_LAG.set(max(0.0, self._clock.seconds() - expected))
        self._schedule()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


def metrics_resource() -> Any:
    """The twisted.web resource serving the metrics in the text exposition format."""
    from prometheus_client.twisted import MetricsResource

    return MetricsResource()


def snapshot(registry: Any = None) -> list[dict[str, Any]]:
    """The current value of every registered metric, for the admin API's JSON view:
    ``{"name", "type", "help", "samples": [{"name", "labels", "value"}]}`` per metric, sorted by
    name. JSON has no NaN or infinity: such a value is ``null``."""
    from prometheus_client import REGISTRY

    out = []
    for family in (registry or REGISTRY).collect():
        samples = [
            {"name": s.name, "labels": dict(s.labels), "value": s.value if math.isfinite(s.value) else None}
            for s in family.samples
        ]
        out.append({"name": family.name, "type": family.type, "help": family.documentation, "samples": samples})
    out.sort(key=lambda m: m["name"])
    return out
