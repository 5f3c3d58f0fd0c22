"""Reverse-proxy rules for a cluster, made from the routing table (issue 19).

``python -m mxserver routes --format nginx|caddy`` prints what ``contrib/nginx/workers.conf``
and ``contrib/caddy/Caddyfile.workers`` hold: every rule of
:data:`~mxserver.cluster.routes.ROUTES` as an nginx ``map`` entry or a Caddy matcher, one
upstream per role (the operator fills in the addresses), requests of one access token kept
on one instance of a role. The rules are anchored regular expressions in the subset nginx
(PCRE), Caddy (Go's RE2) and Python agree on (:func:`portable_problems`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mxserver.cluster.routes import DEFAULT_ROLE, ROUTES, Route

FORMATS = ("nginx", "caddy")

#: constructs one of the three regex dialects lacks or reads differently
_UNPORTABLE = [
    (re.compile(r"\(\?[=!]"), "lookahead"),
    (re.compile(r"\(\?<[=!]"), "lookbehind"),
    (re.compile(r"\(\?P"), "Python-only named group or back-reference"),
    (re.compile(r"\(\?<\w"), "named group"),
    (re.compile(r"\(\?>"), "atomic group"),
    (re.compile(r"\(\?#"), "comment group"),
    (re.compile(r"\(\?[aiLmsux-]+[):]"), "inline flags"),
    (re.compile(r"\\[1-9]"), "back-reference"),
    (re.compile(r"\\[AZzbBG]"), "anchor escape"),
    (re.compile(r"[*+?}]\+"), "possessive quantifier"),
    (re.compile(r"[{}]"), "braces (a Caddy placeholder, an nginx block)"),
    (re.compile(r"[\"'\s;#]"), "quote, space, ';' or '#' (nginx and Caddy syntax)"),
    (re.compile(r"\\\\"), "escaped backslash (nginx unescapes it in quoted strings)"),
    (re.compile(r"(?<!\[)\^|\$"), "anchor inside the pattern (rules are anchored as a whole)"),
]


def portable_problems(pattern: str) -> list[str]:
    """Why ``pattern`` (a rule's, matched whole) is not safe in nginx and Caddy; empty if it is."""
    problems = [what for rx, what in _UNPORTABLE if rx.search(pattern)]
    try:
        re.compile(pattern)
    except re.error as e:
        problems.append(f"invalid: {e}")
    return problems


def anchored(route: Route) -> str:
    """The rule's path pattern anchored at both ends, as nginx and Caddy need it."""
    return f"^{route.pattern}$"


def roles(routes: Sequence[Route] = ROUTES) -> list[str]:
    """``main`` and every role of the table, in order of appearance."""
    out = [DEFAULT_ROLE]
    for route in routes:
        if route.role not in out:
            out.append(route.role)
    return out


def _methods(route: Route) -> str:
    methods = sorted(route.methods)
    return methods[0] if len(methods) == 1 else "(?:" + "|".join(methods) + ")"


_HEADER = "Generated from mxserver/cluster/routes.py by `python -m mxserver routes --format {fmt}`: do not edit, regenerate."


def render_nginx(routes: Sequence[Route] = ROUTES) -> str:
    lines = [
        "# Reverse-proxy rules for an mxserver cluster (one Postgres database, several processes).",
        f"# {_HEADER.format(fmt='nginx')}",
        "#",
        "# Include this file in nginx's http block; fill in each upstream's servers (main's listener,",
        "# and each worker's listener from the workers: map of the config; every listener behind",
        "# nginx wants x_forwarded: true); then in the server block of the homeserver:",
        "#",
        "#     location ~ ^(/_matrix|/_synapse|/_mxserver|/\\.well-known/matrix) {",
        "#         proxy_pass http://mxserver_$mxserver_role;",
        "#         proxy_http_version 1.1;",
        '#         proxy_set_header Connection "";',
        "#         proxy_set_header Host $host;",
        "#         proxy_set_header X-Forwarded-For $remote_addr;",
        "#         proxy_read_timeout 660s;       # long-polls (/sync?timeout=...) last minutes",
        "#         client_max_body_size 50M;      # media.max_upload_size",
        "#     }",
        "",
        "# The access token (Authorization: Bearer, else ?access_token=): one user's requests to a",
        "# role go to one of its instances.",
        "map $http_authorization $mxserver_bearer {",
        '    default "";',
        '    "~*^Bearer\\s+(?<token>\\S+)$" $token;',
        "}",
        "map $mxserver_bearer $mxserver_token {",
        '    "" $arg_access_token;',
        "    default $mxserver_bearer;",
        "}",
        "",
        "# Which role serves a request: the routing table, first match wins; the rest goes to main.",
        'map "$request_method $request_uri" $mxserver_role {',
        f"    default {DEFAULT_ROLE};",
    ]
    for route in routes:
        lines.append(f'    "~^{_methods(route)} {route.pattern}(?:\\?.*)?$" {route.role};')
    lines.append("}")
    for role in roles(routes):
        lines += ["", f"upstream mxserver_{role} {{"]
        if role != DEFAULT_ROLE:
            lines.append("    hash $mxserver_token consistent;")
        example = "127.0.0.1:8008;  # main's listener" if role == DEFAULT_ROLE else f"127.0.0.1:8101;  # {role}1, and one line per {role} worker"
        lines += [f"    server {example}", "    keepalive 32;", "}"]
    return "\n".join(lines) + "\n"


def render_caddy(routes: Sequence[Route] = ROUTES) -> str:
    lines = [
        "# Reverse-proxy rules for an mxserver cluster (one Postgres database, several processes).",
        f"# {_HEADER.format(fmt='caddy')}",
        "#",
        "# A snippet: in the homeserver's site block, `import mxserver_workers` after importing this",
        "# file. Each role's upstreams come from an environment variable (space-separated host:port,",
        "# substituted before Caddy parses the file):",
        "#",
    ]
    for role in roles(routes):
        example = "127.0.0.1:8008" if role == DEFAULT_ROLE else "127.0.0.1:8101 127.0.0.1:8102"
        lines.append(f"#     MXSERVER_{role.upper()}_UPSTREAMS=\"{example}\"")
    lines += [
        "#",
        "# Every listener behind Caddy wants x_forwarded: true. One user's requests to a role stay",
        "# on one of its instances (lb_policy header Authorization).",
        "",
        "(mxserver_workers) {",
    ]
    for i, route in enumerate(routes):
        name = f"@mxserver_{route.role}_{i}"
        lines += [
            f"\t{name} {{",
            f"\t\tmethod {' '.join(sorted(route.methods))}",
            f"\t\tpath_regexp {anchored(route)}",
            "\t}",
            f"\thandle {name} {{",
            f"\t\treverse_proxy {{$MXSERVER_{route.role.upper()}_UPSTREAMS}} {{",
            "\t\t\tlb_policy header Authorization",
            "\t\t\tflush_interval -1",
            "\t\t}",
            "\t}",
        ]
    lines += [
        "\thandle {",
        f"\t\treverse_proxy {{$MXSERVER_{DEFAULT_ROLE.upper()}_UPSTREAMS}}",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def render(fmt: str, routes: Sequence[Route] = ROUTES) -> str:
    """The rules in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "nginx":
        return render_nginx(routes)
    if fmt == "caddy":
        return render_caddy(routes)
    raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
