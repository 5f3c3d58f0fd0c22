"""Typed configuration: YAML loading, defaults, and validation with key paths.

The config is a tree of attrs classes. :func:`load_config` walks the YAML
against the classes' type hints, so every error names the key path
(``listeners[0].port: expected an integer``). The same field metadata drives
:func:`render_sample`, which produces the commented sample config
(``python -m mxserver generate-config``). The keys of DESIGN.md's config
contract are all here; relative paths are relative to the config file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import attrs
import yaml

from mxserver.ids import is_valid_localpart, is_valid_server_name


class ConfigError(Exception):
    """A config problem; the message names the key path and fits on one line."""


def _help(text: str, **kw: Any) -> dict[str, Any]:
    return {"help": text, **kw}


def parse_size(value: Any) -> int:
    """``50M`` / ``1G`` / ``512K`` / plain integers of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 50M")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)B?\s*", value.upper())
        if m:
            return int(m.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[m.group(2)]
    raise ValueError("expected a size such as 50M")


def parse_duration_ms(value: Any) -> int:
    """``30s`` / ``5m`` / ``1h`` / ``2d`` / plain integers of milliseconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h|d)?\s*", value)
        if m:
            unit = m.group(2) or "ms"
            return int(m.group(1)) * {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[unit]
    raise ValueError("expected a duration such as 30s")


DEFAULT_IP_RANGE_BLACKLIST = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "0.0.0.0/8",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
    "::/128",
]


def _networks(value: list[str]) -> list[str]:
    for v in value:
        ipaddress.ip_network(v, strict=False)
    return value


@attrs.define
class ListenerConfig:
    port: int = attrs.field(metadata=_help("TCP port", check=lambda v: 0 <= v < 65536))
    host: str = attrs.field(default="127.0.0.1", metadata=_help("address to bind"))
    resources: list[Literal["client", "federation", "media", "metrics", "keys"]] = attrs.field(
        factory=lambda: ["client", "federation", "media"],
        metadata=_help("what this listener serves: client, federation, media, metrics"),
    )
    tls: bool = attrs.field(default=False, metadata=_help("serve HTTPS with the tls: certificate"))
    x_forwarded: bool = attrs.field(
        default=False, metadata=_help("trust X-Forwarded-For (behind a reverse proxy only)")
    )


@attrs.define
class TLSConfig:
    certificate_path: str | None = attrs.field(default=None, metadata=_help("PEM certificate chain", path=True))
    private_key_path: str | None = attrs.field(default=None, metadata=_help("PEM private key", path=True))


@attrs.define
class DatabaseConfig:
    backend: str = attrs.field(default="sqlite", metadata=_help("an mxserver.storage entry point: sqlite or postgres"))
    path: str | None = attrs.field(
        default=None, metadata=_help("SQLite file (default: data_dir/homeserver.db)", path=True)
    )
    dsn: str | None = attrs.field(default=None, metadata=_help("libpq URI for postgres, e.g. postgresql://user@host/db"))
    pool_size: int = attrs.field(default=3, metadata=_help("database connections (readers) in the pool", check=lambda v: v >= 1))


@attrs.define
class UrlPreviewConfig:
    enabled: bool = attrs.field(
        default=False, metadata=_help("serve /preview_url (fetches go through federation.ip_range_blacklist)")
    )
    max_page_size: int = attrs.field(
        default=10 * 1024**2, metadata=_help("largest page or image fetched for a preview", parse=parse_size, sample="10M")
    )
    timeout_ms: int = attrs.field(
        default=10_000, metadata=_help("deadline of one preview fetch", parse=parse_duration_ms, sample="10s")
    )


@attrs.define
class MediaConfig:
    store_path: str | None = attrs.field(default=None, metadata=_help("media files (default: data_dir/media)", path=True))
    max_upload_size: int = attrs.field(
        default=50 * 1024**2, metadata=_help("largest upload (and remote file fetched) accepted", parse=parse_size, sample="50M")
    )
    max_image_pixels: int = attrs.field(
        default=32_000_000,
        metadata=_help("images with more pixels are not thumbnailed (decompression bombs)", check=lambda v: v > 0),
    )
    unauthenticated_downloads: bool = attrs.field(
        default=True,
        metadata=_help(
            "serve the deprecated /_matrix/media/v3/download and /thumbnail; false freezes them: "
            "media stored from then on needs the authenticated /_matrix/client/v1/media endpoints"
        ),
    )
    user_quota: int | None = attrs.field(
        default=None, metadata=_help("total bytes one user may upload (null: no quota)", parse=parse_size)
    )
    max_pending_uploads: int = attrs.field(
        default=10, metadata=_help("unfinished /create reservations per user", check=lambda v: v >= 1)
    )
    pending_upload_expiry_ms: int = attrs.field(
        default=24 * 3_600_000,
        metadata=_help("how long a /create reservation waits for its upload", parse=parse_duration_ms, sample="24h"),
    )
    url_preview: UrlPreviewConfig = attrs.field(factory=UrlPreviewConfig, metadata=_help("URL previews"))


@attrs.define
class LogConfig:
    path: str | None = attrs.field(default=None, metadata=_help("log file; null logs to stderr", path=True))
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = attrs.field(
        default="INFO", metadata=_help("lowest level logged")
    )
    format: Literal["text", "json"] = attrs.field(default="text", metadata=_help("text or json (one object a line)"))


@attrs.define
class RegistrationConfig:
    enabled: bool = attrs.field(default=False, metadata=_help("open sign-up with m.login.dummy"))
    registration_token: str | None = attrs.field(
        default=None, metadata=_help("if set, sign-up requires m.login.registration_token with this token")
    )
    requires_token: bool = attrs.field(
        default=False,
        metadata=_help("sign-up requires m.login.registration_token with a token made by the admin API"),
    )
    shared_secret: str | None = attrs.field(
        default=None, metadata=_help("enables /_synapse/admin/v1/register (HMAC) for admin tooling")
    )
    allow_guests: bool = attrs.field(default=False, metadata=_help("allow kind=guest registration"))


@attrs.define
class SessionConfig:
    """Access-token lifetimes (client-server-api §Refreshing access tokens). A client that asks
    for a refresh token (``refresh_token: true`` on /login or /register) gets an access token
    that expires; other clients get tokens that do not expire."""

    refreshable_access_token_lifetime_ms: int = attrs.field(
        default=300_000,
        metadata=_help(
            "lifetime of an access token issued with a refresh token",
            parse=parse_duration_ms,
            sample="5m",
            check=lambda v: v > 0,
        ),
    )
    refresh_token_lifetime_ms: int | None = attrs.field(
        default=None,
        metadata=_help(
            "lifetime of a refresh token (null: until it is used or the session logs out)",
            parse=parse_duration_ms,
        ),
    )


@attrs.define
class PasswordConfig:
    scheme: Literal["argon2id", "bcrypt"] = attrs.field(
        default="argon2id", metadata=_help("hash for new passwords (both are verified)")
    )
    bcrypt_rounds: int = attrs.field(default=12, metadata=_help("bcrypt cost", check=lambda v: 4 <= v <= 31))
    minimum_length: int = attrs.field(default=0, metadata=_help("shortest password accepted"))


@attrs.define
class RateLimitRule:
    per_second: float = attrs.field(default=0.2, metadata=_help("sustained requests per second"))
    burst: int = attrs.field(default=5, metadata=_help("requests allowed at once"))


@attrs.define
class RateLimitConfig:
    enabled: bool = attrs.field(default=True, metadata=_help("false turns every limiter off (benchmarks)"))
    login: RateLimitRule = attrs.field(factory=lambda: RateLimitRule(0.2, 5), metadata=_help("per IP and per user"))
    register: RateLimitRule = attrs.field(factory=lambda: RateLimitRule(0.17, 3), metadata=_help("per IP"))
    message: RateLimitRule = attrs.field(factory=lambda: RateLimitRule(10.0, 50), metadata=_help("per user"))
    report: RateLimitRule = attrs.field(
        factory=lambda: RateLimitRule(0.1, 5), metadata=_help("content reports (events, rooms, users), per user")
    )


@attrs.define
class FederationConfig:
    enabled: bool = attrs.field(default=True, metadata=_help("talk to other homeservers"))
    verify_tls: bool = attrs.field(default=True, metadata=_help("verify peers' certificates (tests on loopback set false)"))
    ca_certificates: list[str] = attrs.field(factory=list, metadata=_help("extra CA files trusted for outbound federation and URL previews", path=True))
    ip_range_blacklist: list[str] = attrs.field(
        factory=lambda: list(DEFAULT_IP_RANGE_BLACKLIST),
        metadata=_help("never connect to these ranges (no SSRF)", parse=_networks, sample_default="private, loopback, link-local"),
    )
    ip_range_whitelist: list[str] = attrs.field(
        factory=list, metadata=_help("exceptions to the blacklist (tests: [127.0.0.0/8])", parse=_networks)
    )
    trusted_key_servers: list[str] = attrs.field(factory=list, metadata=_help("notaries asked for server keys"))
    gap_fetch_timeout_ms: int = attrs.field(
        default=20_000,
        metadata=_help(
            "deadline of each request fetching the events or state a received event lacks; "
            "until then a slow peer holds up its own transaction (never other servers')",
            parse=parse_duration_ms,
            check=lambda v: v > 0,
            sample="20s",
        ),
    )
    rejoin_gap_max_events: int = attrs.field(
        default=300,
        metadata=_help(
            "on rejoining a room, fetch at most this many of the events sent while this server was "
            "out of it (the latest; older ones stay a gap in its history)",
            check=lambda v: v >= 0,
        ),
    )


@attrs.define
class RoomDirectoryConfig:
    publication_allowed: bool = attrs.field(default=True, metadata=_help("users may publish rooms to the directory"))
    public_rooms_without_auth: bool = attrs.field(default=False, metadata=_help("GET /publicRooms without a token"))
    public_rooms_over_federation: bool = attrs.field(default=False, metadata=_help("serve /publicRooms to other servers"))


@attrs.define
class SupportContact:
    role: str = attrs.field(metadata=_help("m.role.admin, m.role.security or a namespaced role", check=lambda v: bool(v)))
    matrix_id: str | None = attrs.field(default=None, metadata=_help("the contact's Matrix user ID"))
    email_address: str | None = attrs.field(default=None, metadata=_help("the contact's email address"))


@attrs.define
class WellKnownConfig:
    client_base_url: str | None = attrs.field(
        default=None, metadata=_help("m.homeserver base_url in /.well-known/matrix/client (default: public_baseurl)")
    )
    server: str | None = attrs.field(
        default=None, metadata=_help("m.server in /.well-known/matrix/server; null serves 404")
    )
    support_contacts: list[SupportContact] = attrs.field(
        factory=list, metadata=_help("contacts in /.well-known/matrix/support (each: role, matrix_id and/or email_address)")
    )
    support_page: str | None = attrs.field(
        default=None, metadata=_help("support_page in /.well-known/matrix/support; with no contacts either, it serves 404")
    )


@attrs.define
class PresenceConfig:
    enabled: bool = attrs.field(default=True, metadata=_help("track and share presence"))
    idle_after_ms: int = attrs.field(
        default=5 * 60_000,
        metadata=_help("an online user who has not synced for this long becomes unavailable", check=lambda v: v > 0),
    )
    offline_after_ms: int = attrs.field(
        default=15 * 60_000,
        metadata=_help("a user who has not synced for this long becomes offline", check=lambda v: v > 0),
    )


@attrs.define
class LimitsConfig:
    max_request_size: int = attrs.field(
        default=1024**2, metadata=_help("largest JSON request body", parse=parse_size, sample="1M")
    )


@attrs.define
class PushConfig:
    allow_http_gateways: bool = attrs.field(
        default=False,
        metadata=_help(
            "accept http:// push gateway URLs (the spec requires https); every gateway address still"
            " passes federation.ip_range_blacklist/whitelist"
        ),
    )


def _turn_uris(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(u, str) and re.match(r"turns?:", u) for u in value):
        raise ValueError("expected a list of turn: or turns: URIs")
    return list(value)


@attrs.define
class VoipConfig:
    turn_uris: list[str] = attrs.field(
        factory=list,
        metadata=_help(
            "TURN server URIs handed to callers by /voip/turnServer (turn:/turns:); none: it answers {}",
            parse=_turn_uris,
        ),
    )
    turn_shared_secret: str | None = attrs.field(
        default=None,
        metadata=_help("the TURN server's shared secret (coturn static-auth-secret): time-limited credentials per user"),
    )
    turn_username: str | None = attrs.field(default=None, metadata=_help("static TURN username (without a shared secret)"))
    turn_password: str | None = attrs.field(default=None, metadata=_help("static TURN password (without a shared secret)"))
    turn_user_lifetime_s: int = attrs.field(
        default=3600, metadata=_help("how long handed-out credentials stay valid (the ttl)", check=lambda v: v > 0)
    )
    turn_allow_guests: bool = attrs.field(default=True, metadata=_help("guests may have TURN credentials too"))


@attrs.define
class ServerNoticesConfig:
    """The server notices room (client-server-api §Server Notices) and the system user who
    sends in it: the admin API's send_server_notice. Off until system_mxid_localpart is set."""

    system_mxid_localpart: str | None = attrs.field(
        default=None,
        metadata=_help(
            "local part of the system user who sends notices (created on first use, cannot log in);"
            " null: server notices are off",
            check=is_valid_localpart,
        ),
    )
    system_mxid_display_name: str | None = attrs.field(default=None, metadata=_help("the system user's display name"))
    system_mxid_avatar_url: str | None = attrs.field(default=None, metadata=_help("the system user's avatar (mxc://)"))
    room_name: str = attrs.field(default="Server Notices", metadata=_help("name of each user's notices room"))
    room_avatar_url: str | None = attrs.field(default=None, metadata=_help("avatar (mxc://) of the notices rooms"))
    room_topic: str | None = attrs.field(default=None, metadata=_help("topic of the notices rooms"))
    auto_join: bool = attrs.field(
        default=False,
        metadata=_help("join users to their notices room instead of inviting them (the spec recommends an invite)"),
    )


#: the placeholders e-mail templates may use
EMAIL_PLACEHOLDERS = ("server_name", "address", "link", "token", "action")

DEFAULT_VALIDATION_BODY = """Hello,

You (or someone else) asked {server_name} to {action} using this e-mail address ({address}).
To confirm, open this link:

{link}

The link works once and expires soon. If this was not you, ignore this e-mail: nothing changes.
"""


def _email_template(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    try:
        value.format(**{name: "x" for name in EMAIL_PLACEHOLDERS})
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"bad template (placeholders: {', '.join(EMAIL_PLACEHOLDERS)}): {e}") from None
    return value


@attrs.define
class EmailConfig:
    """Outgoing e-mail: validating e-mail addresses (client-server-api §Adding Account
    Administrative Contact Information) for sign-up, adding them to accounts and password resets.
    Off until smtp_host is set: the email requestToken endpoints then refuse with
    M_THREEPID_MEDIUM_NOT_SUPPORTED."""

    smtp_host: str | None = attrs.field(default=None, metadata=_help("SMTP server; null: e-mail is off"))
    smtp_port: int = attrs.field(default=25, metadata=_help("SMTP port", check=lambda v: 0 < v < 65536))
    tls: Literal["none", "starttls", "tls"] = attrs.field(
        default="starttls",
        metadata=_help("none: plain SMTP; starttls: STARTTLS required; tls: TLS from the first byte (port 465)"),
    )
    smtp_user: str | None = attrs.field(default=None, metadata=_help("SMTP AUTH user (null: no authentication)"))
    smtp_password: str | None = attrs.field(default=None, metadata=_help("SMTP AUTH password"))
    notif_from: str | None = attrs.field(
        default=None, metadata=_help("From: address of the e-mails (default: noreply@ the server name's host)")
    )
    validation_base_url: str | None = attrs.field(
        default=None, metadata=_help("public URL of this server used in validation links (default: public_baseurl)")
    )
    token_lifetime_ms: int = attrs.field(
        default=3_600_000,
        metadata=_help("how long a validation link works", parse=parse_duration_ms, sample="1h", check=lambda v: v > 0),
    )
    validation_body: str = attrs.field(
        default=DEFAULT_VALIDATION_BODY,
        metadata=_help(
            "plain-text body of validation e-mails; placeholders: {server_name} {address} {link} {token} {action}",
            parse=_email_template,
        ),
    )
    registration_subject: str = attrs.field(
        default="[{server_name}] Confirm your e-mail address", metadata=_help("subject for sign-up", parse=_email_template)
    )
    add_threepid_subject: str = attrs.field(
        default="[{server_name}] Confirm your e-mail address",
        metadata=_help("subject for adding an address to an account", parse=_email_template),
    )
    password_reset_subject: str = attrs.field(
        default="[{server_name}] Password reset", metadata=_help("subject for password resets", parse=_email_template)
    )

    @property
    def enabled(self) -> bool:
        return self.smtp_host is not None


@attrs.define
class ModuleEntry:
    group: str = attrs.field(metadata=_help("entry-point group, e.g. mxserver.typing"))
    name: str = attrs.field(metadata=_help("entry-point name in that group"))
    config: dict[str, Any] = attrs.field(factory=dict, metadata=_help("passed to the module"))


def _default_listeners() -> list[ListenerConfig]:
    return [ListenerConfig(port=8008)]


#: the roles a worker process may have (issue 19); ``main`` is the implicit writer process
WORKER_ROLES = ("sync",)


@attrs.define
class WorkerSelf:
    name: str = attrs.field(
        default="main",
        metadata=_help("which process of the cluster this is: main, or a key of workers (--worker NAME overrides)"),
    )


@attrs.define
class WorkerConfig:
    role: str = attrs.field(metadata=_help("what the worker serves: sync (client reads, woken by main's writes)"))
    listeners: list[ListenerConfig] = attrs.field(factory=list, metadata=_help("where the worker listens"))


@attrs.define
class HomeserverConfig:
    """The whole configuration of one homeserver."""

    server_name: str = attrs.field(
        default="localhost", metadata=_help("the domain in user IDs; may be host:port", check=is_valid_server_name)
    )
    public_baseurl: str | None = attrs.field(default=None, metadata=_help("how clients reach this server (default http://server_name:8008/)"))
    data_dir: str = attrs.field(default="./data", metadata=_help("home of the signing key, SQLite file and media", path=True))
    signing_key_path: str | None = attrs.field(
        default=None, metadata=_help("ed25519 signing key, created if missing (default data_dir/signing.key)", path=True)
    )
    listeners: list[ListenerConfig] = attrs.field(factory=_default_listeners, metadata=_help("where to listen"))
    tls: TLSConfig = attrs.field(factory=TLSConfig, metadata=_help("certificate for listeners with tls: true"))
    database: DatabaseConfig = attrs.field(factory=DatabaseConfig, metadata=_help("storage backend"))
    media: MediaConfig = attrs.field(factory=MediaConfig, metadata=_help("media repository"))
    log: LogConfig = attrs.field(factory=LogConfig, metadata=_help("logging"))
    registration: RegistrationConfig = attrs.field(factory=RegistrationConfig, metadata=_help("account sign-up"))
    password: PasswordConfig = attrs.field(factory=PasswordConfig, metadata=_help("password hashing"))
    sessions: SessionConfig = attrs.field(factory=SessionConfig, metadata=_help("access and refresh tokens"))
    rate_limits: RateLimitConfig = attrs.field(factory=RateLimitConfig, metadata=_help("token-bucket rate limiting"))
    federation: FederationConfig = attrs.field(factory=FederationConfig, metadata=_help("server-server API"))
    room_directory: RoomDirectoryConfig = attrs.field(factory=RoomDirectoryConfig, metadata=_help("public room directory"))
    well_known: WellKnownConfig = attrs.field(factory=WellKnownConfig, metadata=_help("/.well-known/matrix answers"))
    presence: PresenceConfig = attrs.field(factory=PresenceConfig, metadata=_help("presence"))
    limits: LimitsConfig = attrs.field(factory=LimitsConfig, metadata=_help("request limits"))
    push: PushConfig = attrs.field(factory=PushConfig, metadata=_help("pushers and push gateways"))
    voip: VoipConfig = attrs.field(factory=VoipConfig, metadata=_help("TURN servers for VoIP calls"))
    server_notices: ServerNoticesConfig = attrs.field(
        factory=ServerNoticesConfig, metadata=_help("server notices (the admin API's send_server_notice)")
    )
    email: EmailConfig = attrs.field(factory=EmailConfig, metadata=_help("outgoing e-mail (address validation)"))
    app_service_config_files: list[str] = attrs.field(
        factory=list,
        metadata=_help(
            "application service registration files (YAML), checked at start-up; re-read on SIGHUP"
            " or POST /_mxserver/admin/v1/appservices/reload",
            path=True,
        ),
    )
    app_service_ip_range_whitelist: list[str] = attrs.field(
        factory=list,
        metadata=_help(
            "exceptions to federation.ip_range_blacklist for application service URLs only"
            " (a bridge on this machine: [127.0.0.0/8, ::1/128])",
            parse=_networks,
        ),
    )
    default_room_version: str = attrs.field(default="12", metadata=_help("room version for new rooms"))
    modules: list[ModuleEntry] = attrs.field(factory=list, metadata=_help("modules to load from entry points"))
    worker: WorkerSelf = attrs.field(factory=WorkerSelf, metadata=_help("this process in a cluster of workers"))
    workers: dict[str, WorkerConfig] = attrs.field(
        factory=dict,
        metadata=_help(
            "the cluster (the same in every process's config; needs postgres): name -> {role, listeners};"
            " empty: one process does everything"
        ),
    )

    # -- the cluster -------------------------------------------------------

    @property
    def worker_role(self) -> str:
        """This process's role: ``main`` (the writer, everything), or its worker entry's role."""
        if self.worker.name == "main":
            return "main"
        return self.workers[self.worker.name].role

    @property
    def is_main(self) -> bool:
        return self.worker.name == "main"

    @property
    def own_listeners(self) -> list[ListenerConfig]:
        """The listeners this process opens: the top-level ones for main, else its entry's."""
        return self.listeners if self.is_main else self.workers[self.worker.name].listeners

    # -- derived paths ----------------------------------------------------

    @property
    def signing_key_file(self) -> str:
        return self.signing_key_path or os.path.join(self.data_dir, "signing.key")

    @property
    def sqlite_path(self) -> str:
        return self.database.path or os.path.join(self.data_dir, "homeserver.db")

    @property
    def media_path(self) -> str:
        return self.media.store_path or os.path.join(self.data_dir, "media")

    @property
    def base_url(self) -> str:
        if self.public_baseurl:
            return self.public_baseurl if self.public_baseurl.endswith("/") else self.public_baseurl + "/"
        host = self.server_name if ":" in self.server_name else f"{self.server_name}:8008"
        return f"http://{host}/"

    def module_config(self, group: str, default_name: str) -> tuple[str, dict[str, Any]]:
        """The entry-point name and config chosen for a single-implementation group."""
        for m in self.modules:
            if m.group == group:
                return m.name, m.config
        return default_name, {}


# -- loading ------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is list:
        return "a list"
    if origin is dict or attrs.has(tp):
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    return str(tp)


def _convert(value: Any, tp: Any, path: str, field: attrs.Attribute | None, base: Path | None) -> Any:
    meta = field.metadata if field is not None else {}
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], path, field, base)
    if "parse" in meta and typing.get_origin(tp) is not list:
        try:
            return meta["parse"](value)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{path}: {e}") from None
    if attrs.has(tp):
        return _load_object(tp, value, path, base)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        (item_tp,) = typing.get_args(tp)
        items = [_convert(v, item_tp, f"{path}[{i}]", None, base) for i, v in enumerate(value)]
        if "parse" in meta:
            try:
                items = meta["parse"](items)
            except ValueError as e:
                raise ConfigError(f"{path}: {e}") from None
        if meta.get("path") and base is not None:
            items = [str(base / v) for v in items]
        return items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        key_tp, value_tp = typing.get_args(tp) or (str, Any)
        if value_tp is Any:
            return dict(value)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{path}: keys must be strings, got {k!r}")
            out[k] = _convert(v, value_tp, f"{path}.{k}", None, base)
        return out
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            # YAML turns bare 12 or 1.0 into numbers; accept them for string keys like room versions.
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        if meta.get("path") and base is not None:
            return str(base / value)
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{path}: unsupported type {tp}")  # a bug in this module, not in the config


