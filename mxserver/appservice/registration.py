"""Registration files and the registry of application services (application-service-api.md
§Registration, registration.yaml).

Each file named in ``app_service_config_files`` holds one registration. They are read and
checked at start-up (config loading calls :func:`load_registrations`, so ``check-config`` and
``twistd`` refuse a bad file with one line naming it) and again on a reload
(:meth:`AppServiceRegistry.reload`: ``POST /_mxserver/admin/v1/appservices/reload`` or SIGHUP
under twistd), which keeps the registrations in force when any file is bad.

Besides the spec's keys a registration may carry the names Synapse accepts:
``de.sorunome.msc2409.push_ephemeral`` (the MSC2409 name of ``receive_ephemeral``) and
``io.element.msc4190`` (MSC4190: the appservice manages its users' devices itself, so
``m.login.application_service`` logins are refused and ``/register`` needs ``inhibit_login``).
Other unknown keys are ignored: bridges write keys of their own.

Namespaces are regular expressions matched as Synapse matches them: from the start of the
string (``re.match``), not necessarily to its end. The spec says only that a regex "matches".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import attrs
import yaml

from mxserver.ids import MAX_ID_LENGTH, is_valid_localpart

#: registration.yaml `namespaces` kinds
NAMESPACE_KINDS = ("users", "aliases", "rooms")


class RegistrationError(ValueError):
    """A registration file is unusable; the message fits on one line and names the file."""


@attrs.frozen
class Namespace:
    """One entry of a namespace list: a regex, and whether the service claims it alone."""

    regex: str
    exclusive: bool
    pattern: re.Pattern[str] = attrs.field(eq=False, repr=False)

    def matches(self, value: str) -> bool:
        # Synapse matches with re.match: anchored at the start only.
        return self.pattern.match(value) is not None


def _matches(namespaces: Sequence[Namespace], value: str, exclusive_only: bool = False) -> bool:
    return any(ns.matches(value) for ns in namespaces if ns.exclusive or not exclusive_only)


@attrs.frozen(eq=False)
class AppService:
    """One application service's registration."""

    id: str
    #: where to send transactions and queries; None: the service receives nothing
    url: str | None
    as_token: str = attrs.field(repr=False)
    hs_token: str = attrs.field(repr=False)
    #: the user ID of ``sender_localpart``
    sender: str
    users: tuple[Namespace, ...] = ()
    aliases: tuple[Namespace, ...] = ()
    rooms: tuple[Namespace, ...] = ()
    #: registration.yaml: "Whether requests from masqueraded users are rate-limited. The sender is excluded."
    rate_limited: bool = True
    protocols: tuple[str, ...] = ()
    #: receive_ephemeral (or MSC2409's de.sorunome.msc2409.push_ephemeral)
    receive_ephemeral: bool = False
    #: io.element.msc4190: no access tokens for this service's users from /login or /register
    device_management: bool = False
    #: the file it was read from
    source: str = ""

    @property
    def server_name(self) -> str:
        return self.sender.split(":", 1)[1]

    def _local(self, user_id: str) -> bool:
        # application-service-api §Registration: the users namespace covers local users only.
        return user_id.endswith(":" + self.server_name)

    def is_interested_in_user(self, user_id: str) -> bool:
        """The sender, or a local user in one of the user namespaces."""
        return user_id == self.sender or (self._local(user_id) and _matches(self.users, user_id))

    def is_exclusive_user(self, user_id: str) -> bool:
        return user_id == self.sender or (self._local(user_id) and _matches(self.users, user_id, True))

    def is_interested_in_alias(self, alias: str) -> bool:
        return _matches(self.aliases, alias)

    def is_exclusive_alias(self, alias: str) -> bool:
        return _matches(self.aliases, alias, True)

    def is_interested_in_room_id(self, room_id: str) -> bool:
        return _matches(self.rooms, room_id)

    def is_exclusive_room(self, room_id: str) -> bool:
        return _matches(self.rooms, room_id, True)

    def same_registration(self, other: AppService) -> bool:
        """Whether ``other`` was read from an identical registration (a reload changes nothing)."""
        return attrs.astuple(self, recurse=False) == attrs.astuple(other, recurse=False)


# -- parsing ------------------------------------------------------------------------------------------


def _str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if key not in data:
        raise RegistrationError(f"'{key}' is required")
    if not isinstance(value, str) or not value:
        raise RegistrationError(f"'{key}' must be a non-empty string")
    return value


