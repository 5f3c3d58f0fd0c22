"""Login identifiers naming a third-party identifier (client-server-api §Identifier types).

``m.id.thirdparty`` (and the deprecated top-level ``medium``/``address`` of login.yaml) names the
local account the 3PID is associated with. Login and UIA rewrite such a submission to name that
user (``m.id.user``) before handing it to a login flow, so every flow accepts 3PIDs.
"""

from __future__ import annotations

from typing import Any

from mxserver.accounts.protocols import ThreepidSessions
from mxserver.errors import bad_json, forbidden


async def resolve_thirdparty(submission: dict[str, Any], threepids: ThreepidSessions | None) -> dict[str, Any]:
    """``submission`` naming the owner of its 3PID, or unchanged when it names none; an unknown
    3PID is a plain 403, as a wrong password is (nothing tells whether the address is known)."""
    identifier = submission.get("identifier")
    if isinstance(identifier, dict) and identifier.get("type") == "m.id.thirdparty":
        medium, address = identifier.get("medium"), identifier.get("address")
    elif identifier is None and "medium" in submission:
        medium, address = submission.get("medium"), submission.get("address")
    else:
        return submission
    if not isinstance(medium, str) or not isinstance(address, str):
        raise bad_json("A third-party identifier needs 'medium' and 'address' strings")
    user_id = await threepids.owner(medium, address) if threepids is not None else None
    if user_id is None:
        raise forbidden("Invalid username or password")
    rest = {k: v for k, v in submission.items() if k not in ("identifier", "medium", "address", "user")}
    return {**rest, "identifier": {"type": "m.id.user", "user": user_id}}