def _load_object(cls: type, data: Any, path: str, base: Path | None) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = path or "config"
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{path + '.' if path else ''}{key}: unknown key")
    kwargs = {}
    for name, field in fields.items():
        key_path = f"{path}.{name}" if path else name
        if name not in data:
            if field.default is attrs.NOTHING:
                raise ConfigError(f"{key_path}: required")
            continue
        value = _convert(data[name], hints[name], key_path, field, base)
        check = field.metadata.get("check")
        if check is not None and value is not None and not check(value):
            raise ConfigError(f"{key_path}: invalid value {data[name]!r}")
        kwargs[name] = value
    return cls(**kwargs)


def load_config_dict(data: Any, base_dir: str | os.PathLike[str] | None = None) -> HomeserverConfig:
    """Build a config from already-parsed YAML; paths are resolved against ``base_dir``."""
    base = Path(base_dir) if base_dir is not None else None
    config = _load_object(HomeserverConfig, data, "", base)
    _check(config)
    return config


def load_config(path: str | os.PathLike[str] | None) -> HomeserverConfig:
    """Load a YAML config file, or the embedded defaults when ``path`` is None."""
    if path is None:
        return load_config_dict({})
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if not isinstance(data, dict) or "server_name" not in data:
        raise ConfigError("server_name: required when a config file is given")
    return load_config_dict(data, Path(path).resolve().parent)


