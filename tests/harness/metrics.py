"""What the servers' Prometheus metrics say (the operator's view), for tests that count work."""

from __future__ import annotations

from prometheus_client import REGISTRY


def federation_requests(endpoint: str) -> float:
    """Outbound federation requests to ``endpoint`` (e.g. ``/_matrix/federation/v1/hierarchy``)
    made in this process so far, answered or not."""
    total = 0.0
    for outcome in ("ok", "error"):
        labels = {"endpoint": endpoint, "outcome": outcome}
        total += REGISTRY.get_sample_value("mxserver_federation_client_requests_total", labels) or 0.0
    return total
