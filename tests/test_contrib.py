"""The deployment files in contrib/: the Grafana dashboard charts the metrics the server exports
(every query names a metric that exists, with labels it has, and every metric is charted), and the
reverse proxies' body limits match the server's upload limit."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial import unittest

from mxserver.config import MediaConfig, parse_size
from tests.harness import HomeserverTestCase

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"

#: PromQL words that look like metric names but are not
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
#: labels Prometheus adds at scrape time
_TARGET_LABELS = {"instance", "job"}


def parse_query(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names a PromQL expression uses."""
    labels: set[str] = set()
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values)
    for body in re.findall(r"\{([^}]*)\}", expr):
        labels.update(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", body))
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    for body in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels.update(n.strip() for n in body.split(",") if n.strip())
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors
    expr = re.sub(r"\$\w+", " ", expr)  # dashboard variables
    metrics = {
        name
        for name, call in re.findall(r"\b([a-zA-Z_:][\w:]*)\s*(\()?", expr)
        if not call and name not in _KEYWORDS and not re.fullmatch(r"\d.*", name)
    }
    return metrics, labels


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every query of the dashboard, its variables' included."""
    dash = json.loads((CONTRIB / "grafana" / "mxserver.json").read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["definition"])
            assert query is not None, var["definition"]
            out.append((f"${var['name']}", f"{query.group(1)}{{{query.group(2)}!=\"\"}}"))
    return out


class ParseQueryTests(unittest.SynchronousTestCase):
    def test_names_and_labels(self) -> None:
        self.assertEqual(
            parse_query('topk(10, histogram_quantile(0.95, sum by (endpoint, le) (rate(a_bucket{instance=~"$i"}[$__rate_interval]))))'),
            ({"a_bucket"}, {"endpoint", "le", "instance"}),
        )
        self.assertEqual(parse_query('time() - b_seconds{x="by (y)"} > bool 0'), ({"b_seconds"}, {"x"}))


class DashboardTests(HomeserverTestCase):
    config_overrides = {
        "listeners": [
            {"host": "127.0.0.1", "port": 0, "resources": ["client", "federation", "media"]},
            {"host": "127.0.0.1", "port": 0, "resources": ["metrics"]},
        ]
    }

    async def exported(self) -> dict[str, Any]:
        """name of every sample the server can export → (family type, labels seen)."""
        # Some traffic first, so the request and database metrics have samples (and labels).
        user = await self.register("alice")
        await self.create_room(user)
        port = self.hs.listening_ports[1].getHost().port
        resp = await treq.get(f"http://127.0.0.1:{port}/metrics", pool=self.pool)
        self.assertEqual(resp.code, 200)
        text = (await resp.content()).decode()
        names: dict[str, Any] = {}
        suffixes = {"counter": ["_total", "_created"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count", "_created"],
                    "summary": ["", "_sum", "_count", "_created"], "info": ["_info"], "untyped": [""]}
        for family in text_string_to_metric_families(text):
            seen: set[str] | None = None
            if family.samples:
                seen = set().union(*(s.labels for s in family.samples)) - {"le", "quantile"}
            for suffix in suffixes.get(family.type, [""]):
                names[family.name + suffix] = (family.type, seen)
        return names

    async def test_every_query_names_an_exported_metric_with_its_labels(self) -> None:
        exported = await self.exported()
        problems = []
        for title, expr in dashboard_queries():
            metrics, labels = parse_query(expr)
            if not metrics:
                problems.append(f"{title}: no metric in {expr}")
            for name in metrics:
                if name not in exported:
                    problems.append(f"{title}: {name} is not exported")
                    continue
                kind, seen = exported[name]
                allowed = _TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
                if seen is not None:  # a metric with no samples yet shows no labels to compare with
                    unknown = labels - seen - allowed - _labels_of_others(metrics - {name}, exported)
                    if unknown:
                        problems.append(f"{title}: {name} has no label {sorted(unknown)}")
        self.assertEqual(problems, [])

    async def test_every_server_metric_is_charted(self) -> None:
        exported = await self.exported()
        charted = set().union(*(parse_query(expr)[0] for _, expr in dashboard_queries()))
        families = {_family(name) for name in exported if name.startswith("mxserver_")}
        uncharted = sorted(f for f in families if not any(_family(c) == f for c in charted))
        self.assertEqual(uncharted, [])


def _family(name: str) -> str:
    return re.sub(r"_(total|created|bucket|sum|count)$", "", name)


def _labels_of_others(names: set[str], exported: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for n in names:
        seen = exported.get(n, (None, None))[1]
        out |= seen or set()
    return out


class DeploymentFileTests(unittest.SynchronousTestCase):
    def test_proxies_accept_exactly_the_servers_upload_limit(self) -> None:
        limit = MediaConfig().max_upload_size
        nginx = (CONTRIB / "nginx" / "mxserver.conf").read_text()
        sizes = re.findall(r"^\s*client_max_body_size\s+(\S+);", nginx, re.M)
        self.assertEqual(len(sizes), 2)  # the client API and federation
        self.assertEqual({parse_size(s) for s in sizes}, {limit})  # nginx's M is MiB, like the config's
        caddy = (CONTRIB / "caddy" / "Caddyfile").read_text()
        (size,) = re.findall(r"max_size\s+(\d+)MiB", caddy)
        self.assertEqual(int(size) * 1024**2, limit)

    def test_systemd_unit_runs_twistd_hardened(self) -> None:
        unit = (CONTRIB / "systemd" / "mxserver.service").read_text()
        settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
        self.assertRegex(settings["ExecStart"], r"twistd --nodaemon .*mxserver --config \S+")
        for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes"),
                           ("ProtectHome", "yes"), ("User", "mxserver")]:
            self.assertEqual(settings.get(key), value, key)
        self.assertEqual(settings["ReadWritePaths"], settings["WorkingDirectory"])