def _is_user_id(value: str) -> bool:
    from mxserver.errors import MatrixError
    from mxserver.identifier_checks import check_user_id

    try:
        check_user_id(value)
    except MatrixError:
        return False
    return True


def check_config(config: HomeserverConfig) -> None:
    """Check the rules that span several keys again (after command-line overrides)."""
    _check(config)


def _check(config: HomeserverConfig) -> None:
    """Rules that span several keys."""
    from mxserver.events.versions import KNOWN_ROOM_VERSIONS

    if config.default_room_version not in KNOWN_ROOM_VERSIONS:
        raise ConfigError(f"default_room_version: unknown room version {config.default_room_version!r}")
    for i, listener in enumerate(config.listeners):
        if listener.tls and not (config.tls.certificate_path and config.tls.private_key_path):
            raise ConfigError(f"listeners[{i}].tls: needs tls.certificate_path and tls.private_key_path")
    if config.database.backend == "postgres" and not config.database.dsn:
        raise ConfigError("database.dsn: required for the postgres backend")
    _check_workers(config)
    voip = config.voip
    if voip.turn_uris and not voip.turn_shared_secret and (voip.turn_username is None or voip.turn_password is None):
        raise ConfigError("voip.turn_uris: needs voip.turn_shared_secret, or voip.turn_username and voip.turn_password")
    if (config.email.smtp_user is None) != (config.email.smtp_password is None):
        raise ConfigError("email.smtp_user: smtp_user and smtp_password go together")
    for i, contact in enumerate(config.well_known.support_contacts):
        # support.yaml: "At least one of matrix_id or email_address is required."
        if not contact.matrix_id and not contact.email_address:
            raise ConfigError(f"well_known.support_contacts[{i}]: needs matrix_id or email_address")
        if contact.matrix_id is not None and not _is_user_id(contact.matrix_id):
            raise ConfigError(f"well_known.support_contacts[{i}].matrix_id: not a user ID: {contact.matrix_id!r}")
    if config.app_service_config_files:
        from mxserver.appservice.registration import RegistrationError, load_registrations

        try:
            load_registrations(config.app_service_config_files, config.server_name)
        except RegistrationError as e:
            raise ConfigError(str(e)) from None


