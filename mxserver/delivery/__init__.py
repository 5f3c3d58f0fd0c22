"""Delivery to destinations: federation servers, push gateways (one per pusher), application services.

DESIGN.md §Destinations: each is a destination with one request in flight, a failed
request resent as it was, and exponential backoff with jitter kept in the database.
:mod:`mxserver.delivery.destinations` holds that shared mechanism; each kind of
destination (:mod:`mxserver.federation.sender`, :mod:`mxserver.push.pusher_pool`)
adds only how to build its next request and send it.
"""
