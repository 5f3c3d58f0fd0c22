"""Prometheus metrics of the outbound federation sender, per destination."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

PENDING_PDUS = Gauge("mxserver_federation_pending_pdus", "PDUs queued in memory per destination", ["destination"])
PENDING_EDUS = Gauge("mxserver_federation_pending_edus", "EDUs queued per destination", ["destination"])
TRANSACTIONS = Counter(
    "mxserver_federation_transactions_total",
    "Outbound transactions per destination by outcome (sent, failed: will retry, refused: dropped)",
    ["destination", "outcome"],
)
PDUS_SENT = Counter("mxserver_federation_pdus_sent_total", "PDUs delivered per destination", ["destination"])
EDUS_SENT = Counter("mxserver_federation_edus_sent_total", "EDUs delivered per destination", ["destination"])
PDUS_DEFERRED = Counter(
    "mxserver_federation_pdus_deferred_total", "PDUs left to catch-up (destination backing off or queue full)", ["destination"]
)
EDUS_DROPPED = Counter("mxserver_federation_edus_dropped_total", "EDUs dropped from a full queue", ["destination"])
BACKING_OFF = Gauge("mxserver_federation_backing_off", "1 while a destination is backing off", ["destination"])
RETRY_INTERVAL = Gauge(
    "mxserver_federation_retry_interval_seconds", "Current backoff interval per destination", ["destination"]
)