def _check_workers(config: HomeserverConfig) -> None:
    """The cluster's rules (issue 19): workers share one Postgres database; each worker has a
    built role and somewhere to listen; this process is main or one of them."""
    if config.workers and config.database.backend != "postgres":
        raise ConfigError("workers: workers need database.backend: postgres (SQLite is single-process)")
    for name, entry in config.workers.items():
        if name == "main":
            raise ConfigError("workers.main: main is the implicit writer process; it is not listed")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise ConfigError(f"workers.{name}: a worker name is 1-64 letters, digits, '_', '.' or '-'")
        if entry.role not in WORKER_ROLES:
            raise ConfigError(f"workers.{name}.role: role {entry.role!r} is not built yet (issue 19); known: {', '.join(WORKER_ROLES)}")
        if not entry.listeners:
            raise ConfigError(f"workers.{name}.listeners: a worker needs at least one listener")
    if config.worker.name != "main" and config.worker.name not in config.workers:
        known = ", ".join(["main", *config.workers])
        raise ConfigError(f"worker.name: no worker {config.worker.name!r} in workers (known: {known})")


# -- the sample ---------------------------------------------------------------


def _plain(value: Any) -> Any:
    if attrs.has(type(value)):
        return {k: _plain(v) for k, v in attrs.asdict(value, recurse=False).items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _render(instance: Any, indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    hints = typing.get_type_hints(type(instance))
    for field in attrs.fields(type(instance)):
        help_text = field.metadata.get("help")
        if help_text:
            lines.append(f"{pad}# {help_text}")
        value = getattr(instance, field.name)
        if attrs.has(hints[field.name]) and value is not None:
            lines.append(f"{pad}{field.name}:")
            lines.extend(_render(value, indent + 1))
            continue
        value = field.metadata.get("sample", _plain(value))
        dumped = yaml.safe_dump({field.name: value}, default_flow_style=True, width=10_000).strip()
        lines.append(f"{pad}{dumped[1:-1]}")
    return lines


def render_sample() -> str:
    """The commented sample config: every key with its default."""
    header = [
        "# mxserver configuration. Every key is optional except server_name;",
        "# the values shown are the defaults. Relative paths are relative to this file.",
        "",
    ]
    return "\n".join(header + _render(HomeserverConfig(), 0)) + "\n"
