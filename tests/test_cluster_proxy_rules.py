"""The reverse-proxy rules of a cluster in contrib/ (issue 19): generated from the routing table,
current, and written in regular expressions nginx and Caddy read as Python does."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from twisted.trial import unittest

from mxserver.cluster.proxy_rules import anchored, portable_problems, render, roles
from mxserver.cluster.routes import ROUTES, Route

ROOT = Path(__file__).resolve().parent.parent
FILES = {"nginx": ROOT / "contrib" / "nginx" / "workers.conf", "caddy": ROOT / "contrib" / "caddy" / "Caddyfile.workers"}


class ProxyRulesTests(unittest.TestCase):
    def test_the_checked_in_files_are_the_generated_ones(self) -> None:
        for fmt, path in FILES.items():
            self.assertEqual(
                path.read_text(encoding="utf-8"),
                render(fmt),
                f"{path.relative_to(ROOT)} is stale: python -m mxserver routes --format {fmt} > {path.relative_to(ROOT)}",
            )

    def test_the_command_prints_them(self) -> None:
        out = subprocess.run(
            [sys.executable, "-m", "mxserver", "routes", "--format", "caddy"],
            capture_output=True, text=True, check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        ).stdout
        self.assertEqual(out, render("caddy"))

    def test_every_rule_is_portable_and_anchored(self) -> None:
        for route in ROUTES:
            self.assertEqual(portable_problems(route.pattern), [], route.pattern)
            rx = anchored(route)
            self.assertTrue(rx.startswith("^") and rx.endswith("$"), rx)

    def test_unportable_constructs_are_caught(self) -> None:
        for pattern, problem in [
            (r"/a(?=b)", "lookahead"),
            (r"/a(?<!b)", "lookbehind"),
            (r"/(?P<x>a)", "Python-only"),
            (r"/(a)\1", "back-reference"),
            (r"/a\Z", "anchor escape"),
            (r"/a{2}", "braces"),
            (r"/a b", "space"),
            (r"^/a", "anchor inside"),
            (r"/(?i)a", "inline flags"),
            (r"/(", "invalid"),
        ]:
            problems = portable_problems(pattern)
            self.assertTrue(any(problem in p for p in problems), (pattern, problems))
        self.assertEqual(portable_problems(r"/_matrix/client/(?:r0|v3)/rooms/[^/]+/messages"), [])

    def test_every_rule_is_in_both_files_with_its_role(self) -> None:
        nginx, caddy = render("nginx"), render("caddy")
        for route in ROUTES:
            methods = sorted(route.methods)
            method = methods[0] if len(methods) == 1 else "(?:" + "|".join(methods) + ")"
            self.assertIn(f'"~^{method} {route.pattern}(?:\\?.*)?$" {route.role};', nginx)
            self.assertIn(f"path_regexp {anchored(route)}\n", caddy)
        for role in roles():
            self.assertIn(f"upstream mxserver_{role} {{", nginx)
            self.assertIn(f"{{$MXSERVER_{role.upper()}_UPSTREAMS}}", caddy)

    def test_the_nginx_map_matches_what_the_router_routes(self) -> None:
        # nginx matches "$request_method $request_uri" (raw path and query): the same answers.
        entries = re.findall(r'^    "~(.*)" (\w+);$', render("nginx"), re.M)
        self.assertEqual(len(entries), len(ROUTES))

        def nginx_role(method: str, uri: str) -> str:
            for rx, role in entries:
                if re.search(rx, f"{method} {uri}"):
                    return role
            return "main"

        from mxserver.cluster.routes import role_for

        for method, uri in [
            ("GET", "/_matrix/client/v3/sync?timeout=30000&since=s1"),
            ("GET", "/_matrix/client/r0/sync"),
            ("POST", "/_matrix/client/v3/sync"),
            ("GET", "/_matrix/client/v3/sync/x"),
            ("GET", "/_matrix/client/v3/events?from=x"),
            ("GET", "/_matrix/client/v3/events/%24e"),
            ("POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?pos=1"),
            ("POST", "/_matrix/client/unstable/orgXmatrix.simplified_msc3575/sync"),
            ("PUT", "/_matrix/client/v3/rooms/%21r%3Ax/send/m.room.message/1"),
        ]:
            self.assertEqual(nginx_role(method, uri), role_for(method, uri.split("?")[0]), (method, uri))

    def test_a_table_with_two_methods_renders(self) -> None:
        routes = (Route(frozenset({"GET", "HEAD"}), r"/x", "sync"),)
        self.assertIn('"~^(?:GET|HEAD) /x(?:\\?.*)?$" sync;', render("nginx", routes))
        self.assertIn("method GET HEAD", render("caddy", routes))