def _bool(data: dict[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RegistrationError(f"'{key}' must be true or false, got {value!r}")
    return value


def _url(data: dict[str, Any]) -> str | None:
    # registration.yaml: url is required but "optionally set to null if no traffic is required".
    # A missing key is refused (as Synapse does) so a typo does not silently stop every push.
    if "url" not in data:
        raise RegistrationError("'url' is required (null for a service that receives nothing)")
    url = data["url"]
    if url is None:
        return None
    if not isinstance(url, str):
        raise RegistrationError("'url' must be a string or null")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistrationError(f"'url' must be an http:// or https:// URL, got {url!r}")
    return url.rstrip("/")


def _namespaces(data: dict[str, Any]) -> dict[str, tuple[Namespace, ...]]:
    raw = data.get("namespaces")
    if "namespaces" not in data:
        raise RegistrationError("'namespaces' is required")
    if not isinstance(raw, dict):
        raise RegistrationError("'namespaces' must be a mapping")
    out: dict[str, tuple[Namespace, ...]] = {}
    for kind in NAMESPACE_KINDS:
        entries = raw.get(kind)
        if entries is None:
            out[kind] = ()
            continue
        if not isinstance(entries, list):
            raise RegistrationError(f"'namespaces.{kind}' must be a list")
        parsed = []
        for i, entry in enumerate(entries):
            where = f"namespaces.{kind}[{i}]"
            if not isinstance(entry, dict):
                raise RegistrationError(f"'{where}' must be a mapping with 'exclusive' and 'regex'")
            regex, exclusive = entry.get("regex"), entry.get("exclusive")
            if not isinstance(regex, str):
                raise RegistrationError(f"'{where}.regex' must be a string")
            if not isinstance(exclusive, bool):
                raise RegistrationError(f"'{where}.exclusive' must be true or false")
            try:
                pattern = re.compile(regex)
            except re.error as e:
                raise RegistrationError(f"'{where}.regex' is not a valid regular expression: {e}") from None
            parsed.append(Namespace(regex, exclusive, pattern))
        out[kind] = tuple(parsed)
    return out


def parse_registration(data: Any, server_name: str, source: str = "") -> AppService:
    """One registration from already-parsed YAML; :class:`RegistrationError` if it is unusable."""
    if not isinstance(data, dict):
        raise RegistrationError("a registration must be a mapping")
    service_id = _str(data, "id")
    url = _url(data)
    as_token = _str(data, "as_token")
    hs_token = _str(data, "hs_token")
    localpart = _str(data, "sender_localpart")
    if not is_valid_localpart(localpart):
        raise RegistrationError(
            f"'sender_localpart' {localpart!r} may contain only a-z, 0-9, '.', '_', '=', '-', '/' and '+'"
        )
    sender = f"@{localpart}:{server_name}"
    if len(sender.encode("utf-8")) > MAX_ID_LENGTH:
        raise RegistrationError("'sender_localpart' makes a user ID longer than 255 bytes")
    namespaces = _namespaces(data)
    protocols = data.get("protocols")
    if protocols is None:
        protocols = []
    if not isinstance(protocols, list) or not all(isinstance(p, str) and p for p in protocols):
        raise RegistrationError("'protocols' must be a list of non-empty strings")
    ephemeral = _bool(data, "receive_ephemeral", False) or _bool(data, "de.sorunome.msc2409.push_ephemeral", False)
    return AppService(
        id=service_id,
        url=url,
        as_token=as_token,
        hs_token=hs_token,
        sender=sender,
        users=namespaces["users"],
        aliases=namespaces["aliases"],
        rooms=namespaces["rooms"],
        rate_limited=_bool(data, "rate_limited", True),
        protocols=tuple(dict.fromkeys(protocols)),
        receive_ephemeral=ephemeral,
        device_management=_bool(data, "io.element.msc4190", False),
        source=source,
    )


def _read(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except OSError as e:
        raise RegistrationError(f"cannot read it: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RegistrationError(f"not valid YAML{where}") from None


def load_registrations(paths: Sequence[str], server_name: str) -> list[AppService]:
    """Every registration of ``paths``, checked alone and against each other.

    Raises :class:`RegistrationError` with one line per bad file
    (``app_service_config_files[i] (path): problem``).
    """
    services: list[AppService] = []
    problems: list[str] = []
    ids: dict[str, str] = {}
    tokens: dict[str, str] = {}
    for i, path in enumerate(paths):
        where = f"app_service_config_files[{i}] ({path})"
        try:
            service = parse_registration(_read(path), server_name, path)
            # application-service-api §Registration: "each as_token and id MUST be unique per
            # application service [...] The homeserver MUST enforce this."
            if service.id in ids:
                raise RegistrationError(f"id {service.id!r} is also the id of {ids[service.id]}")
            if service.as_token in tokens:
                raise RegistrationError(f"as_token is also the as_token of {tokens[service.as_token]}")
            if service.as_token in {s.hs_token for s in services} or service.hs_token in tokens:
                raise RegistrationError("an as_token of one service is the hs_token of another")
        except RegistrationError as e:
            problems.append(f"{where}: {e}")
            continue
        ids[service.id] = path
        tokens[service.as_token] = path
        services.append(service)
    if problems:
        raise RegistrationError("\n".join(problems))
    return services


def instance_id(service_id: str, network_id: str) -> str:
    """A third-party instance ID as Synapse writes it (``ThirdPartyInstanceID``)."""
    return f"{service_id}|{network_id}"


def parse_instance_id(value: str) -> tuple[str, str]:
    """``(service id, network id)`` of an instance ID; ValueError if it is not one."""
    service_id, sep, network_id = value.partition("|")
    if not sep or "|" in network_id:
        raise ValueError(f"Invalid third_party_instance_id {value!r}")
    return service_id, network_id



# -- the registry ---------------------------------------------------------------------------------------


@attrs.frozen
class ReloadResult:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]

    def to_json(self) -> dict[str, list[str]]:
        return {"added": list(self.added), "removed": list(self.removed), "changed": list(self.changed)}


class AppServiceRegistry:
    """The registrations in force: looked up by token and ID, asked about namespaces."""

    def __init__(self, server_name: str, paths: Sequence[str], services: Iterable[AppService] | None = None) -> None:
        """``services``: already loaded (the config check read them); else read from ``paths``."""
        self._server_name = server_name
        self._paths = list(paths)
        self._listeners: list[Callable[[ReloadResult], Any]] = []
        self._set(list(services) if services is not None else load_registrations(self._paths, server_name))

    def _set(self, services: list[AppService]) -> None:
        self.services: tuple[AppService, ...] = tuple(services)
        self._by_token = {s.as_token: s for s in services}
        self._by_id = {s.id: s for s in services}
        self._senders = {s.sender: s for s in services}

    def on_reload(self, fn: Callable[[ReloadResult], Any]) -> None:
        """Call ``fn(result)`` after every reload that changed something."""
        self._listeners.append(fn)

    def reload(self) -> ReloadResult:
        """Read every file again; the new registrations replace the old ones only if all are good
        (:class:`RegistrationError` otherwise, with the old ones still in force)."""
        new = load_registrations(self._paths, self._server_name)
        old = self._by_id
        result = ReloadResult(
            added=tuple(s.id for s in new if s.id not in old),
            removed=tuple(i for i in old if i not in {s.id for s in new}),
            changed=tuple(s.id for s in new if s.id in old and not old[s.id].same_registration(s)),
        )
        self._set(new)
        if result.added or result.removed or result.changed:
            for fn in self._listeners:
                fn(result)
        return result

    # -- lookups -------------------------------------------------------------------------------------

    def by_token(self, as_token: str) -> AppService | None:
        return self._by_token.get(as_token)

    def by_id(self, service_id: str) -> AppService | None:
        return self._by_id.get(service_id)

    def with_url(self) -> list[AppService]:
        """The services that receive traffic (``url`` not null)."""
        return [s for s in self.services if s.url is not None]

    def for_protocol(self, protocol: str) -> list[AppService]:
        return [s for s in self.services if protocol in s.protocols and s.url is not None]

    def interested_in_user(self, user_id: str) -> list[AppService]:
        return [s for s in self.services if s.is_interested_in_user(user_id)]

    def interested_in_alias(self, alias: str) -> list[AppService]:
        return [s for s in self.services if s.is_interested_in_alias(alias)]

    # -- exclusivity (application-service-api §Registration: an exclusive namespace "prevents
    # humans and other application services from creating/deleting entities in that namespace") --

    def user_reserved(self, user_id: str, by: AppService | None = None) -> bool:
        """Whether a service other than ``by`` claims ``user_id`` exclusively (its sender included)."""
        return any(s.id != (by.id if by else None) and s.is_exclusive_user(user_id) for s in self.services)

    def alias_reserved(self, alias: str, by: AppService | None = None) -> bool:
        return any(s.id != (by.id if by else None) and s.is_exclusive_alias(alias) for s in self.services)

    def room_reserved(self, room_id: str, by: AppService | None = None) -> bool:
        return any(s.id != (by.id if by else None) and s.is_exclusive_room(room_id) for s in self.services)

    def rate_limit_exempt(self, user_id: str) -> bool:
        """registration.yaml ``rate_limited``: a service's sender is never rate limited, and the
        users it masquerades as are not when it says ``rate_limited: false``."""
        if user_id in self._senders:
            return True
        return any(not s.rate_limited and s.is_interested_in_user(user_id) for s in self.services)
