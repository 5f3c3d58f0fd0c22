"""Base test case for the interop tests: the shared Synapse/mxserver pair, log tails on failure."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from typing import Any

from twisted.trial import unittest

from tests.interop import harness
from tests.interop.harness import Sync, User, quote


def _with_log_tails(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: InteropTestCase, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except unittest.SkipTest:
            raise
        except BaseException as e:
            pair = harness._pair
            if pair is None:
                raise
            # an expected failure (a ``todo`` test) keeps no logs; a real one does
            if getattr(getattr(type(self), self._testMethodName, None), "todo", None) is None:
                pair.failed = True
            raise AssertionError(f"{type(e).__name__}: {e}\n\n{pair.tails(self.log_mark)}") from e

    return wrapper


class InteropTestCase(unittest.SynchronousTestCase):
    """Blocking tests against the two server processes; ``host`` creates rooms, ``guest`` joins them.

    Subclasses set ``host_kind`` to "mxserver" or "synapse". Every test method is wrapped so that
    a failure carries the tails of both servers' logs.
    """

    host_kind = "mxserver"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if name.startswith("test") and callable(value):
                setattr(cls, name, _with_log_tails(value))

    def setUp(self) -> None:
        reason = harness.shared_missing_reason()
        if reason:
            raise unittest.SkipTest(reason)
        self.pair = harness.get_pair()
        assert self.pair.mxserver is not None and self.pair.synapse is not None
        self.host: harness.ServerProcess
        self.guest: harness.ServerProcess
        if self.host_kind == "mxserver":
            self.host, self.guest = self.pair.mxserver, self.pair.synapse
        else:
            self.host, self.guest = self.pair.synapse, self.pair.mxserver
        self.tag = uuid.uuid4().hex[:6]
        self.log_mark = self.pair.marks()

    # -- scenarios ------------------------------------------------------------------------

    def users(self) -> tuple[User, User]:
        return self.host.register("host"), self.guest.register("guest")

    def invite_and_join(self, host_user: User, guest_user: User, room_id: str) -> tuple[Sync, Sync]:
        """host_user invites guest_user, who joins; both have seen the join. (host sync, guest sync)."""
        host_sync = Sync(host_user)
        guest_sync = Sync(guest_user)
        host_user.invite(room_id, guest_user.user_id)
        guest_sync.wait_for_invite(room_id)
        self.assertEqual(guest_user.join(room_id), room_id)
        host_sync.wait_for_membership(room_id, guest_user.user_id, "join")
        guest_sync.wait(lambda: room_id in guest_sync.joined, f"{room_id} among its joined rooms")
        return host_sync, guest_sync

    def shared_room(self, **create: Any) -> tuple[str, User, User, Sync, Sync]:
        host_user, guest_user = self.users()
        create.setdefault("preset", "private_chat")
        room_id = host_user.create_room(**create)
        host_sync, guest_sync = self.invite_and_join(host_user, guest_user, room_id)
        return room_id, host_user, guest_user, host_sync, guest_sync

    def wait_for_messages(
        self, user: User, room_id: str, expected: list[str], prefix: str, timeout: float = 90.0
    ) -> None:
        """Page /messages on user's server until the bodies with prefix are exactly `expected`, in order."""
        deadline = time.monotonic() + timeout
        while True:
            got = harness.bodies(user.all_messages_backwards(room_id), prefix)
            if got == expected:
                return
            if time.monotonic() > deadline:
                missing = sorted(set(expected) - set(got))
                extra = sorted(set(got) - set(expected))
                raise AssertionError(
                    f"{user.server.kind}: /messages in {room_id} has {len(got)} of {len(expected)} {prefix!r} messages "
                    f"(missing {missing[:20]}{'...' if len(missing) > 20 else ''}, unexpected {extra[:10]}, "
                    f"in order: {got == sorted(got)}) after {timeout:.0f}s"
                )
            time.sleep(2)

    def joined_members(self, user: User, room_id: str) -> set[str]:
        return set(user.ok("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members")["joined"])
