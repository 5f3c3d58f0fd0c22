"""Server-Server API routes; :func:`federation_servlets` lists them all."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mxserver.homeserver import Homeserver


def federation_servlets(hs: Homeserver) -> list[Any]:
    from mxserver.api.federation import events, hierarchy, keys, membership, query, transactions, user_keys, version
    from mxserver.api.media import federation_media_servlets

    return [
        version.FederationVersionServlet(hs),
        membership.FederationMembershipServlet(hs),
        keys.KeyServerServlet(hs),
        user_keys.UserKeysServlet(hs),
        transactions.TransactionServlet(hs),
        events.FederationEventsServlet(hs),
        query.FederationQueryServlet(hs),
        hierarchy.FederationHierarchyServlet(hs),
        *federation_media_servlets(hs),
    ]
